import numpy as np
import pytest
import torch

from evtransfer import Spikes
from evtransfer.represent import spike_stack, tfi, tfp

from . import reference as ref
from .reference import assert_close

T, H, W = 40, 6, 11  # W not a multiple of 8 exercises the packed tail


@pytest.fixture
def frames(rng) -> np.ndarray:
    data = (rng.random((T, H, W)) < 0.15).astype(np.uint8)
    data[:, 0, 0] = 0  # a pixel that never fires
    data[:, 0, 1] = 1  # a pixel that always fires
    return data


def _inputs(frames: np.ndarray, device: str):
    spikes = Spikes(frames, 20_000.0)
    tensor = torch.from_numpy(frames).to(device)
    return [spikes, spikes.pack(), tensor, tensor.bool()]


def test_tfp_matches_reference(frames, device):
    for spikes in _inputs(frames, device):
        ours = tfp(spikes, [5, 20, 34], 5, device=device)
        assert ours.shape == (3, H, W) and ours.device.type == device
        assert_close(ours, np.stack([ref.tfp(frames, k, 5) for k in (5, 20, 34)]))
        single = tfp(spikes, 20, 3, scale=255.0, device=device)
        assert_close(single, ref.tfp(frames, 20, 3, 255.0), scale=255.0)
    assert tfp(Spikes(frames, 1.0), 20, 19)[0, 1] == 1.0  # always-firing pixel


def test_tfp_window_must_fit(frames):
    with pytest.raises(ValueError, match="leaves the stream of 40 frames"):
        tfp(Spikes(frames, 1.0), 3, 5)
    with pytest.raises(ValueError, match="leaves the stream"):
        tfp(Spikes(frames, 1.0), [10, 36], 4)


@pytest.mark.parametrize("keys", [[0, 1, 20, 38, 39], [17]])
def test_tfi_matches_reference(frames, device, keys):
    for spikes in _inputs(frames, device):
        ours = tfi(spikes, keys, 4, scale=2.0, device=device)
        assert ours.shape == (len(keys), H, W)
        assert_close(ours, np.stack([ref.tfi(frames, k, 4, 2.0) for k in keys]))


def test_tfi_hand_values():
    data = np.zeros((12, 1, 4), np.uint8)
    data[[3, 7], 0, 0] = 1  # gap of 4 frames around key 5
    data[[5, 7], 0, 1] = 1  # spike at the key frame itself: ISI 2
    data[[2], 0, 2] = 1  # nothing after the key: fallback 2·hw
    out = tfi(Spikes(data, 1.0), 5, 4)[0]
    torch.testing.assert_close(out, torch.tensor([0.25, 0.5, 0.125, 0.125]))
    # hw = 1 cannot see the spikes 2 frames away at pixel 0 -> fallback 2
    assert tfi(Spikes(data, 1.0), 5, 1)[0, 0].item() == 0.5


def test_spike_stack_is_plus_minus_one(frames, device):
    for spikes in _inputs(frames, device):
        stack = spike_stack(spikes, [8, 20], 16, device=device)
        assert stack.shape == (2, 16, H, W) and stack.dtype == torch.float32
        expected = np.stack([2.0 * frames[k - 8 : k + 8] - 1 for k in (8, 20)])
        assert np.array_equal(stack.cpu().numpy(), expected)
    bicross = spike_stack(Spikes(frames, 1.0), 20, 40)  # the whole stream, like BiCross
    assert np.array_equal(bicross.numpy(), 2.0 * frames - 1)


def test_invalid_spike_inputs(frames):
    spikes = Spikes(frames, 1.0)
    with pytest.raises(ValueError, match="frames around key frames"):
        spike_stack(spikes, 35, 16)
    with pytest.raises(ValueError, match="outside the stream"):
        tfi(spikes, 40, 4)
    with pytest.raises(ValueError, match="half_window must be a positive integer"):
        tfi(spikes, 10, 0)
    with pytest.raises(ValueError, match="half_window must be an integer >= 0"):
        tfp(spikes, 10, -1)
    with pytest.raises(ValueError, match="scale must be a positive finite number"):
        tfp(spikes, 10, 2, scale=0.0)
    with pytest.raises(ValueError, match="center must be an int"):
        tfp(spikes, [], 2)
    with pytest.raises(ValueError, match="center must be an int"):
        tfp(spikes, 2.5, 2)
    with pytest.raises(ValueError, match="must hold 0/1"):
        tfp(torch.full((5, 2, 2), 2, dtype=torch.uint8), 2, 1)
    with pytest.raises(ValueError, match=r"\(T, H, W\) uint8 or bool"):
        tfp(torch.zeros(5, 4), 2, 1)
    with pytest.raises(TypeError, match="spikes must be Spikes or a torch.Tensor"):
        tfp(frames, 2, 1)
