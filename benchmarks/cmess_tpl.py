"""CMESS's target-path labeling on a dev world: how good are the pseudo-labels, per rule?

Trains (or reuses, from the same folders as `bench transfer`) M_S, M_T' and the reconstruction
network, labels the target train windows with every rule below and scores the pseudo-labels
against the world's hidden target train labels: the share of pixels kept, the mIoU and pixel
accuracy over the kept pixels, per-class kept share and IoU, and the calibration (expected
calibration error, 15 bins) of each path's confidence on the target and of M_T' on its own
synthetic windows. Dev worlds only: reading target labels to choose a rule is what a dev world
is for (docs/benchmarks.md); the script refuses report worlds. The last stdout line is one JSON
object.

    OMP_NUM_THREADS=1 python benchmarks/cmess_tpl.py --world runs/worlds/dev-rain-small \
        --work runs/suite_dev/runs/dev-rain/work --source-dir runs/source
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

from evtransfer.bench import TransferBenchConfig
from evtransfer.config import load_config
from evtransfer.data.firewall import DIAGNOSIS
from evtransfer.data.transfer import load_transfer_data
from evtransfer.engine.predict import segment
from evtransfer.methods._stages import (
    recon_then_segment,
    train_reconstruction,
    train_source_model,
    train_synthetic_model,
)
from evtransfer.methods.cmess import CmessConfig, confidence_floor, keep_pseudo_labels
from evtransfer.metrics import ConfusionMatrix
from evtransfer.world.suites import SUITES, world_name


def ece(conf: torch.Tensor, correct: torch.Tensor, bins: int = 15) -> float:
    """Expected calibration error of confidences `conf` against `correct` (same shape)."""
    b = (conf.flatten().float() * bins).long().clamp(0, bins - 1)
    n = torch.bincount(b, minlength=bins).float()
    c = torch.bincount(b, conf.flatten().float(), minlength=bins)
    a = torch.bincount(b, correct.flatten().float(), minlength=bins)
    return float((c - a).abs().sum() / n.sum())


def keep_mask(label: torch.Tensor, conf: torch.Tensor, k: int, rule: str, value: float,
              fraction: float, agree: torch.Tensor) -> torch.Tensor:
    """Pixels kept by CMESS's rule `rule` ("fixed" / "share" at `value`, class_fraction
    `fraction`); "agree": the fixed rule where both paths' argmax also agree."""
    cfg = (CmessConfig(confidence_rule="share", keep_share=value, class_fraction=fraction)
           if rule == "share" else CmessConfig(confidence=value, class_fraction=fraction))
    keep = (conf >= confidence_floor(conf, cfg)) & agree if rule == "agree" else None
    return keep_pseudo_labels(label, conf, k, cfg, keep)


def score(label: torch.Tensor, keep: torch.Tensor, truth: torch.Tensor, k: int) -> dict:
    """Pseudo-labels `label` kept where `keep`, against `truth`: shares, mIoU, per class."""
    cm = ConfusionMatrix(k)
    cm.update(torch.where(keep, label, 255), torch.where(keep, truth, 255))
    s = cm.scores("ess")
    true_count = torch.bincount(truth.flatten(), minlength=k).float()
    kept_true = torch.bincount(truth[keep], minlength=k).float()
    return {"kept": float(keep.float().mean()), "miou": s["miou"], "acc": s["acc"],
            "iou": [round(v, 1) for v in s["iou"]],
            "kept_per_class": [round(float(v), 2) for v in kept_true / true_count.clamp_min(1)]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", required=True, help="a built dev world folder")
    p.add_argument("--work", required=True, help="the bench run's work folder of this world")
    p.add_argument("--source-dir", default="", help="the suite's shared source stages")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], help="KEY=VALUE config overrides")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    name = world_name(Path(args.world))
    if name not in SUITES["dev"]:
        raise SystemExit(f"{args.world} is the world {name!r}, not a dev world "
                         f"({', '.join(SUITES['dev'])}); its labels may not choose defaults")
    cfg = load_config(TransferBenchConfig, None, args.set)
    stages = replace(cfg.stages, source_cache=args.source_dir)
    data = load_transfer_data(args.world, cfg.data, progress=False)
    root, dev = Path(args.work) / f"seed_{args.seed}", torch.device(args.device)
    k = data.num_classes
    m_s, _ = train_source_model(data, stages, root, args.seed, dev, False)
    m_t, _ = train_synthetic_model(m_s, data, stages, root, args.seed, dev, False)
    recon, _ = train_reconstruction(data, stages, root, args.seed, dev, False)
    p_s = recon_then_segment(recon, m_s, data.target_x, stages, dev)
    p_t = segment(m_t, data.target_x, device=dev)
    truth = data.target_label.read(DIAGNOSIS).long()
    synth = segment(m_t, data.synth_x[:len(data.target_x)], device=dev)
    report = {"world": name, "seed": args.seed, "calibration": {
        "M_T' on target": ece(p_t.max(1).values, p_t.argmax(1) == truth),
        "recon path on target": ece(p_s.max(1).values, p_s.argmax(1) == truth),
        "M_T' on synthetic": ece(synth.max(1).values,
                                 synth.argmax(1) == data.synth_label[:len(synth)].long()),
        "mean confidence M_T' target / synthetic": [float(p_t.max(1).values.mean()),
                                                     float(synth.max(1).values.mean())]},
        "rules": []}
    for lam in (0.0, 0.2):
        fused = lam * p_s + (1 - lam) * p_t
        conf, label = fused.max(1)
        report["calibration"][f"fused λ={lam}"] = ece(conf, label == truth)
        rules = [("fixed", c, f) for c in (0.0, 0.5, 0.7, 0.9) for f in (0.0, 0.5)]
        rules += [("share", q, f) for q in (0.3, 0.5, 0.7) for f in (0.0, 0.5)]
        rules += [("agree", c, 0.0) for c in (0.0, 0.7)]
        agree = p_s.argmax(1) == p_t.argmax(1)
        for kind, value, fraction in rules:
            keep = keep_mask(label, conf, k, kind, value, fraction, agree)
            row = {"lambda": lam, "rule": kind, "value": value, "class_fraction": fraction}
            report["rules"].append(row | score(label, keep, truth, k))
    for r in report["rules"]:
        print(f"λ {r['lambda']} {r['rule']:8s} {r['value']:.1f} cf {r['class_fraction']:.1f}: "
              f"kept {r['kept']:.2f} mIoU {r['miou']:.1f} acc {r['acc']:.1f}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
