"""Devices and processes: device choice, torchrun initialisation, rank helpers, DDP wrapping.

Distributed mode is never forced: `init_distributed` does nothing unless the process was
launched by `torchrun` (which sets RANK, WORLD_SIZE and LOCAL_RANK), and every helper here
works unchanged in a single process. Backends: NCCL when CUDA is available, Gloo otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: `rank` of `world_size`, `local_rank` on its node, `backend`."""

    rank: int
    world_size: int
    local_rank: int
    backend: str | None

    @property
    def distributed(self) -> bool:
        return self.backend is not None


def _env_int(name: str) -> int:
    raw = os.environ[name]
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


def init_distributed(backend: str | None = None, timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group when launched by torchrun; otherwise return a single-process info.

    Reads RANK, WORLD_SIZE and LOCAL_RANK; picks `backend` ("nccl" with CUDA, else "gloo")
    unless given; on CUDA binds this process to device `LOCAL_RANK`. Calling it again returns
    the current group's info.
    """
    if dist.is_available() and dist.is_initialized():
        return get_dist_info()
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo(rank=0, world_size=1, local_rank=0, backend=None)
    rank, world = _env_int("RANK"), _env_int("WORLD_SIZE")
    local_rank = _env_int("LOCAL_RANK") if "LOCAL_RANK" in os.environ else 0
    if not dist.is_available():
        raise RuntimeError("launched by torchrun but this torch build has no torch.distributed")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(
        backend=backend, rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s)
    )
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, backend=backend)


def get_dist_info() -> DistInfo:
    """The current process's `DistInfo` (single-process values when no group is initialised)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo(rank=0, world_size=1, local_rank=0, backend=None)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dist.get_backend())


def is_main() -> bool:
    """True on rank 0 (and in a single process): the only process that writes files."""
    return get_dist_info().rank == 0


def barrier() -> None:
    """Wait for every rank; a no-op in a single process."""
    if get_dist_info().distributed:
        dist.barrier()


def destroy_distributed() -> None:
    """Leave the process group if one was joined, after every rank got here: a rank that tears
    its gloo pairs down while a peer is still sending aborts that peer."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of `tensor` over ranks, as a new tensor (the input is not modified)."""
    out = tensor.detach().clone()
    if get_dist_info().distributed:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        out /= get_dist_info().world_size
    return out


def all_reduce_min(tensor: torch.Tensor) -> torch.Tensor:
    """Elementwise minimum of `tensor` over ranks, as a new tensor (the input is kept)."""
    out = tensor.detach().clone()
    if get_dist_info().distributed:
        dist.all_reduce(out, op=dist.ReduceOp.MIN)
    return out


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj` in rank order (a one-element list in a single process)."""
    info = get_dist_info()
    if not info.distributed:
        return [obj]
    gathered: list[Any] = [None] * info.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def select_device(name: str = "auto") -> torch.device:
    """The torch device for `name` in {"auto", "cpu", "cuda", "mps"}, or "cuda:K".

    "auto" picks CUDA (device LOCAL_RANK under torchrun), then MPS, then CPU; asking for an
    accelerator that is not present raises ValueError.
    """
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    kind = name.split(":")[0]
    if kind not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device must be auto, cpu, cuda[:K] or mps, got {name!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' requested but MPS is not available")
    if name == "cuda":
        info = get_dist_info()
        index = info.local_rank if info.distributed else torch.cuda.current_device()
        return torch.device("cuda", index)
    return torch.device(name)


def wrap_ddp(module: nn.Module, device: torch.device, **ddp_kwargs: Any) -> nn.Module:
    """`module` wrapped in DistributedDataParallel when distributed, else `module` itself.

    Modules without trainable parameters are never wrapped. `ddp_kwargs` go to DDP (e.g.
    `find_unused_parameters=True` for methods that freeze parts of a network per step).
    """
    if not get_dist_info().distributed or not any(p.requires_grad for p in module.parameters()):
        return module
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, **ddp_kwargs)


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside a DDP (or DataParallel) wrapper."""
    while isinstance(module, nn.parallel.DistributedDataParallel | nn.DataParallel):
        module = module.module
    return module
