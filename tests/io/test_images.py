"""Label PNGs, Cityscapes class maps and listing, 16-bit depth/disparity PNGs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from evtransfer.io.base import FormatError
from evtransfer.io.images import (
    CITYSCAPES_TO_DDD17,
    CITYSCAPES_TO_DSEC11,
    CITYSCAPES_TO_TRAINID,
    list_cityscapes,
    map_labels,
    read_depth_npy,
    read_dsec_disparity,
    read_kitti_depth,
    read_label_png,
    read_rgb,
    read_vkitti2_depth,
    write_label_png,
    write_png16,
)

# Independent sources, written out by hand:
# labelId -> trainId (mcordts/cityscapesScripts labels.py)
LABEL_TO_TRAIN = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}
# trainId -> DDD17 category (Shathe/Ev-SegNet generate_dataset.py class_to_category)
TRAIN_TO_DDD17 = [0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 1, 4, 4, 5, 5, 5, 5, 5, 5]
# trainId -> DSEC-11 (protocols.md §3 table, column by column)
TRAIN_TO_DSEC11 = [5, 6, 1, 9, 2, 4, 10, 10, 7, 7, 0, 3, 3, 8, 8, 8, 8, 8, 8]


def test_class_tables_agree_with_independent_compositions():
    for label_id in range(256):
        train = LABEL_TO_TRAIN.get(label_id)
        assert CITYSCAPES_TO_TRAINID[label_id] == (255 if train is None else train)
        assert CITYSCAPES_TO_DDD17[label_id] == (255 if train is None else TRAIN_TO_DDD17[train])
        assert CITYSCAPES_TO_DSEC11[label_id] == (255 if train is None else TRAIN_TO_DSEC11[train])
    # spot checks straight from protocols.md §3: sky → DSEC background 0, DDD17 background 1
    assert (CITYSCAPES_TO_DSEC11[23], CITYSCAPES_TO_DDD17[23]) == (0, 1)
    assert (CITYSCAPES_TO_DSEC11[19], CITYSCAPES_TO_DDD17[19]) == (10, 2)  # traffic light
    assert CITYSCAPES_TO_TRAINID[9] == CITYSCAPES_TO_TRAINID[255] == 255  # parking, ignore


def test_map_labels_validates_and_does_not_mutate():
    label = np.array([[7, 23], [255, 0]], np.uint8)
    copy = label.copy()
    np.testing.assert_array_equal(map_labels(label, CITYSCAPES_TO_DSEC11), [[5, 0], [255, 255]])
    np.testing.assert_array_equal(label, copy)
    with pytest.raises(ValueError, match="uint8"):
        map_labels(label.astype(np.int32), CITYSCAPES_TO_DSEC11)


def test_label_png_round_trip_palette_and_bad_inputs(tmp_path):
    label = np.random.default_rng(0).integers(0, 256, (5, 7)).astype(np.uint8)
    path = write_label_png(tmp_path / "l.png", label)
    assert Image.open(path).mode == "L"
    np.testing.assert_array_equal(read_label_png(path), label)
    pal = Image.fromarray(label).convert("P")
    pal.putpalette([v for i in range(256) for v in (i, 255 - i, 0)])
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_label_png(tmp_path / "p.png"), np.array(pal))
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(FormatError, match="rgb.png.*8-bit single channel"):
        read_label_png(tmp_path / "rgb.png")
    (tmp_path / "cut.png").write_bytes(path.read_bytes()[:40])
    with pytest.raises(FormatError, match="cut.png"):
        read_label_png(tmp_path / "cut.png")
    with pytest.raises(ValueError, match="uint8"):
        write_label_png(tmp_path / "x.png", label.astype(np.int64))
    with pytest.raises(FileNotFoundError):
        read_label_png(tmp_path / "absent.png")


def test_depth_scales_and_8bit_refusal(tmp_path):
    raw = np.array([[0, 256, 2560], [65535, 100, 1000]], np.uint16)
    path = write_png16(tmp_path / "d.png", raw)
    np.testing.assert_array_equal(
        read_kitti_depth(path), [[0, 1, 10], [255.99609375, 0.390625, 3.90625]]
    )
    np.testing.assert_allclose(
        read_vkitti2_depth(path), [[0, 2.56, 25.6], [655.35, 1, 10]], rtol=1e-6
    )
    assert read_dsec_disparity(path).dtype == np.float32
    Image.fromarray(np.full((2, 3), 200, np.uint8)).save(tmp_path / "d8.png")
    for reader in (read_kitti_depth, read_vkitti2_depth, read_dsec_disparity):
        with pytest.raises(FormatError, match="d8.png.*16-bit"):
            reader(tmp_path / "d8.png")
    np.save(tmp_path / "d.npy", np.ones((2, 2)))
    assert read_depth_npy(tmp_path / "d.npy").dtype == np.float32
    np.save(tmp_path / "d3.npy", np.ones((2, 2, 2)))
    with pytest.raises(FormatError, match="d3.npy"):
        read_depth_npy(tmp_path / "d3.npy")


def test_read_rgb_replicates_gray(tmp_path):
    Image.fromarray(np.array([[10, 20]], np.uint8)).save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_rgb(tmp_path / "g.png"), [[[10] * 3, [20] * 3]])


def test_cityscapes_listing(tmp_path):
    for city, stem in (("aachen", "aachen_000000_000019"), ("bonn", "bonn_000001_000019")):
        (tmp_path / "leftImg8bit/train" / city).mkdir(parents=True)
        (tmp_path / "gtFine/train" / city).mkdir(parents=True)
        Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(
            tmp_path / "leftImg8bit/train" / city / f"{stem}_leftImg8bit.png"
        )
        write_label_png(
            tmp_path / "gtFine/train" / city / f"{stem}_gtFine_labelIds.png",
            np.full((2, 2), 7, np.uint8),
        )
    pairs = list_cityscapes(tmp_path, "train")
    assert [p[0].parent.name for p in pairs] == ["aachen", "bonn"]
    assert pairs[1][1].name == "bonn_000001_000019_gtFine_labelIds.png"
    (pairs[0][1]).unlink()
    with pytest.raises(FormatError, match="aachen_000000_000019_leftImg8bit.png.*no label"):
        list_cityscapes(tmp_path, "train")
    with pytest.raises(FileNotFoundError):
        list_cityscapes(tmp_path, "val")
