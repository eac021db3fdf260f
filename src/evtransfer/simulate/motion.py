"""Camera motion for still images, warping, and frame interpolation for low-rate video.

One labeled image becomes a pseudo-video: `random_motion` samples a smooth camera path as one
3×3 homography per frame, and `warp` applies the same homographies to the image (bilinear), its
label (nearest, out-of-view = ignore index) and its depth (bilinear, invalid where any
neighbour is invalid or out of view), so every synthetic event window has its label.
`interpolate_frames` raises the frame rate of a video before event simulation; log-linear
interpolation is the default and any pairwise interpolator can be plugged in.

Convention: a homography H maps pixel coordinates (x, y, 1) of output frame k to coordinates in
the source image (an inverse warp, ready for sampling); pixel centres sit at integers.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from evtransfer.simulate._checks import SimulationError

Interpolator = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class CameraMotion:
    """A camera path: homographies (N, 3, 3) float64 (frame pixel -> source pixel) and the
    frame timestamps t_us (N,) int64 µs."""

    homographies: torch.Tensor
    t_us: torch.Tensor

    def __len__(self) -> int:
        return int(self.homographies.shape[0])


@dataclass(frozen=True)
class PseudoVideo:
    """A still image turned into a video: frames (N, H, W) or (N, C, H, W) float; labels (N, H, W)
    in the label's dtype with out-of-view pixels = ignore index; depths (N, H, W) float with
    invalid = 0; t_us (N,) int64 µs; homographies (N, 3, 3) float64."""

    frames: torch.Tensor
    labels: torch.Tensor | None
    depths: torch.Tensor | None
    t_us: torch.Tensor
    homographies: torch.Tensor


def frame_times(n_frames: int, *, fps: float | None = None, duration_us: int | None = None,
                t0_us: int = 0) -> torch.Tensor:
    """(n_frames,) int64 µs timestamps from t0_us, at `fps` or spread evenly over `duration_us`."""
    if not isinstance(n_frames, numbers.Integral) or n_frames < 1:
        raise SimulationError(f"n_frames must be a positive integer, got {n_frames!r}")
    if (fps is None) == (duration_us is None):
        raise SimulationError("give exactly one of fps and duration_us")
    k = np.arange(n_frames, dtype=np.float64)
    if fps is not None:
        if not fps > 0 or not math.isfinite(fps):
            raise SimulationError(f"fps must be positive, got {fps}")
        offsets = np.rint(k * (1e6 / fps))
    else:
        if duration_us <= 0:
            raise SimulationError(f"duration_us must be positive, got {duration_us}")
        offsets = np.rint(k * (duration_us / max(n_frames - 1, 1)))
    t = int(t0_us) + offsets.astype(np.int64)
    if n_frames > 1 and np.any(np.diff(t) <= 0):
        raise SimulationError(f"{n_frames} frames do not fit: timestamps repeat at 1 µs resolution")
    return torch.from_numpy(t)


def pose_homography(height: int, width: int, tx: float, ty: float, angle_rad: float,
                    scale: float, px: float = 0.0, py: float = 0.0) -> torch.Tensor:
    """(3, 3) float64 homography of a similarity about the image centre (translation tx, ty in
    pixels, rotation in radians, isotropic scale) with perspective terms px, py (1/pixel)."""
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    c, s = scale * math.cos(angle_rad), scale * math.sin(angle_rad)
    m = torch.tensor([[c, -s, tx], [s, c, ty], [px, py, 1.0]], dtype=torch.float64)
    to_centre = torch.tensor([[1.0, 0, -cx], [0, 1.0, -cy], [0, 0, 1.0]], dtype=torch.float64)
    back = torch.tensor([[1.0, 0, cx], [0, 1.0, cy], [0, 0, 1.0]], dtype=torch.float64)
    return back @ m @ to_centre


def random_motion(
    height: int,
    width: int,
    n_frames: int,
    *,
    fps: float | None = None,
    duration_us: int | None = None,
    generator: torch.Generator | int = 0,
    max_translation: float = 0.1,
    max_rotation_deg: float = 5.0,
    max_scale: float = 0.1,
    perspective: float = 0.0,
    t0_us: int = 0,
) -> CameraMotion:
    """A smooth random camera path of `n_frames` homographies over a height × width image.

    The end pose is drawn uniformly: translation up to max_translation × (width, height) pixels,
    rotation up to ±max_rotation_deg, scale in [1 - max_scale, 1 + max_scale], perspective terms
    up to ±perspective / (width, height); every parameter moves linearly from the identity at
    frame 0 to the end pose. Timestamps come from `fps` or `duration_us` (see `frame_times`).
    `generator` is a CPU torch.Generator or an int seed.
    """
    t_us = frame_times(n_frames, fps=fps, duration_us=duration_us, t0_us=t0_us)
    limits = {"max_translation": max_translation, "max_rotation_deg": max_rotation_deg,
              "max_scale": max_scale, "perspective": perspective}
    for name, value in limits.items():
        if not (value >= 0 and math.isfinite(value)):
            raise SimulationError(f"{name} must be finite and >= 0, got {value}")
    if max_scale >= 1:
        raise SimulationError(f"max_scale must be < 1, got {max_scale}")
    gen = generator
    if isinstance(generator, numbers.Integral):
        gen = torch.Generator().manual_seed(int(generator))
    u = torch.rand(6, generator=gen, dtype=torch.float64) * 2 - 1
    end = (
        u[0].item() * max_translation * width,
        u[1].item() * max_translation * height,
        math.radians(u[2].item() * max_rotation_deg),
        1.0 + u[3].item() * max_scale,
        u[4].item() * perspective / width,
        u[5].item() * perspective / height,
    )
    alphas = np.linspace(0.0, 1.0, n_frames) if n_frames > 1 else np.zeros(1)
    hs = [
        pose_homography(height, width, a * end[0], a * end[1], a * end[2],
                        1.0 + a * (end[3] - 1.0), a * end[4], a * end[5])
        for a in alphas
    ]
    return CameraMotion(torch.stack(hs), t_us)


def _as_homographies(homographies) -> tuple[torch.Tensor, bool]:
    h = torch.as_tensor(homographies)
    single = h.ndim == 2
    h = h.unsqueeze(0) if single else h
    if h.ndim != 3 or tuple(h.shape[1:]) != (3, 3):
        raise SimulationError(f"homographies must be (3, 3) or (N, 3, 3), got {tuple(h.shape)}")
    if not h.is_floating_point() or not torch.isfinite(h).all():
        raise SimulationError("homographies must be finite floating-point matrices")
    return h.to(torch.float64), single


def _source_coords(h: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W) source x and y of every output pixel under each homography."""
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float64, device=h.device),
        torch.arange(width, dtype=torch.float64, device=h.device),
        indexing="ij",
    )
    pts = torch.stack([xs, ys, torch.ones_like(xs)]).view(3, -1)
    src = h @ pts
    w = src[:, 2]
    # points mapped to infinity fall outside every image
    w = torch.where(w.abs() < 1e-12, torch.full_like(w, 1e-12), w)
    return (src[:, 0] / w).view(-1, height, width), (src[:, 1] / w).view(-1, height, width)


