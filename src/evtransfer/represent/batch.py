"""Flat event batches: several streams as one set of (N,) tensors plus a stream index.

Every representation in `evtransfer.represent` works on an `EventBatch`. Public functions
accept `Events`, a sequence of `Events`, `TorchEvents` (or a sequence of them) or an
`EventBatch` and convert with `as_event_batch`; callers whose events already sit on a GPU
build an `EventBatch` from their tensors and skip numpy entirely.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from evtransfer.events import Events, TorchEvents


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


def _check_coords(name: str, v: torch.Tensor, size: int) -> None:
    """Integer coordinates must lie in [0, size); sub-pixel ones in (-1, size)."""
    if v.is_floating_point():
        _check(bool(torch.isfinite(v).all()), f"{name} has non-finite values")
        lo, hi = v.aminmax()
        _check(lo > -1 and hi < size, f"{name} outside (-1, {size}): range [{lo}, {hi}]")
        return
    lo, hi = v.aminmax()
    _check(lo >= 0 and hi < size, f"{name} outside [0, {size}): range [{lo}, {hi}]")


@dataclass(frozen=True, eq=False)  # tensors have no single truth value to compare
class EventBatch:
    """`batch_size` event streams on a `width` × `height` sensor as flat tensors on one device.

    x, y: (N,) integer pixel column/row in [0, width) × [0, height), or floating sub-pixel
    coordinates in (-1, width) × (-1, height) (e.g. rectified DSEC events; only
    `voxel_grid` accepts those). t: (N,) int64 µs. p: (N,) integer polarity in {-1, +1}.
    b: (N,) integer stream index in [0, batch_size), non-decreasing (the events of stream k
    are contiguous), or None when every event belongs to the single stream 0. Within a
    stream t is non-decreasing. The constructor checks all of this and raises ValueError.
    """

    x: torch.Tensor
    y: torch.Tensor
    t: torch.Tensor
    p: torch.Tensor
    b: torch.Tensor | None
    batch_size: int
    width: int
    height: int

    def __post_init__(self) -> None:
        _check(self.width > 0 and self.height > 0,
               f"sensor size must be positive, got {self.width}x{self.height}")
        _check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        tensors = {"x": self.x, "y": self.y, "t": self.t, "p": self.p}
        if self.b is not None:
            tensors["b"] = self.b
        for name, v in tensors.items():
            _check(isinstance(v, torch.Tensor) and v.ndim == 1, f"{name} must be a 1-D tensor")
            _check(v.shape == self.t.shape,
                   f"{name} has {v.shape[0]} entries but t has {self.t.shape[0]}")
            _check(v.device == self.t.device, f"{name} is on {v.device} but t on {self.t.device}")
            is_int = not v.is_floating_point() and not v.is_complex() and v.dtype != torch.bool
            _check(is_int or (name in "xy" and v.is_floating_point()),
                   f"{name} must be an integer tensor, got {v.dtype}")
        _check(self.t.dtype == torch.int64, f"t must be int64 µs, got {self.t.dtype}")
        _check(self.b is not None or self.batch_size == 1,
               f"b is required when batch_size is {self.batch_size}")
        if len(self.t):
            self._check_values()

    def _check_values(self) -> None:
        _check_coords("x", self.x, self.width)
        _check_coords("y", self.y, self.height)
        _check(bool(((self.p == 1) | (self.p == -1)).all()), "p must be -1 or +1")
        same = torch.ones(len(self.t) - 1, dtype=torch.bool, device=self.t.device)
        if self.b is not None:
            lo, hi = self.b.aminmax()
            _check(lo >= 0 and hi < self.batch_size,
                   f"b outside [0, {self.batch_size}): range [{lo}, {hi}]")
            steps = torch.diff(self.b)
            _check(bool((steps >= 0).all()), "b must be non-decreasing (streams contiguous)")
            same = steps == 0
        _check(bool((torch.diff(self.t)[same] >= 0).all()),
               "t decreases within a stream; sort each stream by time")

    @classmethod
    def _trusted(cls, x, y, t, p, b, batch_size: int, width: int, height: int) -> EventBatch:
        """Wrap tensors known to be valid (built from validated `Events`)."""
        batch = cls.__new__(cls)
        for name, value in zip(("x", "y", "t", "p", "b", "batch_size", "width", "height"),
                               (x, y, t, p, b, batch_size, width, height), strict=True):
            object.__setattr__(batch, name, value)
        return batch

    def __len__(self) -> int:
        return int(self.t.shape[0])

    @property
    def device(self) -> torch.device:
        return self.t.device

    @property
    def subpixel(self) -> bool:
        """True when x and y are floating-point (sub-pixel) coordinates."""
        return self.x.is_floating_point() or self.y.is_floating_point()

    def counts(self) -> torch.Tensor:
        """(batch_size,) int64 number of events of each stream, on the batch's device."""
        if self.b is None:
            return torch.tensor([len(self)], dtype=torch.int64, device=self.device)
        return torch.bincount(self.b, minlength=self.batch_size)

    def stream_index(self) -> torch.Tensor:
        """(N,) int64 stream of each event (materialised zeros when `b` is None)."""
        if self.b is None:
            return torch.zeros(len(self), dtype=torch.int64, device=self.device)
        return self.b.long()

    def to(self, device: str | torch.device) -> EventBatch:
        """The same batch on `device` (no copy when already there)."""
        b = None if self.b is None else self.b.to(device)
        return EventBatch._trusted(self.x.to(device), self.y.to(device), self.t.to(device),
                                   self.p.to(device), b, self.batch_size, self.width, self.height)


