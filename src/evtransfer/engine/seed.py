"""Deterministic seeding: global seeds, derived seeds, data-loader workers, RNG snapshots.

Every random stream of a run is a pure function of the run seed and a few integers (epoch,
rank, worker id), so a run is repeatable and a resumed run continues the same streams. The
RNG snapshot holds only tensors and plain numbers, so a checkpoint that contains it loads
with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

_SEED_MASK = (1 << 63) - 1


def derive_seed(seed: int, *parts: int) -> int:
    """A 63-bit seed mixed from `seed` and the non-negative integers `parts` (SeedSequence).

    Different `parts` give statistically independent streams; the same inputs always give
    the same seed, on every platform.
    """
    for value in (seed, *parts):
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 0:
            raise ValueError(f"seed parts must be non-negative integers, got {value!r}")
    words = np.random.SeedSequence([int(seed), *map(int, parts)]).generate_state(2, np.uint64)
    return int(words[0]) & _SEED_MASK


def make_generator(seed: int, *parts: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A `torch.Generator` on `device` seeded with `derive_seed(seed, *parts)`."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, *parts))
    return gen


def seed_everything(seed: int) -> None:
    """Seed Python `random`, NumPy's legacy global RNG and torch (CPU and every CUDA device).

    Call once per process before building models; under DistributedDataParallel pass a seed
    that includes the rank (e.g. `derive_seed(seed, rank)`) when ranks must differ.
    """
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    # Third-party code (augmentation libraries) still draws from NumPy's global RNG.
    np.random.seed(seed % (1 << 32))  # noqa: NPY002
    torch.manual_seed(seed)


def worker_init_fn(worker_id: int) -> None:
    """Seed Python `random` and NumPy inside a DataLoader worker from its torch seed.

    The DataLoader sets worker `worker_id`'s torch seed to `base_seed + worker_id`, where
    `base_seed` comes from the loader's own generator (see `make_loader`: seeded from seed,
    epoch, rank and start batch); `random` and `np.random` in the worker are derived from it.
    """
    info = torch.utils.data.get_worker_info()
    base = (torch.initial_seed() if info is None else info.seed) & _SEED_MASK
    random.seed(base)
    np.random.seed(derive_seed(base) % (1 << 32))  # noqa: NPY002


def capture_rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """Snapshot of the global RNGs: torch CPU, the accelerator of `device`, NumPy, `random`.

    Returns a dict of tensors and plain numbers (safe for `weights_only=True` loading).
    """
    np_state = np.random.get_state(legacy=True)  # noqa: NPY002
    py_version, py_words, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "python": {"version": py_version, "words": torch.tensor(py_words), "gauss": py_gauss},
    }
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    if device is not None and device.type == "mps":
        state["mps"] = torch.mps.get_rng_state()
    return state


def restore_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Restore a snapshot taken by `capture_rng_state` (the accelerator part only if present)."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["gauss"],
        )
    )
    py = state["python"]
    random.setstate((py["version"], tuple(py["words"].tolist()), py["gauss"]))
    if device is not None and device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
    if device is not None and device.type == "mps" and "mps" in state:
        torch.mps.set_rng_state(state["mps"])