def _normalised(coord: torch.Tensor, size: int) -> torch.Tensor:
    """Pixel coordinate -> grid_sample's [-1, 1] with align_corners=True (size 1 maps to 0)."""
    if size == 1:
        return torch.zeros_like(coord)
    return coord * (2.0 / (size - 1)) - 1.0


def warp(
    data,
    homographies,
    *,
    kind: str = "image",
    ignore_index: int = 255,
) -> torch.Tensor:
    """Warp `data` by each homography (frame pixel -> source pixel) with torch grid_sample.

    kind="image": data (H, W) or (C, H, W) float, bilinear, out-of-view pixels replicate the
    border. kind="label": data (H, W) integer classes, nearest, out-of-view = ignore_index.
    kind="depth": data (H, W) float, bilinear, 0 (invalid) wherever a contributing neighbour is
    invalid (<= 0 or not finite) or out of view. Returns (N, ...) for (N, 3, 3) homographies, or
    the shape of `data` for one (3, 3). Runs on `data`'s device; the input is not modified.
    """
    if kind not in ("image", "label", "depth"):
        raise SimulationError(f"kind must be 'image', 'label' or 'depth', got {kind!r}")
    x = torch.as_tensor(data)
    if kind == "image" and x.ndim not in (2, 3) or kind != "image" and x.ndim != 2:
        raise SimulationError(f"{kind} must be (H, W){' or (C, H, W)' if kind == 'image' else ''}, "
                              f"got shape {tuple(x.shape)}")
    if kind == "label" and x.is_floating_point():
        raise SimulationError(f"label must have an integer dtype, got {x.dtype}")
    if kind != "label" and not x.is_floating_point():
        raise SimulationError(f"{kind} must be floating point, got {x.dtype}")
    h, single = _as_homographies(homographies)
    h = h.to(x.device)
    height, width = x.shape[-2:]
    sx, sy = _source_coords(h, height, width)
    grid = torch.stack([_normalised(sx, width), _normalised(sy, height)], dim=-1)
    n = h.shape[0]
    if kind == "image":
        src = (x if x.ndim == 3 else x.unsqueeze(0)).to(torch.float64)
        out = F.grid_sample(src.expand(n, *src.shape), grid, mode="bilinear",
                            padding_mode="border", align_corners=True)
        out = (out if x.ndim == 3 else out[:, 0]).to(x.dtype)
    elif kind == "label":
        src = x.to(torch.float64).expand(n, 1, height, width)
        out = F.grid_sample(src, grid, mode="nearest", padding_mode="border", align_corners=True)
        out = torch.round(out[:, 0]).to(x.dtype)
        inside = (sx >= -0.5) & (sx < width - 0.5) & (sy >= -0.5) & (sy < height - 0.5)
        out = torch.where(inside, out, torch.full_like(out, ignore_index))
    else:
        valid = torch.isfinite(x) & (x > 0)
        src = torch.stack([torch.where(valid, x, 0).to(torch.float64), valid.to(torch.float64)])
        out = F.grid_sample(src.unsqueeze(0).expand(n, 2, height, width), grid, mode="bilinear",
                            padding_mode="zeros", align_corners=True)
        ok = out[:, 1] > 1.0 - 1e-9
        out = torch.where(ok, out[:, 0], torch.zeros_like(out[:, 0])).to(x.dtype)
    return out[0] if single else out


