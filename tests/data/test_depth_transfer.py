import numpy as np
import pytest
import torch

from evtransfer.data.depth_transfer import (
    DepthTransferConfig,
    RealDepthConfig,
    load_depth_transfer_data,
    load_real_depth_data,
    real_target_depth,
    target_train_depth,
    unpack_spikes,
)
from evtransfer.data.firewall import EVALUATION, LabelAccessError
from evtransfer.data.world import WorldSource, WorldTarget, WorldTargetConfig
from evtransfer.events import Spikes
from evtransfer.represent import spike_stack
from evtransfer.simulate import luminance
from evtransfer.world.build import build_world
from evtransfer.world.domains import preset

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("width", [8, 13, 21])
def test_unpack_matches_the_spike_stack(device, width):
    bits = np.random.default_rng(width).integers(0, 2, (6, 5, width), dtype=np.uint8)
    spikes = Spikes(bits, 20000.0).pack()
    x = unpack_spikes(torch.from_numpy(spikes.data).to(device), width)
    assert x.device.type == device and x.dtype == torch.float32
    torch.testing.assert_close(x.cpu(), spike_stack(Spikes(bits, 20000.0), 3, 6))
    np.testing.assert_array_equal(x.cpu().numpy(), 2.0 * bits - 1)


def test_unpack_rejects_a_wrong_width_or_dtype():
    with pytest.raises(ValueError, match="width"):
        unpack_spikes(torch.zeros(2, 3, 2, dtype=torch.uint8), 20)
    with pytest.raises(ValueError, match="uint8"):
        unpack_spikes(torch.zeros(2, 3, 2), 16)


