"""DSEC-Semantic under the ESS protocol: label sampling, windows, rectification, crop."""

from __future__ import annotations

import pickle
from dataclasses import replace

import numpy as np
import pytest
import torch

from evtransfer.data.dsec_semantic import (
    DSEC_SEMANTIC_SEQUENCES,
    DsecSemantic,
    DsecSemanticConfig,
    items_per_sequence,
)
from evtransfer.events import Events
from evtransfer.io.base import FormatError
from evtransfer.represent import voxel_grid

from ._layouts import dsec_sequence

OFFSET = 1_000_000_000
CFG = DsecSemanticConfig(
    num_windows=4, events_per_window=50, sequences=("zurich_city_00_a", "zurich_city_01_a")
)


def _stream(seed: int, n: int = 4000) -> Events:
    rng = np.random.default_rng(seed)
    t = OFFSET + np.sort(rng.integers(0, 1_500_000, n))
    return Events(
        rng.integers(0, 640, n), rng.integers(0, 480, n), t, rng.choice([-1, 1], n), 640, 480
    )


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("dsec")
    times_a = OFFSET + 100_000 * np.arange(15)
    times_b = OFFSET + 50_000 + 100_000 * np.arange(8)
    dsec_sequence(tmp_path / "train" / "zurich_city_00_a", _stream(0), times_a, t_offset=OFFSET)
    dsec_sequence(
        tmp_path / "train" / "zurich_city_01_a", _stream(1), times_b, t_offset=OFFSET, left=True
    )
    return tmp_path


def test_protocol_constants():
    assert DSEC_SEMANTIC_SEQUENCES["train"] == tuple(
        f"zurich_city_{s}_a" for s in ("00", "01", "02", "04", "05", "06", "07", "08")
    )
    assert DSEC_SEMANTIC_SEQUENCES["test"] == (
        "zurich_city_13_a",
        "zurich_city_14_c",
        "zurich_city_15_a",
    )
    cfg = DsecSemanticConfig()
    assert (cfg.num_windows, cfg.events_per_window, cfg.crop_bottom) == (20, 100_000, 40)
    assert cfg.labels_dropped() == 6
    assert DsecSemanticConfig(remove_time_window_ms=50).labels_dropped() == 2
    # ESS: len = (N - 6 + 1) // 2
    assert [items_per_sequence(n, cfg) for n in (5, 6, 7, 8, 15, 16)] == [0, 0, 1, 1, 5, 5]


def test_label_sampling_and_both_label_paths(root):
    ds = DsecSemantic(root, "train", CFG)
    assert len(ds) == 5 + 1
    picked = [ds.locate(i) for i in range(len(ds))]
    assert picked == [(0, 6), (0, 8), (0, 10), (0, 12), (0, 14), (1, 6)]
    sample = ds[5]
    assert sample["sequence"] == "zurich_city_01_a" and sample["label_index"] == 6
    assert sample["t_us"] == OFFSET + 50_000 + 600_000
    assert sample["label"].shape == (440, 640) and sample["label"].dtype == torch.int64
    assert torch.all(sample["label"] == 6)
    with pytest.raises(IndexError):
        ds[6]


def test_events_are_the_last_n_before_the_label_in_k_chunks(root):
    ds = DsecSemantic(root, "train", CFG)
    ref = _stream(0)
    for i in range(5):
        sample = ds[i]
        t_label = sample["t_us"]
        before = np.nonzero(ref.t < t_label)[0][-200:]
        chunks = sample["events"]
        assert len(chunks) == 4 and all(len(c) == 50 for c in chunks)
        got = Events.concatenate(chunks)
        np.testing.assert_array_equal(got.t, ref.t[before])
        np.testing.assert_array_equal(got.x, ref.x[before])  # identity rectification
        assert sample["dropped"] == 0


def test_rectification_drops_and_counts(tmp_path):
    grid = np.stack(np.meshgrid(np.arange(640), np.arange(480)), axis=-1).astype(np.float32)
    grid[..., 0] += 0.6  # column 639 lands on x = 640 → outside
    ev = _stream(2)
    times = OFFSET + 100_000 * np.arange(8)
    dsec_sequence(
        tmp_path / "test" / "zurich_city_13_a", ev, times, t_offset=OFFSET, rectify_map=grid
    )
    cfg = DsecSemanticConfig(num_windows=2, events_per_window=100, sequences=("zurich_city_13_a",))
    sample = DsecSemantic(tmp_path, "test", cfg)[0]
    idx = np.nonzero(ev.t < times[6])[0][-200:]
    assert sample["dropped"] == int(np.sum(ev.x[idx] == 639))
    kept = idx[ev.x[idx] != 639]
    np.testing.assert_array_equal(Events.concatenate(sample["events"]).x, ev.x[kept] + 1)


