"""The tensors a segmentation transfer method works on, built once from a world and cached.

- source: labeled RGB frames (N, 3, H, W) and labels (N, H, W);
- synthetic: event windows simulated from the source (`data.synthetic`) as representations
  (M, C, H, W), their labels, and the grayscale frame at each window's end (reconstruction
  targets);
- target train: real target event windows (K, C, H, W), **unlabeled** for the methods;
- target test: held-out target windows with their labels, for evaluation only.
Both label sets sit behind the label firewall (`data.firewall.Withheld`): the test labels open
for the evaluation step alone, the train labels for the target-supervised rows alone (oracle,
ess_supervised, ECDDP's fine-tuning); a method that reads either fails loudly.
Representations are voxel grids (ESS/E2VID form: `bins` bins, summed polarity, optionally
normalised over non-zero entries). Everything is cached as safetensors under `cache_dir`, keyed
by the config, so methods and seeds share it.

The same tensors come from real data with `load_real_transfer_data`: Cityscapes as the source
(`data.cityscapes`, ESS geometry), DSEC-Semantic or DDD17 as the target (`data.dsec_semantic`,
`data.ddd17`, ESS protocol). They are written item by item into .npy files and memory-mapped,
so a full DSEC-Semantic split (8 082 windows) never has to fit in memory.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import Subset
from tqdm import tqdm

from evtransfer.data.cityscapes import CityscapesConfig, CityscapesSegmentation
from evtransfer.data.ddd17 import Ddd17Config, Ddd17Segmentation
from evtransfer.data.dsec_semantic import DsecSemantic, DsecSemanticConfig
from evtransfer.data.firewall import (
    DIAGNOSIS,
    EVALUATION,
    TARGET_SUPERVISED,
    Withheld,
    withhold,
)
from evtransfer.data.synthetic import SyntheticConfig, motion_chunks, synthesize
from evtransfer.data.world import WorldSource, WorldTarget, WorldTargetConfig
from evtransfer.represent import Representation, representation_names, representation_of


@dataclass(frozen=True)
class EventInput:
    """Which representation an event window becomes, by name (`kind`, one of
    `represent.representation_names("events")`) and parameters; `representation()` resolves
    it to the object (`represent.objects`). `bins` counts only for "voxel"; `normalize`
    standardises the non-zero entries of the voxel grid or of the count channels."""

    bins: int = 5  # code: uzh-rpg/ess config (nr_bins_per_data = 5); E2VID's 5 bins
    normalize: bool = True  # E2VID normalises non-zero voxels; unpublished for CMESS
    kind: str = "voxel"

    def __post_init__(self) -> None:
        names = representation_names("events")
        if self.kind not in names:
            raise ValueError(f"events.kind must be one of {names}, got {self.kind!r}")

    def representation(self) -> Representation:
        """The representation object: called on one window or a list of windows, it gives
        (B, channels(), H, W) float32."""
        return representation_of(self.kind, self)


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
    """Tensors (see the module docstring); all on the CPU. `test_label` (N, H, W) and
    `target_label` (K, H, W) are withheld (`data.firewall`): a tensor given for them is
    wrapped, `test_label` readable by `EVALUATION`, `target_label` by `TARGET_SUPERVISED`
    and `DIAGNOSIS` (None: the scenario has no target train labels)."""

    num_classes: int
    source_rgb: torch.Tensor
    source_label: torch.Tensor
    synth_x: torch.Tensor
    synth_label: torch.Tensor
    synth_gray: torch.Tensor
    target_x: torch.Tensor
    test_x: torch.Tensor
    test_label: Withheld
    test_rgb: torch.Tensor
    target_label: Withheld | None = None

    def __post_init__(self) -> None:
        self.test_label = withhold(self.test_label, "target test labels "
                                   "(TransferData.test_label)", (EVALUATION,))
        if self.target_label is not None:
            self.target_label = withhold(self.target_label, "target train labels "
                                         "(TransferData.target_label)",
                                         (TARGET_SUPERVISED, DIAGNOSIS))


def _key(root: Path, cfg: TransferDataConfig) -> str:
    world = (root / "world.yaml").read_text()
    config = asdict(cfg)
    if cfg.events.kind == "voxel":  # the key of caches built before `kind` existed
        del config["events"]["kind"]
    if not cfg.synthetic.randomize.enabled:  # ... and before `randomize` existed
        del config["synthetic"]["randomize"]
    blob = json.dumps(config, sort_keys=True, default=str) + world
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _windows(dataset: WorldTarget, rep: Representation, progress: bool, what: str):
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
    rep = cfg.events.representation()
    synth_x = torch.cat([rep(synth.events[i:i + 64]) for i in range(0, len(synth), 64)])
    common = dict(window_us=cfg.window_us, label_space=cfg.label_space,
                  test_sequences=cfg.test_sequences)
    train = WorldTarget(root, WorldTargetConfig(split="train", **common))
    test = WorldTarget(root, WorldTargetConfig(split="test", with_rgb=True, **common))
    target_x, target_label, _ = _windows(train, rep, progress, "target train")
    test_x, test_label, test_rgb = _windows(test, rep, progress, "target test")
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
    """The tensors of a built world (target labels behind the firewall)."""
    t = _cached(Path(world), cfg, cache_dir, progress)
    return TransferData(cfg.num_classes, t["source_rgb"], t["source_label"].long(), t["synth_x"],
                        t["synth_label"].long(), t["synth_gray"], t["target_x"], t["test_x"],
                        t["test_label"].long(), t["test_rgb"], t["target_label"].long())


def target_train_labels(world: str | Path, cfg: TransferDataConfig, *,
                        cache_dir: str | Path | None = None) -> torch.Tensor:
    """Labels of the target train split: the oracle's supervision, hidden from the methods."""
    return _cached(Path(world), cfg, cache_dir, progress=False)["target_label"].long()


