"""The world's target-side dense tasks with ground truth: segmentation, optical flow, depth.

For each label time t of the target sequences (train / test split by sequence, as
`WorldTarget`), the input is a stacked (neg, pos) histogram of an event window
(`represent.stacked_histogram`: `windows` count windows of `events_per_window`, shrunk when
the window holds fewer events, as ECDDP's DSEC loader does):
- segmentation and depth: the events of [t − window_us, t), with the label (H, W) int64
  (255 = ignore) or the depth (H, W) float32 metres (0 = invalid) at t;
- flow: the events of [t, t + flow_window_us), with the world's forward flow over those
  100 ms, (2, H, W) float32 pixels (DSEC's flow protocol: the flow spans the event window).
  Label times whose flow window runs past the sequence's last label time (where the world
  stops rendering) are left out.
Everything is cached as safetensors under `cache_dir` (default `world/cache`), keyed by the
config, the task and the world. `label_subset` draws the seeded labeled fraction of a split.
The test targets sit behind the label firewall (`data.firewall`): only the evaluation step
reads them; the train targets are ECDDP's fine-tuning protocol (a labeled fraction).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from evtransfer.data.firewall import EVALUATION, Withheld, withhold
from evtransfer.data.world import WorldTarget, WorldTargetConfig
from evtransfer.represent import stacked_histogram

TASKS = ("segmentation", "flow", "depth")


@dataclass(frozen=True)
class DenseTaskConfig:
    """Windows, representation and split of the world's dense tasks."""

    windows: int = 10  # code: ECDDP data/DESC_dataset.py (10 windows → 20 channels)
    events_per_window: int = 50_000  # code: ECDDP data/DESC_dataset.py
    window_us: int = 50_000  # unpublished: our choice (the world's label windows)
    flow_window_us: int = 100_000  # the world's flow ground truth spans 100 ms
    label_space: str = "dsec11"
    num_classes: int = 11
    test_sequences: int = 0  # 0: half of the target sequences are held out


@dataclass
class DenseTaskData:
    """Inputs (N, 2·windows, H, W) float32 and targets of one task's train and test splits:
    labels (N, H, W) int64, depth (N, H, W) float32 metres, or flow (N, 2, H, W) pixels.
    `test_y` is withheld (a tensor given is wrapped): `test_y.read(EVALUATION)`."""

    task: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: Withheld
    num_classes: int

    def __post_init__(self) -> None:
        self.test_y = withhold(self.test_y, f"{self.task} test targets (DenseTaskData.test_y)",
                               (EVALUATION,))

    @property
    def channels(self) -> int:
        return self.train_x.shape[1]


def _check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    return task


def _split(world: Path, cfg: DenseTaskConfig, task: str, split: str,
           progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    data = WorldTarget(world, WorldTargetConfig(
        split=split, window_us=cfg.window_us, label_space=cfg.label_space,
        test_sequences=cfg.test_sequences, with_depth=task == "depth",
        with_flow=task == "flow"))
    xs, ys = [], []
    for i in tqdm(range(len(data)), desc=f"{task} {split}", disable=not progress):
        s, _ = data.items[i]
        t = int(data.timestamps[s][data.items[i][1]])
        reader = data.reader(s)
        if task == "flow":
            if t + cfg.flow_window_us > int(data.timestamps[s][-1]):
                continue  # the world is rendered up to its last label time, not beyond
            events = reader.read_window(t, t + cfg.flow_window_us)
        else:
            events = reader.read_window(t - cfg.window_us, t)
        xs.append(stacked_histogram(events, cfg.windows, cfg.events_per_window)[0])
        sample = data[i]
        ys.append({"segmentation": sample["label"].to(torch.uint8), "depth": sample.get("depth"),
                   "flow": sample.get("flow")}[task])
    if not xs:
        raise ValueError(f"{world}: no {task} samples in the {split} split")
    return torch.stack(xs), torch.stack(ys)


def load_dense_task(world: str | Path, cfg: DenseTaskConfig, task: str, *,
                    cache_dir: str | Path | None = None, progress: bool = True) -> DenseTaskData:
    """Train and test tensors of `task` ('segmentation', 'flow' or 'depth') on a built world."""
    world, task = Path(world), _check_task(task)
    if not (world / "world.yaml").is_file():
        raise FileNotFoundError(f"{world} is not a built world (no world.yaml)")
    cache = Path(cache_dir) if cache_dir is not None else world / "cache"
    blob = json.dumps([asdict(cfg), task], sort_keys=True) + (world / "world.yaml").read_text()
    path = cache / f"dense_{task}_{hashlib.sha256(blob.encode()).hexdigest()[:16]}.safetensors"
    if path.exists():
        t = load_file(path)
    else:
        train_x, train_y = _split(world, cfg, task, "train", progress)
        test_x, test_y = _split(world, cfg, task, "test", progress)
        t = {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({k: v.contiguous() for k, v in t.items()}, tmp)
        tmp.replace(path)
    y_type = torch.long if task == "segmentation" else torch.float32
    return DenseTaskData(task, t["train_x"].float(), t["train_y"].to(y_type),
                         t["test_x"].float(), t["test_y"].to(y_type), cfg.num_classes)


def label_subset(n: int, fraction: float, seed: int) -> torch.Tensor:
    """Sorted indices of a seeded `fraction` of n train samples (at least one): the labeled
    part of a split, int64 (k,)."""
    if n < 1:
        raise ValueError(f"label_subset: need at least one sample, got n={n}")
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    k = max(1, round(n * fraction))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[:k].sort().values
