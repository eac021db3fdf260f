import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import evtransfer
from evtransfer.data.transfer import EventInput
from evtransfer.events import Events, Spikes
from evtransfer.inference import load_model

from ._packages import DEVICES, depth_package, segmenter_package


def _events(n, width=64, height=48, seed=0, t_span=50_000):
    rng = np.random.default_rng(seed)
    return Events(rng.integers(0, width, n), rng.integers(0, height, n),
                  np.sort(rng.integers(0, t_span, n)), rng.choice([-1, 1], n), width, height)


def test_load_model_is_lazy_at_top_level():
    assert evtransfer.load_model is load_model
    assert "load_model" in evtransfer.__all__
    with pytest.raises(AttributeError):
        evtransfer.no_such_name  # noqa: B018


@pytest.mark.parametrize("device", DEVICES)
def test_matched_input_is_the_training_representation(tmp_path, device):
    path = segmenter_package(tmp_path / "m.safetensors", window_us=50_000, sensor=(64, 48),
                             size=(48, 64))
    model = load_model(path, device=device)
    windows = [_events(3000, seed=s) for s in range(3)]
    prepared = model.represent(windows)
    assert prepared.out_size == (48, 64)
    torch.testing.assert_close(prepared.x, EventInput().representation()(windows), rtol=0, atol=0)
    probs = model(windows)
    assert probs.shape == (3, 11, 48, 64) and probs.device.type == device
    torch.testing.assert_close(probs.sum(1), torch.ones(3, 48, 64, device=device))
    torch.testing.assert_close(model(prepared.x), probs)


def test_crop_and_protocol_resize_by_hand(tmp_path):
    """Histogram counts, 2 rows cropped, nearest ×2: each count becomes a 2×2 block."""
    path = segmenter_package(tmp_path / "m.safetensors", kind="histogram", normalize=False,
                             window_us=10, sensor=(4, 4), crop_bottom=2, size=(4, 8),
                             resize="nearest")
    model = load_model(path)
    ev = Events([1, 1, 3, 0], [0, 0, 1, 3], [0, 1, 2, 3], [1, 1, -1, 1], 4, 4)
    x, out_size = model.represent(ev)
    want = torch.zeros(1, 2, 4, 8)
    want[0, 1, 0:2, 2:4] = 2  # two positive events at (x=1, y=0)
    want[0, 0, 2:4, 6:8] = 1  # one negative event at (x=3, y=1); y=3 is cropped away
    torch.testing.assert_close(x, want)
    assert out_size == (2, 4)


def test_chunks_and_count_windows(tmp_path):
    path = segmenter_package(tmp_path / "m.safetensors", bins=2, num_windows=3,
                             window_events=100, sensor=(64, 48), size=(48, 64))
    model = load_model(path)
    ev = _events(300)
    x = model.represent(ev).x
    rep = EventInput(bins=2).representation()
    want = torch.cat([rep(ev[k * 100:(k + 1) * 100]) for k in range(3)], 1)
    torch.testing.assert_close(x, want, rtol=0, atol=0)
    with pytest.raises(ValueError, match="list of 3 Events chunks"):
        model.represent([[ev]])


def test_other_sensor_needs_resize(tmp_path):
    path = segmenter_package(tmp_path / "m.safetensors", window_us=50_000, sensor=(64, 48),
                             crop_bottom=8, size=(40, 64))
    model = load_model(path)
    big = _events(20_000, width=320, height=240)
    with pytest.raises(ValueError, match=r"320x240 differs .* pass --resize"):
        model(big)
    with pytest.warns(UserWarning, match="resized"):
        prepared = model.represent(big, resize=True)
    assert prepared.out_size == (240 - 40, 320)  # the crop scales with the height
    x = prepared.x[0]
    assert x.shape == (5, 40, 64)
    nonzero = x[x != 0].double()  # normalised after the resize, as in training
    assert abs(float(nonzero.mean())) < 1e-5 and abs(float(nonzero.std()) - 1) < 1e-5
    assert model(big, resize=True).shape == (1, 11, 200, 320)


def test_empty_windows_are_refused_unless_allowed(tmp_path):
    model = load_model(segmenter_package(tmp_path / "m.safetensors", window_us=50_000,
                                         sensor=(64, 48), size=(48, 64)))
    with pytest.raises(ValueError, match="window 1 has no events"):
        model([_events(10), Events.empty(64, 48)])
    x = model.represent([Events.empty(64, 48)], allow_empty=True).x
    assert not x.any()
    with pytest.raises(ValueError, match="different sensors"):
        model([_events(10), _events(10, width=32)])


def test_spike_clips_and_depth_output(tmp_path):
    path = depth_package(tmp_path / "d.safetensors", constant=7.5, modality="spikes",
                         kind="spike_stack", frames=4, sensor=(20, 12), size=(32, 32),
                         resize="nearest")
    model = load_model(path)
    rng = np.random.default_rng(1)
    bits = (rng.random((6, 12, 20)) < 0.3).astype(np.uint8)
    clip = Spikes(bits, 20_000.0).pack()
    x, out_size = model.represent(clip)
    want = F.interpolate(torch.from_numpy(bits[-4:] * 2.0 - 1)[None].float(), size=(32, 32),
                         mode="nearest")
    torch.testing.assert_close(x, want)
    depth = model(clip)
    assert out_size == (12, 20) and depth.shape == (1, 12, 20)
    torch.testing.assert_close(depth, torch.full((1, 12, 20), 7.5))
    with pytest.raises(ValueError, match="has 2 spike frames; the model needs 4"):
        model(Spikes(bits[:2], 20_000.0))
    with pytest.raises(ValueError, match="no spikes"):
        model(Spikes(np.zeros((4, 12, 20), np.uint8), 20_000.0))


def test_describe_names_the_input(tmp_path):
    model = load_model(segmenter_package(tmp_path / "m.safetensors", window_us=50_000,
                                         sensor=(64, 48), size=(48, 64)))
    text = model.describe()
    assert "(N, 5, 48, 64)" in text and "50000 µs" in text and "64x48" in text
    assert model.class_names[5] == "road" and model.palette.shape == (11, 3)


def test_import_evtransfer_stays_light():
    import subprocess

    code = ("import sys, evtransfer; print('torch' in sys.modules, "
            "'evtransfer.inference' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
