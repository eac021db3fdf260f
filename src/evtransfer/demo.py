"""`evtransfer demo`: the whole story on the embedded world in a few minutes on a laptop CPU.

Builds the small world (once), trains the source-only baseline (events simulated from the
labeled source), the reconstruction baseline, CMESS and the target-supervised oracle on a CPU
budget, scores each on the held-out target with its hidden labels, prints the table and
writes `report.json` and `report.png` (event image | ground truth | source-only | best method).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from evtransfer.bench import TransferBenchConfig, run_transfer
from evtransfer.config import QUICK_STEPS
from evtransfer.data.firewall import EVALUATION
from evtransfer.data.transfer import load_transfer_data
from evtransfer.engine.fit import FitConfig
from evtransfer.engine.package import CLASS_NAMES
from evtransfer.methods._stages import StageConfig
from evtransfer.viz import DSEC11_PALETTE, colorize_events, colorize_labels, save_panel
from evtransfer.world.build import build_world
from evtransfer.world.domains import preset

METHODS = ["source_only", "recon_source", "cmess", "oracle"]


def demo_config(steps: int) -> TransferBenchConfig:
    """Every training run shortened to `steps` iterations (learning rates as configured)."""
    fit = FitConfig(steps=steps, ckpt_every=max(50, steps // 4))
    stages = StageConfig(source=fit, synthetic=replace(fit, lr=5e-4), recon=fit)
    cfg = TransferBenchConfig(stages=stages)
    cfg.cmess.cml = replace(fit, lr=5e-4)
    cfg.baselines.oracle = fit
    return cfg


def demo_steps(quick: bool = False, steps: int | None = None) -> int:
    """Iterations per training run: `steps`, else 400 (`QUICK_STEPS`, 150, with `quick`)."""
    return steps or (QUICK_STEPS if quick else 400)


def run_demo(out: str | Path = "demo_out", *, quick: bool = False, device: str = "cpu",
             world: str | Path | None = None, world_preset: str = "small",
             steps: int | None = None) -> dict:
    """Run the demo into `out` (world in `world`, default out/world, built from `world_preset`
    if absent; `steps` per training run, default 400, or 150 with `quick`); returns the report
    dict."""
    out = Path(out)
    start = time.perf_counter()
    world = Path(world) if world is not None else out / "world"
    print(f"[1/3] embedded world ({world_preset} preset) in {world}")
    build_world(preset(world_preset), world, device=device)
    steps = demo_steps(quick, steps)
    print(f"[2/3] training {', '.join(METHODS)} ({steps} steps per run)")
    cfg = demo_config(steps)
    summary, runs = run_transfer(world, METHODS, [0], out / "bench", cfg, device=device)
    report = {"methods": {name: {"miou": r["miou_mean"], "acc": r["acc_mean"],
                                 "minutes": r["train_minutes"]}
                          for name, r in summary["methods"].items()},
              "world": str(world), "total_minutes": (time.perf_counter() - start) / 60}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print("[3/3] results on the held-out target (mIoU / pixel accuracy, %)")
    print(f"{'method':<14}{'mIoU':>8}{'acc':>8}{'minutes':>9}")
    for name, r in report["methods"].items():
        print(f"{name:<14}{r['miou']:>8.2f}{r['acc']:>8.2f}{r['minutes']:>9.2f}")
    _figure(world, cfg, {r.method: r for r in runs}, out / "report.png")
    print(f"wrote {out / 'report.json'} and {out / 'report.png'} "
          f"({report['total_minutes']:.1f} min in all)")
    return report


def _figure(world: Path, cfg: TransferBenchConfig, runs: dict, path: Path) -> None:
    """Rows of test samples: event image | ground truth | source-only | the best transfer."""
    data = load_transfer_data(world, cfg.data, progress=False)
    best = max((n for n in runs if n not in ("oracle", "source_only")),
               key=lambda n: runs[n].scores["miou"])
    picks = np.linspace(0, len(data.test_x) - 1, 4).round().astype(int)
    x = data.test_x[torch.as_tensor(picks)]
    preds = {n: runs[n].result.predict(x).argmax(1).numpy() for n in ("source_only", best)}
    images, titles = [], []
    for row, i in enumerate(picks):
        rgb = (data.test_rgb[i].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        images += [rgb, colorize_events(x[row].sum(0).numpy()),
                   colorize_labels(data.test_label.read(EVALUATION)[i].numpy(), DSEC11_PALETTE),
                   colorize_labels(preds["source_only"][row], DSEC11_PALETTE),
                   colorize_labels(preds[best][row], DSEC11_PALETTE)]
        titles += ["scene (not seen)", "events", "ground truth", "source-only", best]
    save_panel(images, titles, path, ncols=5, legend=(CLASS_NAMES["dsec11"], DSEC11_PALETTE))
