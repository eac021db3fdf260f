"""MVSEC monocular depth: events of one DAVIS camera paired with its ground-truth depth maps.

Files: `<seq>_data.hdf5` and `<seq>_gt.hdf5`, directly in `root` or in `root/<scenario>/`
(e.g. `root/outdoor_day/outdoor_day1_data.hdf5`); see `evtransfer.io.mvsec`.

Splits (protocols.md §4):
- outdoor: train on outdoor_day2, test on outdoor_day1, all depth maps (the E2Depth training
  set is day2, code: uzh-rpg/rpg_e2depth configs; "test on day1" is the common convention,
  unverified against the papers);
- indoor_flying split 1/2/3: the depth-map slices of urancon/StereoSpike
  datasets/MVSEC/indices.py (take-off and landing removed). Note: split 3's test slice there
  is (72, 1816) although its comment reads 73–1615; the code's slice is used.

Each sample pairs depth map i (timestamp t_i) with the events of one window ending at t_i
(exclusive): `window="between"` takes [t_{i−1}, t_i) (so depth map 0 is skipped),
`window="count"` the last `num_events` events. The window is cut into `num_windows` ESS
chunks. Events are the raw (unrectified) DAVIS events, on the 346 × 260 sensor.

A sample is a dict: `events` (list of `Events`) or `representation` ((num_windows · C, 260,
346) float32), `depth` ((260, 346) float32 metres, NaN = invalid), `t_us`, `sequence` and
`depth_index`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from evtransfer.data._common import (
    Representation,
    Sample,
    Transform,
    ess_chunks,
    finish,
    represent_chunks,
)
from evtransfer.io.mvsec import MvsecDepthReader, MvsecEventsReader

Slices = dict[str, tuple[int, int] | None]

# code: urancon/StereoSpike datasets/MVSEC/indices.py (SEQUENCES_FRAMES; Python slices)
MVSEC_INDOOR_SPLITS: dict[int, dict[str, Slices]] = {
    1: {
        "train": {"indoor_flying2": (159, 1581), "indoor_flying3": (124, 1816)},
        "test": {"indoor_flying1": (139, 1201)},
    },
    2: {
        "train": {"indoor_flying1": (79, 1261), "indoor_flying3": (124, 1816)},
        "test": {"indoor_flying2": (119, 1421)},
    },
    3: {
        "train": {"indoor_flying1": (79, 1261), "indoor_flying2": (119, 1581)},
        "test": {"indoor_flying3": (72, 1816)},
    },
}
# code: uzh-rpg/rpg_e2depth e2depth/configs/train_e2depth_si_grad_loss_mvsec.json (train day2)
MVSEC_OUTDOOR_SPLIT: dict[str, Slices] = {
    "train": {"outdoor_day2": None},
    "test": {"outdoor_day1": None},
}


@dataclass(frozen=True)
class MvsecDepthConfig:
    """Split and event-window choices."""

    scenario: str = "outdoor"  # paper (E2Depth): "outdoor"; or "indoor_flying"
    split_id: int = 1  # indoor_flying only; code: urancon/StereoSpike indices.py
    camera: str = "left"  # code: uzh-rpg/rpg_e2depth (left DAVIS)
    window: str = "between"  # unpublished: our choice ("between" or "count")
    num_events: int = 30_000  # unpublished: our choice (window="count" only)
    num_windows: int = 1  # unpublished: our choice (ESS-style chunks per sample)
    rectified_depth: bool = True  # code: uzh-rpg/rpg_e2depth evaluation uses depth_image_rect


def split_slices(config: MvsecDepthConfig, split: str) -> Slices:
    """{sequence: depth-map slice or None (all)} of a split."""
    if config.scenario == "outdoor":
        table = MVSEC_OUTDOOR_SPLIT
    elif config.scenario == "indoor_flying":
        if config.split_id not in MVSEC_INDOOR_SPLITS:
            raise ValueError(f"indoor_flying split_id must be 1, 2 or 3, got {config.split_id}")
        table = MVSEC_INDOOR_SPLITS[config.split_id]
    else:
        raise ValueError(f"scenario must be 'outdoor' or 'indoor_flying', got {config.scenario!r}")
    if split not in table:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return table[split]


def find_mvsec_file(root: str | Path, sequence: str, kind: str) -> Path:
    """`<sequence>_<kind>.hdf5` in `root` or `root/<scenario>/` (kind: 'data' or 'gt')."""
    root = Path(root)
    name = f"{sequence}_{kind}.hdf5"
    candidates = [root / name, root / re.sub(r"\d+$", "", sequence) / name]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(f"{root}: no {name}; looked for {' and '.join(map(str, candidates))}")


class MvsecDepth(Dataset):
    """Event windows paired with MVSEC ground-truth depth (see the module docstring)."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        config: MvsecDepthConfig | None = None,
        *,
        representation: Representation | None = None,
        transform: Transform | None = None,
    ):
        config = config or MvsecDepthConfig()
        if config.window not in ("between", "count"):
            raise ValueError(f"window must be 'between' or 'count', got {config.window!r}")
        if min(config.num_events, config.num_windows) <= 0:
            raise ValueError(f"num_events and num_windows must be positive: {config}")
        self.root, self.split, self.config = Path(root), split, config
        self.representation, self.transform = representation, transform
        self.sequences: list[str] = []
        self._paths: list[tuple[Path, Path]] = []
        self._times: list[np.ndarray] = []
        items: list[tuple[int, int]] = []
        for s, (seq, frames) in enumerate(split_slices(config, split).items()):
            data, gt = find_mvsec_file(root, seq, "data"), find_mvsec_file(root, seq, "gt")
            with MvsecDepthReader(gt, config.camera, rectified=config.rectified_depth) as depth:
                times = depth.timestamps_us()
            start, stop = frames if frames is not None else (0, len(times))
            start = max(start, 1) if config.window == "between" else start
            items += [(s, i) for i in range(start, min(stop, len(times)))]
            self.sequences.append(seq)
            self._paths.append((data, gt))
            self._times.append(times)
        self.items = items
        self._open: dict[int, tuple[MvsecEventsReader, MvsecDepthReader]] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.items)

    def _readers(self, s: int) -> tuple[MvsecEventsReader, MvsecDepthReader]:
        if self._pid != os.getpid():
            self._open, self._pid = {}, os.getpid()
        if s not in self._open:
            data, gt = self._paths[s]
            cfg = self.config
            self._open[s] = (
                MvsecEventsReader(data, cfg.camera),
                MvsecDepthReader(gt, cfg.camera, rectified=cfg.rectified_depth),
            )
        return self._open[s]

    def __getitem__(self, index: int) -> Sample:
        s, i = self.items[index]
        events, depth = self._readers(s)
        times = self._times[s]
        t_us = int(times[i])
        if self.config.window == "between":
            window = events.read_window(int(times[i - 1]), t_us)
        else:
            window = events.read_last(t_us, self.config.num_events)
        chunks = ess_chunks(window, self.config.num_windows)
        sample: Sample = {
            "depth": torch.from_numpy(depth.read(i)),
            "t_us": t_us,
            "sequence": self.sequences[s],
            "depth_index": i,
        }
        if self.representation is None:
            sample["events"] = chunks
        else:
            sample["representation"] = represent_chunks(chunks, self.representation)
        return finish(sample, self.transform)
