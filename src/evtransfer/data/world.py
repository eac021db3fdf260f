"""Datasets over a built embedded world (`evtransfer world build`; layout in `world.build`).

`WorldSource` serves the labeled RGB source (frames of each sequence in order, so methods can
also treat a sequence as video). `WorldTarget` serves the neuromorphic target in the
DSEC-Semantic layout: for each label time t the events of [t - window_us, t) read through
`DsecEventsReader` (the real-data loader), the label, and on request the evaluation-only
depth, flow, RGB and the spike clip. Target sequences are split: the last `test_sequences`
are the test split (unlabeled training uses only the train split).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from evtransfer.data._common import Representation, Sample, Transform, finish, require_dir
from evtransfer.io.dsec import DsecEventsReader
from evtransfer.io.images import TRAINID_TO_DDD17, read_label_png, read_png16, read_rgb
from evtransfer.io.spike import read_spike_dat

LABEL_SPACES = ("dsec11", "cityscapes19", "ddd17")


def _sequences(root: Path, domain: str) -> list[Path]:
    if not (root / "world.yaml").is_file():
        raise FileNotFoundError(f"{root} is not a built world (no world.yaml); run "
                                f"`evtransfer world build --out {root}` first")
    folder = require_dir(root / domain, f"world domain '{domain}'")
    seqs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.endswith(".partial"))
    if not seqs:
        raise FileNotFoundError(f"{folder} holds no finished sequence")
    return seqs


def _depth(path: Path) -> torch.Tensor:
    depth = read_png16(path).astype(np.float32) / 256.0  # 0 stays 0: invalid
    return torch.from_numpy(depth)


def _rgb(path: Path) -> torch.Tensor:
    return torch.from_numpy(read_rgb(path)).permute(2, 0, 1).float() / 255.0


class WorldSource(Dataset):
    """Labeled source frames: `rgb` (3, H, W) float in [0, 1], `label` (H, W) int64, `depth`
    (H, W) metres (0 = invalid), `flow` (2, H, W) pixels to the next frame, `t_us`,
    `sequence`, `frame`. Labels in `label_space` ('dsec11', 'cityscapes19' or 'ddd17')."""

    def __init__(self, root: str | Path, *, label_space: str = "dsec11",
                 transform: Transform | None = None, with_flow: bool = False):
        self.root, self.transform, self.with_flow = Path(root), transform, with_flow
        self.label_space = _check_space(label_space)
        self.sequences = _sequences(self.root, "source")
        self.items: list[tuple[int, int]] = []
        self.timestamps: list[np.ndarray] = []
        for s, seq in enumerate(self.sequences):
            t = np.atleast_1d(np.loadtxt(seq / "timestamps.txt", dtype=np.int64))
            self.timestamps.append(t)
            self.items += [(s, k) for k in range(len(t))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Sample:
        s, k = self.items[index]
        seq, name = self.sequences[s], f"{k:06d}"
        sample: Sample = {
            "rgb": _rgb(seq / "images" / f"{name}.png"),
            "label": _space_label(seq / "labels", name, self.label_space),
            "depth": _depth(seq / "depth" / f"{name}.png"),
            "t_us": int(self.timestamps[s][k]),
            "sequence": seq.name,
            "frame": k,
        }
        if self.with_flow:
            sample["flow"] = torch.from_numpy(np.load(seq / "flow" / f"{name}.npy"))
        return finish(sample, self.transform)


@dataclass(frozen=True)
class WorldTargetConfig:
    """Which target samples and what each holds."""

    domain: str = "target"  # or a built variant: fog, rain, city2
    split: str = "train"  # train | test | all
    test_sequences: int = 0  # 0: half of the sequences (rounded down), at least one
    window_us: int = 50_000  # unpublished: our choice (events of the 50 ms before a label)
    label_space: str = "dsec11"
    with_depth: bool = False
    with_flow: bool = False
    with_rgb: bool = False  # evaluation only: the scene in RGB at the label time
    with_spikes: bool = False


class WorldTarget(Dataset):
    """Target samples: `events` (the window's `Events`) or `representation` (C, H, W), `label`
    (H, W) int64 (evaluation only: target labels are hidden from the methods), `t_us`,
    `sequence`, `index`; optional `depth`, `flow`, `rgb`, `spikes` (a `Spikes` clip)."""

    def __init__(self, root: str | Path, config: WorldTargetConfig | None = None, *,
                 representation: Representation | None = None,
                 transform: Transform | None = None):
        self.root, self.config = Path(root), config or WorldTargetConfig()
        self.representation, self.transform = representation, transform
        cfg = self.config
        _check_space(cfg.label_space)
        seqs = _sequences(self.root, cfg.domain)
        n_test = cfg.test_sequences or max(1, len(seqs) // 2)
        if cfg.split == "train":
            seqs = seqs[: len(seqs) - n_test]
        elif cfg.split == "test":
            seqs = seqs[len(seqs) - n_test:]
        elif cfg.split != "all":
            raise ValueError(f"split must be train, test or all, got {cfg.split!r}")
        if not seqs:
            raise ValueError(f"no {cfg.split} sequences in {self.root / cfg.domain}")
        self.sequences = seqs
        self.timestamps = [np.atleast_1d(np.loadtxt(s / "semantic/timestamps.txt", dtype=np.int64))
                           for s in seqs]
        self.items = [(s, k) for s, t in enumerate(self.timestamps) for k in range(len(t))]
        self._readers: dict[int, DsecEventsReader] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.items)

    def reader(self, s: int) -> DsecEventsReader:
        """The (per-process, cached) event reader of sequence s."""
        if self._pid != os.getpid():
            self._readers, self._pid = {}, os.getpid()
        if s not in self._readers:
            self._readers[s] = DsecEventsReader(self.sequences[s] / "events/left/events.h5")
        return self._readers[s]

    def __getitem__(self, index: int) -> Sample:
        s, k = self.items[index]
        cfg, seq, name = self.config, self.sequences[s], f"{k:06d}"
        t_us = int(self.timestamps[s][k])
        events = self.reader(s).read_window(t_us - cfg.window_us, t_us)
        sample: Sample = {
            "label": _space_label(seq / "semantic", name, cfg.label_space, data=True),
            "t_us": t_us,
            "sequence": seq.name,
            "index": k,
        }
        if self.representation is None:
            sample["events"] = events
        else:
            rep = self.representation(events)
            sample["representation"] = rep[0] if rep.ndim == 4 else rep
        if cfg.with_depth:
            sample["depth"] = _depth(seq / "depth" / f"{name}.png")
        if cfg.with_flow:
            sample["flow"] = torch.from_numpy(np.load(seq / "flow" / f"{name}.npy"))
        if cfg.with_rgb:
            sample["rgb"] = _rgb(seq / "images" / f"{name}.png")
        if cfg.with_spikes:
            meta = json.loads((seq / "spikes/meta.json").read_text())
            sample["spikes"] = read_spike_dat(seq / "spikes" / f"{name}.dat", meta["height"],
                                              meta["width"], rate_hz=meta["rate_hz"])
        return finish(sample, self.transform)


def _check_space(space: str) -> str:
    if space not in LABEL_SPACES:
        raise ValueError(f"label_space must be dsec11, cityscapes19 or ddd17, got {space!r}")
    return space


def _space_label(folder: Path, name: str, space: str, data: bool = False) -> torch.Tensor:
    """A label in the requested space; DDD17-6 is derived from the 19-class trainIds."""
    sub = "data" if data else ""
    n = 11 if space == "dsec11" else 19
    label = read_label_png(folder / f"{n}classes" / sub / f"{name}.png")
    if space == "ddd17":
        label = TRAINID_TO_DDD17[label]
    return torch.from_numpy(label.astype(np.int64))
