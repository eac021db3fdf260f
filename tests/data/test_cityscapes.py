import numpy as np
import pytest
import torch

from evtransfer.data._common import resize_nearest
from evtransfer.data.cityscapes import CityscapesConfig, CityscapesSegmentation
from evtransfer.io.base import FormatError
from evtransfer.io.images import CITYSCAPES_TO_DDD17, CITYSCAPES_TO_DSEC11, read_label_png
from tests.data._layouts import cityscapes_split


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return cityscapes_split(tmp_path_factory.mktemp("cityscapes"), "train", 3, size=(64, 128))


def _raw_label(ds, i):
    return read_label_png(ds.pairs[i][1])


def test_dsec_geometry_resizes_and_maps_labels(root):
    ds = CityscapesSegmentation(CityscapesConfig(str(root), resize_to=(44, 64)), "dsec11")
    assert len(ds) == 3
    s = ds[1]
    assert s["rgb"].shape == (3, 44, 64) and s["rgb"].dtype == torch.float32
    assert 0.0 <= float(s["rgb"].min()) and float(s["rgb"].max()) <= 1.0
    want = CITYSCAPES_TO_DSEC11[resize_nearest(_raw_label(ds, 1), (44, 64))]
    assert torch.equal(s["label"], torch.from_numpy(want.astype(np.int64)))
    assert {5, 1, 7, 0, 3, 8, 255} == set(s["label"].unique().tolist())  # sky -> background 0


def test_ddd17_geometry_keeps_the_top_rows_and_the_centre(root):
    cfg = CityscapesConfig(str(root), resize_to=(32, 64), keep_top=25, crop_width=44)
    ds = CityscapesSegmentation(cfg, "ddd17")
    s = ds[0]
    assert cfg.size() == (25, 44) == s["label"].shape == s["rgb"].shape[1:]
    full = CITYSCAPES_TO_DDD17[resize_nearest(_raw_label(ds, 0), (32, 64))]
    assert np.array_equal(s["label"].numpy(), full[:25, 10:54])


def test_errors_name_the_problem(root, tmp_path):
    with pytest.raises(ValueError, match="label_space"):
        CityscapesSegmentation(CityscapesConfig(str(root)), "nope")
    with pytest.raises(ValueError, match="root is empty"):
        CityscapesSegmentation(CityscapesConfig(""))
    with pytest.raises(ValueError, match="keep_top"):
        CityscapesSegmentation(CityscapesConfig(str(root), resize_to=(10, 10), keep_top=20))
    with pytest.raises(FileNotFoundError, match="leftImg8bit"):
        CityscapesSegmentation(CityscapesConfig(str(tmp_path)))
    broken = cityscapes_split(tmp_path / "cs", "train", 1)
    next((broken / "gtFine").rglob("*.png")).unlink()
    with pytest.raises(FormatError, match="has no label"):
        CityscapesSegmentation(CityscapesConfig(str(broken)))
