"""Optional numba kernels for the DVS simulator on the CPU (the torch code is the reference).

Imported only when a `DvsSimulator` runs with backend "numba" (or "auto" on the CPU with
numba installed) in the linear mode (no low-pass, leak, shot noise, hot pixels or jitter).
The first frame fills the per-pixel state in one pass; each frame interval is three passes:
over the pixels (threshold test against the linear bounds, logs only where it passes,
reference and bound updates, all on one interleaved per-pixel state array), over the
crossings (timestamps, refractory check, a histogram of the (batch, time) keys), and a
counting sort that writes the sorted x, y, t, p directly. The crossing arithmetic repeats the
torch path's expressions in the same order, so both give the same events (up to the last-ulp
differences of log and exp).
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def start_state(frame, log_frame, thr, eps, npix, state):
    """The state (B·H·W, 4) of the first frame: bounds (I + eps)·exp(±C) - eps (no log or
    exp per pixel), reference log(I + eps) (given: `log_frame`), previous intensity I."""
    per_pixel = thr.shape[0] > 1
    for q in range(frame.shape[0]):
        j = q % npix if per_pixel else 0
        shifted = frame[q] + eps
        state[q, 0] = shifted * thr[j, 2] - eps
        state[q, 1] = shifted * thr[j, 3] - eps
        state[q, 2] = log_frame[q]
        state[q, 3] = frame[q]


@numba.njit(cache=True, nogil=True)
def crossing_pixels(frame, state, thr, eps, npix, dt, cand_idx, cand_n, cand_a, cand_b):
    """Pass 1 over the flat (B·H·W,) pixels: fills the first m candidate slots with the pixel,
    the crossing count signed by polarity, and offset coefficients a, b (crossing k at
    round(a + k b)). `state` (B·H·W, 4) holds each pixel's upper bound, lower bound, reference
    and previous intensity side by side, so the reference of a crossing pixel arrives in the
    cache line its bounds were read from (separate arrays cost a cache miss per crossing
    pixel); updated in place. Returns (m, total), or (-1, 0) when a value of the frame is
    negative, NaN or infinite (found on the way, so the frame is read once; the state is then
    partly advanced).

    `thr` (P, 4) holds C+, C-, exp(C+), exp(-C-) for every pixel (P = H·W) or for all (P = 1).
    The reference moves by n steps, so both bounds exp(ref ± C) - eps are scaled by
    exp(n·step) instead of recomputed with two exps (for the usual n = 1 the factor is in
    `thr`); the bounds only preselect pixels (the count comes from the logs), and the rounding
    this accumulates, about one ulp per update, is far below any threshold."""
    per_pixel = thr.shape[0] > 1
    m = 0
    total = 0
    lowest = np.inf
    nan_or_inf = 0.0  # stays 0 unless a value is NaN or ±inf (0·inf = NaN)
    for q in range(frame.shape[0]):
        i1 = frame[q]
        lowest = min(lowest, i1)
        nan_or_inf += 0.0 * i1
        if i1 >= state[q, 0] or i1 <= state[q, 1]:
            j = q % npix if per_pixel else 0
            r = state[q, 2]
            d1 = np.log(i1 + eps) - r
            up = d1 > 0
            c = thr[j, 0] if up else thr[j, 1]
            n = int(np.floor(abs(d1) / c))
            if n > 0:
                d0 = np.log(state[q, 3] + eps) - r
                step = c if up else -c
                state[q, 2] = r + step * n
                if n == 1:
                    growth = thr[j, 2] if up else thr[j, 3]
                else:
                    growth = np.exp(step * n)
                state[q, 0] = (state[q, 0] + eps) * growth - eps
                state[q, 1] = (state[q, 1] + eps) * growth - eps
                scale = dt / (d1 - d0)
                cand_idx[m] = q
                cand_n[m] = n if up else -n
                cand_a[m] = -d0 * scale
                cand_b[m] = step * scale
                m += 1
                total += n
        state[q, 3] = i1
    if not (lowest >= 0.0 and nan_or_inf == 0.0):
        return -1, 0
    return m, total


@numba.njit(cache=True, nogil=True)
def crossing_events(cand_idx, cand_n, cand_a, cand_b, m, total, t0, dt, npix, batch,
                    last, period):
    """Pass 2: (pixel, offset, polarity) of every emitted crossing in generation order and the
    histogram of keys b·(dt + 1) + offset, shifted by one. `period` < 0 disables the
    refractory check; otherwise `last` holds each pixel's last event time and is updated."""
    src = np.empty(total, np.int64)
    off = np.empty(total, np.int64)
    pol = np.empty(total, np.int8)
    hist = np.zeros(batch * (dt + 1) + 1, np.int64)
    e = 0
    for i in range(m):
        q = cand_idx[i]
        a = cand_a[i]
        b = cand_b[i]
        base = (q // npix) * (dt + 1) if batch > 1 else 0
        sign = 1 if cand_n[i] > 0 else -1
        for k in range(1, abs(cand_n[i]) + 1):
            o = np.rint(a + k * b)
            if o != o or o < 0.0:
                o = 0.0
            elif o > dt:
                o = float(dt)
            value = int(o)
            if period >= 0:
                t = t0 + value
                if t - last[q] < period:
                    continue
                last[q] = t
            src[e] = q
            off[e] = value
            pol[e] = sign
            hist[base + value + 1] += 1
            e += 1
    return src[:e], off[:e], pol[:e], hist


@numba.njit(cache=True, nogil=True)
def counting_sort(src, off, pol, hist, t0, dt, npix, width, batch):
    """Pass 3: the events sorted by (batch, offset), stable, as x, y int16, t int64, p int8,
    and the (batch + 1,) start index of every batch element's stream."""
    for i in range(1, hist.shape[0]):
        hist[i] += hist[i - 1]
    starts = np.empty(batch + 1, np.int64)
    for b in range(batch + 1):
        starts[b] = hist[b * (dt + 1)]
    n = src.shape[0]
    x = np.empty(n, np.int16)
    y = np.empty(n, np.int16)
    t = np.empty(n, np.int64)
    p = np.empty(n, np.int8)
    inv_width = 1.0 / width
    for e in range(n):
        q = src[e]
        b = q // npix if batch > 1 else 0
        key = b * (dt + 1) + off[e]
        pos = hist[key]
        hist[key] = pos + 1
        local = q - b * npix
        row = int((local + 0.5) * inv_width)  # exact: never within 0.5/width of an integer
        x[pos] = local - row * width
        y[pos] = row
        t[pos] = t0 + off[e]
        p[pos] = pol[e]
    return x, y, t, p, starts
