"""Palettes, colourisers (hand-computed colours) and PNG panels."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from matplotlib import colormaps
from PIL import Image

from evtransfer.viz import (
    CITYSCAPES19_PALETTE,
    DDD17_PALETTE,
    DSEC11_PALETTE,
    PALETTES,
    colorize_depth,
    colorize_events,
    colorize_flow,
    colorize_labels,
    save_panel,
)


def test_palettes_have_the_published_sizes_and_are_read_only():
    assert DSEC11_PALETTE.shape == (11, 3)
    assert DDD17_PALETTE.shape == (6, 3)
    assert CITYSCAPES19_PALETTE.shape == (19, 3)
    for pal in PALETTES.values():
        assert pal.dtype == np.uint8 and not pal.flags.writeable
    # formats.md §1, DSEC 11-class colours in id order
    assert DSEC11_PALETTE.tolist() == [
        [0, 0, 0], [70, 70, 70], [190, 153, 153], [220, 20, 60], [153, 153, 153],
        [128, 64, 128], [244, 35, 232], [107, 142, 35], [0, 0, 142], [102, 102, 156],
        [220, 220, 0]]
    assert CITYSCAPES19_PALETTE[0].tolist() == [128, 64, 128]  # road
    assert CITYSCAPES19_PALETTE[18].tolist() == [119, 11, 32]  # bicycle


def test_colorize_labels_uses_the_palette_and_paints_ignore_black():
    labels = torch.tensor([[0, 5, 255], [2, 1, 255]], dtype=torch.uint8)
    out = colorize_labels(labels, DDD17_PALETTE)
    assert out.shape == (2, 3, 3) and out.dtype == np.uint8
    assert out[0, 1].tolist() == [0, 0, 142]  # vehicle
    assert out[1, 0].tolist() == [220, 220, 0]  # object
    assert out[0, 2].tolist() == out[1, 2].tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="labels \\[6\\] outside \\[0, 6\\)"):
        colorize_labels(np.array([[6]]), DDD17_PALETTE)
    with pytest.raises(ValueError, match="palette must be"):
        colorize_labels(np.array([[0]]), DDD17_PALETTE.astype(float))


def test_colorize_depth_is_log_scaled_and_invalid_is_black():
    # 1, 10, 100 m between vmin 1 and vmax 100 sit at t = 0, 0.5, 1 on a log scale
    d = np.array([[1.0, 10.0, 100.0, np.nan, 0.0, np.inf]])
    out = colorize_depth(d, vmin=1.0, vmax=100.0, cmap="viridis")
    ref = colormaps["viridis"](np.array([0.0, 0.5, 1.0]), bytes=True)[:, :3]
    np.testing.assert_array_equal(out[0, :3], ref)
    assert out[0, 3:].tolist() == [[0, 0, 0]] * 3
    with pytest.raises(ValueError, match="vmin"):
        colorize_depth(d, vmin=0.0, vmax=10.0)
    with pytest.raises(ValueError, match="\\(H, W\\) float"):
        colorize_depth(np.ones((1, 2, 2)))


def test_colorize_events_by_hand():
    # net −1 at scale 2 → half red on white: 255·0.5 + 255·0.5 = 255 red, 127.5 → 128 others
    img = np.array([[2.0, -1.0, 0.0, 0.5]])
    out = colorize_events(img, scale=2.0)
    assert out[0].tolist() == [[0, 0, 255], [255, 128, 128], [255, 255, 255], [191, 191, 255]]
    hist = np.zeros((2, 1, 2))
    hist[0, 0, 0] = 3  # negative
    hist[1, 0, 1] = 3  # positive
    dark = colorize_events(hist, background="black")
    assert dark[0].tolist() == [[255, 0, 0], [0, 0, 255]]
    with pytest.raises(ValueError, match="\\(2, H, W\\) or \\(H, W\\)"):
        colorize_events(np.zeros((3, 2, 2)))


def test_colorize_flow_matches_the_middlebury_wheel_by_hand():
    # wheel: RY 15, YG 6, GC 4, CB 11, BM 13, MR 6 (55 colours); index = (atan2(−v,−u)/π+1)/2·54
    # left (−1, 0): index 27 = CB step 2 → (0, 1 − 2/11, 1) → (0, 208, 255)
    # down (0, 1): index 13.5 → mean of RY 13, 14 → (1, 13.5/15, 0) → (255, 229, 0)
    # up (0, −1): index 40.5 → mean of BM 4, 5 → (4.5/13, 0, 1) → (88, 0, 255)
    flow = np.array([[[-1.0, 0.0, 0.0, 0.0, np.nan]], [[0.0, 1.0, -1.0, 0.0, 0.0]]])
    out = colorize_flow(flow)
    assert out[0].tolist() == [[0, 208, 255], [255, 229, 0], [88, 0, 255], [255, 255, 255],
                               [0, 0, 0]]
    # half the maximum magnitude: 1 − 0.5(1 − c) → (127, 231, 255); beyond it: 0.75·c
    half = colorize_flow(np.array([[[-1.0]], [[0.0]]]), max_flow=2.0)
    assert half[0, 0].tolist() == [127, 231, 255]
    over = colorize_flow(np.array([[[-2.0]], [[0.0]]]), max_flow=1.0)
    assert over[0, 0].tolist() == [0, 156, 191]


def test_save_panel_writes_a_png_of_the_grid_size(tmp_path):
    red = np.zeros((20, 30, 3), np.uint8)
    red[..., 0] = 255
    grey = np.full((10, 12), 128, np.uint8)
    path = save_panel([red, grey, red], ["events", "depth", ""], tmp_path / "sub" / "p.png",
                      ncols=2)
    with Image.open(path) as im:
        assert im.format == "PNG"
        # cells 30 wide and 20 + 18 tall; 2 columns × 2 rows
        assert im.size == (60, 76)
        rgb = np.asarray(im.convert("RGB"))
    assert rgb[18 + 10, 15].tolist() == [255, 0, 0]  # centre of the first image
    assert rgb[18 + 5, 30 + 15].tolist() == [128, 128, 128]  # grey image centred in its cell
    untitled = save_panel([grey], [""], tmp_path / "u.png")
    with Image.open(untitled) as im:
        assert im.size == (12, 10)


@pytest.mark.parametrize(
    "images, titles, name, message",
    [
        ([np.zeros((4, 4, 3))], ["a"], "p.png", "uint8"),
        ([np.zeros((4, 4, 3), np.uint8)], ["a", "b"], "p.png", "one title per image"),
        ([np.zeros((4, 4, 3), np.uint8)], ["a"], "p.jpg", "PNG"),
    ],
)
def test_save_panel_validates(tmp_path, images, titles, name, message):
    with pytest.raises(ValueError, match=message):
        save_panel(images, titles, tmp_path / name)


def test_import_selects_no_matplotlib_backend():
    code = "import sys, evtransfer.viz; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_panel_legend_draws_each_class_swatch(tmp_path):
    """A legend band under the panel: one swatch of each palette colour (issue 21)."""
    palette = np.array([[255, 0, 0], [0, 128, 0], [0, 0, 255]], np.uint8)
    image = np.zeros((20, 300, 3), np.uint8)
    plain = save_panel([image], ["x"], tmp_path / "a.png")
    with_key = save_panel([image], ["x"], tmp_path / "b.png",
                          legend=(("red", "green", "blue"), palette))
    a, b = np.asarray(Image.open(plain))[..., :3], np.asarray(Image.open(with_key))[..., :3]
    assert b.shape[0] == a.shape[0] + 14 and b.shape[1] == a.shape[1]
    band = b[a.shape[0]:].reshape(-1, 3)
    for rgb in palette:
        assert (np.abs(band.astype(int) - rgb).sum(1) < 10).sum() >= 50  # a 10x10 swatch
    with pytest.raises(ValueError, match="one name per"):
        save_panel([image], ["x"], tmp_path / "c.png", legend=(("red",), palette))
