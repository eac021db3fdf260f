"""Paired RGB + depth sources: KITTI / VKITTI 2 layouts, KB crop, generic folders."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from evtransfer.data.depth_sources import (
    KB_CROP,
    VKITTI2_SCENES,
    DepthFolder,
    DepthFolderConfig,
    KittiDepth,
    PairedDepthConfig,
    Vkitti2Depth,
    bottom_center_box,
)
from evtransfer.io.base import FormatError
from evtransfer.io.images import write_png16

H, W = 9, 14
SMALL = PairedDepthConfig(crop=(4, 6))


def _rgb(path, seed):
    arr = np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return arr


def _depth(path, seed):
    raw = np.random.default_rng(seed).integers(0, 20000, (H, W)).astype(np.uint16)
    write_png16(path, raw)
    return raw


def test_kb_crop_box():
    assert KB_CROP == (352, 1216)
    assert bottom_center_box(375, 1242, KB_CROP) == (23, 13, 352, 1216)
    assert bottom_center_box(370, 1224, KB_CROP) == (18, 4, 352, 1216)
    with pytest.raises(ValueError, match="smaller"):
        bottom_center_box(300, 1242, KB_CROP)


@pytest.fixture()
def kitti(tmp_path):
    scene = tmp_path / "input" / "2011_09_26" / "2011_09_26_drive_0001_sync"
    for d in ("rgb", "depth", "spike/npy"):
        (scene / d).mkdir(parents=True)
    rgb = _rgb(scene / "rgb" / "0000000005.png", 0)
    raw = _depth(scene / "depth" / "0000000005.png", 1)
    spikes = (np.random.default_rng(2).random((3, H, W)) < 0.5).astype(np.float32)
    np.save(scene / "spike" / "npy" / "0000000005.npy", spikes)
    line = "2011_09_26/2011_09_26_drive_0001_sync/image_02/data/{} x 721.5\n"
    for split in ("train", "test"):
        (tmp_path / f"kitti_eigen_{split}.txt").write_text(
            line.format("0000000005.png") + line.format("0000000099.png") + "\n"
        )
    return tmp_path, rgb, raw, spikes


def test_kitti_train_crops_depth_and_counts_missing(kitti):
    root, rgb, raw, spikes = kitti
    ds = KittiDepth(root, "train", PairedDepthConfig(crop=(4, 6), load_spikes=True))
    assert len(ds) == 1 and ds.missing == 1
    s = ds[0]
    top, left = H - 4, (W - 6) // 2
    assert s["crop_box"] == (top, left, 4, 6)
    np.testing.assert_allclose(
        s["rgb"].numpy(), rgb[top:, left : left + 6].transpose(2, 0, 1) / 255.0
    )
    np.testing.assert_array_equal(s["depth"].numpy(), raw[top:, left : left + 6] / np.float32(256))
    np.testing.assert_array_equal(s["spikes"].numpy(), spikes[:, top:, left : left + 6])


def test_kitti_test_keeps_full_depth(kitti):
    root, _, raw, _ = kitti
    s = KittiDepth(root, "test", SMALL)[0]
    assert s["rgb"].shape == (3, 4, 6)
    np.testing.assert_array_equal(s["depth"].numpy(), raw / np.float32(256))
    with pytest.raises(ValueError, match="split"):
        KittiDepth(root, "val")


def test_vkitti2_scenes_and_scale(tmp_path):
    assert VKITTI2_SCENES == {
        "train": ("Scene01", "Scene02", "Scene06", "Scene20"),
        "test": ("Scene18",),
    }
    base = tmp_path / "input" / "Scene18"
    for d in ("rgb", "depth"):
        (base / d).mkdir(parents=True)
    _rgb(base / "rgb" / "rgb_00000.jpg", 0)
    raw = _depth(base / "depth" / "depth_00000.png", 1)
    _depth(base / "depth" / "depth_00001.png", 2)  # no rgb: skipped, counted
    ds = Vkitti2Depth(tmp_path, "test", SMALL)
    assert len(ds) == 1 and ds.missing == 1
    np.testing.assert_array_equal(ds[0]["depth"].numpy(), raw / np.float32(100))
    with pytest.raises(FileNotFoundError, match="Scene01"):
        Vkitti2Depth(tmp_path, "train")


def test_depth_folder_pairs_subset_and_8bit_refusal(tmp_path):
    for scene in ("a", "b"):
        for d in ("rgb", "depth"):
            (tmp_path / scene / d).mkdir(parents=True)
        for k in range(5):
            _rgb(tmp_path / scene / "rgb" / f"{k:03d}.jpg", k)
            _depth(tmp_path / scene / "depth" / f"{k:03d}.png", k)
    full = DepthFolder(tmp_path)
    assert len(full) == 10
    head = DepthFolder(tmp_path, DepthFolderConfig(subset=(0.0, 0.8)))
    tail = DepthFolder(tmp_path, DepthFolderConfig(subset=(0.8, 1.0)), split="test")
    assert len(head) == 8 and len(tail) == 2
    assert [s["path"].split("/")[-3] for s in (tail[0], tail[1])] == ["b", "b"]
    Image.fromarray(np.zeros((H, W), np.uint8)).save(tmp_path / "a" / "depth" / "000.png")
    with pytest.raises(FormatError, match="000.png.*16-bit"):
        full[0]