# --- real data ------------------------------------------------------------------------------
REAL_TARGETS = {"dsec_semantic": "test", "ddd17": "valid"}  # target -> its evaluation split
# code: uzh-rpg/ess (DSEC: val = test, ESS issue #12; DDD17: reported on dir[1], "valid")


@dataclass(frozen=True)
class RealTransferConfig:
    """A real scenario: Cityscapes → DSEC-Semantic or DDD17. `target` "" means: the world.

    Target samples follow the target's dataset config; a CMESS-style single window is
    `num_windows: 1`, ESS's recurrent input is its default 20 windows (20 × bins channels).
    `max_*` > 0 keeps that many evenly spaced items (quick runs); 0 keeps all."""

    target: str = ""  # dsec_semantic | ddd17 | "" (the world)
    target_root: str = ""
    test_split: str = ""  # "" = the protocol's (DSEC-Semantic: test, DDD17: valid)
    source: CityscapesConfig = field(default_factory=CityscapesConfig)
    dsec: DsecSemanticConfig = field(default_factory=DsecSemanticConfig)
    ddd17: Ddd17Config = field(default_factory=Ddd17Config)
    max_source: int = 0
    max_train: int = 0
    max_test: int = 0
    cache_dir: str = ""  # "" = the folder the caller passes (the benchmark's out/cache)

    def __post_init__(self) -> None:
        if self.target and self.target not in REAL_TARGETS:
            raise ValueError(f"real.target must be one of {sorted(REAL_TARGETS)} or '', got "
                             f"{self.target!r}")


_ARRAYS = ("source_rgb", "source_label", "synth_x", "synth_label", "synth_gray", "target_x",
           "test_x", "test_label", "target_label")


def _spread(n: int, cap: int) -> np.ndarray:
    """`cap` evenly spaced indices of range(n) (all of them when cap is 0 or >= n)."""
    if cap <= 0 or cap >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, cap).round().astype(np.int64))


def _check_config(real: RealTransferConfig, cfg: TransferDataConfig) -> None:
    """The target's label files and the benchmark's label space must be the same classes, and
    sub-pixel rectification needs a representation that splats (the voxel grid)."""
    splats = cfg.events.representation().splats_subpixel
    if real.target == "dsec_semantic" and real.dsec.subpixel and not splats:
        raise ValueError(f"real.dsec.subpixel splats sub-pixel events, which only the voxel "
                         f"grid does; set real.dsec.subpixel: false for events.kind "
                         f"{cfg.events.kind!r}")
    space, classes = (("ddd17", 6) if real.target == "ddd17" else
                      ({11: "dsec11", 19: "cityscapes19"}.get(real.dsec.num_classes),
                       real.dsec.num_classes))
    if (cfg.label_space, cfg.num_classes) != (space, classes):
        raise ValueError(f"real.target {real.target} gives {classes} classes ({space}) but "
                         f"data has label_space {cfg.label_space!r} and num_classes "
                         f"{cfg.num_classes}")


def _target(real: RealTransferConfig, cfg: TransferDataConfig, split: str):
    rep = cfg.events.representation()
    if real.target == "dsec_semantic":
        return DsecSemantic(real.target_root, split, real.dsec, representation=rep)
    return Ddd17Segmentation(real.target_root, split, real.ddd17, representation=rep)


class _NpyWriter:
    """One .npy array filled item by item through a memory map, renamed into place when full
    (a killed build redoes only the arrays that were not finished)."""

    def __init__(self, folder: Path, name: str, n: int, first: torch.Tensor):
        self.path = folder / f"{name}.npy"
        self.part = folder / f"{name}.npy.part"
        dtype = np.uint8 if name.endswith("label") else np.float32
        self.array = np.lib.format.open_memmap(self.part, mode="w+", dtype=dtype,
                                               shape=(n, *first.shape))
        self.n, self.i = n, 0

    def add(self, values: torch.Tensor) -> None:
        values = values.numpy()
        if self.array.dtype == np.uint8 and (values.min() < 0 or values.max() > 255):
            raise ValueError(f"{self.path.name}: labels outside 0..255")
        self.array[self.i: self.i + len(values)] = values
        self.i += len(values)

    def close(self) -> None:
        if self.i != self.n:
            raise RuntimeError(f"{self.path}: wrote {self.i} of {self.n} items")
        self.array.flush()
        del self.array
        self.part.replace(self.path)


