"""Test-only encoders and reference decoders, written from the format descriptions.

They follow /work/shared/formats.md and the Prophesee format pages word by word, with plain
loops (fixtures are small), independently of the vectorised decoders they check.
"""

from __future__ import annotations

import importlib.util

import numpy as np

ENGINES = ["numpy"] + (["numba"] if importlib.util.find_spec("numba") else [])


# --- comparing ----------------------------------------------------------------------
def table(ev) -> np.ndarray:
    """(N, 4) x, y, p01, t, the layout of the reference decoders."""
    return np.stack([ev.x, ev.y, (ev.p > 0), ev.t], axis=1).astype(np.int64)


def check_streaming(reader, full, rng: np.random.Generator) -> None:
    """Windows, last-n and index ranges agree with slicing the whole decode."""
    lo, hi = int(full.t[0]) - 5, int(full.t[-1]) + 5
    for _ in range(12):
        t0, t1 = np.sort(rng.integers(lo, hi, size=2))
        np.testing.assert_array_equal(table(reader.read_window(t0, t1)),
                                      table(full.time_window(t0, t1)))
        n = int(rng.integers(0, len(full) + 3))
        np.testing.assert_array_equal(table(reader.read_last(t1, n)),
                                      table(full.last_before(t1, n)))
        i0, i1 = np.sort(rng.integers(0, len(full) + 1, size=2))
        np.testing.assert_array_equal(table(reader.read_index(i0, i1)), table(full[i0:i1]))


# --- events ----------------------------------------------------------------------------
def random_events(rng: np.random.Generator, n_bursts: int, width: int, height: int,
                  t0: int = 0, max_gap: int = 300):
    """Sorted events in bursts sharing t, y, p with increasing x (vector-friendly)."""
    xs, ys, ts, ps = [], [], [], []
    t = t0
    for _ in range(n_bursts):
        t += int(rng.integers(0, max_gap))
        size = int(rng.integers(1, 14))
        start = int(rng.integers(0, width))
        span = min(width - start, int(rng.integers(size, 30)))
        burst = np.sort(rng.choice(span, size=min(size, span), replace=False)) + start
        y, p = int(rng.integers(0, height)), int(rng.choice([-1, 1]))
        for x in burst:
            xs.append(int(x))
            ys.append(y)
            ts.append(t)
            ps.append(p)
    return (np.array(xs, np.int64), np.array(ys, np.int64), np.array(ts, np.int64),
            np.array(ps, np.int64))


def header(*lines: str) -> bytes:
    """A Prophesee `%` text header."""
    return b"".join(f"% {line}\n".encode() for line in lines)


# --- N-MNIST ---------------------------------------------------------------------------
def encode_nmnist(x, y, t, p, overflow_before=()) -> bytes:
    """40-bit records; an overflow marker (y = 240) goes before each listed event index,
    and every later event stores t - 2^13 per marker so that decoding restores t."""
    out = bytearray()
    markers = 0
    for i in range(len(t)):
        if i in overflow_before:
            out += bytes([0, 240, 0, 0, 0])
            markers += 1
        stored = int(t[i]) - 8192 * markers
        if not 0 <= stored < 1 << 23:
            raise ValueError(f"fixture timestamp {stored} does not fit in 23 bits")
        out += bytes([int(x[i]), int(y[i]), ((p[i] > 0) << 7) | (stored >> 16),
                      (stored >> 8) & 0xFF, stored & 0xFF])
    return bytes(out)


# --- DAT -------------------------------------------------------------------------------
def encode_dat(t, x, y, p, lines=("Data file containing Event2D events.", "Version 2"),
               ev_type: int = 0, ev_size: int = 8) -> bytes:
    """`%` header, event type and size bytes, then (u32 t, u32 x | y << 14 | p << 28)."""
    out = bytearray(header(*lines) + bytes([ev_type, ev_size]))
    for i in range(len(t)):
        w = int(x[i]) | (int(y[i]) << 14) | (int(p[i] > 0) << 28)
        out += int(t[i]).to_bytes(4, "little") + w.to_bytes(4, "little")
    return bytes(out)


# --- EVT 2.0 ---------------------------------------------------------------------------
def encode_evt2(x, y, t, p, rng: np.random.Generator | None = None) -> bytes:
    """TIME_HIGH (t >> 6) whenever it changes, then CD words; with `rng`, also sprinkles
    EXT_TRIGGER / OTHERS / CONTINUED words, which decoders must skip."""
    words = []
    high = None
    for i in range(len(t)):
        if int(t[i]) >> 6 != high:
            high = int(t[i]) >> 6
            words.append((0x8 << 28) | (high & 0x0FFFFFFF))
        if rng is not None and rng.random() < 0.1:
            words.append((int(rng.choice([0xA, 0xE, 0xF])) << 28) | int(rng.integers(0, 1 << 28)))
        words.append((int(p[i] > 0) << 28) | ((int(t[i]) & 0x3F) << 22) | (int(x[i]) << 11)
                     | int(y[i]))
    return np.array(words, dtype="<u4").tobytes()


