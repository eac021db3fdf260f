"""Image-folder formats: label PNGs, Cityscapes, and 16-bit depth / disparity PNGs.

- Label PNGs: 8-bit single-channel class ids, 255 = ignore (DSEC-Semantic, DDD17, Cityscapes
  gtFine labelIds). Palette PNGs are read as their indices; written files carry no palette.
- Cityscapes (mcordts/cityscapesScripts): `leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png`
  with `gtFine/<split>/<city>/<stem>_gtFine_labelIds.png`. labelId → trainId (19 classes),
  → DSEC-11 and → DDD17-6 follow uzh-rpg/ess : utils/labels.py (protocols.md §3) and are given
  as 256-entry uint8 look-up tables; every id without a class maps to 255.
- Depth (Theia-4869/BiCross : datasets/*.py; formats.md §8): KITTI 16-bit PNG / 256,
  Virtual KITTI 2 16-bit PNG / 100 (metres); 0 = no measurement. An 8-bit PNG cannot hold
  these encodings and is refused. DSEC disparity: uint16 PNG / 256, 0 = invalid.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from evtransfer.io.base import FormatError

IGNORE = 255

# (name, labelId, trainId, DSEC-11, DDD17-6); ids not listed map to 255 in all three tables.
CITYSCAPES_CLASSES: tuple[tuple[str, int, int, int, int], ...] = (
    ("road", 7, 0, 5, 0),
    ("sidewalk", 8, 1, 6, 0),
    ("building", 11, 2, 1, 1),
    ("wall", 12, 3, 9, 1),
    ("fence", 13, 4, 2, 1),
    ("pole", 17, 5, 4, 2),
    ("traffic light", 19, 6, 10, 2),
    ("traffic sign", 20, 7, 10, 2),
    ("vegetation", 21, 8, 7, 3),
    ("terrain", 22, 9, 7, 3),
    ("sky", 23, 10, 0, 1),
    ("person", 24, 11, 3, 4),
    ("rider", 25, 12, 3, 4),
    ("car", 26, 13, 8, 5),
    ("truck", 27, 14, 8, 5),
    ("bus", 28, 15, 8, 5),
    ("train", 31, 16, 8, 5),
    ("motorcycle", 32, 17, 8, 5),
    ("bicycle", 33, 18, 8, 5),
)

DSEC11_CLASSES = (
    "background",
    "building",
    "fence",
    "person",
    "pole",
    "road",
    "sidewalk",
    "vegetation",
    "car",
    "wall",
    "traffic sign",
)  # code: uzh-rpg/ess utils/labels.py (labels_11_Cityscapes, by trainId)
DDD17_CLASSES = ("flat", "background", "object", "vegetation", "human", "vehicle")
# code: Shathe/Ev-SegNet generate_dataset.py; uzh-rpg/ess utils/labels.py (labels_6_Cityscapes)


def _lut(column: int) -> np.ndarray:
    lut = np.full(256, IGNORE, dtype=np.uint8)
    for row in CITYSCAPES_CLASSES:
        lut[row[1]] = row[column]
    return lut


CITYSCAPES_TO_TRAINID = _lut(2)
CITYSCAPES_TO_DSEC11 = _lut(3)
CITYSCAPES_TO_DDD17 = _lut(4)


def _trainid_lut(column: int) -> np.ndarray:
    lut = np.full(256, IGNORE, dtype=np.uint8)
    for row in CITYSCAPES_CLASSES:
        lut[row[2]] = row[column]
    return lut


TRAINID_TO_DSEC11 = _trainid_lut(3)  # 19 trainIds -> DSEC-11 (sky -> background)
TRAINID_TO_DDD17 = _trainid_lut(4)  # 19 trainIds -> DDD17-6


def map_labels(label: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Apply a 256-entry uint8 look-up table to a uint8 label map (returns a new array)."""
    label = np.asarray(label)
    if label.dtype != np.uint8:
        raise ValueError(f"label must be uint8, got {label.dtype}")
    if lut.shape != (256,) or lut.dtype != np.uint8:
        raise ValueError(f"lut must be (256,) uint8, got {lut.dtype} {lut.shape}")
    return lut[label]


# --- generic PNG I/O ---------------------------------------------------------------------------
def _open(path: str | Path) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise FormatError(path, f"not a readable image (truncated or corrupt?): {err}") from err
    return img


def read_label_png(path: str | Path) -> np.ndarray:
    """A label PNG as (H, W) uint8 class ids; palette images give their indices."""
    img = _open(path)
    if img.mode not in ("L", "P"):
        raise FormatError(path, f"label PNG must be 8-bit single channel, got mode {img.mode}")
    return np.array(img, dtype=np.uint8)


