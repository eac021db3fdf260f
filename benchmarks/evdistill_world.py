"""EvDistill on a built world: source_only and EvDistill variants at chosen budgets.

Every shared stage (the source model, the synthetic-event model and EvDistill's teacher) runs
`--stage-steps` iterations (batch 8) and EvDistill's joint stage `--joint-steps` (batch
`--joint-batch`, warm-up 5). Each `--variant` is a comma-separated list of KEY=VALUE overrides
of `TransferBenchConfig` (e.g. `evdistill.losses.bmr=false`); an empty string is the defaults.
Stages live in `--work/seed_<s>/` keyed by their settings, so variants share the teacher and a
rerun with the same settings only evaluates. Scores: ESS mIoU and nanmean mIoU on the target
test split. The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from evtransfer.bench import TransferBenchConfig, run_method
from evtransfer.config import load_config
from evtransfer.data.firewall import EVALUATION
from evtransfer.data.transfer import load_transfer_data
from evtransfer.engine.fit import FitConfig
from evtransfer.metrics import evaluate_segmentation


def bench_config(variant: str, stage_steps: int, joint_steps: int, joint_batch: int):
    cfg = load_config(TransferBenchConfig, None, [v for v in variant.split(",") if v])
    fit = FitConfig(steps=stage_steps, batch=8, ckpt_every=0)
    cfg.stages = replace(cfg.stages, source=fit, synthetic=replace(fit, lr=5e-4))
    cfg.evdistill.joint = FitConfig(steps=joint_steps, batch=joint_batch, lr=5e-4,
                                    warmup_steps=5, ckpt_every=0)
    return cfg


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", required=True, help="a built world folder")
    p.add_argument("--work", required=True, help="folder of the stage runs")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--stage-steps", type=int, default=400)
    p.add_argument("--joint-steps", type=int, default=400)
    p.add_argument("--joint-batch", type=int, default=8)
    p.add_argument("--variant", action="append", default=None,
                   help="KEY=VALUE[,KEY=VALUE...] overrides; repeatable; '' = defaults")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    variants = args.variant if args.variant is not None else [""]
    rows = []
    for seed in args.seeds:
        for name, variant in [("source_only", "")] + [("evdistill", v) for v in variants]:
            cfg = bench_config(variant, args.stage_steps, args.joint_steps, args.joint_batch)
            start = time.perf_counter()
            run = run_method(name, Path(args.world), cfg, seed, Path(args.work),
                             torch.device(args.device), progress=False)
            data = load_transfer_data(args.world, cfg.data, progress=False)
            pred = run.result.predict(data.test_x).argmax(1)
            labels = data.test_label.read(EVALUATION)
            nan = evaluate_segmentation(pred, labels, data.num_classes, "nanmean")
            rows.append({"method": name, "variant": variant, "seed": seed,
                         "miou_ess": run.scores["miou"], "miou_nanmean": nan["miou"],
                         "acc": run.scores["acc"], "params": run.params,
                         "train_minutes": run.train_minutes,
                         "wall_s": time.perf_counter() - start})
            print(f"{name} [{variant or 'defaults'}] seed {seed}: mIoU {run.scores['miou']:.2f}")
    print(json.dumps({"world": args.world, "stage_steps": args.stage_steps,
                      "joint_steps": args.joint_steps, "joint_batch": args.joint_batch,
                      "rows": rows}))


if __name__ == "__main__":
    main()
