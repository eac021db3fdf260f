"""Independent float64 NumPy references for the representation tests.

Written from the definitions (tent weights max(0, 1 − |t − k|), np.add.at scatters, explicit
searches), not from the library code, so the tests compare two separate implementations.
A stream is a tuple (x, y, t, p) of NumPy arrays; x and y may be floats (sub-pixel).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import torch

from evtransfer import Events

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
BACKENDS = ["torch"] + (["numba"] if importlib.util.find_spec("numba") else [])


def streams_of(events: list[Events]) -> list[tuple[np.ndarray, ...]]:
    return [(e.x, e.y, e.t, e.p) for e in events]


def random_events(rng: np.random.Generator, n: int, width: int = 23, height: int = 17,
                  span: int = 100_000, offset: int = 0) -> Events:
    """n uniform events over [offset, offset + span) µs on a width × height sensor."""
    t = np.sort(rng.integers(0, span, n)) + offset
    return Events(rng.integers(0, width, n), rng.integers(0, height, n), t,
                  rng.choice([-1, 1], n), width, height)


def assert_close(ours: torch.Tensor, ref: np.ndarray, scale: float = 1.0) -> None:
    """ours (float32) equals ref (float64) within rtol 1e-5 and atol 1e-5 · max(1, scale)."""
    assert ours.dtype == torch.float32
    got = ours.detach().cpu().numpy().astype(np.float64)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * max(1.0, scale))


def _normalised(t: np.ndarray, top: float) -> np.ndarray:
    span = float(t.max() - t.min())
    if span == 0:
        return np.zeros(len(t))
    return top * (t - t.min()).astype(np.float64) / span


def _pixel_weights(x: np.ndarray, size: int):
    """(column, weight) pairs of the bilinear split of coordinates x (exact for integers)."""
    x = x.astype(np.float64)
    pairs = []
    for column in (np.floor(x), np.floor(x) + 1):
        weight = np.maximum(0.0, 1.0 - np.abs(x - column))
        weight = np.where((column >= 0) & (column < size), weight, 0.0)
        pairs.append((np.clip(column, 0, size - 1).astype(np.int64), weight))
    return pairs


def voxel(streams, width, height, bins, split=False, normalize=False) -> np.ndarray:
    channels = 2 * bins if split else bins
    out = np.zeros((len(streams), channels, height, width))
    for k, (x, y, t, p) in enumerate(streams):
        if not len(t):
            continue
        t_norm = _normalised(t, bins - 1)
        for j in range(bins):
            tent = np.maximum(0.0, 1.0 - np.abs(t_norm - j))
            value = tent if split else tent * p
            channel = np.where(p > 0, j, bins + j) if split else np.full(len(t), j)
            for cx, wx in _pixel_weights(x, width):
                for cy, wy in _pixel_weights(y, height):
                    np.add.at(out[k], (channel, cy, cx), value * wx * wy)
    if normalize:
        for k in range(len(streams)):
            out[k] = normalize_nonzero(out[k])
    return out


def normalize_nonzero(grid: np.ndarray) -> np.ndarray:
    grid = grid.copy()
    mask = grid != 0
    values = grid[mask]
    if values.size == 0:
        return grid
    mean = values.mean()
    std = values.std(ddof=1) if values.size > 1 else 0.0
    grid[mask] = (values - mean) / std if std > 0 else values - mean
    return grid


def histogram(streams, width, height) -> np.ndarray:
    out = np.zeros((len(streams), 2, height, width))
    for k, (x, y, _, p) in enumerate(streams):
        np.add.at(out[k], ((p > 0).astype(int), y.astype(int), x.astype(int)), 1.0)
    return out


def stacked(streams, width, height, windows, per_window) -> np.ndarray:
    out = np.zeros((len(streams), 2 * windows, height, width))
    for k, (x, y, _, p) in enumerate(streams):
        n = len(x)
        if n >= windows * per_window:
            first, size = n - windows * per_window, per_window
        else:
            first, size = 0, n // windows
        for w in range(windows):
            sl = slice(first + w * size, first + (w + 1) * size)
            np.add.at(out[k], (2 * w + (p[sl] > 0).astype(int), y[sl].astype(int),
                               x[sl].astype(int)), 1.0)
    return out


def time_surface(streams, width, height, tau, refs=None) -> np.ndarray:
    out = np.zeros((len(streams), 2, height, width))
    for k, (x, y, t, p) in enumerate(streams):
        if not len(t):
            continue
        last = np.full((2, height, width), -np.inf)
        np.maximum.at(last, ((p > 0).astype(int), y.astype(int), x.astype(int)),
                      t.astype(np.float64))
        ref = float(t.max()) if refs is None else float(refs[k])
        seen = np.isfinite(last)
        out[k][seen] = np.exp(-(ref - last[seen]) / tau)
    return out


def evsegnet(streams, width, height) -> np.ndarray:
    out = np.zeros((len(streams), 6, height, width))
    for k, (x, y, t, p) in enumerate(streams):
        if not len(t):
            continue
        t_norm = _normalised(t, 1.0)
        for pol, (count_ch, mean_ch, std_ch) in ((1, (0, 2, 3)), (-1, (1, 4, 5))):
            sel = p == pol
            where = (y[sel].astype(int), x[sel].astype(int))
            n = np.zeros((height, width))
            s1 = np.zeros((height, width))
            s2 = np.zeros((height, width))
            np.add.at(n, where, 1.0)
            np.add.at(s1, where, t_norm[sel])
            np.add.at(s2, where, t_norm[sel] ** 2)
            mean = np.divide(s1, n, out=np.zeros_like(s1), where=n > 0)
            square = np.divide(s2, n, out=np.zeros_like(s2), where=n > 0)
            out[k, count_ch], out[k, mean_ch] = n, mean
            out[k, std_ch] = np.sqrt(np.maximum(square - mean**2, 0.0))
    return out


def tfp(frames: np.ndarray, key: int, hw: int, scale: float = 1.0) -> np.ndarray:
    return scale * frames[key - hw : key + hw + 1].astype(np.float64).mean(0)


def tfi(frames: np.ndarray, key: int, hw: int, scale: float = 1.0) -> np.ndarray:
    """Explicit search outward from the key frame, one frame offset at a time."""
    total, height, width = frames.shape
    back = np.full((height, width), -1)
    for d in range(hw, -1, -1):  # nearest offset written last
        if 0 <= key - d < total:
            back[frames[key - d] == 1] = d
    ahead = np.full((height, width), -1)
    for d in range(hw, 0, -1):
        if 0 <= key + d < total:
            ahead[frames[key + d] == 1] = d
    isi = np.where((back >= 0) & (ahead >= 0), back + ahead, 2 * hw)
    return scale / isi.astype(np.float64)
