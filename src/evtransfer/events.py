"""Core stream types: `Events` (a DVS event stream) and `Spikes` (a spike-camera stream).

Both know no file format and need no torch except in `to_torch`. Events are a
struct-of-arrays with fixed dtypes (x, y int16; t int64 µs; p int8 in {-1, +1}) and an
explicit sensor size; a stream is sorted by time, so time windows are two binary searches
and return zero-copy views.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


class EventsError(ValueError):
    """Invalid event or spike data (wrong dtype, shape, range or order)."""


def _as_int_array(name: str, values, dtype: np.dtype) -> np.ndarray:
    """`values` as a 1-D array of `dtype`; refuse casts that would change a value."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise EventsError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.dtype == dtype:
        return arr
    numeric = np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.bool_)
    if arr.size and not numeric:
        if not np.issubdtype(arr.dtype, np.floating):
            raise EventsError(f"{name} must be numeric, got dtype {arr.dtype}")
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise EventsError(f"{name} has non-integer or non-finite values")
    info = np.iinfo(dtype)
    if arr.size and (arr.min() < info.min or arr.max() > info.max):
        raise EventsError(
            f"{name} values [{arr.min()}, {arr.max()}] do not fit in {np.dtype(dtype).name}"
        )
    return arr.astype(dtype)


@dataclass(frozen=True)
class TorchEvents:
    """Events as torch tensors on one device: x, y int16; t int64 µs; p int8 (N,)."""

    x: torch.Tensor
    y: torch.Tensor
    t: torch.Tensor
    p: torch.Tensor
    width: int
    height: int

    def __len__(self) -> int:
        return int(self.t.shape[0])


