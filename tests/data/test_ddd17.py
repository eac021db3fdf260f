"""DDD17 under the ESS protocol: split dirs, label ↔ index, 200 × 352 geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evtransfer.data.ddd17 import DDD17_SPLITS, Ddd17Config, Ddd17Segmentation
from evtransfer.events import Events
from evtransfer.io.base import FormatError

from ._layouts import ddd17_recording

CFG = Ddd17Config(num_windows=3, events_per_window=40)
N = 600


def _arrays(seed: int):
    rng = np.random.default_rng(seed)
    t_ns = np.sort(rng.integers(0, 10**9, N)) + 10**15
    return t_ns, rng.integers(0, 346, N), rng.integers(0, 260, N), rng.integers(0, 2, N)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddd17")
    for i in (3, 0, 6, 1, 5, 2, 4):  # creation order must not matter
        t_ns, x, y, p = _arrays(i)
        rows = [[t_ns[j * 100], j * 100, max(0, j * 100 - 50)] for j in range(6)]
        ddd17_recording(root / f"dir{i}", t_ns, x, y, p, rows, mask_numbers=(2, 4, 6))
    return root


def test_split_protocol(root):
    assert DDD17_SPLITS == {"train": (0, 2, 3, 5, 6), "valid": (1,), "test": (4,)}
    names = {s: [d.name for d in Ddd17Segmentation(root, s, CFG).recordings] for s in DDD17_SPLITS}
    assert names == {
        "train": ["dir0", "dir2", "dir3", "dir5", "dir6"],
        "valid": ["dir1"],
        "test": ["dir4"],
    }
    cfg = Ddd17Config()
    assert (cfg.num_windows, cfg.events_per_window, cfg.label_size) == (20, 32_000, (200, 352))


def test_sample_events_come_from_the_index_row(root):
    ds = Ddd17Segmentation(root, "valid", CFG)
    t_ns, x, _, p = _arrays(1)
    assert len(ds) == 3
    for k, number in enumerate((2, 4, 6)):
        sample = ds[k]
        image = number - 1
        assert sample["image_index"] == image and sample["recording"] == "dir1"
        end = image * 100
        assert sample["t_us"] == t_ns[end] // 1000
        got = Events.concatenate(sample["events"])
        lo = max(0, end - 120)
        size = (end - lo) // 3
        np.testing.assert_array_equal(got.x, x[lo : lo + 3 * size])
        np.testing.assert_array_equal(got.p, 2 * p[lo : lo + 3 * size] - 1)
        label = sample["label"]
        assert label.shape == (200, 352) and label.dtype == torch.int64
        assert int(label[0, 0]) == number % 6
        # nearest columns: 351 → 345, 176 → 173 (OpenCV INTER_NEAREST)
        assert int(label[5, 351]) == 345 % 6 and int(label[5, 176]) == 173 % 6


def test_representation_geometry_against_float64_reference(root):
    def count(ev: Events) -> torch.Tensor:
        img = np.zeros((1, 260, 346))
        np.add.at(img[0], (ev.y.astype(int), ev.x.astype(int)), 1.0)
        return torch.from_numpy(img)

    raw = Ddd17Segmentation(root, "test", CFG)[2]
    rep = Ddd17Segmentation(root, "test", CFG, representation=count)[2]["representation"]
    assert rep.shape == (3, 200, 352)
    pos = np.arange(352) * 345 / 351
    lo = np.minimum(np.floor(pos).astype(int), 344)
    frac = pos - lo
    for c, chunk in enumerate(raw["events"]):
        img = count(chunk).numpy()[0]
        ref = img[:, lo] * (1 - frac) + img[:, lo + 1] * frac
        np.testing.assert_allclose(rep[c].double().numpy(), ref[:200], atol=5e-5)  # float32 weights


def test_errors(root, tmp_path):
    with pytest.raises(FileNotFoundError, match="found 0 dir"):
        Ddd17Segmentation(tmp_path, "train")
    with pytest.raises(ValueError, match="split"):
        Ddd17Segmentation(root, "val")
    bad = tmp_path / "bad"
    for i in range(7):
        t_ns, x, y, p = _arrays(i)
        ddd17_recording(bad / f"dir{i}", t_ns, x, y, p, [[t_ns[0], 0, 0]], mask_numbers=(1, 9))
    with pytest.raises(FormatError, match="segmentation_00000009.png.*image index 8"):
        Ddd17Segmentation(bad, "valid", CFG)
