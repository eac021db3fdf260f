"""Paired RGB + depth sources for BiCross-style transfer (Theia-4869/BiCross : datasets/*.py).

- `KittiDepth`: `root/kitti_eigen_{train,test}.txt` (Eigen split; the first token of a line
  is `<date>/<scene>/…/…/<file>`), images in `root/input/<date>/<scene>/{rgb,depth}/<file>`,
  depth PNG / 256 m.
- `Vkitti2Depth` (Virtual KITTI 2.0.3): `root/input/SceneXX/depth/depth_N.png` with
  `rgb/rgb_N.jpg`, depth PNG / 100 m; train Scene01/02/06/20, test Scene18.
- `DepthFolder`: any `root/<scene>/{rgb,depth}/` folder pairing files by stem, depth as a
  16-bit PNG with a given scale or a .npy in metres; optionally a fraction of the sorted list
  (DrivingStereo: first 80 % train / last 20 % test).

KITTI and VKITTI 2 use the bottom-centre KB crop 352 × 1216 (top = H − 352,
left = ⌊(W − 1216) / 2⌋). As in BiCross, the GT depth is cropped for training only; test
samples keep the full-size depth and carry `crop_box` = (top, left, h, w) so predictions can
be pasted back for the Garg-crop evaluation. Optional BiCross spike arrays
(`spike/npy/<stem>.npy`, (T, H, W) in {0, 1}) are cropped alike. Resizing to the network
input (384 × 384 in BiCross) is left to the `transform`.

A sample is a dict: `rgb` ((3, h, w) float32 in [0, 1]), `depth` (float32 metres, 0 = no
measurement), `crop_box`, `path`, and `spikes` ((T, h, w) uint8) when requested.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from evtransfer.data._common import Sample, Transform, finish, require_dir
from evtransfer.io.base import FormatError
from evtransfer.io.images import read_depth_npy, read_depth_png, read_rgb

KB_CROP = (352, 1216)  # code: Theia-4869/BiCross datasets/kitti.py, vkitti.py
# code: Theia-4869/BiCross datasets/vkitti.py (2.0.3 scenes)
VKITTI2_SCENES = {"train": ("Scene01", "Scene02", "Scene06", "Scene20"), "test": ("Scene18",)}


def bottom_center_box(height: int, width: int, crop: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a bottom-centred crop: top = H − h, left = ⌊(W − w) / 2⌋."""
    h, w = crop
    if height < h or width < w:
        raise ValueError(f"image {height}x{width} (HxW) is smaller than the crop {h}x{w}")
    return height - h, (width - w) // 2, h, w


@dataclass(frozen=True)
class PairedDepthConfig:
    """Crop and optional spikes of a paired RGB + depth source."""

    crop: tuple[int, int] | None = KB_CROP  # code: Theia-4869/BiCross datasets/kitti.py
    crop_depth_in_test: bool = False  # code: Theia-4869/BiCross (GT cropped in train mode only)
    load_spikes: bool = False  # BiCross spike/npy arrays next to rgb/ and depth/


@dataclass(frozen=True)
class _Pair:
    rgb: Path
    depth: Path
    spikes: Path | None


