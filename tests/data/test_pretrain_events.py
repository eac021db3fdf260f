"""Pre-training windows: the E-TartanAir recipe, world and recording sources, views."""

import numpy as np
import pytest
import torch

from evtransfer.data.pretrain_events import (
    EtartanairRecipe,
    PretrainDataConfig,
    ViewDataset,
    etartanair_dvs,
    load_pretrain_windows,
    recording_windows,
)
from evtransfer.events import Events
from evtransfer.io.dsec import DsecEventsWriter


def test_etartanair_dvs_has_the_v2e_flags():
    dvs = etartanair_dvs(EtartanairRecipe(), 0.13, seed=4)
    assert (dvs.pos_threshold, dvs.neg_threshold, dvs.sigma_threshold) == (0.2, 0.2, 0.03)
    assert (dvs.cutoff_hz, dvs.leak_rate_hz, dvs.shot_noise_rate_hz) == (30.0, 0.1, 0.13)
    assert dvs.hot_pixel_fraction == 0 and dvs.jitter_us == 0 and dvs.seed == 4


def _recording(path, width=40, height=24, n=5000, span_us=400_000):
    rng = np.random.default_rng(0)
    ev = Events(rng.integers(0, width, n).astype(np.int16),
                rng.integers(0, height, n).astype(np.int16),
                np.sort(rng.integers(0, span_us, n)).astype(np.int64),
                rng.choice(np.array([-1, 1], dtype=np.int8), n), width=width, height=height)
    with DsecEventsWriter(path, width=width, height=height) as writer:
        writer.write(ev)
    return ev


def test_recording_windows_are_evenly_spaced(tmp_path):
    ev = _recording(tmp_path / "rec.h5")
    windows = recording_windows(tmp_path / "rec.h5", 50_000, 4)
    assert len(windows) == 4
    starts = [int(w.t[0]) for w in windows]
    assert starts == sorted(starts) and starts[-1] >= 300_000
    first = ev.time_window(int(ev.t[0]), int(ev.t[0]) + 50_000)
    assert len(windows[0]) == len(first)
    with pytest.raises(ValueError, match="shorter than one"):
        recording_windows(tmp_path / "rec.h5", 10_000_000, 4)


def test_world_and_recording_windows_grouped_by_size(tiny_world, tmp_path):
    _recording(tmp_path / "rec.h5")
    cfg = PretrainDataConfig(recipe=EtartanairRecipe(video_factor=2),
                             recordings=(str(tmp_path / "rec.h5"),), recording_windows=3)
    groups = load_pretrain_windows(tiny_world, cfg, cache_dir=tmp_path / "cache",
                                   progress=False)
    sizes = sorted((tuple(v.shape[-2:]), len(v)) for v, _ in groups)
    assert sizes[0] == ((24, 40), 3)
    world_h, world_w = 48, 64  # the tiny preset
    # 19 source frame intervals + 6 target train windows
    assert sizes[1] == ((world_h, world_w), 25)
    for voxel, count in groups:
        assert voxel.shape[1] == 6 and voxel.dtype == torch.float16
        assert count.shape[1] == 1 and float(count.sum()) > 0
    again = load_pretrain_windows(tiny_world, cfg, cache_dir=tmp_path / "cache",
                                  progress=False)  # from the cache
    assert all(torch.equal(a[0], b[0]) for a, b in zip(groups, again, strict=True))


def test_view_dataset_crops_pads_and_drops_empty_crops():
    voxel = torch.ones(2, 6, 20, 30).half()
    count = torch.zeros(2, 1, 20, 30).half()
    count[0] = 1.0  # 1 event per pixel in window 0; window 1 is empty
    ds = ViewDataset([(voxel, count)], 16, seed=3, min_events=10)
    a, b = ds[0], ds[1]
    assert a.shape == (6, 16, 16) and float(a.min()) == 1.0
    assert float(b.abs().sum()) == 0.0  # fewer than min_events events: zeroed
    ds.epoch = 1
    assert ds[0].shape == (6, 16, 16)
    big = ViewDataset([(voxel, None)], 32)
    crop = big[0]
    assert crop.shape == (6, 32, 32) and float(crop[:, 20:].abs().sum()) == 0  # padded


def test_view_dataset_is_deterministic_per_epoch():
    voxel = torch.arange(6 * 40 * 40, dtype=torch.float32).view(1, 6, 40, 40).half()
    ds = ViewDataset([(voxel, None)], 8, seed=0)
    first = ds[0]
    assert torch.equal(ds[0], first)
    crops = set()
    for epoch in range(5):
        ds.epoch = epoch
        crops.add(float(ds[0][0, 0, 0]))
    assert len(crops) > 1
