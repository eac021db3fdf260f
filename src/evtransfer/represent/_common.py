"""Helpers shared by the representations: argument checks, backend choice, index dtype."""

from __future__ import annotations

import functools
import importlib.util
import numbers

import torch

from evtransfer.represent.batch import EventBatch, EventsLike, as_event_batch

BACKENDS = ("auto", "torch", "numba")


def check_int(name: str, value: int, low: int = 1) -> int:
    """`value` as an int, refusing bools, non-integers and values below `low`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        wanted = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ValueError(f"{name} must be {wanted}, got {value!r}")
    return int(value)


@functools.cache
def numba_available() -> bool:
    """True when numba is installed (checked without importing it)."""
    return importlib.util.find_spec("numba") is not None


def use_numba(backend: str, batch: EventBatch) -> bool:
    """Whether to run the numba kernel: "auto" picks it for integer events on the CPU."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        return False
    suitable = batch.device.type == "cpu" and not batch.subpixel
    if backend == "numba":
        if not numba_available():
            raise ValueError("backend 'numba' requested but numba is not installed")
        if not suitable:
            raise ValueError("backend 'numba' needs integer events on the CPU")
        return True
    return suitable and numba_available()


def index_dtype(total: int) -> torch.dtype:
    """int32 linear indices when they fit (half the memory traffic), else int64."""
    return torch.int32 if total < 2**31 else torch.int64


def pixel_index(batch: EventBatch, planes: torch.Tensor | int | None, dtype) -> torch.Tensor:
    """(N,) linear index plane·H·W + y·W + x; `planes` is the per-event plane (or None = 0)."""
    index = batch.y.to(dtype) * batch.width + batch.x.to(dtype)
    if planes is None:
        return index
    if isinstance(planes, int):
        return index + planes * batch.height * batch.width
    return index + planes.to(dtype) * (batch.height * batch.width)


def stream_slices(batch: EventBatch) -> list[tuple[int, int]]:
    """[(start, stop)) event range of every stream (streams are contiguous)."""
    if batch.b is None:
        return [(0, len(batch))]
    counts = batch.counts().tolist()
    bounds, start = [], 0
    for count in counts:
        bounds.append((start, start + count))
        start += count
    return bounds


def integer_batch(events: EventsLike, device, what: str) -> EventBatch:
    """`as_event_batch`, refusing sub-pixel coordinates (only voxel grids spread those)."""
    batch = as_event_batch(events, device)
    if batch.subpixel:
        raise ValueError(f"{what} need integer pixel coordinates; got floating x/y")
    return batch