def _load_spikes(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise FormatError(path, f"not a readable .npy array: {err}") from err
    if arr.ndim != 3:
        raise FormatError(path, f"spikes must be (T, H, W), got shape {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() > 1):
        raise FormatError(path, f"spikes must be 0/1, found range [{arr.min()}, {arr.max()}]")
    return arr.astype(np.uint8)


class _PairedDepth(Dataset):
    """Shared reading and cropping of `_Pair` lists."""

    units_per_metre: float | None = 256.0

    def __init__(
        self, pairs: list[_Pair], split: str, config: PairedDepthConfig, transform: Transform | None
    ):
        self.pairs, self.split, self.config, self.transform = pairs, split, config, transform

    def __len__(self) -> int:
        return len(self.pairs)

    def _depth(self, path: Path) -> np.ndarray:
        if path.suffix == ".npy":
            return read_depth_npy(path)
        return read_depth_png(path, self.units_per_metre)

    def __getitem__(self, index: int) -> Sample:
        pair, cfg = self.pairs[index], self.config
        rgb, depth = read_rgb(pair.rgb), self._depth(pair.depth)
        h, w = rgb.shape[:2]
        if depth.shape != (h, w):
            raise FormatError(pair.depth, f"depth is {depth.shape}, image {pair.rgb} is {(h, w)}")
        top, left, ch, cw = bottom_center_box(h, w, cfg.crop) if cfg.crop else (0, 0, h, w)
        rows, cols = slice(top, top + ch), slice(left, left + cw)
        if self.split == "train" or cfg.crop_depth_in_test:
            depth = depth[rows, cols]
        sample: Sample = {
            "rgb": torch.from_numpy(np.ascontiguousarray(rgb[rows, cols].transpose(2, 0, 1)))
            .float()
            .div_(255.0),
            "depth": torch.from_numpy(np.ascontiguousarray(depth)),
            "crop_box": (top, left, ch, cw),
            "path": str(pair.rgb),
        }
        if pair.spikes is not None:
            spikes = _load_spikes(pair.spikes)
            if spikes.shape[1:] != (h, w):
                raise FormatError(pair.spikes, f"spikes are {spikes.shape[1:]}, image is {(h, w)}")
            sample["spikes"] = torch.from_numpy(np.ascontiguousarray(spikes[:, rows, cols]))
        return finish(sample, self.transform)


def _check_split(split: str) -> str:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return split


class KittiDepth(_PairedDepth):
    """KITTI Eigen-split RGB + depth in BiCross's layout (see the module docstring)."""

    units_per_metre = 256.0  # code: Theia-4869/BiCross datasets/kitti.py

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        config: PairedDepthConfig | None = None,
        *,
        transform: Transform | None = None,
    ):
        config = config or PairedDepthConfig()
        root = require_dir(Path(root), "KITTI root")
        listing = root / f"kitti_eigen_{_check_split(split)}.txt"
        if not listing.is_file():
            raise FileNotFoundError(f"{listing}: no such file (Eigen split list)")
        pairs, self.missing = [], 0
        for line_no, line in enumerate(listing.read_text().splitlines(), 1):
            if not line.strip():
                continue
            tokens = line.split()[0].split("/")
            if len(tokens) < 5:
                raise FormatError(
                    listing, f"line {line_no}: expected date/scene/…/…/file, got {line!r}"
                )
            scene = root / "input" / tokens[0] / tokens[1]
            spikes = scene / "spike" / "npy" / f"{Path(tokens[4]).stem}.npy"
            pair = _pair(
                scene / "rgb" / tokens[4],
                scene / "depth" / tokens[4],
                spikes if config.load_spikes else None,
            )
            if pair is None:
                self.missing += 1
            else:
                pairs.append(pair)
        super().__init__(sorted(pairs, key=lambda p: p.depth), split, config, transform)


def _pair(rgb: Path, depth: Path, spikes: Path | None) -> _Pair | None:
    """The pair if its files exist (BiCross silently skips incomplete entries; we count them)."""
    if not (rgb.is_file() and depth.is_file()) or (spikes is not None and not spikes.is_file()):
        return None
    return _Pair(rgb, depth, spikes)


class Vkitti2Depth(_PairedDepth):
    """Virtual KITTI 2.0.3 RGB + depth in BiCross's layout (see the module docstring)."""

    units_per_metre = 100.0  # code: Theia-4869/BiCross datasets/vkitti.py

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        config: PairedDepthConfig | None = None,
        *,
        transform: Transform | None = None,
    ):
        config = config or PairedDepthConfig()
        base = require_dir(Path(root) / "input", "VKITTI 2 input/ folder")
        pairs, self.missing = [], 0
        for scene in VKITTI2_SCENES[_check_split(split)]:
            depth_dir = require_dir(base / scene / "depth", f"VKITTI 2 {scene} depth")
            for depth in sorted(depth_dir.glob("depth_*.png")):
                frame = depth.stem[len("depth_") :]
                spikes = base / scene / "spike" / "npy" / f"spike_{frame}.npy"
                pair = _pair(
                    base / scene / "rgb" / f"rgb_{frame}.jpg",
                    depth,
                    spikes if config.load_spikes else None,
                )
                if pair is None:
                    self.missing += 1
                else:
                    pairs.append(pair)
        super().__init__(sorted(pairs, key=lambda p: p.depth), split, config, transform)


@dataclass(frozen=True)
class DepthFolderConfig:
    """A generic `root/<scene>/{rgb,depth}/` source."""

    rgb_dir: str = "rgb"
    depth_dir: str = "depth"
    units_per_metre: float = 256.0  # code: Theia-4869/BiCross datasets/drivingstereo.py
    crop: tuple[int, int] | None = None  # DrivingStereo in BiCross: (384, 864)
    subset: tuple[float, float] = (0.0, 1.0)  # fraction of the sorted list, e.g. (0, 0.8)


class DepthFolder(_PairedDepth):
    """RGB + depth pairs from `root/<scene>/{rgb,depth}/`, matched by file stem."""

    def __init__(
        self,
        root: str | Path,
        config: DepthFolderConfig | None = None,
        *,
        split: str = "train",
        transform: Transform | None = None,
    ):
        config = config or DepthFolderConfig()
        self.units_per_metre = config.units_per_metre
        root = require_dir(Path(root), "RGB + depth folder")
        pairs = []
        for scene in sorted(p for p in root.iterdir() if p.is_dir()):
            rgbs = {
                p.stem: p
                for p in (scene / config.rgb_dir).glob("*")
                if p.suffix in (".png", ".jpg")
            }
            for depth in sorted((scene / config.depth_dir).glob("*")):
                if depth.suffix in (".png", ".npy") and depth.stem in rgbs:
                    pairs.append(_Pair(rgbs[depth.stem], depth, None))
        if not pairs:
            raise FileNotFoundError(
                f"{root}: no <scene>/{config.rgb_dir} + {config.depth_dir} pairs"
            )
        pairs.sort(key=lambda p: p.depth)
        lo, hi = config.subset
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"subset must satisfy 0 <= start <= end <= 1, got {config.subset}")
        pairs = pairs[int(lo * len(pairs)) : int(hi * len(pairs))]
        paired = PairedDepthConfig(crop=config.crop, crop_depth_in_test=False, load_spikes=False)
        super().__init__(pairs, _check_split(split), paired, transform)