def ref_decode_evt2(words) -> np.ndarray:
    """(N, 4) x, y, p01, t by the spec, one word at a time."""
    out, started, high, loops = [], False, 0, 0
    for w in (int(v) for v in words):
        kind = w >> 28
        if kind == 0x8:
            new = w & 0x0FFFFFFF
            if started and high - new >= (1 << 28) - 11:
                loops += 1
            started, high = True, new
        elif kind <= 1 and started:
            t = ((high + (loops << 28)) << 6) + ((w >> 22) & 0x3F)
            out.append(((w >> 11) & 0x7FF, w & 0x7FF, kind, t))
    return np.array(out, dtype=np.int64).reshape(-1, 4)


# --- EVT 3.0 ---------------------------------------------------------------------------
def encode_evt3(x, y, t, p, rng: np.random.Generator) -> bytes:
    """TIME_HIGH / TIME_LOW / ADDR_Y as they change, then each run of events sharing t, y, p
    either as ADDR_X words or as VECT_BASE_X + VECT_12 / VECT_8 masks (chosen at random;
    VECT_8's unused bits get garbage), with CONTINUED / trigger words sprinkled in."""
    words = []
    high = low = row = None
    i, n = 0, len(t)
    while i < n:
        ti, yi, pol = int(t[i]), int(y[i]), int(p[i] > 0)
        if ti >> 12 != high:
            high, low = ti >> 12, None
            words.append(0x8000 | (high & 0xFFF))
        if ti & 0xFFF != low:
            low = ti & 0xFFF
            words.append(0x6000 | low)
        if yi != row:
            row = yi
            words.append(yi)
        j = i + 1
        while j < n and t[j] == ti and y[j] == yi and (p[j] > 0) == pol and x[j] > x[j - 1]:
            j += 1
        run = [int(v) for v in x[i:j]]
        if len(run) == 1 or run[-1] - run[0] > 40 or rng.random() < 0.25:
            words += [0x2000 | (pol << 11) | v for v in run]
        else:
            words += _vectors(run, pol, rng)
        if rng.random() < 0.1:
            words.append((int(rng.choice([0x7, 0xA, 0xE, 0xF])) << 12) | int(rng.integers(0, 4096)))
        i = j
    return np.array(words, dtype="<u2").tobytes()


def _vectors(run: list[int], pol: int, rng: np.random.Generator) -> list[int]:
    words = [0x3000 | (pol << 11) | run[0]]
    base, pending = run[0], set(run)
    while pending:
        size = 12 if rng.random() < 0.5 else 8
        mask = sum(1 << (v - base) for v in pending if base <= v < base + size)
        pending -= {v for v in pending if base <= v < base + size}
        if size == 12:
            words.append(0x4000 | mask)
        else:
            words.append(0x5000 | (int(rng.integers(0, 16)) << 8) | mask)
        base += size
    return words


def ref_decode_evt3(words) -> np.ndarray:
    """(N, 4) x, y, p01, t by the Prophesee EVT 3.0 rules, one word at a time."""
    out = []
    started, high, loops, now, row, base, pol = False, 0, 0, 0, 0, 0, 0
    for w in (int(v) for v in words):
        kind = w >> 12
        if not started:
            if kind != 0x8:
                continue
            started, high, now = True, w & 0xFFF, (w & 0xFFF) << 12
        if kind == 0x2:
            out.append((w & 0x7FF, row, (w >> 11) & 1, now))
        elif kind in (0x4, 0x5):
            size = 12 if kind == 0x4 else 8
            valid = w & ((1 << size) - 1)
            out += [(base + b, row, pol, now) for b in range(size) if valid >> b & 1]
            base += size
        elif kind == 0x0:
            row = w & 0x7FF
        elif kind == 0x3:
            pol, base = (w >> 11) & 1, w & 0x7FF
        elif kind == 0x8:
            new = w & 0xFFF
            if high - new >= 4095 - 10:
                loops += 1
            high, now = new, (new << 12) + (loops << 24)
        elif kind == 0x6:
            now = (high << 12) + (loops << 24) + (w & 0xFFF)
    return np.array(out, dtype=np.int64).reshape(-1, 4)
