"""The world's dense tasks: windows, ground truth, splits and labeled subsets."""

import pytest
import torch

from evtransfer.data.dense_tasks import DenseTaskConfig, label_subset, load_dense_task
from evtransfer.data.world import WorldTarget, WorldTargetConfig
from evtransfer.represent import stacked_histogram


@pytest.mark.parametrize("task", ["segmentation", "depth", "flow"])
def test_tasks_pair_windows_with_their_ground_truth(tiny_world, tmp_path, task):
    cfg = DenseTaskConfig()
    data = load_dense_task(tiny_world, cfg, task, cache_dir=tmp_path, progress=False)
    target = WorldTarget(tiny_world, WorldTargetConfig(split="train", with_depth=True,
                                                       with_flow=True))
    n_train = len(target)
    assert data.train_x.shape[1:] == (20, 48, 64) and data.channels == 20
    first = target[0]
    t = int(target.timestamps[0][0])
    if task == "flow":
        assert len(data.train_x) == n_train - 1  # the last label has no events after it
        events = target.reader(0).read_window(t, t + cfg.flow_window_us)
        torch.testing.assert_close(data.train_y[0], first["flow"])
    else:
        assert len(data.train_x) == n_train
        events = first["events"]
        expected = first["label"] if task == "segmentation" else first["depth"]
        torch.testing.assert_close(data.train_y[0], expected)
    torch.testing.assert_close(data.train_x[0], stacked_histogram(events, 10, 50_000)[0])
    assert len(data.test_x) > 0 and data.test_x.shape[1:] == data.train_x.shape[1:]


def test_unknown_task_is_refused(tiny_world, tmp_path):
    with pytest.raises(ValueError, match="task must be one of"):
        load_dense_task(tiny_world, DenseTaskConfig(), "normals", cache_dir=tmp_path)


def test_label_subset_is_seeded_sorted_and_sized():
    a = label_subset(120, 0.1, seed=0)
    assert len(a) == 12 and torch.equal(a, a.sort().values) and len(set(a.tolist())) == 12
    assert torch.equal(a, label_subset(120, 0.1, seed=0))
    assert not torch.equal(a, label_subset(120, 0.1, seed=1))
    assert len(label_subset(6, 0.1, seed=0)) == 1  # at least one labeled sample
    with pytest.raises(ValueError, match="fraction"):
        label_subset(10, 0.0, seed=0)
