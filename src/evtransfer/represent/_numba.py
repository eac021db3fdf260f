"""Optional numba kernels for the CPU: one pass over the events, no per-event temporaries.

Imported only when a representation runs with backend "numba" (or "auto" on the CPU with
numba installed). Each kernel fills the (C, H, W) float32 output of one stream in place;
the torch implementation stays the reference path and both are tested against the same
float64 NumPy references. Weights are computed per event in float64 registers and added
into float32.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def voxel_stream(x, y, t, p, out, bins, split):
    """Add one stream's events to `out` (C, H, W), C-contiguous: linear weights over `bins`
    time bins, polarity summed (C = bins) or split (C = 2·bins, positive planes first)."""
    n = t.shape[0]
    if n == 0:
        return
    width = out.shape[2]
    plane = out.shape[1] * width
    flat = out.reshape(-1)  # flat indices run about twice as fast as out[c, y, x]
    neg_shift = bins * plane if split else 0
    if bins == 1:  # a separate loop keeps the branch out of the main one
        for i in range(n):
            index = np.int64(y[i]) * width + x[i]
            if p[i] < 0:
                index += neg_shift
            flat[index] += 1.0 if split else float(p[i])
        return
    t0 = t[0]
    span = t[n - 1] - t0
    scale = (bins - 1) / span if span > 0 else 0.0
    last_left = bins - 2
    for i in range(n):
        pol = p[i]
        index = np.int64(y[i]) * width + x[i]
        if pol < 0:
            index += neg_shift
        value = 1.0 if split else float(pol)
        t_norm = (t[i] - t0) * scale
        left = min(int(t_norm), last_left)  # t_norm >= 0, so int() is floor()
        frac = t_norm - left
        index += left * plane
        flat[index] += value - value * frac
        flat[index + plane] += value * frac


@numba.njit(cache=True, nogil=True)
def count_stream(x, y, p, out, start, size, windows):
    """Count events [start, start + size·windows) into `out` (2·windows, H, W), C-contiguous.

    Window k holds events start + k·size … start + (k+1)·size − 1; its channels are
    2k (negative) and 2k + 1 (positive).
    """
    width = out.shape[2]
    plane = out.shape[1] * width
    flat = out.reshape(-1)
    for k in range(windows):
        for i in range(start + k * size, start + (k + 1) * size):
            index = (2 * k + (1 if p[i] > 0 else 0)) * plane + np.int64(y[i]) * width + x[i]
            flat[index] += 1.0
