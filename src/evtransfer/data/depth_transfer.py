"""The tensors a spike-depth transfer method (BiCross) works on, built once from a world and cached.

- source: labeled RGB frames (N, 3, H, W) in [0, 1] with depth (N, H, W) metres, and spike
  clips simulated from those same frames (`simulate.spikes_from_image`, the `source_spikes`
  sensor: by default the ideal integrate-and-fire camera a user would run on their images);
- target train: the stored spike clips of a target domain (the world's spike camera; `domain`
  picks `target` or a built variant `fog`, `rain`, `city2`), **unlabeled** for the methods;
- target test: held-out target clips (`test`: spikes only) and the same clips with their depth
  (`test_labeled`, behind the label firewall `data.firewall`: the evaluation step alone
  reads it).

A clip is the last `frames` readouts before the label time (BiCross's T, the ±1 frame stack of
`represent.spike_stack`), stored bit-packed along the width (T, H, ⌈W/8⌉) uint8, LSB first as
`Spikes`; `unpack_spikes` turns a batch into the network's ±1 float input on any device. The
supervised row alone reads `target_train_depth`. Depth is in metres, 0 = invalid (the world's sky).
Everything is cached as safetensors under `cache_dir`, keyed by the config and the world.

`load_real_depth_data` serves the same three sets from BiCross's real layouts (VKITTI 2 and
KITTI with their `spike/npy` arrays, read through `data.depth_sources`; KB crop, the first T
frames, test depth at full size with its `crop_box` for pasting predictions back), streamed
from disk instead of cached.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset
from tqdm import tqdm

from evtransfer.data._common import TensorDict
from evtransfer.data.depth_sources import KB_CROP, KittiDepth, PairedDepthConfig, Vkitti2Depth
from evtransfer.data.firewall import EVALUATION, Withheld
from evtransfer.data.world import WorldSource, WorldTarget, WorldTargetConfig
from evtransfer.events import Spikes
from evtransfer.io.base import FormatError
from evtransfer.simulate import SpikeConfig, luminance, spikes_from_image

DOMAINS = ("target", "fog", "rain", "city2")


@dataclass(frozen=True)
class DepthProtocol:
    """Which depth pixels count, for the training losses and the metrics alike."""

    min_depth: float = 1e-3  # code: Theia-4869/BiCross Trainer_*.py (valid: 1e-3 < d < dmax)
    max_depth: float = 80.0  # code: Theia-4869/BiCross train_config.json (dmax 80)
    garg_crop: bool = False  # KITTI: true (code); the world: our choice (no LiDAR footprint)

    def __post_init__(self) -> None:
        if not 0 < self.min_depth < self.max_depth:
            raise ValueError(f"depth protocol needs 0 < min_depth < max_depth, got "
                             f"{self.min_depth}, {self.max_depth}")


@dataclass(frozen=True)
class DepthTransferConfig:
    """Which target domain, how many spike frames, and the source spike sensor."""

    domain: str = "target"  # target | fog | rain | city2 (a variant listed in the world)
    frames: int = 32  # unpublished: our choice (BiCross: T = 128; the tiny world stores 32)
    source_spikes: SpikeConfig = field(default_factory=SpikeConfig)  # ideal: the simulated side
    test_sequences: int = 0  # 0: half of the target sequences are held out
    protocol: DepthProtocol = field(default_factory=DepthProtocol)

    def __post_init__(self) -> None:
        if self.domain not in DOMAINS:
            raise ValueError(f"depth transfer domain must be one of {DOMAINS}, got "
                             f"{self.domain!r}")
        if self.frames < 1:
            raise ValueError(f"frames must be >= 1, got {self.frames}")


@dataclass
class DepthTransferData:
    """What a depth transfer method sees (see the module docstring); items are CPU tensors.

    `source` items: rgb (3, H, W) float32 in [0, 1], spikes, depth (H, W) metres; `target`
    items: spikes (unlabeled); `test` items: spikes (unlabeled); `test_labeled` (withheld,
    `test_labeled.read(EVALUATION)`): the test items with depth (real data: at full size,
    with `crop_box` (top, left, h, w) int64 locating the spikes' crop). `width` unpacks the
    spikes, `protocol` says which depth pixels are valid, `key` identifies the data (stage
    caching).
    """

    source: Dataset
    target: Dataset
    test: Dataset
    test_labeled: Withheld
    width: int
    frames: int
    protocol: DepthProtocol
    key: str


def _withheld_test(labeled: Dataset) -> Withheld:
    return Withheld(labeled, "target test depth (DepthTransferData.test_labeled)", (EVALUATION,))


def unpack_spikes(packed: torch.Tensor, width: int) -> torch.Tensor:
    """(..., H, ⌈W/8⌉) uint8 LSB-first packed spikes → (..., H, W) float32 in {−1, +1}
    (2s − 1, BiCross's input), on the tensor's device."""
    if packed.dtype != torch.uint8:
        raise ValueError(f"packed spikes must be uint8, got {packed.dtype}")
    if packed.shape[-1] != (width + 7) // 8:
        raise ValueError(f"packed rows of {packed.shape[-1]} bytes do not hold width {width}")
    shifts = torch.arange(8, device=packed.device, dtype=torch.uint8)
    bits = (packed.unsqueeze(-1) >> shifts) & 1
    return bits.flatten(-2)[..., :width].float().mul_(2).sub_(1)


def _key(root: Path, cfg: DepthTransferConfig) -> str:
    world = (root / "world.yaml").read_text()
    blob = json.dumps(asdict(cfg), sort_keys=True, default=str) + world
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _last_frames(spikes: Spikes, frames: int, where: str) -> torch.Tensor:
    """The last `frames` readouts of a clip, packed (T, H, ⌈W/8⌉) uint8."""
    if len(spikes) < frames:
        raise ValueError(f"{where}: the clip has {len(spikes)} spike frames, fewer than the "
                         f"{frames} requested (depth transfer `frames`)")
    clip = spikes.frames(len(spikes) - frames, len(spikes)).pack()
    return torch.from_numpy(clip.data.copy())


def _source(root: Path, cfg: DepthTransferConfig, progress: bool) -> dict[str, torch.Tensor]:
    source = WorldSource(root)
    rgb, depth, spikes = [], [], []
    for i in tqdm(range(len(source)), desc="source spikes", disable=not progress):
        sample = source[i]
        sensor = replace(cfg.source_spikes, seed=cfg.source_spikes.seed * 1_000_003 + i)
        clip = spikes_from_image(luminance(sample["rgb"]), cfg.frames, sensor)
        rgb.append(sample["rgb"])
        depth.append(sample["depth"])
        spikes.append(_last_frames(clip, cfg.frames, "source"))
    return {"source_rgb": torch.stack(rgb), "source_depth": torch.stack(depth),
            "source_spikes": torch.stack(spikes)}


def _target(root: Path, cfg: DepthTransferConfig, split: str,
            progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    data = WorldTarget(root, WorldTargetConfig(domain=cfg.domain, split=split, with_depth=True,
                                               with_spikes=True,
                                               test_sequences=cfg.test_sequences))
    spikes, depth = [], []
    for i in tqdm(range(len(data)), desc=f"{cfg.domain} {split}", disable=not progress):
        sample = data[i]
        where = f"{root / cfg.domain / sample['sequence']} #{sample['index']}"
        spikes.append(_last_frames(sample["spikes"], cfg.frames, where))
        depth.append(sample["depth"])
    return torch.stack(spikes), torch.stack(depth)


def _build(root: Path, cfg: DepthTransferConfig, progress: bool) -> dict[str, torch.Tensor]:
    if not (root / cfg.domain).is_dir():
        raise ValueError(f"{root}: the world has no '{cfg.domain}' domain; build the variant "
                         f"into a new folder with `evtransfer world build --set "
                         f"variants=[{cfg.domain}]`")
    tensors = _source(root, cfg, progress)
    tensors["target_spikes"], tensors["target_depth"] = _target(root, cfg, "train", progress)
    tensors["test_spikes"], tensors["test_depth"] = _target(root, cfg, "test", progress)
    return tensors


def _cached(root: Path, cfg: DepthTransferConfig, cache_dir: Path | None,
            progress: bool) -> tuple[dict[str, torch.Tensor], str]:
    key = _key(root, cfg)
    cache_dir = Path(cache_dir) if cache_dir is not None else root / "cache"
    path = cache_dir / f"depth_{key}.safetensors"
    if path.exists():
        return load_file(path), key
    tensors = _build(root, cfg, progress)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, tmp)
    tmp.replace(path)
    return tensors, key


def load_depth_transfer_data(world: str | Path, cfg: DepthTransferConfig, *,
                             cache_dir: str | Path | None = None,
                             progress: bool = True) -> DepthTransferData:
    """The method-side tensors of a built world (target train depth withheld)."""
    root = Path(world)
    if not (root / "world.yaml").is_file():
        raise FileNotFoundError(f"{root} is not a built world (no world.yaml)")
    t, key = _cached(root, cfg, cache_dir, progress)
    return DepthTransferData(
        source=TensorDict(rgb=t["source_rgb"], spikes=t["source_spikes"],
                             depth=t["source_depth"]),
        target=TensorDict(spikes=t["target_spikes"]),
        test=TensorDict(spikes=t["test_spikes"]),
        test_labeled=_withheld_test(TensorDict(spikes=t["test_spikes"], depth=t["test_depth"])),
        width=int(t["source_rgb"].shape[-1]), frames=cfg.frames, protocol=cfg.protocol, key=key)


def target_train_depth(world: str | Path, cfg: DepthTransferConfig, *,
                       cache_dir: str | Path | None = None) -> TensorDict:
    """Target train clips with their depth: the supervised upper bound's data, hidden from
    the transfer methods."""
    t, _ = _cached(Path(world), cfg, cache_dir, progress=False)
    return TensorDict(spikes=t["target_spikes"], depth=t["target_depth"])


# --- real data (BiCross layouts) ----------------------------------------------------------------
REAL_READERS = {"vkitti2": Vkitti2Depth, "kitti": KittiDepth}
REAL_DATASETS = (*REAL_READERS, "drivingstereo", "stereoweather", "nyu", "respike")


@dataclass(frozen=True)
class RealDepthConfig:
    """A real-data scenario in BiCross's folder layouts; `source` "" means: use the world."""

    source: str = ""  # vkitti2 | kitti (labeled RGB + simulated spikes), or "" for the world
    source_root: str = ""
    target: str = "kitti"  # the unlabeled target spikes and their test split
    target_root: str = ""
    frames: int = 128  # code: Theia-4869/BiCross datasets/*.py (the first 128 frames)
    crop: tuple[int, int] = KB_CROP  # code: Theia-4869/BiCross datasets/kitti.py, vkitti.py
    protocol: DepthProtocol = field(
        default_factory=lambda: DepthProtocol(garg_crop=True))  # code: Trainer_*.py (KITTI)

    def __post_init__(self) -> None:
        for name in (self.source, self.target):
            if name and name not in REAL_DATASETS:
                raise ValueError(f"real depth dataset must be one of {REAL_DATASETS}, got "
                                 f"{name!r}")


class RealSpikeDepth(Dataset):
    """Items of a `data.depth_sources` reader with spikes: the first `frames` spike frames
    packed (T, h, ⌈w/8⌉) uint8 and the `keys` asked for (rgb, depth, crop_box)."""

    def __init__(self, base: Dataset, frames: int, keys: tuple[str, ...]):
        self.base, self.frames, self.keys = base, frames, keys

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        sample = self.base[i]
        spikes = sample["spikes"].numpy()
        if len(spikes) < self.frames:
            raise FormatError(Path(sample["path"]), f"its spike array has {len(spikes)} "
                              f"frames, fewer than the {self.frames} requested")
        packed = np.packbits(spikes[: self.frames], axis=-1, bitorder="little")
        out = {"spikes": torch.from_numpy(packed)}
        for key in self.keys:
            out[key] = torch.tensor(sample[key]) if key == "crop_box" else sample[key]
        return out


def _real(cfg: RealDepthConfig, name: str, root: str, split: str,
          keys: tuple[str, ...]) -> RealSpikeDepth:
    if name not in REAL_READERS:
        raise ValueError(f"evtransfer has no reader for BiCross's {name} spike data yet "
                         f"(readers with spikes: {', '.join(REAL_READERS)})")
    if not root:
        raise ValueError(f"the real {name} scenario needs its root folder")
    reader = REAL_READERS[name](root, split, PairedDepthConfig(crop=cfg.crop, load_spikes=True))
    return RealSpikeDepth(reader, cfg.frames, keys)


def load_real_depth_data(cfg: RealDepthConfig) -> DepthTransferData:
    """The three sets of a real scenario (source train, target train unlabeled, target test)."""
    if not cfg.source:
        raise ValueError("RealDepthConfig.source is empty: this scenario runs on the world")
    key = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest()[:16]
    return DepthTransferData(
        source=_real(cfg, cfg.source, cfg.source_root, "train", ("rgb", "depth")),
        target=_real(cfg, cfg.target, cfg.target_root, "train", ()),
        test=_real(cfg, cfg.target, cfg.target_root, "test", ()),
        test_labeled=_withheld_test(_real(cfg, cfg.target, cfg.target_root, "test",
                                          ("depth", "crop_box"))),
        width=cfg.crop[1], frames=cfg.frames, protocol=cfg.protocol, key=key)


def real_target_depth(cfg: RealDepthConfig) -> RealSpikeDepth:
    """Target train spikes with their (cropped) depth: the supervised upper bound's data."""
    return _real(cfg, cfg.target, cfg.target_root, "train", ("depth",))
