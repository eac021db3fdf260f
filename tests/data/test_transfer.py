import torch

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
    assert int(data.test_label[data.test_label != 255].max()) < cfg.num_classes
    # normalised voxels: zero mean over the non-zero entries of each window
    x = data.target_x[0]
    assert abs(float(x[x != 0].mean())) < 1e-4
    files = list(tmp_path.glob("transfer_*.safetensors"))
    assert len(files) == 1
    again = load_transfer_data(tiny_world, cfg, cache_dir=tmp_path, progress=False)
    assert torch.equal(again.target_x, data.target_x)
    labels = target_train_labels(tiny_world, cfg, cache_dir=tmp_path)
    assert labels.shape == data.target_x.shape[:1] + data.target_x.shape[2:]
