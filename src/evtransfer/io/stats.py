"""What `evtransfer info` reports beyond the header: polarity counts, coordinate ranges and
the event rate over time, computed in one streamed pass (bounded memory)."""

from __future__ import annotations

import numpy as np

from evtransfer.io.base import EventReader, iter_count_windows

CHUNK_EVENTS = 1_000_000  # events per read: bounds memory whatever the file size


def event_stats(reader: EventReader, bins: int = 10) -> dict:
    """ON / OFF counts, x / y ranges (pixels) and the rate (events/s) in `bins` equal time bins
    over [t_start, t_end] µs. Ranges are None for an empty recording."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    info = reader.info()
    edges = np.linspace(info.t_start_us, info.t_end_us + 1, bins + 1)
    counts = np.zeros(bins, np.int64)
    on = off = 0
    lo, hi = np.array([np.iinfo(np.int64).max] * 2), np.array([-1, -1])
    for ev in iter_count_windows(reader, CHUNK_EVENTS):
        if not len(ev):
            continue
        positive = int(np.count_nonzero(ev.p > 0))
        on, off = on + positive, off + len(ev) - positive
        lo = np.minimum(lo, [int(ev.x.min()), int(ev.y.min())])
        hi = np.maximum(hi, [int(ev.x.max()), int(ev.y.max())])
        counts += np.histogram(ev.t, bins=edges)[0]
    seconds = np.diff(edges) * 1e-6
    empty = on + off == 0
    return {"on": on, "off": off,
            "x_range": None if empty else [int(lo[0]), int(hi[0])],
            "y_range": None if empty else [int(lo[1]), int(hi[1])],
            "bin_us": float(seconds[0] * 1e6),
            "rate_ev_per_s_over_time": [float(c / s) for c, s in zip(counts, seconds,
                                                                      strict=True)]}


def spike_stats(reader, bins: int = 10, chunk_frames: int = 256) -> dict:
    """Spike count and the mean firing rate (spikes per pixel per second) overall and in
    `bins` equal frame ranges of a spike reader (`read_frames`)."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    info = reader.info()
    edges = np.linspace(0, info.frames, bins + 1).round().astype(int)
    per_bin = []
    for k0, k1 in zip(edges[:-1], edges[1:], strict=True):
        total = sum(int(reader.read_frames(a, min(a + chunk_frames, k1)).unpack().sum(
            dtype=np.int64)) for a in range(k0, k1, chunk_frames))
        per_bin.append((total, k1 - k0))
    pixels = info.width * info.height
    spikes = sum(t for t, _ in per_bin)

    def rate(total: int, frames: int) -> float:
        return total / (pixels * frames) * info.rate_hz if frames else 0.0

    return {"spikes": spikes, "firing_rate_hz": rate(spikes, info.frames),
            "firing_rate_hz_over_time": [rate(t, n) for t, n in per_bin]}