class Events:
    """A time-sorted DVS event stream on a `width` × `height` sensor.

    x, y: (N,) int16 pixel column and row; t: (N,) int64 timestamps in µs, non-decreasing;
    p: (N,) int8 polarity in {-1, +1}. Inputs of other integer dtypes are converted when no
    value changes; `sort=True` sorts unsorted input by time (stable). Arrays are never
    modified in place; slices share memory with their parent.
    """

    __slots__ = ("x", "y", "t", "p", "width", "height")

    def __init__(self, x, y, t, p, width: int, height: int, *, sort: bool = False):
        if int(width) <= 0 or int(height) <= 0:
            raise EventsError(f"sensor size must be positive, got {width}x{height}")
        x = _as_int_array("x", x, np.int16)
        y = _as_int_array("y", y, np.int16)
        t = _as_int_array("t", t, np.int64)
        p = _as_int_array("p", p, np.int8)
        n = len(t)
        if not (len(x) == len(y) == len(p) == n):
            raise EventsError(
                f"x, y, t, p must have equal lengths, got {len(x)}, {len(y)}, {n}, {len(p)}"
            )
        if n:
            if x.min() < 0 or x.max() >= width:
                raise EventsError(f"x outside [0, {width}): range [{x.min()}, {x.max()}]")
            if y.min() < 0 or y.max() >= height:
                raise EventsError(f"y outside [0, {height}): range [{y.min()}, {y.max()}]")
            bad = (p != 1) & (p != -1)
            if bad.any():
                raise EventsError(
                    f"p must be -1 or +1; {int(bad.sum())} events have {np.unique(p[bad])[:5]}"
                )
            steps = np.diff(t)
            if steps.size and steps.min() < 0:
                if not sort:
                    first = int(np.argmax(steps < 0))
                    raise EventsError(
                        f"t decreases at index {first + 1} ({t[first]} -> {t[first + 1]} µs); "
                        "pass sort=True to sort"
                    )
                order = np.argsort(t, kind="stable")
                x, y, t, p = x[order], y[order], t[order], p[order]
        self._set(x, y, t, p, int(width), int(height))

    def _set(self, x, y, t, p, width, height) -> None:
        for name, value in zip(self.__slots__, (x, y, t, p, width, height), strict=True):
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError("Events is immutable")

    @classmethod
    def _trusted(cls, x, y, t, p, width: int, height: int) -> Events:
        """Wrap arrays known to be valid (internal: slices of a validated stream)."""
        ev = cls.__new__(cls)
        ev._set(x, y, t, p, width, height)
        return ev

    @classmethod
    def empty(cls, width: int, height: int) -> Events:
        """A stream with no events on a `width` × `height` sensor."""
        z = np.zeros(0, np.int16)
        return cls(z, z, np.zeros(0, np.int64), np.zeros(0, np.int8), width, height)

    # --- size and time --------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.t.shape[0])

    def __repr__(self) -> str:
        span = f", t=[{self.t[0]}, {self.t[-1]}] µs" if len(self) else ""
        return f"Events(n={len(self)}, sensor={self.width}x{self.height}{span})"

    @property
    def sensor_size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.width, self.height

    @property
    def duration_us(self) -> int:
        """t[-1] - t[0] in µs (0 when fewer than two events)."""
        return int(self.t[-1] - self.t[0]) if len(self) else 0

    # --- slicing --------------------------------------------------------------------
    def __getitem__(self, index: slice) -> Events:
        """Events index range as a zero-copy view; only contiguous slices keep t sorted."""
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise EventsError("Events supports contiguous slices only, e.g. ev[10:20]")
        return Events._trusted(
            self.x[index], self.y[index], self.t[index], self.p[index], self.width, self.height
        )

    def index_range(self, t0_us: int, t1_us: int) -> tuple[int, int]:
        """Indices [i0, i1) of the events with t0_us <= t < t1_us."""
        if t1_us < t0_us:
            raise EventsError(f"time window end {t1_us} < start {t0_us}")
        i0, i1 = np.searchsorted(self.t, [t0_us, t1_us], side="left")
        return int(i0), int(i1)

    def time_window(self, t0_us: int, t1_us: int) -> Events:
        """Events with t0_us <= t < t1_us, as a zero-copy view."""
        i0, i1 = self.index_range(t0_us, t1_us)
        return self[i0:i1]

    def last_before(self, t_us: int, n: int) -> Events:
        """The last `n` events with t < t_us (fewer if the stream has fewer), zero-copy."""
        if n < 0:
            raise EventsError(f"n must be >= 0, got {n}")
        i1 = int(np.searchsorted(self.t, t_us, side="left"))
        return self[max(0, i1 - n) : i1]

    def shift_time(self, dt_us: int) -> Events:
        """A copy with every timestamp moved by dt_us (e.g. adding DSEC's t_offset)."""
        return Events._trusted(self.x, self.y, self.t + np.int64(dt_us), self.p, *self.sensor_size)

    @staticmethod
    def concatenate(streams: Sequence[Events], *, sort: bool = False) -> Events:
        """One stream from several on the same sensor, in order (or sorted if `sort`)."""
        if not streams:
            raise EventsError("concatenate needs at least one stream")
        sizes = {s.sensor_size for s in streams}
        if len(sizes) != 1:
            raise EventsError(f"streams have different sensor sizes: {sorted(sizes)}")
        cat = [np.concatenate([getattr(s, k) for s in streams]) for k in ("x", "y", "t", "p")]
        if not sort:
            for a, b in zip(streams[:-1], streams[1:], strict=True):
                if len(a) and len(b) and b.t[0] < a.t[-1]:
                    raise EventsError(
                        f"streams overlap in time ({b.t[0]} < {a.t[-1]} µs); pass sort=True"
                    )
            return Events._trusted(*cat, *streams[0].sensor_size)
        return Events(*cat, *streams[0].sensor_size, sort=True)

    def to_torch(self, device: str | torch.device = "cpu") -> TorchEvents:
        """The arrays as torch tensors on `device` (dtypes kept: int16, int16, int64, int8)."""
        import torch

        def conv(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).to(device)

        return TorchEvents(conv(self.x), conv(self.y), conv(self.t), conv(self.p),
                           *self.sensor_size)