def _atomic_save(img: Image.Image, path: str | Path) -> Path:
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: folder {path.parent} does not exist")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        img.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_label_png(path: str | Path, label: np.ndarray) -> Path:
    """Write an (H, W) uint8 label map as a palette-free 8-bit grayscale PNG."""
    label = np.asarray(label)
    if label.ndim != 2 or label.dtype != np.uint8:
        raise ValueError(f"label must be (H, W) uint8, got {label.dtype} {label.shape}")
    return _atomic_save(Image.fromarray(label), path)


def read_rgb(path: str | Path) -> np.ndarray:
    """An 8-bit image as (H, W, 3) uint8 RGB (grayscale is replicated to three channels)."""
    img = _open(path)
    if img.mode not in ("RGB", "RGBA", "L", "P"):
        raise FormatError(path, f"expected an 8-bit RGB or grayscale image, got mode {img.mode}")
    return np.array(img.convert("RGB"), dtype=np.uint8)


def read_png16(path: str | Path) -> np.ndarray:
    """A 16-bit single-channel PNG as (H, W) uint16; 8-bit images are refused."""
    img = _open(path)
    if img.mode not in ("I;16", "I;16B", "I;16L", "I"):
        raise FormatError(
            path,
            f"expected a 16-bit single-channel PNG, got mode {img.mode} "
            "(an 8-bit depth/disparity PNG has lost its encoding)",
        )
    arr = np.array(img)
    if arr.min() < 0 or arr.max() > 65535:
        raise FormatError(path, f"values [{arr.min()}, {arr.max()}] do not fit 16 bits")
    return arr.astype(np.uint16)


def write_png16(path: str | Path, values: np.ndarray) -> Path:
    """Write an (H, W) uint16 array as a 16-bit grayscale PNG (atomically)."""
    values = np.asarray(values)
    if values.ndim != 2 or values.dtype != np.uint16:
        raise ValueError(f"values must be (H, W) uint16, got {values.dtype} {values.shape}")
    return _atomic_save(Image.fromarray(values), path)


def read_depth_png(path: str | Path, units_per_metre: float) -> np.ndarray:
    """A 16-bit depth PNG as (H, W) float32 metres = value / units_per_metre (0 = invalid)."""
    if units_per_metre <= 0:
        raise ValueError(f"units_per_metre must be positive, got {units_per_metre}")
    return (read_png16(path).astype(np.float32) / np.float32(units_per_metre)).astype(np.float32)


def read_kitti_depth(path: str | Path) -> np.ndarray:
    """KITTI depth PNG → (H, W) float32 metres (value / 256; 0 = no LiDAR point)."""
    return read_depth_png(path, 256.0)


def read_vkitti2_depth(path: str | Path) -> np.ndarray:
    """Virtual KITTI 2 depth PNG → (H, W) float32 metres (value / 100, i.e. stored in cm)."""
    return read_depth_png(path, 100.0)


def read_dsec_disparity(path: str | Path) -> np.ndarray:
    """DSEC disparity PNG → (H, W) float32 pixels (value / 256); 0 = invalid."""
    return read_depth_png(path, 256.0)


def read_depth_npy(path: str | Path) -> np.ndarray:
    """A depth map stored as a 2-D .npy array in metres → (H, W) float32."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise FormatError(path, f"not a readable .npy array: {err}") from err
    if arr.ndim != 2 or arr.dtype.kind not in "fiu":
        raise FormatError(path, f"expected a 2-D numeric depth map, got {arr.dtype} {arr.shape}")
    return arr.astype(np.float32)


# --- Cityscapes ------------------------------------------------------------------------------
def list_cityscapes(root: str | Path, split: str) -> list[tuple[Path, Path]]:
    """(image, labelIds) path pairs of a Cityscapes split, sorted; a missing label is an error."""
    root = Path(root)
    img_dir = root / "leftImg8bit" / split
    if not img_dir.is_dir():
        raise FileNotFoundError(f"{img_dir}: no such folder (Cityscapes layout)")
    pairs = []
    for img in sorted(img_dir.glob("*/*_leftImg8bit.png")):
        stem = img.name[: -len("_leftImg8bit.png")]
        label = root / "gtFine" / split / img.parent.name / f"{stem}_gtFine_labelIds.png"
        if not label.is_file():
            raise FormatError(img, f"has no label {label}")
        pairs.append((img, label))
    if not pairs:
        raise FormatError(img_dir, "contains no <city>/*_leftImg8bit.png images")
    return pairs
