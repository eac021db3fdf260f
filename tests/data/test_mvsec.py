"""MVSEC depth: splits, file discovery, event windows paired with GT depth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evtransfer.data.mvsec import (
    MVSEC_INDOOR_SPLITS,
    MvsecDepth,
    MvsecDepthConfig,
    split_slices,
)
from evtransfer.events import Events

from ._layouts import mvsec_pair

T0 = 1_504_000_000_000_000


def _stream(seed: int, n: int = 1500):
    rng = np.random.default_rng(seed)
    t = T0 + np.sort(rng.integers(0, 400_000, n))
    return t, rng.integers(0, 346, n), rng.integers(0, 260, n), rng.choice([-1, 1], n)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mvsec")
    depth_ts = T0 + 50_000 * np.arange(1, 7)
    mvsec_pair(root / "outdoor_day", "outdoor_day2", *_stream(2), depth_ts)  # scenario folder
    mvsec_pair(root, "outdoor_day1", *_stream(1), depth_ts[:4])  # flat
    return root


def test_split_tables():
    assert split_slices(MvsecDepthConfig(), "train") == {"outdoor_day2": None}
    assert split_slices(MvsecDepthConfig(), "test") == {"outdoor_day1": None}
    tests = {k: v["test"] for k, v in MVSEC_INDOOR_SPLITS.items()}
    # protocols.md §4 (1-based frame ranges; the StereoSpike slices start one earlier)
    assert tests == {
        1: {"indoor_flying1": (139, 1201)},
        2: {"indoor_flying2": (119, 1421)},
        3: {"indoor_flying3": (72, 1816)},
    }
    assert set(MVSEC_INDOOR_SPLITS[1]["train"]) == {"indoor_flying2", "indoor_flying3"}
    with pytest.raises(ValueError, match="split_id"):
        split_slices(MvsecDepthConfig(scenario="indoor_flying", split_id=4), "test")


def test_between_windows_pair_events_with_depth(root):
    ds = MvsecDepth(root, "train")
    t, x, _, p = _stream(2)
    depth_ts = T0 + 50_000 * np.arange(1, 7)
    assert len(ds) == 5  # depth map 0 has no previous timestamp
    for k in range(len(ds)):
        sample = ds[k]
        i = sample["depth_index"]
        assert i == k + 1 and sample["t_us"] == depth_ts[i]
        idx = np.nonzero((t >= depth_ts[i - 1]) & (t < depth_ts[i]))[0]
        ev = Events.concatenate(sample["events"])
        np.testing.assert_array_equal(ev.t, t[idx])
        np.testing.assert_array_equal(ev.x, x[idx])
        np.testing.assert_array_equal(ev.p, p[idx])
        depth = sample["depth"]
        assert depth.shape == (260, 346) and depth.dtype == torch.float32
        assert torch.isnan(depth[0, 0]) and float(depth[1, 1]) == i


def test_count_windows_and_representation(root):
    cfg = MvsecDepthConfig(window="count", num_events=90, num_windows=3)

    def ones(ev: Events) -> torch.Tensor:
        return torch.full((2, 260, 346), float(len(ev)))

    ds = MvsecDepth(root, "test", cfg, representation=ones)
    assert len(ds) == 4 and ds[0]["depth_index"] == 0
    t, *_ = _stream(1)
    expected = min(90, int(np.sum(t < T0 + 50_000))) // 3
    rep = ds[0]["representation"]
    assert rep.shape == (6, 260, 346) and float(rep[0, 0, 0]) == expected


def test_indoor_slices_bound_the_items(tmp_path):
    depth_ts = T0 + 50_000 * np.arange(145)
    mvsec_pair(
        tmp_path / "indoor_flying", "indoor_flying1", *_stream(3), depth_ts, empty_depth=True
    )
    cfg = MvsecDepthConfig(scenario="indoor_flying", split_id=1)
    ds = MvsecDepth(tmp_path, "test", cfg)
    assert [ds.items[k][1] for k in range(len(ds))] == list(range(139, 145))
    assert torch.isnan(ds[0]["depth"]).all()
    with pytest.raises(FileNotFoundError, match="indoor_flying2_data.hdf5"):
        MvsecDepth(tmp_path, "train", cfg)
    with pytest.raises(ValueError, match="window"):
        MvsecDepth(tmp_path, "test", MvsecDepthConfig(window="fixed"))
