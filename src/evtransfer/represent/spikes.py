"""Spike-camera representations around key frames: TFP, TFI and BiCross's ±1 frame stack.

All three read only the frames they need (a packed `Spikes` stream is unpacked frame by
frame, never whole) and accept several key frames at once. Frame indices count readout
frames from 0; `center` is a key frame index (use `Spikes.time_window` / `timestamps_us` to
go from µs to frames).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from evtransfer.events import Spikes
from evtransfer.represent._common import check_int

SpikesLike = Spikes | torch.Tensor


def tfp(
    spikes: SpikesLike,
    center: int | Sequence[int],
    half_window: int = 20,
    *,
    scale: float = 1.0,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Texture from playback: scale × the mean spike of the 2·half_window + 1 frames
    [center − half_window, center + half_window], as (H, W) float32 for one key frame or
    (K, H, W) for K of them, in [0, scale]. SpikeCV's `TFP` uses half_window 20 and scale
    255 (then casts to uint8); the window must lie inside the stream. `spikes`: a `Spikes`
    stream (packed or not) or a (T, H, W) uint8/bool tensor of 0/1.
    """
    hw = check_int("half_window", half_window, 0)
    factor = _check_scale(scale) / (2 * hw + 1)
    keys, single = _keys(center)
    total = _frame_count(spikes)
    if keys.min() - hw < 0 or keys.max() + hw >= total:
        raise ValueError(f"TFP window ±{hw} around key frames [{keys.min()}, {keys.max()}] "
                         f"leaves the stream of {total} frames")
    window = _windows(spikes, keys[:, None] + np.arange(-hw, hw + 1), device)
    out = window.sum(1, dtype=torch.int32).to(torch.float32) * factor
    return out[0] if single else out


def tfi(
    spikes: SpikesLike,
    center: int | Sequence[int],
    half_window: int = 20,
    *,
    scale: float = 1.0,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Texture from interval: scale / ISI per pixel, (H, W) float32 (or (K, H, W)).

    ISI (frames) is the gap between the pixel's last spike at or before the key frame,
    searched back to center − half_window, and its first spike after it, searched up to
    center + half_window (formats.md §7). When either side has no spike, ISI = 2·half_window
    (SpikeCV `TFI.spikes2frame`), so values lie in [scale / (2·half_window), scale]. Frames
    outside the stream count as spike-free. SpikeCV's single-frame search stops one frame
    short (center − half_window + 1) and skips frame 0; ours is symmetric. SpikeCV scales by
    255. `spikes` as in `tfp`.
    """
    hw = check_int("half_window", half_window, 1)
    factor = _check_scale(scale)
    keys, single = _keys(center)
    total = _frame_count(spikes)
    if keys.min() < 0 or keys.max() >= total:
        raise ValueError(f"key frames [{keys.min()}, {keys.max()}] outside the stream of "
                         f"{total} frames")
    window = _windows(spikes, keys[:, None] + np.arange(-hw, hw + 1), device)
    before = window[:, : hw + 1].flip(1)  # key frame first, then going back in time
    after = window[:, hw + 1 :]
    found = (before.amax(1) > 0) & (after.amax(1) > 0)
    gap = before.argmax(1) + after.argmax(1) + 1  # argmax finds the first spike
    isi = torch.where(found, gap, 2 * hw).to(torch.float32)
    out = factor / isi
    return out[0] if single else out


def spike_stack(
    spikes: SpikesLike,
    center: int | Sequence[int],
    frames: int = 128,
    *,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """(frames, H, W) float32 raw spike frames mapped to ±1 (2s − 1), or (K, frames, H, W).

    The frames are [center − frames // 2, center − frames // 2 + frames), which must lie
    inside the stream. BiCross feeds 128 such frames to its spike stem (the first 128 of a
    sample: center = 64). `spikes` as in `tfp`.
    """
    length = check_int("frames", frames, 1)
    keys, single = _keys(center)
    first = keys - length // 2
    total = _frame_count(spikes)
    if first.min() < 0 or first.max() + length > total:
        raise ValueError(f"{length} frames around key frames [{keys.min()}, {keys.max()}] "
                         f"leave the stream of {total} frames")
    window = _windows(spikes, first[:, None] + np.arange(length), device)
    out = window.to(torch.float32).mul_(2).sub_(1)
    return out[0] if single else out


def _check_scale(scale: float) -> float:
    value = float(scale)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    return value


def _keys(center: int | Sequence[int]) -> tuple[np.ndarray, bool]:
    """Key frames as (K,) int64 and whether a single int was given."""
    single = np.ndim(center) == 0
    keys = np.atleast_1d(np.asarray(center))
    if keys.size == 0 or keys.ndim != 1 or not np.issubdtype(keys.dtype, np.integer):
        raise ValueError(f"center must be an int or a non-empty sequence of ints, got {center!r}")
    return keys.astype(np.int64), single


def _frame_count(spikes: SpikesLike) -> int:
    if isinstance(spikes, Spikes):
        return len(spikes)
    if not isinstance(spikes, torch.Tensor):
        raise TypeError(f"spikes must be Spikes or a torch.Tensor, got {type(spikes).__name__}")
    if spikes.ndim != 3 or spikes.dtype not in (torch.uint8, torch.bool):
        raise ValueError(f"spike tensor must be (T, H, W) uint8 or bool, got "
                         f"{tuple(spikes.shape)} {spikes.dtype}")
    return int(spikes.shape[0])


def _windows(spikes: SpikesLike, index: np.ndarray, device) -> torch.Tensor:
    """(K, L, H, W) uint8 frames `index` (K, L); frames outside the stream are all zero."""
    flat = index.reshape(-1)
    inside = (flat >= 0) & (flat < _frame_count(spikes))
    needed, inverse = np.unique(flat[inside], return_inverse=True)
    frames = _load_frames(spikes, needed, device)
    out = torch.zeros((flat.size, *frames.shape[1:]), dtype=torch.uint8, device=frames.device)
    slots = torch.from_numpy(np.flatnonzero(inside)).to(frames.device)
    out[slots] = frames[torch.from_numpy(inverse.reshape(-1)).to(frames.device)]
    return out.view(*index.shape, *frames.shape[1:])


def _load_frames(spikes: SpikesLike, needed: np.ndarray, device) -> torch.Tensor:
    """(U, H, W) uint8 0/1 frames `needed` on `device` (default: the tensor's, or CPU)."""
    if isinstance(spikes, Spikes):
        data = spikes.data[needed]
        if spikes.packed:
            data = np.unpackbits(data, axis=-1, bitorder="little")[..., : spikes.width]
        return torch.from_numpy(np.ascontiguousarray(data)).to(device or "cpu")
    frames = spikes.index_select(0, torch.from_numpy(needed).to(spikes.device))
    frames = frames.to(device or spikes.device)
    if frames.dtype == torch.bool:
        return frames.to(torch.uint8)
    if frames.numel() and int(frames.max()) > 1:
        raise ValueError(f"spike tensor must hold 0/1, found {int(frames.max())}")
    return frames
