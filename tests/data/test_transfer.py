import copy
import pickle

import pytest
import torch

from evtransfer.data.firewall import DIAGNOSIS, EVALUATION, TARGET_SUPERVISED, LabelAccessError
from evtransfer.data.transfer import TransferDataConfig, load_transfer_data, target_train_labels
from evtransfer.data.world import WorldTarget, WorldTargetConfig


def test_transfer_tensors_and_cache(tiny_world, tmp_path):
    cfg = TransferDataConfig()
    data = load_transfer_data(tiny_world, cfg, cache_dir=tmp_path, progress=False)
    n_train = len(WorldTarget(tiny_world, WorldTargetConfig(split="train")))
    n_test = len(WorldTarget(tiny_world, WorldTargetConfig(split="test")))
    assert data.target_x.shape[0] == n_train and data.test_x.shape[0] == n_test
    assert data.synth_x.shape[1] == cfg.events.bins == data.target_x.shape[1]
    assert data.source_rgb.shape[0] == data.source_label.shape[0] == data.synth_x.shape[0]
    test_label = data.test_label.read(EVALUATION)
    assert int(test_label[test_label != 255].max()) < cfg.num_classes
    # normalised voxels: zero mean over the non-zero entries of each window
    x = data.target_x[0]
    assert abs(float(x[x != 0].mean())) < 1e-4
    files = list(tmp_path.glob("transfer_*.safetensors"))
    assert len(files) == 1
    again = load_transfer_data(tiny_world, cfg, cache_dir=tmp_path, progress=False)
    assert torch.equal(again.target_x, data.target_x)
    labels = target_train_labels(tiny_world, cfg, cache_dir=tmp_path)
    assert labels.shape == data.target_x.shape[:1] + data.target_x.shape[2:]
    assert torch.equal(data.target_label.read(TARGET_SUPERVISED), labels)


def test_the_label_firewall_refuses_every_read_but_the_named_readers(tiny_world, tmp_path):
    data = load_transfer_data(tiny_world, TransferDataConfig(), cache_dir=tmp_path,
                              progress=False)
    reads = [lambda w: w[0], len, lambda w: w.shape, lambda w: w.long(), lambda w: w == 1,
             torch.as_tensor, lambda w: torch.cat([w]), lambda w: list(w), bool,
             lambda w: w.read("oracle")]
    for read in reads:
        with pytest.raises(LabelAccessError, match=r"target test labels \(TransferData"):
            read(data.test_label)
    with pytest.raises(LabelAccessError, match="target train labels.*target-supervised"):
        data.target_label.read(EVALUATION)
    with pytest.raises(LabelAccessError, match="evaluation"):
        data.test_label.read(TARGET_SUPERVISED)
    with pytest.raises(LabelAccessError, match="evaluation"):  # a diagnosis reads train labels
        data.test_label.read(DIAGNOSIS)
    assert torch.equal(data.target_label.read(DIAGNOSIS), data.target_label.read(TARGET_SUPERVISED))
    copied = pickle.loads(pickle.dumps(copy.deepcopy(data)))  # copies stay withheld
    with pytest.raises(LabelAccessError, match="target test labels"):
        copied.test_label[0]
    assert torch.equal(copied.test_label.read(EVALUATION), data.test_label.read(EVALUATION))