def _write_samples(folder: Path, dataset, keys: dict[str, str], what: str,
                   progress: bool) -> None:
    """Items of `dataset` into one array per `keys` entry (sample key -> array name)."""
    if all((folder / f"{name}.npy").exists() for name in keys.values()):
        return
    if len(dataset) == 0:
        raise ValueError(f"{what}: the dataset is empty")
    writers = None
    for i in tqdm(range(len(dataset)), desc=what, disable=not progress):
        sample = dataset[i]
        if writers is None:
            writers = {k: _NpyWriter(folder, name, len(dataset), sample[k])
                       for k, name in keys.items()}
        for k, w in writers.items():
            w.add(sample[k][None])
    for w in writers.values():
        w.close()


def _write_synthetic(folder: Path, source, cfg: TransferDataConfig, progress: bool) -> None:
    names = ("synth_x", "synth_label", "synth_gray")
    if all((folder / f"{n}.npy").exists() for n in names):
        return
    if cfg.synthetic.mode != "motion":
        raise ValueError("real data: the Cityscapes source is still images, so synthetic.mode "
                         "must be 'motion'")
    n = len(source) * cfg.synthetic.variants
    writers, rep = None, cfg.events.representation()
    for part in motion_chunks(source, cfg.synthetic, progress=progress):
        x = rep(part.events)
        if writers is None:
            writers = [_NpyWriter(folder, name, n, t[0])
                       for name, t in zip(names, (x, part.labels, part.images), strict=True)]
        for w, t in zip(writers, (x, part.labels, part.images), strict=True):
            w.add(t)
    for w in writers:
        w.close()


def _real_key(real: RealTransferConfig, cfg: TransferDataConfig) -> str:
    blob = json.dumps([{k: v for k, v in asdict(real).items() if k != "cache_dir"}, asdict(cfg)],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_real_transfer_data(real: RealTransferConfig, cfg: TransferDataConfig,
                             cache_dir: str | Path, *, progress: bool = True) -> Path:
    """Write (or finish writing) the cache folder of a real scenario; returns it."""
    if not real.target:
        raise ValueError("RealTransferConfig.target is empty: this scenario runs on the world")
    folder = Path(real.cache_dir or cache_dir) / f"real_{_real_key(real, cfg)}"
    if (folder / "done").exists():
        return folder
    _check_config(real, cfg)
    folder.mkdir(parents=True, exist_ok=True)
    source = CityscapesSegmentation(real.source, cfg.label_space)
    source = Subset(source, _spread(len(source), real.max_source))
    train = _target(real, cfg, "train")
    test = _target(real, cfg, real.test_split or REAL_TARGETS[real.target])
    want = tuple(test[0]["representation"].shape[1:])
    if real.source.size() != want:
        raise ValueError(f"the source's size {real.source.size()} (real.source) differs from "
                         f"the target windows' {want}: set real.source.resize_to / keep_top / "
                         f"crop_width to the target geometry")
    _write_samples(folder, source, {"rgb": "source_rgb", "label": "source_label"},
                   "Cityscapes source", progress)
    _write_synthetic(folder, source, cfg, progress)
    _write_samples(folder, Subset(train, _spread(len(train), real.max_train)),
                   {"representation": "target_x", "label": "target_label"}, "target train",
                   progress)
    _write_samples(folder, Subset(test, _spread(len(test), real.max_test)),
                   {"representation": "test_x", "label": "test_label"}, "target test", progress)
    (folder / "done").write_text(json.dumps({"real": asdict(real), "data": asdict(cfg)},
                                            default=str))
    return folder


def _mapped(folder: Path, name: str) -> torch.Tensor:
    """A memory-mapped array as a tensor (copy-on-write: never changes the file)."""
    return torch.from_numpy(np.load(folder / f"{name}.npy", mmap_mode="c"))


def load_real_transfer_data(real: RealTransferConfig, cfg: TransferDataConfig,
                            cache_dir: str | Path, *, progress: bool = True) -> TransferData:
    """The tensors of a real scenario, memory-mapped from its cache (built on the first call);
    target labels behind the firewall, no test RGB."""
    folder = build_real_transfer_data(real, cfg, cache_dir, progress=progress)
    t = {name: _mapped(folder, name) for name in _ARRAYS}
    h, w = t["test_x"].shape[-2:]
    # labels stay uint8 memory maps (8x smaller than int64); the losses widen each batch
    return TransferData(cfg.num_classes, t["source_rgb"], t["source_label"], t["synth_x"],
                        t["synth_label"], t["synth_gray"], t["target_x"], t["test_x"],
                        t["test_label"], torch.zeros(0, 3, h, w), t["target_label"])
