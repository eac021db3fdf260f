"""N-Caltech101 recordings with their Caltech101 images, as recognition transfer tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from evtransfer.data.caltech import CaltechConfig, caltech_event_labels, load_caltech_recognition
from evtransfer.data.recognition import NCaltech101, NCaltech101Config
from evtransfer.data.transfer import EventInput


def _write_bin(path, x, y, t, p01) -> None:
    """N-MNIST 5-byte records: x, y, p<<7 | t[22:16], t[15:8], t[7:0]."""
    t = np.asarray(t, np.int64)
    rec = np.stack([x, y, (np.asarray(p01) << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF],
                   1)
    path.write_bytes(rec.astype(np.uint8).tobytes())


@pytest.fixture()
def caltech(tmp_path):
    return write_caltech(tmp_path)


def write_caltech(tmp_path):
    """Two classes of 3 recordings: class c's events all at pixel (10 + c, 20), its images a
    constant grey 60 + 100 c. Returns the events' and the images' roots."""
    events, images = tmp_path / "events", tmp_path / "images"
    for c, cls in enumerate(("accordion", "airplanes")):
        (events / cls).mkdir(parents=True)
        (images / cls).mkdir(parents=True)
        for k in range(3):
            n = 4
            _write_bin(events / cls / f"image_{k + 1:04d}.bin", np.full(n, 10 + c),
                       np.full(n, 20), np.arange(n) * 10, np.ones(n, np.int64))
            Image.fromarray(np.full((30, 40, 3), 60 + 100 * c, np.uint8)).save(
                images / cls / f"image_{k + 1:04d}.jpg")
    return events, images


def test_caltech_recognition_tensors(caltech):
    pytest.importorskip("evtransfer.io.nmnist")
    events, images = caltech
    cfg = CaltechConfig(str(events), str(images), NCaltech101Config(train_fraction=2 / 3),
                        EventInput(kind="histogram", normalize=False), size=(180, 240))
    train, test = load_caltech_recognition(cfg)
    assert train.class_names == ("accordion", "airplanes") and train.num_classes == 2
    assert train.source_rgb.shape == (4, 3, 180, 240) and test.x.shape == (2, 2, 180, 240)
    assert train.source_y.tolist() == [0, 0, 1, 1] and test.y.tolist() == [0, 1]
    assert not hasattr(train, "synth_y") and not hasattr(train, "target_y")
    for x, y in zip(train.target_x, train.source_y.tolist(), strict=True):
        assert x[1, 20, 10 + y] == 4 and x.sum() == 4  # 4 positive events at (10 + c, 20)
    for img, y in zip(train.pair_gray, train.source_y.tolist(), strict=True):
        torch.testing.assert_close(img.mean(), torch.tensor((60 + 100 * y) / 255), atol=3 / 255,
                                   rtol=0)  # JPEG keeps a flat grey within a few levels
    assert caltech_event_labels(cfg, "train").tolist() == [0, 0, 1, 1]


def test_caltech_training_data_ignore_the_recordings_labels(caltech, monkeypatch):
    """Poisoned N-Caltech101 labels change the test labels only: the source classes come
    from the Caltech101 image folders."""
    pytest.importorskip("evtransfer.io.nmnist")
    events, images = caltech
    cfg = CaltechConfig(str(events), str(images), NCaltech101Config(train_fraction=2 / 3),
                        EventInput(kind="histogram", normalize=False), size=(18, 24))
    clean_train, clean_test = load_caltech_recognition(cfg)
    poison_recordings(monkeypatch)
    train, test = load_caltech_recognition(cfg)
    for name in ("source_rgb", "source_y", "target_x", "pair_gray"):
        assert torch.equal(getattr(train, name), getattr(clean_train, name)), name
    assert torch.equal(test.x, clean_test.x) and not torch.equal(test.y, clean_test.y)


def poison_recordings(monkeypatch) -> None:
    """Every N-Caltech101 sample's label replaced by a random wrong class (a fixed draw)."""
    init = NCaltech101.__init__
    rng = np.random.default_rng(7)

    def poisoned(self, *args, **kwargs):
        init(self, *args, **kwargs)
        n = len(self.classes)
        self.samples = [(path, int((c + rng.integers(1, n)) % n)) for path, c in self.samples]

    monkeypatch.setattr(NCaltech101, "__init__", poisoned)


def test_caltech_errors(caltech):
    pytest.importorskip("evtransfer.io.nmnist")
    events, images = caltech
    for path in (images / "airplanes").glob("*.jpg"):
        path.unlink()
    with pytest.raises(FileNotFoundError, match="no Caltech101 image"):
        load_caltech_recognition(CaltechConfig(str(events), str(images)))
    with pytest.raises(ValueError, match="must both be set"):
        load_caltech_recognition(CaltechConfig(str(events)))
