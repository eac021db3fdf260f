"""Vectorised NumPy decoders for Prophesee EVT 2.0 (32-bit) and EVT 3.0 (16-bit) words.

Both formats carry state in earlier words (the time base; for EVT 3.0 also y, the vector
base x and the polarity). A decoder takes a chunk of words plus the state left by the
previous chunk and returns the chunk's events and the state after it, so any chunk can be
decoded alone once its starting state is known. Stateful scans become prefix sums: for every
word, "the value of the last word of type T before me" is `values[cumsum(is_T)]` with the
carried state in front.

The rules follow Prophesee's reference decoder (docs.prophesee.ai, encoding formats; the
EVT 3.0 sample decoder `metavision_evt3_raw_file_decoder.cpp`):
- words before the first TIME_HIGH are skipped (there is no time base yet);
- TIME_HIGH counts a wrap of the time base only when it falls by at least its full range
  minus 10 steps; a smaller fall moves time back (which our readers then reject);
- TIME_HIGH sets the time to its base; TIME_LOW sets it to base + low. A TIME_LOW that steps
  back never advances the base (expelliarmus 1.1.12 does, and stretches time: formats.md §5);
- EVT 3.0 VECT_12 / VECT_8 emit one event per set validity bit at base x + bit, then move the
  base x by 12 / 8; ADDR_X emits one event with its own x and polarity.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from evtransfer.io._chunked import first_decrease

# Layout of the int64 state vector shared with the numba kernels.
STATE_SIZE = 8
STARTED, TH, LOOPS, CUR, Y, BX, POL, LAST_T = range(STATE_SIZE)

EVT2_KNOWN = np.zeros(16, dtype=np.bool_)
EVT2_KNOWN[[0x0, 0x1, 0x8, 0xA, 0xE, 0xF]] = True
EVT3_KNOWN = np.zeros(16, dtype=np.bool_)
EVT3_KNOWN[[0x0, 0x2, 0x3, 0x4, 0x5, 0x6, 0x7, 0x8, 0xA, 0xE, 0xF]] = True
EVT2_WRAP = (1 << 28) - 1 - 10  # TIME_HIGH fall (in its own units) that means a wrap
EVT3_WRAP = (1 << 12) - 1 - 10

_POPCOUNT = np.array([bin(i).count("1") for i in range(1 << 12)], dtype=np.int64)
_BITS12 = np.arange(12, dtype=np.uint16)


class Scan(NamedTuple):
    """Index facts for one chunk: event count, first/last t (µs), the state after it, and
    the first problem found as (word offset in the chunk, message), or None."""

    count: int
    t_first: int
    t_last: int
    state: np.ndarray
    error: tuple[int, str] | None


def new_state() -> np.ndarray:
    """The decoder state at the start of a file: nothing seen yet."""
    state = np.zeros(STATE_SIZE, dtype=np.int64)
    state[LAST_T] = np.iinfo(np.int64).min
    return state


def _unknown(types: np.ndarray, known: np.ndarray, bits: int) -> tuple[int, str] | None:
    bad = np.flatnonzero(~known[types])
    if not bad.size:
        return None
    i = int(bad[0])
    return i, f"reserved {bits}-bit word type 0x{int(types[i]):X} ({bad.size} such words)"


def _order_error(t: np.ndarray, last_t: int, where: np.ndarray) -> tuple[int, str] | None:
    found = first_decrease(t, last_t)
    if found is None:
        return None
    i, prev, cur = found
    return int(where[i]), f"timestamps decrease: {prev} -> {cur} µs"


def _skip_to_time_high(words: np.ndarray, types: np.ndarray, state: np.ndarray,
                       shift: int, mask: int) -> int:
    """Offset of the first word to decode; starts the time base at the first TIME_HIGH."""
    if state[STARTED]:
        return 0
    th_pos = np.flatnonzero(types == 0x8)
    if not th_pos.size:
        return words.size
    begin = int(th_pos[0])
    state[STARTED] = 1
    state[TH] = int(words[begin]) & mask
    state[LOOPS] = 0
    state[CUR] = state[TH] << shift
    return begin


def _bases(th: np.ndarray, state: np.ndarray, wrap: int, th_bits: int, shift: int) -> np.ndarray:
    """Full time bases (µs) of the carried state then of each TIME_HIGH value `th`."""
    prev = np.concatenate(([state[TH]], th[:-1]))
    loops = state[LOOPS] + np.cumsum(prev - th >= wrap)
    first = (state[TH] + (state[LOOPS] << th_bits)) << shift
    bases = np.concatenate(([first], (th + (loops << th_bits)) << shift))
    if th.size:
        state[TH] = th[-1]
        state[LOOPS] = loops[-1]
    return bases


# --- EVT 2.0 ---------------------------------------------------------------------------
class _Evt2Core(NamedTuple):
    begin: int
    cd_pos: np.ndarray
    t: np.ndarray


def _evt2_core(words: np.ndarray, state: np.ndarray) -> tuple[_Evt2Core, np.ndarray]:
    """CD word offsets (from `begin`) and their times; also the word types from `begin`."""
    types = (words >> 28).astype(np.uint8)
    begin = _skip_to_time_high(words, types, state, 6, 0x0FFFFFFF)
    words, types = words[begin:], types[begin:]
    is_th = types == 0x8
    th = (words[is_th] & 0x0FFFFFFF).astype(np.int64)
    bases = _bases(th, state, EVT2_WRAP, 28, 6)
    cd_pos = np.flatnonzero(types <= 0x1)
    cd = words[cd_pos]
    t = bases[np.cumsum(is_th, dtype=np.int64)[cd_pos]] + ((cd >> 22) & 0x3F).astype(np.int64)
    return _Evt2Core(begin, cd_pos, t), types


def scan_evt2(words: np.ndarray, state: np.ndarray) -> Scan:
    """Index facts for a chunk of EVT 2.0 words (uint32) starting in `state`."""
    state = state.copy()
    error = _unknown((words >> 28).astype(np.uint8), EVT2_KNOWN, 32)
    core, _ = _evt2_core(words, state)
    order = _order_error(core.t, int(state[LAST_T]), core.cd_pos + core.begin)
    error = min((e for e in (error, order) if e is not None), default=None)
    if not core.t.size:
        return Scan(0, 0, 0, state, error)
    state[LAST_T] = core.t[-1]
    return Scan(int(core.t.size), int(core.t[0]), int(core.t[-1]), state, error)


def decode_evt2(words: np.ndarray, state: np.ndarray):
    """x, y (int16), t (int64 µs), p (int8 ±1) of the CD events in a chunk of EVT 2.0 words."""
    state = state.copy()
    core, types = _evt2_core(words, state)
    cd = words[core.begin:][core.cd_pos]
    x = ((cd >> 11) & 0x7FF).astype(np.int16)
    y = (cd & 0x7FF).astype(np.int16)
    p = (types[core.cd_pos].astype(np.int8) << 1) - 1
    return x, y, core.t, p


# --- EVT 3.0 ---------------------------------------------------------------------------
class _Evt3Core(NamedTuple):
    begin: int
    words: np.ndarray  # words from `begin` on
    types: np.ndarray
    ev_pos: np.ndarray  # offsets (from begin) of ADDR_X / VECT_12 / VECT_8 words
    t_word: np.ndarray  # time of each of those words, µs
    valid: np.ndarray  # validity bits of each (1 for ADDR_X)


_EV_WORD = np.zeros(16, dtype=np.bool_)
_EV_WORD[[0x2, 0x4, 0x5]] = True


def _evt3_core(words: np.ndarray, state: np.ndarray) -> _Evt3Core:
    types = (words >> 12).astype(np.uint8)
    begin = _skip_to_time_high(words, types, state, 12, 0xFFF)
    words, types = words[begin:], types[begin:]
    is_th = types == 0x8
    bases = _bases((words[is_th] & 0xFFF).astype(np.int64), state, EVT3_WRAP, 12, 12)
    is_time = is_th | (types == 0x6)
    time_pos = np.flatnonzero(is_time)
    time_is_th = is_th[time_pos]
    low = np.where(time_is_th, 0, words[time_pos] & 0xFFF).astype(np.int64)
    times = np.concatenate(([state[CUR]], bases[np.cumsum(time_is_th)] + low))
    ev_pos = np.flatnonzero(_EV_WORD[types])
    ev_words = words[ev_pos]
    ev_types = types[ev_pos]
    t_word = times[np.cumsum(is_time, dtype=np.int64)[ev_pos]]
    valid = np.where(ev_types == 0x2, 1, ev_words & np.where(ev_types == 0x4, 0xFFF, 0xFF))
    state[CUR] = times[-1]
    return _Evt3Core(begin, words, types, ev_pos, t_word, valid.astype(np.int64))


def _evt3_tail_state(core: _Evt3Core, state: np.ndarray) -> None:
    """y, base x and polarity after the chunk (the last ADDR_Y / VECT_BASE_X + vectors)."""
    words, types = core.words, core.types
    y_pos = np.flatnonzero(types == 0x0)
    if y_pos.size:
        state[Y] = int(words[y_pos[-1]]) & 0x7FF
    vb_pos = np.flatnonzero(types == 0x3)
    after = 0
    if vb_pos.size:
        after = int(vb_pos[-1]) + 1
        state[BX] = int(words[vb_pos[-1]]) & 0x7FF
        state[POL] = (int(words[vb_pos[-1]]) >> 11) & 1
    tail = types[after:]
    state[BX] += 12 * int(np.count_nonzero(tail == 0x4)) + 8 * int(np.count_nonzero(tail == 0x5))


def scan_evt3(words: np.ndarray, state: np.ndarray) -> Scan:
    """Index facts for a chunk of EVT 3.0 words (uint16) starting in `state`."""
    state = state.copy()
    error = _unknown((words >> 12).astype(np.uint8), EVT3_KNOWN, 16)
    core = _evt3_core(words, state)
    _evt3_tail_state(core, state)
    counts = _POPCOUNT[core.valid]
    emitting = counts > 0
    t = core.t_word[emitting]
    order = _order_error(t, int(state[LAST_T]), core.ev_pos[emitting] + core.begin)
    error = min((e for e in (error, order) if e is not None), default=None)
    if not t.size:
        return Scan(0, 0, 0, state, error)
    state[LAST_T] = t[-1]
    return Scan(int(counts.sum()), int(t[0]), int(t[-1]), state, error)


def _evt3_bases(core: _Evt3Core, state: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """y, vector base x and vector polarity in force at each event word."""
    words, types = core.words, core.types
    is_y = types == 0x0
    ys = np.concatenate(([state[Y]], (words[is_y] & 0x7FF).astype(np.int64)))
    y_word = ys[np.cumsum(is_y, dtype=np.int64)[core.ev_pos]]
    rel_pos = np.flatnonzero(_EV_WORD[types] | (types == 0x3))
    rel_types = types[rel_pos]
    rel_words = words[rel_pos].astype(np.int64)
    step = np.where(rel_types == 0x4, 12, np.where(rel_types == 0x5, 8, 0))
    before = np.cumsum(step) - step
    is_vb = rel_types == 0x3
    seg = np.cumsum(is_vb)
    anchor_x = np.concatenate(([state[BX]], rel_words[is_vb] & 0x7FF))
    anchor_step = np.concatenate(([0], before[is_vb]))
    anchor_p = np.concatenate(([state[POL]], (rel_words[is_vb] >> 11) & 1))
    is_ev = ~is_vb
    base_x = (anchor_x[seg] + before - anchor_step[seg])[is_ev]
    return y_word, base_x, anchor_p[seg][is_ev]


def decode_evt3(words: np.ndarray, state: np.ndarray):
    """x, y (int16), t (int64 µs), p (int8 ±1) of the CD events in a chunk of EVT 3.0 words.

    x may exceed 2047 on corrupt input (a vector past the edge); the caller's sensor check
    rejects it, so values are returned as int64 before that check would be lost to int16.
    """
    state = state.copy()
    core = _evt3_core(words, state)
    y_word, vec_x, vec_p = _evt3_bases(core, state)
    ev_words = core.words[core.ev_pos].astype(np.int64)
    single = core.types[core.ev_pos] == 0x2
    base = np.where(single, ev_words & 0x7FF, vec_x)
    pol = np.where(single, (ev_words >> 11) & 1, vec_p)
    rows, bits = np.nonzero((core.valid[:, None] >> _BITS12) & 1)
    x = base[rows] + bits
    p = (pol[rows].astype(np.int8) << 1) - 1
    return x, y_word[rows], core.t_word[rows], p
