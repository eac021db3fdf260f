"""Resumable, distributed-aware data loading.

The sample order of an epoch is a pure function of (seed, epoch): it is the order of torch's
`DistributedSampler` (one replica in a single process), so rank r of W sees every W-th index
of the same permutation. `ResumableBatchSampler` cuts that order into batches and can skip
the first k batches, which is how a run resumed mid-epoch sees exactly the batches it had not
yet seen. Loader workers are seeded from (seed, epoch, rank, start batch).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sized
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from evtransfer.engine.distributed import get_dist_info
from evtransfer.engine.seed import make_generator, worker_init_fn


class ResumableBatchSampler(Sampler[list[int]]):
    """Batches of `batch_size` indices for one epoch of one rank, from batch `start_batch` on.

    `length` samples are shuffled with torch's generator seeded `seed + epoch` (the
    DistributedSampler rule) and dealt to `world_size` ranks: without `drop_last` the order
    is padded by repeating its head so that every rank gets the same count; with `drop_last`
    the tail is dropped and the last incomplete batch too. `len()` is the number of batches
    still to come.
    """

    def __init__(
        self,
        length: int,
        batch_size: int,
        *,
        seed: int,
        epoch: int,
        start_batch: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ):
        for name, value, low in (
            ("length", length, 1),
            ("batch_size", batch_size, 1),
            ("seed", seed, 0),
            ("epoch", epoch, 0),
            ("start_batch", start_batch, 0),
            ("world_size", world_size, 1),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank!r}")
        sampler = DistributedSampler(
            range(length),  # only its length is used
            num_replicas=world_size,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )
        sampler.set_epoch(epoch)
        order = torch.tensor(list(sampler), dtype=torch.int64)
        n_batches = len(order) // batch_size if drop_last else -(-len(order) // batch_size)
        if start_batch > n_batches:
            raise ValueError(f"start_batch {start_batch} is past the epoch's {n_batches} batches")
        self._batches = [
            order[i * batch_size : (i + 1) * batch_size].tolist()
            for i in range(start_batch, n_batches)
        ]
        self.batches_per_epoch = n_batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches)

    def __len__(self) -> int:
        return len(self._batches)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    start_batch: int = 0,
    shuffle: bool = True,
    drop_last: bool = True,
    num_workers: int = 0,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    pin_memory: bool = False,
    rank: int | None = None,
    world_size: int | None = None,
) -> DataLoader:
    """A DataLoader over epoch `epoch` of `dataset` for this rank, from batch `start_batch` on.

    `batch_size` is per process (the global batch is `batch_size * world_size`); `rank` and
    `world_size` default to the current process group. The loader has its own generator, so
    iterating it never touches the global torch RNG, and its workers are seeded by
    `worker_init_fn` from (seed, epoch, rank, start_batch).
    """
    if not isinstance(dataset, Sized):
        raise TypeError("make_loader needs a map-style dataset with __len__")
    info = get_dist_info()
    rank = info.rank if rank is None else rank
    world_size = info.world_size if world_size is None else world_size
    batch_sampler = ResumableBatchSampler(
        len(dataset),
        batch_size,
        seed=seed,
        epoch=epoch,
        start_batch=start_batch,
        shuffle=shuffle,
        drop_last=drop_last,
        rank=rank,
        world_size=world_size,
    )
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        pin_memory=pin_memory,
        worker_init_fn=worker_init_fn,
        generator=make_generator(seed, epoch, rank, start_batch),
    )
