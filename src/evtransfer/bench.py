"""The transfer benchmark: every method × seed on one world, scored on the held-out target.

`run_transfer` trains each requested method for each seed in `out/work/seed_<s>/` (stages
shared between methods are trained once per seed), predicts the target test split, scores it
from one dataset-wide confusion matrix (mIoU with absent classes counted 0, as ESS; pixel
accuracy), and writes `out/results.json` and `out/results.md`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from evtransfer.data.transfer import (
    TransferDataConfig,
    load_transfer_data,
    target_train_labels,
)
from evtransfer.engine.dense import evaluate_segmentation
from evtransfer.engine.transfer import StageConfig
from evtransfer.methods import METHODS, MethodResult
from evtransfer.methods.baselines import BaselineConfig
from evtransfer.methods.cmess import CmessConfig


@dataclass
class TransferBenchConfig:
    """One YAML for the whole table: data, the shared stages, each method's own settings."""

    data: TransferDataConfig = field(default_factory=TransferDataConfig)
    stages: StageConfig = field(default_factory=StageConfig)
    cmess: CmessConfig = field(default_factory=CmessConfig)
    baselines: BaselineConfig = field(default_factory=BaselineConfig)


def method_config(cfg: TransferBenchConfig, name: str):
    """The config of method `name`, with the shared stages injected."""
    section = cfg.cmess if name == "cmess" else cfg.baselines
    return replace(section, stages=cfg.stages) if hasattr(section, "stages") else section


@dataclass
class Run:
    """One method × seed: its scores on the target test split and its costs."""

    method: str
    seed: int
    scores: dict
    params: int
    train_minutes: float
    result: MethodResult


def run_method(name: str, world: Path, cfg: TransferBenchConfig, seed: int, work: Path,
               device, progress: bool) -> Run:
    """Train method `name` with `seed` and score it on the target test split."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(METHODS)}")
    _, train_fn = METHODS[name]
    data = load_transfer_data(world, cfg.data, progress=progress)
    extra = {"labels": target_train_labels(world, cfg.data)} if name == "oracle" else {}
    torch.manual_seed(seed)
    result = train_fn(data, method_config(cfg, name), work / f"seed_{seed}", seed=seed,
                      device=device, progress=progress, **extra)
    probs = result.predict(data.test_x)
    scores = evaluate_segmentation(probs.argmax(1), data.test_label, data.num_classes)
    return Run(name, seed, scores, result.params, result.train_minutes, result)


def summarize(runs: list[Run]) -> dict:
    """`{"methods": {name: {miou_mean, miou_std, acc_mean, train_minutes, params, ...}}}`."""
    table: dict[str, dict] = {}
    for name in dict.fromkeys(r.method for r in runs):
        mine = [r for r in runs if r.method == name]
        miou = np.array([r.scores["miou"] for r in mine])
        acc = np.array([r.scores["acc"] for r in mine])
        table[name] = {
            "miou_mean": float(miou.mean()),
            "miou_std": float(miou.std(ddof=1)) if len(miou) > 1 else 0.0,
            "acc_mean": float(acc.mean()),
            "train_minutes": float(np.mean([r.train_minutes for r in mine])),
            "params": mine[0].params,
            "seeds": [r.seed for r in mine],
            "miou": miou.tolist(),
            "iou_per_class": np.mean([r.scores["iou"] for r in mine], axis=0).tolist(),
        }
    return {"methods": table, "protocol": {"miou": "ess (absent class = 0)",
                                           "acc": "pixel accuracy", "tta": "none"}}


def markdown(summary: dict) -> str:
    """The results as a markdown table."""
    lines = ["| method | mIoU (mean ± std) | acc | train min | params (M) | seeds |",
             "|---|---|---|---|---|---|"]
    for name, r in summary["methods"].items():
        lines.append(f"| {name} | {r['miou_mean']:.2f} ± {r['miou_std']:.2f} | "
                     f"{r['acc_mean']:.2f} | {r['train_minutes']:.2f} | {r['params'] / 1e6:.2f} "
                     f"| {len(r['seeds'])} |")
    return "\n".join(lines) + "\n"


def run_transfer(world: str | Path, methods: list[str], seeds: list[int], out: str | Path,
                 cfg: TransferBenchConfig, *, device: str = "cpu",
                 progress: bool = True) -> tuple[dict, list[Run]]:
    """Run the table and write `out/results.json` and `out/results.md`."""
    world, out = Path(world), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in seeds:
        for name in methods:
            start = time.perf_counter()
            run = run_method(name, world, cfg, seed, out / "work", torch.device(device), progress)
            runs.append(run)
            if progress:
                print(f"{name} seed {seed}: mIoU {run.scores['miou']:.2f} acc "
                      f"{run.scores['acc']:.2f} ({(time.perf_counter() - start) / 60:.1f} min)")
    summary = summarize(runs)
    summary["world"] = str(world)
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    (out / "results.md").write_text(markdown(summary))
    return summary, runs


def gap_closed(summary: dict, method: str = "cmess") -> float:
    """Share of the source_only → oracle mIoU gap that `method` closes (nan if missing)."""
    m = summary["methods"]
    if not {"source_only", "oracle", method} <= m.keys():
        return math.nan
    gap = m["oracle"]["miou_mean"] - m["source_only"]["miou_mean"]
    return (m[method]["miou_mean"] - m["source_only"]["miou_mean"]) / gap if gap else math.nan
