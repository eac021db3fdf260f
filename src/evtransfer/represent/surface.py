"""Per-pixel timing representations: exponential time surface and Ev-SegNet's 6 channels."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from evtransfer.represent._common import integer_batch, pixel_index
from evtransfer.represent.batch import (
    EventBatch,
    EventsLike,
    normalised_time,
    stream_time_range,
)

_NO_EVENT = torch.iinfo(torch.int64).min


def time_surface(
    events: EventsLike,
    tau_us: float,
    *,
    t_ref_us: int | Sequence[int] | None = None,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """(B, 2, H, W) float32 exponentially decaying time surface, channels (neg, pos).

    Each pixel holds exp(−(t_ref − t_last)/tau_us), where t_last is the timestamp (µs) of the
    pixel's most recent event of that polarity, and 0 where it has none; values lie in
    (0, 1]. t_ref_us is one reference time for every stream, one per stream, or None for each
    stream's own last event time (an empty stream gives zeros). Events later than t_ref_us
    are refused (their value would exceed 1).
    """
    tau = float(tau_us)
    if not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"tau_us must be a positive finite number, got {tau_us!r}")
    batch = integer_batch(events, device, "time surfaces")
    ref = _reference_times(batch, t_ref_us)
    total = batch.batch_size * 2 * batch.height * batch.width
    last = torch.full((total,), _NO_EVENT, dtype=torch.int64, device=batch.device)
    if len(batch):
        planes = (batch.p > 0).to(torch.int64)
        if batch.b is not None:
            planes = planes + 2 * batch.b
        index = pixel_index(batch, planes, torch.int64)
        last.scatter_reduce_(0, index, batch.t, reduce="amax")
    last = last.view(batch.batch_size, 2, batch.height, batch.width)
    ref = ref.view(-1, 1, 1, 1)
    seen = last != _NO_EVENT
    age = (ref - torch.where(seen, last, ref)).to(torch.float32)
    return torch.where(seen, torch.exp(age * (-1.0 / tau)), 0.0)


def _reference_times(batch: EventBatch, t_ref_us) -> torch.Tensor:
    """(B,) int64 reference time per stream; checks that no event comes after it."""
    first, span = stream_time_range(batch)
    last = first + span
    if t_ref_us is None:
        return last
    ref = torch.as_tensor(t_ref_us, dtype=torch.int64, device=batch.device).reshape(-1)
    if ref.numel() == 1:
        ref = ref.expand(batch.batch_size)
    if ref.numel() != batch.batch_size:
        raise ValueError(f"t_ref_us has {ref.numel()} values for {batch.batch_size} streams")
    late = (batch.counts() > 0) & (last > ref)
    if bool(late.any()):
        k = int(torch.nonzero(late)[0])
        raise ValueError(f"t_ref_us: stream {k} has events up to {int(last[k])} µs, after its "
                         f"reference time {int(ref[k])} µs")
    return ref


def evsegnet_encoding(
    events: EventsLike,
    *,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """(B, 6, H, W) float32 Ev-SegNet event image: per polarity, count and timestamp statistics.

    Channels [pos count, neg count, pos mean t, pos std t, neg mean t, neg std t], the
    order Ev-SegNet's show_events.py reads its DDD17 arrays in (on, off, on mean, on std, off
    mean, off std). t is each stream's timestamps normalised to [0, 1] from its first to its
    last event (all 0 when they share one timestamp); mean and population std (÷ n) are over
    the pixel's events of that polarity, and 0 where it has none. The exact scaling of the
    released DDD17 arrays is undocumented (formats.md §2); this definition is our choice.
    """
    batch = integer_batch(events, device, "Ev-SegNet encodings")
    b, h, w = batch.batch_size, batch.height, batch.width
    total = b * 2 * h * w
    count = torch.zeros(total, dtype=torch.float32, device=batch.device)
    mean = torch.zeros_like(count)
    spread = torch.zeros_like(count)
    if len(batch):
        planes = (batch.p < 0).to(torch.int64)
        if batch.b is not None:
            planes = planes + 2 * batch.b
        index = pixel_index(batch, planes, torch.int64)
        t_norm = normalised_time(batch, 1)
        count.index_add_(0, index, torch.ones_like(t_norm))
        mean.index_add_(0, index, t_norm).div_(count.clamp(min=1))
        # two passes (mean, then squared deviations) keep float32 std accurate
        spread.index_add_(0, index, (t_norm - mean[index]).square())
        spread.div_(count.clamp(min=1)).sqrt_()
    count, mean, spread = (v.view(b, 2, h, w) for v in (count, mean, spread))
    return torch.stack([count[:, 0], count[:, 1], mean[:, 0], spread[:, 0], mean[:, 1],
                        spread[:, 1]], dim=1)
