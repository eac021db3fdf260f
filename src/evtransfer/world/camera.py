"""A continuous-time pinhole camera driving along the street.

World axes: X right, Y up, Z along the street (metres). Camera axes: x right, y down, z forward
(OpenCV). The pose is a smooth closed-form function of time (seconds), so rays, depth and flow
are exact at any timestamp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class CameraConfig:
    """Intrinsics from the horizontal field of view; ego-motion as speed plus sinusoidal jitter."""

    fov_deg: float = 75.0  # horizontal; DSEC's event camera sees about 60-70 degrees
    height_m: float = 1.4  # mounted behind the windscreen
    lane_x: float = 2.2  # drives in the right lane
    start_z: float = 0.0
    speed_mps: float = 8.0  # ~30 km/h urban driving
    yaw_amp_deg: float = 5.0  # slow weaving, so that the view turns as well as translates
    yaw_period_s: float = 6.0
    pitch_amp_deg: float = 0.8  # suspension pitch
    pitch_period_s: float = 1.1
    lateral_amp_m: float = 0.5
    lateral_period_s: float = 4.5
    phase: float = 0.0  # radians added to every oscillation (a seedable variation)


@dataclass(frozen=True)
class Intrinsics:
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int


def intrinsics(cfg: CameraConfig, width: int, height: int) -> Intrinsics:
    """Square pixels, principal point at the image centre (pixel centres at integer + 0.5)."""
    f = (width / 2) / math.tan(math.radians(cfg.fov_deg) / 2)
    return Intrinsics(f, f, width / 2, height / 2, width, height)


def pose(cfg: CameraConfig, t_s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera centre (F, 3) and world-from-camera rotation (F, 3, 3) at times t_s (F,) seconds.

    The rotation maps a camera-frame vector with y pointing *up* to world coordinates; callers
    flip y for image coordinates.
    """
    t = t_s.to(torch.float64)
    two_pi = 2 * math.pi
    yaw = math.radians(cfg.yaw_amp_deg) * torch.sin(two_pi * t / cfg.yaw_period_s + cfg.phase)
    pitch = math.radians(cfg.pitch_amp_deg) * torch.sin(
        two_pi * t / cfg.pitch_period_s + 2 * cfg.phase
    )
    x = cfg.lane_x + cfg.lateral_amp_m * torch.sin(
        two_pi * t / cfg.lateral_period_s + 3 * cfg.phase
    )
    centre = torch.stack([x, torch.full_like(t, cfg.height_m), cfg.start_z + cfg.speed_mps * t], -1)
    cy, sy, cp, sp = torch.cos(yaw), torch.sin(yaw), torch.cos(pitch), torch.sin(pitch)
    zero, one = torch.zeros_like(t), torch.ones_like(t)
    r_yaw = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).view(-1, 3, 3)
    r_pitch = torch.stack([one, zero, zero, zero, cp, -sp, zero, sp, cp], -1).view(-1, 3, 3)
    return centre, r_yaw @ r_pitch


def project(points: torch.Tensor, centre: torch.Tensor, rot: torch.Tensor,
            k: Intrinsics) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel coordinates (..., 2) and camera z-depth (...) of world points (F, N, 3) float64.

    Pixel (0, 0) is the centre of the top-left pixel.
    """
    q = torch.einsum("fji,fnj->fni", rot, points - centre[:, None, :])
    z = q[..., 2]
    u = k.fx * q[..., 0] / z + k.cx - 0.5
    v = -k.fy * q[..., 1] / z + k.cy - 0.5
    return torch.stack([u, v], -1), z
