"""Optional numba kernels for the Prophesee decoders (imported only if numba is installed).

They apply exactly the rules of `_evt_numpy` (see its docstring) in one sequential pass and
share its state layout, so either engine can continue a chunk the other indexed.

- `*_scan(words, state)` is the index pass: it returns (events, t_first, t_last, ok) and
  updates `state` in place. It only flags a problem (a reserved word type or a decreasing
  timestamp) with ok = False; the caller then runs the NumPy scan of that chunk to name it.
  Time order is tracked without branches (`bad |= t < last`), which keeps it cheap.
- `*_decode(words, state, x, y, t, p, width, height)` fills arrays of exactly the chunk's
  event count (a vector visits only its set bits, through a lowest-set-bit table) and
  returns (events, error_code, error_offset): 3 x outside the sensor (EVT 3.0 vectors can
  run past it), 4 y outside the sensor, 5 (DAT) a polarity field other than 0 or 1.
"""

from __future__ import annotations

import numba
import numpy as np

from evtransfer.io._evt_numpy import (
    BX,
    CUR,
    EVT2_KNOWN,
    EVT2_WRAP,
    EVT3_KNOWN,
    EVT3_WRAP,
    LAST_T,
    LOOPS,
    POL,
    STARTED,
    TH,
    Y,
)

_KNOWN2 = EVT2_KNOWN.copy()
_KNOWN3 = EVT3_KNOWN.copy()
# Small tables (uint8) so that they stay in the L1/L2 cache.
_POPCOUNT = np.array([bin(i).count("1") for i in range(1 << 12)], dtype=np.uint8)
_LOWEST_BIT = np.array([(i & -i).bit_length() - 1 if i else 0 for i in range(1 << 12)],
                       dtype=np.uint8)
# Events emitted by each 16-bit EVT 3.0 word, and the base-x step of each word type.
_EMITS = np.zeros(1 << 16, dtype=np.uint8)
_EMITS[0x2000:0x3000] = 1
_EMITS[0x4000:0x5000] = _POPCOUNT
_EMITS[0x5000:0x6000] = np.tile(_POPCOUNT[:256], 16)
_STEP = np.zeros(16, dtype=np.int64)
_STEP[0x4], _STEP[0x5] = 12, 8


@numba.njit(cache=True, nogil=True)
def _evt2_start(words, state):  # pragma: no cover - compiled
    """Offset of the first word to decode (the first TIME_HIGH if the state has not started;
    words.size if there is none, -1 after a reserved word type); starts the state there."""
    if state[STARTED]:
        return 0
    for i in range(words.size):
        kind = words[i] >> 28
        if kind == 0x8:
            state[STARTED] = 1
            state[TH] = np.int64(words[i] & 0x0FFFFFFF)
            state[LOOPS] = 0
            return i
        if not _KNOWN2[kind]:
            return -1
    return words.size


@numba.njit(cache=True, nogil=True)
def evt2_scan(words, state):  # pragma: no cover - compiled
    start = _evt2_start(words, state)
    if start < 0:
        return 0, 0, state[LAST_T], False
    th = state[TH]
    loops = state[LOOPS]
    last = state[LAST_T]
    base = (th + (loops << 28)) << 6
    n = 0
    bad = False
    for i in range(start, words.size):
        w = words[i]
        kind = w >> 28
        if kind <= 0x1:
            tt = base + ((w >> 22) & 0x3F)
            bad |= tt < last
            last = tt
            n += 1
        elif kind == 0x8:
            new_th = np.int64(w & 0x0FFFFFFF)
            if th - new_th >= EVT2_WRAP:
                loops += 1
            th = new_th
            base = (th + (loops << 28)) << 6
        elif not _KNOWN2[kind]:
            return n, 0, last, False
    t_first = _evt2_first_time(words, start, state[TH], state[LOOPS]) if n else 0
    state[TH] = th
    state[LOOPS] = loops
    state[LAST_T] = last
    return n, t_first, last, not bad


@numba.njit(cache=True, nogil=True)
def _evt2_first_time(words, start, th, loops):  # pragma: no cover - compiled
    """Time of the first CD word from `start` on, with the time base given (or -1)."""
    for i in range(start, words.size):
        w = words[i]
        kind = w >> 28
        if kind <= 0x1:
            return ((th + (loops << 28)) << 6) + ((w >> 22) & 0x3F)
        if kind == 0x8:
            new_th = np.int64(w & 0x0FFFFFFF)
            if th - new_th >= EVT2_WRAP:
                loops += 1
            th = new_th
    return -1