def pseudo_video(
    image,
    label=None,
    depth=None,
    *,
    n_frames: int,
    fps: float | None = None,
    duration_us: int | None = None,
    generator: torch.Generator | int = 0,
    ignore_index: int = 255,
    **motion,
) -> PseudoVideo:
    """A pseudo-video of one image (H, W) or (C, H, W) with its label (H, W) and depth (H, W)
    warped by the same random camera path (`random_motion` arguments in `motion`)."""
    img = torch.as_tensor(image)
    height, width = img.shape[-2:]
    for name, extra in (("label", label), ("depth", depth)):
        shape = None if extra is None else tuple(torch.as_tensor(extra).shape)
        if shape is not None and shape != (height, width):
            raise SimulationError(f"{name} shape {shape} != image size {(height, width)}")
    path = random_motion(int(height), int(width), n_frames, fps=fps, duration_us=duration_us,
                         generator=generator, **motion)
    hs = path.homographies
    return PseudoVideo(
        frames=warp(img, hs, kind="image"),
        labels=None if label is None else warp(label, hs, kind="label", ignore_index=ignore_index),
        depths=None if depth is None else warp(depth, hs, kind="depth"),
        t_us=path.t_us,
        homographies=hs,
    )


def _log_linear(eps: float) -> Interpolator:
    def interpolate(f0: torch.Tensor, f1: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
        a = alphas.view(-1, *([1] * f0.ndim)).to(torch.float64)
        l0, l1 = torch.log(f0.to(torch.float64) + eps), torch.log(f1.to(torch.float64) + eps)
        return (torch.exp(l0 + a * (l1 - l0)) - eps).clamp_(min=0).to(f0.dtype)

    return interpolate


def _linear(f0: torch.Tensor, f1: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    a = alphas.view(-1, *([1] * f0.ndim)).to(torch.float64)
    return (f0.to(torch.float64) + a * (f1.to(torch.float64) - f0.to(torch.float64))).to(f0.dtype)


def interpolate_frames(
    frames,
    t_us,
    *,
    factor: int | None = None,
    target_rate_hz: float | None = None,
    mode: str | Interpolator = "log-linear",
    eps: float = 1e-3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raise the frame rate of frames (N, ...) float at t_us (N,) increasing int µs.

    Each interval is split into `factor` steps, or into ceil(dt × target_rate_hz / 1e6) steps;
    new timestamps are rounded to µs and the inserted frames are computed at exactly those
    times, so alpha = (t - t_i) / (t_{i+1} - t_i). mode "log-linear" interpolates log(I + eps)
    linearly (what the DVS simulator assumes between frames), "linear" interpolates intensity,
    and a callable f(frame0, frame1, alphas (K,) float64) -> (K, ...) plugs in any interpolator.
    Returns (frames (M, ...), t_us (M,) int64) including the original frames.
    """
    x = torch.as_tensor(frames)
    t = torch.as_tensor(t_us)
    if x.ndim < 2 or not x.is_floating_point():
        raise SimulationError(
            f"frames must be (N, ...) floating point, got {x.dtype} {tuple(x.shape)}"
        )
    if t.ndim != 1 or t.is_floating_point() or len(t) != len(x):
        raise SimulationError(f"t_us must be (N,) = ({len(x)},) integer µs, got {t.dtype} "
                              f"{tuple(t.shape)}")
    t = t.to(torch.int64).cpu()
    dts = torch.diff(t)
    if (dts <= 0).any():
        raise SimulationError("t_us must be strictly increasing")
    if (factor is None) == (target_rate_hz is None):
        raise SimulationError("give exactly one of factor and target_rate_hz")
    if factor is not None:
        if not isinstance(factor, numbers.Integral) or factor < 1:
            raise SimulationError(f"factor must be a positive integer, got {factor!r}")
        steps = torch.full_like(dts, int(factor))
    else:
        if not target_rate_hz > 0:
            raise SimulationError(f"target_rate_hz must be positive, got {target_rate_hz}")
        steps = torch.ceil(dts.to(torch.float64) * (target_rate_hz / 1e6)).to(torch.int64)
        steps.clamp_(min=1)
    if (steps > dts).any():
        raise SimulationError("interpolated frames would be closer than 1 µs; lower the rate")
    interp = {"log-linear": _log_linear(eps), "linear": _linear}.get(mode, mode)
    if not callable(interp):
        raise SimulationError(f"mode must be 'log-linear', 'linear' or a callable, got {mode!r}")
    out_frames, out_t = [], []
    for i in range(len(dts)):
        j = torch.arange(int(steps[i]), dtype=torch.float64)
        ts = t[i] + torch.round(j * (float(dts[i]) / int(steps[i]))).to(torch.int64)
        alphas = (ts[1:] - t[i]).to(torch.float64) / float(dts[i])
        out_frames.append(x[i : i + 1])
        if len(alphas):
            mid = interp(x[i], x[i + 1], alphas.to(x.device))
            if not isinstance(mid, torch.Tensor) or tuple(mid.shape) != (len(alphas), *x.shape[1:]):
                raise SimulationError(
                    f"interpolator returned {getattr(mid, 'shape', type(mid))}, expected "
                    f"{(len(alphas), *x.shape[1:])}"
                )
            out_frames.append(mid.to(x.dtype))
        out_t.append(ts)
    out_frames.append(x[-1:])
    out_t.append(t[-1:])
    return torch.cat(out_frames), torch.cat(out_t)
