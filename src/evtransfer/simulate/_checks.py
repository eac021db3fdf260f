"""Input checks shared by the streaming simulators (frames, timestamps, devices)."""

from __future__ import annotations

import numbers

import numpy as np
import torch


class SimulationError(ValueError):
    """Invalid input to a simulator: wrong shape or dtype, bad values, time going backwards."""


def as_frames(frames, batch: int, height: int, width: int, device: torch.device, *,
              copy: bool = True, check_values: bool = True) -> torch.Tensor:
    """`frames` as a (batch, height, width) float64 tensor on `device`, checked.

    Accepts a torch tensor or NumPy array of a floating dtype, shaped (B, H, W), or (H, W) when
    the simulator has batch 1. Values are linear intensities: finite and >= 0 (1.0 is the white
    of an 8-bit image divided by 255); `check_values=False` leaves that test to the caller
    (`bad_values`). With `copy` the result never shares memory with the input (callers
    that keep the frame as state need that); the input is never modified.
    """
    if isinstance(frames, np.ndarray):
        if not np.issubdtype(frames.dtype, np.floating):
            raise SimulationError(
                f"frames must be floating point (linear intensity, e.g. uint8 / 255), "
                f"got dtype {frames.dtype}"
            )
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    elif not isinstance(frames, torch.Tensor):
        raise SimulationError(f"frames must be a torch tensor or numpy array, got {type(frames)}")
    if not frames.is_floating_point():
        raise SimulationError(
            f"frames must be floating point (linear intensity, e.g. uint8 / 255), "
            f"got dtype {frames.dtype}"
        )
    if frames.ndim == 2 and batch == 1:
        frames = frames.unsqueeze(0)
    if tuple(frames.shape) != (batch, height, width):
        raise SimulationError(
            f"frames must have shape (B, H, W) = ({batch}, {height}, {width}), "
            f"got {tuple(frames.shape)}"
        )
    converted = frames.to(device=device, dtype=torch.float64).contiguous()
    if copy and converted.data_ptr() == frames.data_ptr():
        # the simulators keep the frame as state: never alias a buffer the caller may reuse
        converted = converted.clone()
    if check_values and (problem := bad_values(converted)):
        raise SimulationError(problem)
    return converted


def bad_values(frames: torch.Tensor) -> str:
    """What is wrong with the values of `frames` (NaN, infinite or negative), or ""."""
    lo, hi = torch.aminmax(frames)
    lo, hi = float(lo), float(hi)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "frames contain NaN or infinite intensities"
    if lo < 0:
        return f"frames contain negative intensities (min {lo:g})"
    return ""


def as_time_us(t_us, previous: int | None) -> int:
    """`t_us` as a Python int of µs, strictly after `previous` (None for the first frame)."""
    if isinstance(t_us, torch.Tensor):
        if t_us.numel() != 1 or t_us.is_floating_point() or t_us.dtype == torch.bool:
            raise SimulationError(
                f"t_us must be one integer timestamp in µs, got a {t_us.dtype} tensor of "
                f"shape {tuple(t_us.shape)}"
            )
        t_us = int(t_us.item())
    elif isinstance(t_us, np.ndarray) and t_us.shape == () and t_us.dtype.kind in "iu":
        t_us = int(t_us)
    elif isinstance(t_us, numbers.Integral) and not isinstance(t_us, bool):
        t_us = int(t_us)
    else:
        raise SimulationError(f"t_us must be an integer number of µs, got {t_us!r}")
    if previous is not None and t_us <= previous:
        raise SimulationError(
            f"timestamps must increase: got t_us={t_us} after {previous} µs"
        )
    return t_us


def check_shape(height: int, width: int, batch: int) -> None:
    """Refuse non-positive sensor sizes and batch sizes."""
    for name, value in (("height", height), ("width", width), ("batch", batch)):
        if not isinstance(value, numbers.Integral) or value <= 0:
            raise SimulationError(f"{name} must be a positive integer, got {value!r}")
    if width > np.iinfo(np.int16).max + 1 or height > np.iinfo(np.int16).max + 1:
        raise SimulationError(f"sensor {width}x{height} does not fit int16 event coordinates")


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    """A torch.Generator on `device` seeded with `seed`."""
    if not isinstance(seed, numbers.Integral):
        raise SimulationError(f"seed must be an integer, got {seed!r}")
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen
