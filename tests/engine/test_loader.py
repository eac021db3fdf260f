import random

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from evtransfer.engine import ResumableBatchSampler, make_loader


def _batches(**kwargs):
    args = {"length": 40, "batch_size": 4, "seed": 3, "epoch": 0} | kwargs
    return list(ResumableBatchSampler(**args))


def test_epoch_order_is_a_permutation_fixed_by_seed_and_epoch():
    full = _batches()
    flat = [i for b in full for i in b]
    assert sorted(flat) == list(range(40)) and flat != list(range(40))
    assert _batches() == full
    assert _batches(epoch=1) != full
    assert _batches(seed=4) != full
    assert [i for b in _batches(shuffle=False) for i in b] == list(range(40))


@pytest.mark.parametrize("start", [0, 1, 5, 10])
def test_skipping_gives_the_tail(start):
    full = _batches()
    sampler = ResumableBatchSampler(40, 4, seed=3, epoch=2, start_batch=start)
    assert list(sampler) == list(ResumableBatchSampler(40, 4, seed=3, epoch=2))[start:]
    assert len(sampler) == 10 - start and sampler.batches_per_epoch == 10
    assert len(full) == 10


def test_drop_last_and_padding():
    assert [len(b) for b in _batches(length=10, drop_last=True)] == [4, 4]
    assert [len(b) for b in _batches(length=10, drop_last=False)] == [4, 4, 2]


@pytest.mark.parametrize("world", [2, 4])
def test_ranks_split_the_global_batch(world):
    single = _batches(length=48, batch_size=8, epoch=5)
    per_rank = [
        _batches(length=48, batch_size=8 // world, epoch=5, rank=r, world_size=world)
        for r in range(world)
    ]
    for i, global_batch in enumerate(single):
        union = sorted(j for r in range(world) for j in per_rank[r][i])
        assert union == sorted(global_batch)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="start_batch 11"):
        ResumableBatchSampler(40, 4, seed=0, epoch=0, start_batch=11)
    with pytest.raises(ValueError, match="rank"):
        ResumableBatchSampler(40, 4, seed=0, epoch=0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        ResumableBatchSampler(40, 0, seed=0, epoch=0)


def test_loader_leaves_global_rng_alone():
    ds = TensorDataset(torch.arange(20.0))
    state = torch.get_rng_state()
    batches = [b[0].tolist() for b in make_loader(ds, 5, seed=1, epoch=0)]
    assert torch.equal(torch.get_rng_state(), state)
    assert sorted(sum(batches, [])) == list(range(20))
    resumed = [b[0].tolist() for b in make_loader(ds, 5, seed=1, epoch=0, start_batch=2)]
    assert resumed == batches[2:]


class _RandomDraws(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        info = torch.utils.data.get_worker_info()
        return (
            info.id,
            random.random(),
            float(np.random.random()),  # noqa: NPY002 - the global stream is what is tested
            float(torch.rand(())),
        )


def _worker_draws(epoch):
    loader = make_loader(
        _RandomDraws(), 2, seed=9, epoch=epoch, num_workers=2, shuffle=False, collate_fn=list
    )
    return [item for batch in loader for item in batch]


def test_workers_are_seeded_per_worker_and_epoch():
    a, b, c = _worker_draws(0), _worker_draws(0), _worker_draws(1)
    assert a == b
    for k in (1, 2, 3):
        by_worker = [[d[k] for d in a if d[0] == w] for w in (0, 1)]
        assert by_worker[0] != by_worker[1]  # each worker has its own stream
        assert [d[k] for d in a] != [d[k] for d in c]  # and each epoch too
