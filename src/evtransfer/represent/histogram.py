"""Event-count histograms: (neg, pos) per pixel, stacked over event-count windows, and a
red/blue display image.
"""

from __future__ import annotations

import torch

from evtransfer.represent._common import (
    check_int,
    index_dtype,
    integer_batch,
    pixel_index,
    stream_slices,
    use_numba,
)
from evtransfer.represent.batch import EventBatch, EventsLike

BACKGROUNDS = ("white", "black")


def histogram(
    events: EventsLike,
    *,
    device: str | torch.device | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """(B, 2, H, W) float32 event counts per pixel: channel 0 negative, channel 1 positive.

    The (neg, pos) order is that of ECDDP's `generate_event_histogram` (data/seg_utils.py).
    Counts are exact integers (float32 holds them exactly up to 2^24 events per pixel).
    `backend` as in `voxel_grid`.
    """
    batch = integer_batch(events, device, "histograms")
    out = _zeros(batch, 2)
    if len(batch):
        if use_numba(backend, batch):
            _count_numba(batch, out, [(0, stop - start) for start, stop in stream_slices(batch)])
        else:
            planes = (batch.p > 0).to(torch.int64)
            if batch.b is not None:
                planes = planes + 2 * batch.b
            _bincount_into(batch, planes, None, out)
    return out


def stacked_histogram(
    events: EventsLike,
    windows: int = 10,
    events_per_window: int = 50_000,
    *,
    device: str | torch.device | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """(B, 2·windows, H, W) float32 (neg, pos) histograms of consecutive event-count windows.

    ECDDP's DSEC input (data/DESC_dataset.py): windows = 10, events_per_window = 50 000, i.e.
    the last 500 000 events as 20 channels ordered [w0_neg, w0_pos, w1_neg, w1_pos, …],
    window 0 oldest, plain counts. Per stream with n events: when n ≥ K·N the block is the
    last K·N events and window k holds block events [k·N, (k+1)·N); when n < K·N, ECDDP
    shrinks the windows to m = n // K events and bins events [k·m, (k+1)·m) of the stream,
    so its newest n − K·m events are left out; we do the same. `backend` as in `voxel_grid`.
    """
    windows = check_int("windows", windows)
    per_window = check_int("events_per_window", events_per_window)
    batch = integer_batch(events, device, "histograms")
    out = _zeros(batch, 2 * windows)
    if not len(batch):
        return out
    counts = batch.counts()
    full = counts >= windows * per_window
    size = torch.where(full, per_window, counts // windows)
    start = torch.where(full, counts - windows * per_window, 0)
    if use_numba(backend, batch):
        _count_numba(batch, out, list(zip(start.tolist(), size.tolist(), strict=True)), windows)
        return out
    b = batch.stream_index()
    stream_start = torch.cumsum(counts, 0) - counts
    rel = torch.arange(len(batch), device=batch.device) - stream_start[b] - start[b]
    window = rel // size.clamp(min=1)[b]
    valid = (rel >= 0) & (window < windows) & (size[b] > 0)
    window = window.clamp_(0, windows - 1)  # keeps dropped events' indices in range
    planes = b * (2 * windows) + 2 * window + (batch.p > 0)
    _bincount_into(batch, planes, valid, out)
    return out


def event_image(
    events: EventsLike,
    *,
    background: str = "white",
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """(B, 3, H, W) float32 RGB display image in [0, 1]: blue where positive events outnumber
    negative ones at a pixel, red where negative ones do, `background` ("white" or "black")
    elsewhere. The colours follow ESS's DSEC/utils/viz_utils.py preview (positive in the blue
    channel, negative in the red one).
    """
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
    counts = histogram(events, device=device)
    net = counts[:, 1] - counts[:, 0]
    base = 1.0 if background == "white" else 0.0
    pos, neg = net > 0, net < 0
    red = torch.where(neg, 1.0, torch.where(pos, 0.0, base))
    green = torch.where(pos | neg, 0.0, base)
    blue = torch.where(pos, 1.0, torch.where(neg, 0.0, base))
    return torch.stack([red, green, blue], dim=1)



def _zeros(batch: EventBatch, channels: int) -> torch.Tensor:
    return torch.zeros((batch.batch_size, channels, batch.height, batch.width),
                       dtype=torch.float32, device=batch.device)


def _bincount_into(batch: EventBatch, planes: torch.Tensor, valid: torch.Tensor | None,
                   out: torch.Tensor) -> None:
    """Count events into `out` at plane·H·W + y·W + x; events with valid False are dropped."""
    total = out.numel()
    index = pixel_index(batch, planes, index_dtype(total + 1))
    if valid is not None:
        index = torch.where(valid, index, total)  # one spare bin collects the dropped events
    counts = torch.bincount(index, minlength=total + 1)[:total]
    out.view(-1).copy_(counts)


def _count_numba(batch: EventBatch, out: torch.Tensor, plan: list[tuple[int, int]],
                 windows: int = 1) -> None:
    """Numba counting; `plan` gives (first event, events per window) within each stream."""
    from evtransfer.represent._numba import count_stream

    x, y, p = (v.numpy() for v in (batch.x, batch.y, batch.p))
    grids = out.numpy()
    for k, ((start, stop), (first, size)) in enumerate(zip(stream_slices(batch), plan,
                                                           strict=True)):
        count_stream(x[start:stop], y[start:stop], p[start:stop], grids[k], first, size, windows)
