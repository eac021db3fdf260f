"""Representation objects and their registry: each object gives exactly what its pure function
gives, `standardize` on a raw tensor equals `normalize=True`, and names resolve in one place."""

from dataclasses import FrozenInstanceError

import numpy as np
import pytest
import torch

from evtransfer import Events, Spikes
from evtransfer.represent import (
    REPRESENTATIONS,
    EvSegNet,
    Histogram,
    SpikeStack,
    VoxelGrid,
    evsegnet_encoding,
    get_representation,
    histogram,
    representation_names,
    voxel_grid,
)


def _events(n: int = 400, seed: int = 0) -> list[Events]:
    rng = np.random.default_rng(seed)
    return [Events(rng.integers(0, 12, n), rng.integers(0, 9, n),
                   np.sort(rng.integers(0, 50_000, n)), rng.choice([-1, 1], n), 12, 9)
            for _ in range(2)]


@pytest.mark.parametrize("name, function, channels", [
    ("voxel", lambda ev: voxel_grid(ev, 3, normalize=False), 3),
    ("histogram", histogram, 2),
    ("evsegnet", evsegnet_encoding, 6),
])
def test_objects_give_their_function_bit_for_bit(name, function, channels):
    params = {"bins": 3} if name == "voxel" else {}
    rep = get_representation(name, normalize=False, **params)
    ev = _events()
    x = rep(ev)
    assert rep.channels() == channels and x.shape == (2, channels, 9, 12)
    assert torch.equal(x, function(ev)) and x.abs().sum() > 0


@pytest.mark.parametrize("rep", [VoxelGrid(bins=4), Histogram(), EvSegNet()])
def test_standardize_of_the_raw_tensor_is_the_normalised_tensor(rep):
    ev = _events(seed=1)
    raw = get_representation(rep.name, **{**rep.__dict__, "normalize": False})(ev)
    normalised = rep(ev)
    assert not torch.equal(raw, normalised)
    assert torch.equal(rep.standardize(raw), normalised)


def test_spike_stack_last_frames_are_the_clip_end_mapped_to_pm1():
    data = (np.random.default_rng(2).random((10, 5, 7)) < 0.3).astype(np.uint8)
    clip = SpikeStack(frames=4).last(Spikes(data, 20_000.0), 10)
    assert clip.shape == (4, 5, 7) and clip.dtype == torch.float32
    assert torch.equal(clip, torch.from_numpy(data[6:].astype(np.float32) * 2 - 1))


def test_registry_names_modalities_and_errors():
    assert representation_names("events") == ("voxel", "histogram", "evsegnet")
    assert representation_names("spikes") == ("spike_stack",)
    assert set(REPRESENTATIONS) == {"voxel", "histogram", "evsegnet", "spike_stack"}
    assert get_representation("voxel", bins=2, normalize=False) == VoxelGrid(2, False)
    with pytest.raises(ValueError, match="unknown representation 'surface'; known: voxel, "
                                         "histogram, evsegnet, spike_stack"):
        get_representation("surface")
    with pytest.raises(TypeError, match="representation 'histogram'.*bins"):
        get_representation("histogram", bins=5)
    with pytest.raises(ValueError, match="bins must be >= 1"):
        VoxelGrid(bins=0)
    with pytest.raises(FrozenInstanceError):
        VoxelGrid().bins = 3  # type: ignore[misc]
