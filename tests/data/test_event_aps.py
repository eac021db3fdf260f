"""EvDistill's side-by-side event | APS layout (DDD17 / MVSEC segmentation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from evtransfer.data.event_aps import EventApsConfig, EventApsPairs, load_event_aps
from evtransfer.io.images import write_label_png


def _write(root, split: str, name: str, events: np.ndarray, aps: np.ndarray,
           label: np.ndarray) -> None:
    for sub in ("images", "labels"):
        (root / sub / split).mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate([events, aps], axis=1)).save(root / "images" / split /
                                                                 f"{name}.png")
    write_label_png(root / "labels" / split / f"{name}.png", label)


@pytest.fixture()
def layout(tmp_path):
    rng = np.random.default_rng(0)
    for split, names in (("train", ["a", "b", "c"]), ("test", ["z"])):
        for name in names:
            _write(tmp_path, split, name, rng.integers(0, 256, (4, 6, 3), dtype=np.uint8),
                   rng.integers(0, 256, (4, 6, 3), dtype=np.uint8),
                   rng.integers(0, 6, (4, 6), dtype=np.uint8))
    return tmp_path


def test_halves_without_resizing_are_the_pixels(layout):
    ds = EventApsPairs(layout, "train", size=(4, 6))
    assert ds.names == ["a", "b", "c"]
    pair = np.asarray(Image.open(layout / "images/train/b.png"))
    sample = ds[1]
    np.testing.assert_allclose(sample["events"].permute(1, 2, 0).numpy(), pair[:, :6] / 255.0,
                               rtol=0, atol=1e-7)
    np.testing.assert_allclose(sample["aps"].permute(1, 2, 0).numpy(), pair[:, 6:] / 255.0,
                               rtol=0, atol=1e-7)
    label = np.asarray(Image.open(layout / "labels/train/b.png"))
    np.testing.assert_array_equal(sample["label"].numpy(), label)
    assert sample["label"].dtype == torch.int64


def test_resizing_keeps_constants_and_repeats_labels(tmp_path):
    events = np.full((4, 6, 3), 40, np.uint8)
    aps = np.full((4, 6, 3), 200, np.uint8)
    label = np.arange(24, dtype=np.uint8).reshape(4, 6) % 6
    _write(tmp_path, "test", "x", events, aps, label)
    sample = EventApsPairs(tmp_path, "test", size=(8, 12))[0]
    assert sample["events"].shape == (3, 8, 12)
    torch.testing.assert_close(sample["events"], torch.full((3, 8, 12), 40 / 255))
    torch.testing.assert_close(sample["aps"], torch.full((3, 8, 12), 200 / 255))
    expected = np.repeat(np.repeat(label, 2, 0), 2, 1)  # ×2 nearest duplicates every pixel
    np.testing.assert_array_equal(sample["label"].numpy(), expected)


def test_source_target_cut_and_every(layout):
    (layout / "images/train/d.png").write_bytes((layout / "images/train/a.png").read_bytes())
    (layout / "labels/train/d.png").write_bytes((layout / "labels/train/a.png").read_bytes())
    train, test = load_event_aps(EventApsConfig(root=str(layout), size=(4, 6), every=1))
    full = EventApsPairs(layout, "train", size=(4, 6))  # a, b | c, d
    assert train.num_classes == 6 and not hasattr(train, "target_label")
    torch.testing.assert_close(train.source_rgb, torch.stack([full[0]["aps"], full[1]["aps"]]))
    torch.testing.assert_close(train.source_label, torch.stack([full[0]["label"],
                                                                full[1]["label"]]))
    torch.testing.assert_close(train.target_x, torch.stack([full[2]["events"],
                                                            full[3]["events"]]))
    luma = (full[3]["aps"] * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0)
    torch.testing.assert_close(train.pair_gray[1], luma)
    z = EventApsPairs(layout, "test", size=(4, 6))[0]
    torch.testing.assert_close(test.x[0], z["events"])
    torch.testing.assert_close(test.label[0], z["label"])
    torch.testing.assert_close(test.aps[0], z["aps"])
    every = load_event_aps(EventApsConfig(root=str(layout), size=(4, 6), every=2))[0]  # a | c
    torch.testing.assert_close(every.source_rgb, full[0]["aps"][None])
    torch.testing.assert_close(every.target_x, full[2]["events"][None])
    with pytest.raises(ValueError, match="cannot be cut"):  # 4 frames: 0.1 leaves no source
        load_event_aps(EventApsConfig(root=str(layout), source_fraction=0.1))


def test_target_labels_are_never_opened(layout, monkeypatch):
    """Only the source frames' (a) and the test split's label files are read."""
    from evtransfer.data import event_aps

    opened = []
    real = event_aps.read_label_png
    monkeypatch.setattr(event_aps, "read_label_png", lambda p: opened.append(p) or real(p))
    load_event_aps(EventApsConfig(root=str(layout), size=(4, 6), source_fraction=0.4))
    assert sorted(p.relative_to(layout).as_posix() for p in opened) == [
        "labels/test/z.png", "labels/train/a.png"]


def test_layout_errors(layout, tmp_path):
    (layout / "labels/train/c.png").rename(layout / "labels/train/d.png")
    with pytest.raises(ValueError, match="different names"):
        EventApsPairs(layout, "train")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        EventApsPairs(tmp_path / "missing", "train")
    with pytest.raises(ValueError, match="root is empty"):
        load_event_aps(EventApsConfig())
    with pytest.raises(ValueError, match="source_fraction"):
        load_event_aps(EventApsConfig(root=str(layout), source_fraction=1.0))
