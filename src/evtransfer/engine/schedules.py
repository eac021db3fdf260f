"""Per-iteration schedules, precomputed as arrays (DINO's habit) and applied to optimizers.

A schedule is a 1-D float64 array with one value per training iteration; the loop reads entry
`step` on the host, so scheduling never touches the device. `apply_schedules` writes the
values into optimizer param groups, scaled per group by `lr_scale` / `wd_scale`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch


def cosine_schedule(
    base: float,
    final: float,
    epochs: int,
    iters_per_epoch: int,
    warmup_epochs: float = 0,
    start_warmup_value: float = 0.0,
) -> np.ndarray:
    """Linear warm-up then half-cosine decay, one float64 value per iteration.

    Shape `(epochs * iters_per_epoch,)`. The first `w = round(warmup_epochs * iters_per_epoch)`
    values rise linearly from `start_warmup_value` to `base` (both ends included); the
    remaining `n` values are `final + (base - final) * (1 + cos(pi * i / n)) / 2` for
    `i = 0 .. n-1`, so the decay starts at `base` and approaches (without reaching) `final`,
    exactly as DINO's `cosine_scheduler`. `base == final` gives a warm-up then a constant.
    """
    for name, value in (("epochs", epochs), ("iters_per_epoch", iters_per_epoch)):
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
            raise ValueError(f"cosine_schedule: {name} must be a positive integer, got {value!r}")
    values = {"base": base, "final": final, "start_warmup_value": start_warmup_value}
    for name, value in values.items():
        if not np.isfinite(value):
            raise ValueError(f"cosine_schedule: {name} must be finite, got {value!r}")
    if not (0 <= warmup_epochs <= epochs):
        raise ValueError(
            f"cosine_schedule: warmup_epochs must be in [0, epochs={epochs}], got {warmup_epochs!r}"
        )
    total = int(epochs) * int(iters_per_epoch)
    warmup_iters = int(round(float(warmup_epochs) * int(iters_per_epoch)))
    warmup = np.linspace(start_warmup_value, base, warmup_iters, dtype=np.float64)
    n = total - warmup_iters
    i = np.arange(n, dtype=np.float64)
    decay = final + 0.5 * (base - final) * (1.0 + np.cos(np.pi * i / max(n, 1)))
    return np.concatenate([warmup, decay])


def schedule_values(schedules: Mapping[str, np.ndarray], step: int) -> dict[str, float]:
    """Entry `step` of every schedule as a Python float; a clear error when one is too short."""
    values = {}
    for name, array in schedules.items():
        if step >= len(array):
            raise ValueError(
                f"schedule {name!r} has {len(array)} values but training reached iteration "
                f"{step}; build it for epochs x iterations per epoch of this run"
            )
        values[name] = float(array[step])
    return values


def check_schedules(schedules: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Validate schedules (1-D, finite, non-empty) and return them as float64 arrays."""
    checked = {}
    for name, array in schedules.items():
        arr = np.asarray(array, dtype=np.float64)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"schedule {name!r} must be a non-empty 1-D array, got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"schedule {name!r} has non-finite values")
        checked[name] = arr
    return checked


def _pick(values: Mapping[str, float], key: str, name: str) -> float | None:
    """`values["key/name"]` if present, else `values["key"]`, else None."""
    return values.get(f"{key}/{name}", values.get(key))


def apply_schedules(
    optimizers: Mapping[str, torch.optim.Optimizer], values: Mapping[str, float]
) -> None:
    """Write scheduled `lr` and `weight_decay` into every param group.

    For optimizer `name`, the value under `"lr/<name>"` wins over the shared `"lr"` (same for
    `weight_decay`); each group gets `value * group.get("lr_scale", 1.0)` (and `wd_scale`),
    so a group with `wd_scale=0` is never decayed. Without a schedule the group is left alone.
    """
    for name, opt in optimizers.items():
        lr = _pick(values, "lr", name)
        wd = _pick(values, "weight_decay", name)
        for group in opt.param_groups:
            if lr is not None:
                group["lr"] = lr * group.get("lr_scale", 1.0)
            if wd is not None:
                group["weight_decay"] = wd * group.get("wd_scale", 1.0)