def _count_image(ev: Events) -> torch.Tensor:
    img = np.zeros((1, ev.height, ev.width), np.float32)
    np.add.at(img[0], (ev.y.astype(int), ev.x.astype(int)), 1)
    return torch.from_numpy(img)


def test_representation_is_cropped_to_440_and_optionally_resized(root):
    raw = DsecSemantic(root, "train", CFG)[2]
    cfg = replace(CFG, subpixel=False)
    ds = DsecSemantic(root, "train", cfg, representation=_count_image)
    rep = ds[2]["representation"]
    assert rep.shape == (4, 440, 640)
    full = torch.cat([_count_image(c) for c in raw["events"]])
    torch.testing.assert_close(rep, full[:, :440])
    assert float(rep.sum()) == sum(int(np.sum(c.y < 440)) for c in raw["events"])
    cfg = replace(cfg, resize_to=(448, 640))
    resized = DsecSemantic(root, "train", cfg, representation=_count_image)[2]
    assert resized["representation"].shape == (4, 448, 640) and resized["label"].shape == (448, 640)


def test_transform_and_pickling(root):
    marked = DsecSemantic(root, "train", CFG, transform=lambda s: {**s, "flag": True})
    assert marked[0]["flag"] is True
    ds = DsecSemantic(root, "train", CFG)
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone[1]["events"][0].t, ds[1]["events"][0].t)


def test_layout_errors(root, tmp_path):
    with pytest.raises(FileNotFoundError, match="zurich_city_02_a"):
        DsecSemantic(root, "train")
    with pytest.raises(ValueError, match="split"):
        DsecSemantic(root, "val", CFG)
    ev = _stream(3)
    seq = dsec_sequence(tmp_path / "y" / "test" / "zurich_city_15_a", ev, OFFSET + np.arange(3))
    (seq / "semantic/11classes/data/000000.png").unlink()
    cfg = DsecSemanticConfig(sequences=("zurich_city_15_a",))
    with pytest.raises(FormatError, match="zurich_city_15_a.*2 label PNGs but 3 timestamps"):
        DsecSemantic(tmp_path / "y", "test", cfg)
    dsec_sequence(
        tmp_path / "x" / "test" / "zurich_city_14_c",
        ev,
        OFFSET + 10**5 * np.arange(7),
        t_offset=OFFSET,
        label_shape=(480, 640),
    )
    cfg = DsecSemanticConfig(num_windows=1, events_per_window=10, sequences=("zurich_city_14_c",))
    with pytest.raises(FormatError, match="000006.png.*expected \\(440, 640\\)"):
        DsecSemantic(tmp_path / "x", "test", cfg)[0]


def test_subpixel_rectification_splats_bilinearly_like_ess(tmp_path):
    grid = np.stack(np.meshgrid(np.arange(640), np.arange(480)), axis=-1).astype(np.float32)
    grid[..., 0] += 0.25
    grid[7, 3] = (-1.5, 7.0)  # lands outside (-1, W): dropped
    ev = _stream(4)
    ev = Events(
        np.r_[ev.x, 3],
        np.r_[ev.y, 7],
        np.r_[ev.t, OFFSET + 599_990],
        np.r_[ev.p, 1],
        640,
        480,
        sort=True,
    )
    times = OFFSET + 100_000 * np.arange(8)
    dsec_sequence(
        tmp_path / "test" / "zurich_city_13_a", ev, times, t_offset=OFFSET, rectify_map=grid
    )
    cfg = DsecSemanticConfig(num_windows=1, events_per_window=300, sequences=("zurich_city_13_a",))
    sample = DsecSemantic(tmp_path, "test", cfg, representation=lambda b: voxel_grid(b, 1))[0]
    idx = np.nonzero(ev.t < times[6])[0][-300:]
    outside = (ev.x[idx] == 3) & (ev.y[idx] == 7)
    assert sample["dropped"] == int(outside.sum()) == 1
    ref = np.zeros((480, 641))
    xs, ys, ps = ev.x[idx][~outside] + 0.25, ev.y[idx][~outside], ev.p[idx][~outside]
    np.add.at(ref, (ys, np.floor(xs).astype(int)), ps * 0.75)
    np.add.at(ref, (ys, np.floor(xs).astype(int) + 1), ps * 0.25)
    rep = sample["representation"]
    assert rep.shape == (1, 440, 640)
    np.testing.assert_allclose(rep[0].double().numpy(), ref[:440, :640], atol=1e-5)
