"""N-Caltech101 (class folders of .bin) and UHSR spike recognition (.npz)."""

from __future__ import annotations

import numpy as np
import pytest

from evtransfer.data.recognition import (
    NCaltech101,
    NCaltech101Config,
    UhsrRecognition,
    stratified_split,
)
from evtransfer.io.base import FormatError


def write_bin(path, x, y, t, p01) -> None:
    """N-MNIST 5-byte records: x, y, p<<7 | t[22:16], t[15:8], t[7:0]."""
    t = np.asarray(t, np.int64)
    rec = np.stack(
        [x, y, (np.asarray(p01) << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF], 1
    )
    path.write_bytes(rec.astype(np.uint8).tobytes())


@pytest.fixture()
def caltech(tmp_path):
    rng = np.random.default_rng(0)
    truth = {}
    for cls, n in (("accordion", 3), ("airplanes", 5), ("BACKGROUND_Google", 2)):
        (tmp_path / cls).mkdir()
        for k in range(n):
            m = 20
            ev = (
                rng.integers(0, 240, m),
                rng.integers(0, 180, m),
                np.sort(rng.integers(0, 100_000, m)),
                rng.integers(0, 2, m),
            )
            path = tmp_path / cls / f"image_{k + 1:04d}.bin"
            write_bin(path, *ev)
            truth[str(path)] = ev
    return tmp_path, truth


def test_stratified_split_properties():
    train, test = stratified_split([3, 5, 10], 0.8, seed=1)
    assert [len(a) for a in train] == [2, 4, 8] and [len(a) for a in test] == [1, 1, 2]
    for a, b, n in zip(train, test, [3, 5, 10], strict=True):
        assert sorted(np.r_[a, b].tolist()) == list(range(n))
    again, _ = stratified_split([3, 5, 10], 0.8, seed=1)
    assert all(np.array_equal(u, v) for u, v in zip(train, again, strict=True))
    others = [stratified_split([10], 0.5, seed=s)[0][0].tolist() for s in range(5)]
    assert len({tuple(o) for o in others}) > 1
    with pytest.raises(ValueError, match="train_fraction"):
        stratified_split([3], 1.5, 0)


def test_ncaltech101_classes_split_and_events(caltech):
    pytest.importorskip("evtransfer.io.nmnist")
    root, truth = caltech
    train = NCaltech101(root, "train")
    test = NCaltech101(root, "test")
    assert train.classes == ["accordion", "airplanes"]
    assert (len(train), len(test)) == (6, 2)
    assert not {str(p) for p, _ in train.samples} & {str(p) for p, _ in test.samples}
    for ds in (train, test):
        for k in range(len(ds)):
            sample = ds[k]
            x, y, t, p = truth[sample["path"]]
            ev = sample["events"]
            assert ev.sensor_size == (240, 180)
            assert sample["label"] == ds.classes.index(sample["path"].split("/")[-2])
            np.testing.assert_array_equal(ev.x, x)
            np.testing.assert_array_equal(ev.t, t)
            np.testing.assert_array_equal(ev.p, 2 * p - 1)
    with_bg = NCaltech101(root, "train", NCaltech101Config(exclude=()))
    assert with_bg.classes[0] == "BACKGROUND_Google"


def _npz(path, spk, label=7, **extra):
    np.savez(path, spk=spk, label=np.int64(label), **extra)


def test_uhsr_crop_and_errors(tmp_path):
    (tmp_path / "test" / "class_a").mkdir(parents=True)
    spk = (np.random.default_rng(0).random((4, 250, 250)) < 0.1).astype(np.uint8)
    _npz(tmp_path / "test" / "class_a" / "s0.npz", spk, label_name=np.array("cat"))
    ds = UhsrRecognition(tmp_path, "test")
    sample = ds[0]
    assert sample["label"] == 7
    assert sample["spikes"].data.shape == (4, 224, 224)
    np.testing.assert_array_equal(sample["spikes"].data, spk[:, 13:237, 13:237])
    np.savez(tmp_path / "test" / "class_a" / "s1.npz", spk=spk)
    with pytest.raises(FormatError, match="s1.npz.*label"):
        UhsrRecognition(tmp_path, "test")[1]
    _npz(tmp_path / "test" / "class_a" / "s1.npz", spk * 2)
    with pytest.raises(FormatError, match="s1.npz.*0/1"):
        UhsrRecognition(tmp_path, "test")[1]
    (tmp_path / "test" / "class_a" / "s1.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(FormatError, match="s1.npz"):
        UhsrRecognition(tmp_path, "test")[1]
    with pytest.raises(FileNotFoundError):
        UhsrRecognition(tmp_path, "train")