def test_depth_tensors_cache_and_hidden_target_depth(tiny_world, tmp_path):
    cfg = DepthTransferConfig(frames=16)
    data = load_depth_transfer_data(tiny_world, cfg, cache_dir=tmp_path, progress=False)
    source = WorldSource(tiny_world)
    n_train = len(WorldTarget(tiny_world, WorldTargetConfig(split="train")))
    n_test = len(WorldTarget(tiny_world, WorldTargetConfig(split="test")))
    h, w = source[0]["depth"].shape
    assert len(data.source) == len(source) and len(data.target) == n_train
    assert len(data.test) == n_test and data.width == w and data.frames == 16
    item = data.source[0]
    assert item["spikes"].shape == (16, h, (w + 7) // 8) and item["spikes"].dtype == torch.uint8
    torch.testing.assert_close(item["rgb"], source[0]["rgb"])
    torch.testing.assert_close(item["depth"], source[0]["depth"])
    assert set(data.target[0]) == {"spikes"}  # the methods never see target depth
    assert set(data.test[0]) == {"spikes"}  # ... nor test depth, which is withheld
    with pytest.raises(LabelAccessError, match=r"target test depth \(DepthTransferData"):
        data.test_labeled[0]
    labeled_test = data.test_labeled.read(EVALUATION)
    assert torch.equal(labeled_test.tensors["spikes"], data.test.tensors["spikes"])
    assert labeled_test[0]["depth"].shape == (h, w)
    # the source clip integrates the same frame: brighter pixels fire more
    rates = torch.stack([(unpack_spikes(data.source[i]["spikes"], w) > 0).float().mean(0)
                         for i in range(len(data.source))])
    luma = luminance(data.source.tensors["rgb"])
    corr = np.corrcoef(rates.flatten().numpy(), luma.flatten().numpy())[0, 1]
    assert corr > 0.9
    # the target clip is the end of the stored clip
    stored = WorldTarget(tiny_world, WorldTargetConfig(split="test", with_spikes=True))[0]
    clip = stored["spikes"]
    expected = spike_stack(clip, len(clip) - 8, 16)
    torch.testing.assert_close(unpack_spikes(data.test[0]["spikes"], w), expected)
    assert len(list(tmp_path.glob("depth_*.safetensors"))) == 1
    again = load_depth_transfer_data(tiny_world, cfg, cache_dir=tmp_path, progress=False)
    assert torch.equal(again.source.tensors["spikes"], data.source.tensors["spikes"])
    labeled = target_train_depth(tiny_world, cfg, cache_dir=tmp_path)
    assert len(labeled) == n_train and labeled[0]["depth"].shape == (h, w)
    assert float(labeled.tensors["depth"].max()) > 0


def test_bad_configs_are_named(tiny_world, tmp_path):
    with pytest.raises(ValueError, match="domain"):
        DepthTransferConfig(domain="snow")
    with pytest.raises(ValueError, match="fog"):
        load_depth_transfer_data(tiny_world, DepthTransferConfig(domain="fog"),
                                 cache_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="fewer than the 64"):
        load_depth_transfer_data(tiny_world, DepthTransferConfig(frames=64),
                                 cache_dir=tmp_path, progress=False)
    with pytest.raises(FileNotFoundError, match="not a built world"):
        load_depth_transfer_data(tmp_path, DepthTransferConfig(), progress=False)


def test_a_weather_variant_is_the_target(tmp_path):
    cfg = preset("tiny")
    cfg.source.duration_s, cfg.target.sequences, cfg.target.duration_s = 0.2, 2, 0.2
    cfg.variants = ["fog"]
    root = build_world(cfg, tmp_path / "fog", progress=False)
    fog = load_depth_transfer_data(root, DepthTransferConfig(domain="fog", frames=8),
                                   cache_dir=tmp_path, progress=False)
    target = load_depth_transfer_data(root, DepthTransferConfig(frames=8), cache_dir=tmp_path,
                                      progress=False)
    assert torch.equal(fog.source.tensors["rgb"], target.source.tensors["rgb"])
    assert fog.key != target.key
    assert not torch.equal(fog.test.tensors["spikes"], target.test.tensors["spikes"])


# --- real layouts (BiCross's VKITTI 2 and KITTI folders with spike/npy arrays) ---------------
def test_real_scenario_sets(bicross_real_roots):
    vkitti, kitti = bicross_real_roots
    cfg = RealDepthConfig(source="vkitti2", source_root=str(vkitti), target="kitti",
                          target_root=str(kitti), frames=4, crop=(4, 10))
    data = load_real_depth_data(cfg)
    assert (len(data.source), len(data.target), len(data.test)) == (4, 2, 2)
    assert data.width == 10 and data.frames == 4 and data.protocol.garg_crop
    src = data.source[0]
    assert src["spikes"].shape == (4, 4, 2) and src["rgb"].shape == (3, 4, 10)
    assert src["depth"].shape == (4, 10)
    assert set(data.target[0]) == {"spikes"}
    assert set(data.test[1]) == {"spikes"}
    test = data.test_labeled.read(EVALUATION)[1]
    assert test["depth"].shape == (10, 16) and test["crop_box"].tolist() == [6, 3, 4, 10]
    raw = np.load(kitti / "input" / "2011_09_26" / "drive_3" / "spike" / "npy"
                  / "0000000003.npy")
    np.testing.assert_array_equal(unpack_spikes(test["spikes"], 10).numpy(),
                                  2 * raw[:4, 6:10, 3:13] - 1)
    labeled = real_target_depth(cfg)
    assert labeled[0]["depth"].shape == (4, 10)


def test_real_scenarios_without_a_reader_say_so(tmp_path):
    with pytest.raises(ValueError, match="one of"):
        RealDepthConfig(source="cityscapes")
    cfg = RealDepthConfig(source="nyu", source_root=str(tmp_path), target="respike",
                          target_root=str(tmp_path))
    with pytest.raises(ValueError, match="no reader for BiCross's nyu"):
        load_real_depth_data(cfg)
    with pytest.raises(ValueError, match="world"):
        load_real_depth_data(RealDepthConfig())
