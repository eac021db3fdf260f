"""The tensors a segmentation transfer method works on, built once from a world and cached.

- source: labeled RGB frames (N, 3, H, W) and labels (N, H, W);
- synthetic: event windows simulated from the source (`data.synthetic`) as representations
  (M, C, H, W), their labels, and the grayscale frame at each window's end (reconstruction
  targets);
- target train: real target event windows (K, C, H, W), **unlabeled** for the methods;
- target test: held-out target windows with their labels, for evaluation only.
The oracle alone reads `target_train_labels`. Representations are voxel grids (ESS/E2VID form:
`bins` bins, summed polarity, optionally normalised over non-zero entries). Everything is
cached as safetensors under `cache_dir`, keyed by the config, so methods and seeds share it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from evtransfer.data.synthetic import SyntheticConfig, synthesize
from evtransfer.data.world import WorldSource, WorldTarget, WorldTargetConfig
from evtransfer.events import Events
from evtransfer.represent import evsegnet_encoding, histogram, normalize_nonzero, voxel_grid

EVENT_KINDS = ("voxel", "histogram", "evsegnet")


@dataclass(frozen=True)
class EventInput:
    """How an event window becomes a network input: `kind` "voxel" (`bins` channels),
    "histogram" ((neg, pos) counts, 2 channels: EvDistill's 2-channel student) or "evsegnet"
    (Ev-SegNet's 6 channels). `normalize` standardises the non-zero entries of the voxel
    grid or of the count channels (`represent.normalize_nonzero`)."""

    bins: int = 5  # code: uzh-rpg/ess config (nr_bins_per_data = 5); E2VID's 5 bins
    normalize: bool = True  # E2VID normalises non-zero voxels; unpublished for CMESS
    kind: str = "voxel"

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"events.kind must be one of {EVENT_KINDS}, got {self.kind!r}")

    def channels(self) -> int:
        return {"voxel": self.bins, "histogram": 2, "evsegnet": 6}[self.kind]

    def __call__(self, events: Events | list[Events]) -> torch.Tensor:
        """(B, channels(), H, W) float32 inputs of one window or a list of windows."""
        if self.kind == "voxel":
            return voxel_grid(events, self.bins, normalize=self.normalize)
        x = histogram(events) if self.kind == "histogram" else evsegnet_encoding(events)
        if self.normalize:
            x = torch.cat([normalize_nonzero(x[:, :2]), x[:, 2:]], 1)
        return x


@dataclass(frozen=True)
class TransferDataConfig:
    """Which world, label space, windows and synthetic recipe."""

    label_space: str = "dsec11"
    num_classes: int = 11
    window_us: int = 50_000  # unpublished: our choice (target window before each label)
    events: EventInput = field(default_factory=EventInput)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    test_sequences: int = 0  # 0: half of the target sequences are held out


@dataclass
class TransferData:
    """In-memory tensors (see the module docstring); all on the CPU."""

    num_classes: int
    source_rgb: torch.Tensor
    source_label: torch.Tensor
    synth_x: torch.Tensor
    synth_label: torch.Tensor
    synth_gray: torch.Tensor
    target_x: torch.Tensor
    test_x: torch.Tensor
    test_label: torch.Tensor
    test_rgb: torch.Tensor


def _key(root: Path, cfg: TransferDataConfig) -> str:
    world = (root / "world.yaml").read_text()
    config = asdict(cfg)
    if cfg.events.kind == "voxel":  # the key of caches built before `kind` existed
        del config["events"]["kind"]
    blob = json.dumps(config, sort_keys=True, default=str) + world
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _windows(dataset: WorldTarget, rep: EventInput, progress: bool, what: str):
    xs, labels, rgbs = [], [], []
    for i in tqdm(range(len(dataset)), desc=what, disable=not progress):
        s = dataset[i]
        xs.append(rep(s["events"])[0])
        labels.append(s["label"])
        if "rgb" in s:
            rgbs.append(s["rgb"])
    return torch.stack(xs), torch.stack(labels), (torch.stack(rgbs) if rgbs else None)


def _build(root: Path, cfg: TransferDataConfig, progress: bool) -> dict[str, torch.Tensor]:
    source = WorldSource(root, label_space=cfg.label_space)
    rgb = torch.stack([source[i]["rgb"] for i in range(len(source))])
    label = torch.stack([source[i]["label"] for i in range(len(source))])
    synth = synthesize(source, cfg.synthetic, progress=progress)
    synth_x = torch.cat([cfg.events(synth.events[i:i + 64]) for i in range(0, len(synth), 64)])
    common = dict(window_us=cfg.window_us, label_space=cfg.label_space,
                  test_sequences=cfg.test_sequences)
    train = WorldTarget(root, WorldTargetConfig(split="train", **common))
    test = WorldTarget(root, WorldTargetConfig(split="test", with_rgb=True, **common))
    target_x, target_label, _ = _windows(train, cfg.events, progress, "target train")
    test_x, test_label, test_rgb = _windows(test, cfg.events, progress, "target test")
    return {"source_rgb": rgb, "source_label": label, "synth_x": synth_x,
            "synth_label": synth.labels, "synth_gray": synth.images, "target_x": target_x,
            "target_label": target_label, "test_x": test_x, "test_label": test_label,
            "test_rgb": test_rgb}


def _cached(root: Path, cfg: TransferDataConfig, cache_dir: Path | None,
            progress: bool) -> dict[str, torch.Tensor]:
    cache_dir = Path(cache_dir) if cache_dir is not None else root / "cache"
    path = cache_dir / f"transfer_{_key(root, cfg)}.safetensors"
    if path.exists():
        return load_file(path)
    tensors = _build(root, cfg, progress)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, tmp)
    tmp.replace(path)
    return tensors


def load_transfer_data(world: str | Path, cfg: TransferDataConfig, *,
                       cache_dir: str | Path | None = None, progress: bool = True) -> TransferData:
    """The method-side tensors of a built world (target train labels withheld)."""
    t = _cached(Path(world), cfg, cache_dir, progress)
    return TransferData(cfg.num_classes, t["source_rgb"], t["source_label"].long(), t["synth_x"],
                        t["synth_label"].long(), t["synth_gray"], t["target_x"], t["test_x"],
                        t["test_label"].long(), t["test_rgb"])


def target_train_labels(world: str | Path, cfg: TransferDataConfig, *,
                        cache_dir: str | Path | None = None) -> torch.Tensor:
    """Labels of the target train split: the oracle's supervision, hidden from the methods."""
    return _cached(Path(world), cfg, cache_dir, progress=False)["target_label"].long()