@numba.njit(cache=True, nogil=True)
def evt2_decode(words, state, x, y, t, p, width, height):  # pragma: no cover - compiled
    state = state.copy()
    start = _evt2_start(words, state)
    if start < 0:
        start = words.size
    th = state[TH]
    loops = state[LOOPS]
    base = (th + (loops << 28)) << 6
    n = 0
    for i in range(start, words.size):
        w = words[i]
        kind = w >> 28
        if kind <= 0x1:
            xx = (w >> 11) & 0x7FF
            yy = w & 0x7FF
            if xx >= width:
                return n, 3, i
            if yy >= height:
                return n, 4, i
            x[n] = xx
            y[n] = yy
            t[n] = base + ((w >> 22) & 0x3F)
            p[n] = 2 * np.int64(kind) - 1
            n += 1
        elif kind == 0x8:
            new_th = np.int64(w & 0x0FFFFFFF)
            if th - new_th >= EVT2_WRAP:
                loops += 1
            th = new_th
            base = (th + (loops << 28)) << 6
    return n, 0, -1


@numba.njit(cache=True, nogil=True)
def evt3_scan(words, state):  # pragma: no cover - compiled
    started = state[STARTED]
    th = state[TH]
    loops = state[LOOPS]
    cur = state[CUR]
    yy = state[Y]
    bx = state[BX]
    pol = state[POL]
    last = state[LAST_T]
    n = 0
    t_first = 0
    bad = False
    for i in range(words.size):
        w = np.int64(words[i])
        kind = w >> 12
        if not started:
            if not _KNOWN3[kind]:
                return n, t_first, last, False
            if kind != 0x8:
                continue
            started = 1
            th = w & 0xFFF
            loops = 0
        emits = np.int64(_EMITS[w])
        if emits:
            bad |= cur < last
            if n == 0:
                t_first = cur
            last = cur
            n += emits
        elif kind == 0x6:
            cur = (th << 12) + (loops << 24) + (w & 0xFFF)
        elif kind == 0x0:
            yy = w & 0x7FF
        elif kind == 0x3:
            pol = (w >> 11) & 1
            bx = w & 0x7FF
        elif kind == 0x8:
            new_th = w & 0xFFF
            if th - new_th >= EVT3_WRAP:
                loops += 1
            th = new_th
            cur = (th << 12) + (loops << 24)
        elif not _KNOWN3[kind]:
            return n, t_first, last, False
        bx += _STEP[kind]
    state[STARTED] = started
    state[TH] = th
    state[LOOPS] = loops
    state[CUR] = cur
    state[Y] = yy
    state[BX] = bx
    state[POL] = pol
    state[LAST_T] = last
    return n, t_first, last, not bad


@numba.njit(cache=True, nogil=True)
def evt3_decode(words, state, x, y, t, p, width, height):  # pragma: no cover - compiled
    started = state[STARTED]
    th = state[TH]
    loops = state[LOOPS]
    cur = state[CUR]
    yy = state[Y]
    bx = state[BX]
    pol = state[POL]
    n = 0
    for i in range(words.size):
        w = np.int64(words[i])
        kind = w >> 12
        if not started:
            if kind != 0x8:
                continue
            started = 1
            th = w & 0xFFF
            loops = 0
        if kind == 0x2 or kind == 0x4 or kind == 0x5:
            if kind == 0x2:
                valid, size, base, sign = 1, 1, w & 0x7FF, 2 * ((w >> 11) & 1) - 1
            else:
                size = 12 if kind == 0x4 else 8
                valid, base, sign = w & ((1 << size) - 1), bx, 2 * pol - 1
                bx += size
            if valid:
                room = width - base
                if room < size and (valid >> max(room, 0)) > 0:
                    return n, 3, i
                if yy >= height:
                    return n, 4, i
                while valid:
                    x[n] = base + np.int64(_LOWEST_BIT[valid])
                    y[n] = yy
                    t[n] = cur
                    p[n] = sign
                    n += 1
                    valid &= valid - 1
        elif kind == 0x6:
            cur = (th << 12) + (loops << 24) + (w & 0xFFF)
        elif kind == 0x0:
            yy = w & 0x7FF
        elif kind == 0x3:
            pol = (w >> 11) & 1
            bx = w & 0x7FF
        elif kind == 0x8:
            new_th = w & 0xFFF
            if th - new_th >= EVT3_WRAP:
                loops += 1
            th = new_th
            cur = (th << 12) + (loops << 24)
    return n, 0, -1


@numba.njit(cache=True, nogil=True)
def dat_scan(records, last):  # pragma: no cover - compiled
    """True when the t column (0) of (N, 2) u32 records never falls below its predecessor."""
    bad = False
    for i in range(records.shape[0]):
        tt = np.int64(records[i, 0])
        bad |= tt < last
        last = tt
    return not bad


@numba.njit(cache=True, nogil=True)
def dat_decode(records, x, y, t, p, width, height):  # pragma: no cover - compiled
    for i in range(records.shape[0]):
        w = records[i, 1]
        xx = w & 0x3FFF
        yy = (w >> 14) & 0x3FFF
        pp = w >> 28
        if xx >= width:
            return i, 3, i
        if yy >= height:
            return i, 4, i
        if pp > 1:
            return i, 5, i
        x[i] = xx
        y[i] = yy
        t[i] = records[i, 0]
        p[i] = 2 * np.int64(pp) - 1
    return records.shape[0], 0, -1