class Spikes:
    """A binary spike-camera stream: T frames of H × W bits read out at `rate_hz`.

    `data` is either (T, H, W) uint8 in {0, 1} or, with `packed=True`, (T, H, ceil(W/8)) uint8
    holding each row's bits LSB-first (numpy `packbits(..., bitorder="little")`). Frame k is
    read out at t0_us + k · 10^6 / rate_hz µs.
    """

    __slots__ = ("data", "height", "width", "rate_hz", "packed", "t0_us")

    def __init__(
        self,
        data: np.ndarray,
        rate_hz: float,
        *,
        width: int | None = None,
        packed: bool = False,
        t0_us: int = 0,
    ):
        data = np.asarray(data)
        if data.ndim != 3:
            raise EventsError(f"spike data must be (T, H, W), got shape {data.shape}")
        if data.dtype == np.bool_:
            data = data.view(np.uint8)
        if data.dtype != np.uint8:
            raise EventsError(f"spike data must be uint8 or bool, got {data.dtype}")
        if not np.isfinite(rate_hz) or rate_hz <= 0:
            raise EventsError(f"rate_hz must be positive, got {rate_hz}")
        t, h, w = data.shape
        if packed:
            width = w * 8 if width is None else int(width)
            if (width + 7) // 8 != w:
                raise EventsError(f"packed rows have {w} bytes, which cannot hold width {width}")
        else:
            if width is not None and width != w:
                raise EventsError(f"width {width} does not match data width {w}")
            width = w
            if data.size and data.max() > 1:
                raise EventsError(f"unpacked spikes must be 0 or 1, found {data.max()}")
        for name, value in zip(
            self.__slots__, (data, h, width, float(rate_hz), packed, int(t0_us)), strict=True
        ):
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError("Spikes is immutable")

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def __repr__(self) -> str:
        return (
            f"Spikes(frames={len(self)}, sensor={self.width}x{self.height}, "
            f"rate={self.rate_hz:g} Hz, packed={self.packed})"
        )

    @property
    def period_us(self) -> float:
        """Readout period in µs."""
        return 1e6 / self.rate_hz

    def timestamps_us(self) -> np.ndarray:
        """(T,) int64 readout time of each frame in µs (rounded to the nearest µs)."""
        return self.t0_us + np.rint(np.arange(len(self)) * self.period_us).astype(np.int64)

    def frames(self, k0: int, k1: int) -> Spikes:
        """Frames k0 <= k < k1 as a zero-copy view."""
        if not 0 <= k0 <= k1:
            raise EventsError(f"invalid frame range [{k0}, {k1})")
        t0 = self.t0_us + round(k0 * self.period_us)
        return Spikes(
            self.data[k0:k1], self.rate_hz, width=self.width, packed=self.packed, t0_us=t0
        )

    def time_window(self, t0_us: int, t1_us: int) -> Spikes:
        """Frames read out at t0_us <= t < t1_us."""
        if t1_us < t0_us:
            raise EventsError(f"time window end {t1_us} < start {t0_us}")
        k0, k1 = np.searchsorted(self.timestamps_us(), [t0_us, t1_us], side="left")
        return self.frames(int(k0), int(k1))

    def unpack(self) -> np.ndarray:
        """(T, H, W) uint8 spikes in {0, 1} (a view when already unpacked)."""
        if not self.packed:
            return self.data
        bits = np.unpackbits(self.data, axis=-1, bitorder="little")
        return bits[..., : self.width]

    def pack(self) -> Spikes:
        """The same stream bit-packed (T, H, ceil(W/8)) LSB-first: 8× less memory."""
        if self.packed:
            return self
        return Spikes(
            np.packbits(self.data, axis=-1, bitorder="little"),
            self.rate_hz,
            width=self.width,
            packed=True,
            t0_us=self.t0_us,
        )

    def firing_rate(self) -> float:
        """Mean spikes per pixel per frame."""
        if not len(self):
            return 0.0
        if self.packed:
            bits = np.unpackbits(self.data, axis=-1, bitorder="little")[..., : self.width]
            ones = int(bits.sum(dtype=np.int64))
        else:
            ones = int(self.data.sum(dtype=np.int64))
        return ones / (len(self) * self.height * self.width)

    def to_torch(self, device: str | torch.device = "cpu") -> torch.Tensor:
        """(T, H, W) uint8 tensor of unpacked spikes on `device`."""
        import torch

        return torch.from_numpy(np.ascontiguousarray(self.unpack())).to(device)