EventsLike = Events | TorchEvents | Sequence[Events] | Sequence[TorchEvents] | EventBatch


def _from_numpy(streams: Sequence[Events], device) -> EventBatch:
    width, height = streams[0].sensor_size
    if len(streams) == 1:
        ev = streams[0]
        arrays = (ev.x, ev.y, ev.t, ev.p)
        b = None
    else:
        arrays = tuple(np.concatenate([getattr(s, k) for s in streams]) for k in "xytp")
        sizes = torch.tensor([len(s) for s in streams], dtype=torch.int64)
        b = torch.repeat_interleave(torch.arange(len(streams)), sizes).to(device)
    with warnings.catch_warnings():
        # read-only inputs (memory maps) are shared, never written
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        x, y, t, p = (torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in arrays)
    return EventBatch._trusted(x, y, t, p, b, len(streams), width, height)


def _from_torch(streams: Sequence[TorchEvents], device) -> EventBatch:
    width, height = streams[0].width, streams[0].height
    device = streams[0].t.device if device is None else torch.device(device)
    x, y, t, p = (torch.cat([getattr(s, k).to(device) for s in streams]) for k in "xytp")
    b = None
    if len(streams) > 1:
        sizes = torch.tensor([len(s) for s in streams], dtype=torch.int64)
        b = torch.repeat_interleave(torch.arange(len(streams)), sizes).to(device)
    return EventBatch(x, y, t, p, b, len(streams), width, height)


def as_event_batch(events: EventsLike, device: str | torch.device | None = None) -> EventBatch:
    """`events` as an `EventBatch` on `device`.

    Accepts one `Events` / `TorchEvents` (batch of 1), a non-empty sequence of either (one
    stream per batch item, all on the same sensor) or an `EventBatch`. `device` None keeps
    torch inputs where they are and puts numpy `Events` on the CPU. `Events` are trusted
    (validated at construction); torch inputs are validated here.
    """
    if isinstance(events, EventBatch):
        return events if device is None else events.to(device)
    wrong = TypeError("events must be Events, TorchEvents, a sequence of one of them or an "
                      f"EventBatch; got {type(events).__name__}")
    if isinstance(events, Events | TorchEvents):
        streams = [events]
    elif isinstance(events, Sequence):
        streams = list(events)
    else:
        raise wrong
    if not streams:
        raise ValueError("events: need at least one stream, got an empty sequence")
    kinds = {type(s) for s in streams}
    if len(kinds) != 1 or not kinds <= {Events, TorchEvents}:
        raise TypeError(f"{wrong} of {sorted(k.__name__ for k in kinds)}")
    sizes = {(s.width, s.height) for s in streams}
    if len(sizes) != 1:
        raise ValueError(f"events: streams have different sensor sizes {sorted(sizes)}")
    if kinds == {Events}:
        return _from_numpy(streams, "cpu" if device is None else device)
    return _from_torch(streams, device)


def stream_time_range(batch: EventBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per stream (first t, last t − first t) as two (batch_size,) int64 tensors (0 if empty)."""
    counts = batch.counts()
    if not len(batch):
        return torch.zeros_like(counts), torch.zeros_like(counts)
    ends = torch.cumsum(counts, 0)
    first = batch.t[(ends - counts).clamp(max=len(batch) - 1)]
    last = batch.t[(ends - 1).clamp(min=0)]
    nonempty = counts > 0
    return torch.where(nonempty, first, 0), torch.where(nonempty, last - first, 0)


def normalised_time(batch: EventBatch, top: int) -> torch.Tensor:
    """(N,) float32 timestamps mapped per stream to [0, top]: top · (t − t_first) / span.

    span = t_last − t_first of the event's own stream. A stream whose events share one
    timestamp (span 0, including a single event) maps every event to 0, as E2VID's
    `events_to_voxel_grid` does. The numerator top · (t − t_first) is formed exactly in int64
    before one float32 division, so the relative error is about 2^-23 whatever the window
    length, and integer results (bin boundaries) are exact while top · span < 2^24.
    """
    first, span = stream_time_range(batch)
    span = span.clamp(min=1)
    if batch.b is None:
        return ((batch.t - int(first[0])) * top).to(torch.float32) / float(span[0])
    b = batch.b.long()
    return ((batch.t - first[b]) * top).to(torch.float32) / span.to(torch.float32)[b]
