"""The transfer benchmark: every method × seed on one world, scored on the held-out target.

`run_transfer` trains each requested method for each seed in `out/work/seed_<s>/` (stages
shared between methods are trained once per seed; `out/work/data-<task>.json` ties the folder
to the world and data settings they were trained on), predicts the target test split, scores it
from one dataset-wide confusion matrix (mIoU with absent classes counted 0, as ESS; pixel
accuracy), and writes `out/results.json` and `out/results.md`. `run_depth_transfer` does the
same for spike-camera depth (BiCross and its baselines; per-image AbsRel, RMSE, δ1, ...).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from evtransfer.data.depth_transfer import (
    DepthProtocol,
    DepthTransferConfig,
    DepthTransferData,
    RealDepthConfig,
    load_depth_transfer_data,
    load_real_depth_data,
    real_target_depth,
    target_train_depth,
)
from evtransfer.data.firewall import EVALUATION, TARGET_SUPERVISED
from evtransfer.data.transfer import (
    RealTransferConfig,
    TransferData,
    TransferDataConfig,
    load_real_transfer_data,
    load_transfer_data,
)
from evtransfer.engine.package import InputSpec, method_spec, save_package
from evtransfer.methods import DEPTH_METHODS, METHODS, TARGET_LABELED, MethodResult
from evtransfer.methods._stages import StageConfig
from evtransfer.methods.baselines import BaselineConfig
from evtransfer.methods.bicross import BicrossConfig
from evtransfer.methods.cmess import CmessConfig
from evtransfer.methods.ecddp import EcddpConfig
from evtransfer.methods.ess import EssConfig
from evtransfer.methods.evdistill import EvdistillConfig
from evtransfer.metrics import ConfusionMatrix, DepthMetrics, segmentation_scores


@dataclass
class TransferBenchConfig:
    """One YAML for the whole table: data, the shared stages, each method's own settings."""

    data: TransferDataConfig = field(default_factory=TransferDataConfig)
    real: RealTransferConfig = field(default_factory=RealTransferConfig)  # target "": world
    stages: StageConfig = field(default_factory=StageConfig)
    cmess: CmessConfig = field(default_factory=CmessConfig)
    evdistill: EvdistillConfig = field(default_factory=EvdistillConfig)
    ess: EssConfig = field(default_factory=EssConfig)  # ess and ess_supervised
    baselines: BaselineConfig = field(default_factory=BaselineConfig)
    depth: DepthTransferConfig = field(default_factory=DepthTransferConfig)  # --task depth
    depth_real: RealDepthConfig = field(default_factory=RealDepthConfig)  # source "": world
    bicross: BicrossConfig = field(default_factory=BicrossConfig)  # every DEPTH_METHODS entry
    ecddp: EcddpConfig = field(default_factory=EcddpConfig)


def method_config(cfg: TransferBenchConfig, name: str):
    """The config of method `name`, with the shared stages injected."""
    if name in DEPTH_METHODS:
        return cfg.bicross
    section = {"cmess": cfg.cmess, "evdistill": cfg.evdistill, "ess": cfg.ess,
               "ess_supervised": cfg.ess, "ecddp": cfg.ecddp}.get(name, cfg.baselines)
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
    package: Path | None = None  # the saved model package (None: no single network)


def save_method_package(out: Path, name: str, seed: int, result: MethodResult,
                        inputs: InputSpec, **labels) -> Path | None:
    """`out/models/<name>-seed<seed>.safetensors`: the method's inference network as a model
    package (`engine.package`, read by `evtransfer.load_model`) on the benchmark's `inputs`;
    None when the method gives no `spec` (its inference needs more than one network)."""
    if result.spec is None:
        return None
    spec = method_spec(result.spec, method=name, inputs=inputs, **labels,
                       provenance={"seed": seed, "train_minutes": result.train_minutes})
    return save_package(out / "models" / f"{name}-seed{seed}.safetensors", result.network, spec)


def score_segmentation(predict, x: torch.Tensor, labels: torch.Tensor, num_classes: int,
                       batch: int = 16) -> dict:
    """mIoU / accuracy of `predict` (inputs -> class probabilities) over windows x (N, C, H, W)
    against labels (N, H, W), `batch` windows at a time, from one dataset-wide confusion
    matrix (absent classes count 0, as ESS)."""
    conf = ConfusionMatrix(num_classes)
    for i in range(0, len(x), batch):
        conf.update(predict(x[i:i + batch]).argmax(1), labels[i:i + batch].long())
    return segmentation_scores(conf.matrix, mode="ess")


def claim_work(work: Path, task: str, world: Path | None, *data_configs) -> None:
    """Tie `work` to the data its stages train on. Stage folders are keyed by their training
    settings only, so a rerun into the same folder with another world or other data settings
    would silently reuse stages trained on the old data; that is refused here."""
    identity = {"world": (world / "world.yaml").read_text() if world is not None else None,
                "data": [asdict(c) for c in data_configs]}
    blob = json.dumps(identity, sort_keys=True, default=str)
    path = work / f"data-{task}.json"
    if path.exists():
        if path.read_text() != blob:
            raise ValueError(f"{work} holds {task} stages trained on another world or other "
                             f"data settings (see {path}); use a new --out")
        return
    work.mkdir(parents=True, exist_ok=True)
    path.write_text(blob)


def train_method(name: str, data: TransferData, cfg: TransferBenchConfig, seed: int,
                 root: Path, device, progress: bool) -> MethodResult:
    """Train segmentation method `name` on `data` in `root` behind the label firewall: the
    target train labels are read for the target-supervised rows alone (`TARGET_LABELED`, ESS
    with `train_on_event_labels`) and passed as `labels`; no method reads the test labels."""
    _, train_fn = METHODS[name]
    section = method_config(cfg, name)
    labeled = name in TARGET_LABELED or getattr(section, "train_on_event_labels", False)
    extra = {"labels": data.target_label.read(TARGET_SUPERVISED)} if labeled else {}
    torch.manual_seed(seed)
    return train_fn(data, section, root, seed=seed, device=device, progress=progress, **extra)


def run_method(name: str, world: Path | None, cfg: TransferBenchConfig, seed: int, work: Path,
               device, progress: bool) -> Run:
    """Train method `name` with `seed` and score it on the target test split (of the world
    `world`, or of the real scenario `cfg.real` when its target is set)."""
    if name in DEPTH_METHODS:
        raise ValueError(f"{name!r} is a depth method: run it with `--task depth`")
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(METHODS)}")
    real, cache = cfg.real, work.parent / "cache"
    claim_work(work, "segmentation", None if real.target else world, cfg.data, real)
    if real.target:
        data = load_real_transfer_data(real, cfg.data, cache, progress=progress)
    else:
        data = load_transfer_data(world, cfg.data, progress=progress)
    result = train_method(name, data, cfg, seed, work / f"seed_{seed}", device, progress)
    # the test labels are read here, after training, to score (the label firewall)
    scores = score_segmentation(result.predict, data.test_x, data.test_label.read(EVALUATION),
                                data.num_classes)
    package = save_method_package(work.parent, name, seed, result, input_spec(cfg, data),
                                  label_space=cfg.data.label_space)
    return Run(name, seed, scores, result.params, result.train_minutes, result, package)


def input_spec(cfg: TransferBenchConfig, data: TransferData) -> InputSpec:
    """How a recording becomes the inputs the benchmark trained on (for model packages)."""
    ev, (h, w) = cfg.data.events, data.test_x.shape[-2:]
    common = dict(kind=ev.kind, bins=ev.bins, normalize=ev.normalize, size=(h, w))
    if cfg.real.target == "dsec_semantic":
        d = cfg.real.dsec
        return InputSpec(**common, num_windows=d.num_windows, window_events=d.events_per_window,
                         sensor=(640, 480), crop_bottom=d.crop_bottom)
    if cfg.real.target == "ddd17":
        # ESS resizes 260 x 346 to 260 x 352 and then cuts the bottom 60 rows; cutting first
        # and resizing 200 x 346 to 200 x 352 is the same (the rows are not resampled)
        d = cfg.real.ddd17
        return InputSpec(**common, num_windows=d.num_windows, window_events=d.events_per_window,
                         sensor=(346, 260), crop_bottom=d.crop_bottom)
    return InputSpec(**common, window_us=cfg.data.window_us, sensor=(w, h))


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


def _run_table(run_one, line, summarize_fn, markdown_fn, where: tuple[str, object],
               methods: list[str], seeds: list[int], out: Path,
               progress: bool) -> tuple[dict, list[Run]]:
    """Every method × seed through `run_one(name, seed)`, then `out/results.json` (the summary
    plus `where`, the world or the real scenario) and `out/results.md`."""
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in seeds:
        for name in methods:
            start = time.perf_counter()
            run = run_one(name, seed)
            runs.append(run)
            if progress:
                print(f"{name} seed {seed}: {line(run.scores)} "
                      f"({(time.perf_counter() - start) / 60:.1f} min)")
    summary = summarize_fn(runs)
    summary[where[0]] = where[1]
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    (out / "results.md").write_text(markdown_fn(summary))
    return summary, runs


def _where(world: Path | None, real) -> tuple[str, object]:
    return ("world", str(world)) if world is not None else ("real", asdict(real))


def run_transfer(world: str | Path | None, methods: list[str], seeds: list[int],
                 out: str | Path, cfg: TransferBenchConfig, *, device: str = "cpu",
                 progress: bool = True) -> tuple[dict, list[Run]]:
    """Run the table and write `out/results.json` and `out/results.md` (`world` None: the
    real scenario `cfg.real`)."""
    if world is None and not cfg.real.target:
        raise ValueError("no world given and the config's real.target is empty")
    world, out = (Path(world) if world is not None else None), Path(out)
    return _run_table(
        lambda name, seed: run_method(name, world, cfg, seed, out / "work", torch.device(device),
                                      progress),
        lambda s: f"mIoU {s['miou']:.2f} acc {s['acc']:.2f}", summarize, markdown,
        _where(world, cfg.real), methods, seeds, out, progress)


def gap_closed(summary: dict, method: str = "cmess") -> float:
    """Share of the source_only → oracle mIoU gap that `method` closes (nan if missing)."""
    m = summary["methods"]
    if not {"source_only", "oracle", method} <= m.keys():
        return math.nan
    gap = m["oracle"]["miou_mean"] - m["source_only"]["miou_mean"]
    return (m[method]["miou_mean"] - m["source_only"]["miou_mean"]) / gap if gap else math.nan


# --- spike-camera depth (BiCross protocol) ---------------------------------------------------
DEPTH_SCORES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "d1", "d2", "d3")


def score_depth(predict, test: Dataset, protocol: DepthProtocol, batch: int = 16) -> dict:
    """BiCross's metrics of `predict` (packed spikes (B, T, H, ⌈W/8⌉) → depth (B, H, W)
    metres) over a test set of {spikes, depth[, crop_box]}: a prediction is pasted into its
    crop box of the full-size GT first; per image then averaged (`metrics.DepthMetrics`, KITTI
    form: predictions clamped to [min, max]). Sets with crop boxes go one image at a time."""
    acc = DepthMetrics(form="kitti", min_depth=protocol.min_depth, max_depth=protocol.max_depth,
                       garg_crop=protocol.garg_crop)
    boxed = "crop_box" in test[0]
    for items in DataLoader(test, batch_size=1 if boxed else batch):
        pred = predict(items["spikes"])
        if boxed:
            top, left, h, w = (int(v) for v in items["crop_box"][0])
            full = torch.zeros(items["depth"].shape, dtype=pred.dtype)
            full[:, top:top + h, left:left + w] = pred
            pred = full
        acc.update(pred, items["depth"])
    return acc.compute(per_image=True)


def run_depth_method(name: str, world: Path | None, cfg: TransferBenchConfig, seed: int,
                     work: Path, device, progress: bool) -> Run:
    """Train depth method `name` with `seed` and score it on the target test split (the world
    `world`, or the real scenario `cfg.depth_real` when its source is set)."""
    if name not in DEPTH_METHODS:
        raise ValueError(f"unknown depth method {name!r}; available: {', '.join(DEPTH_METHODS)}")
    _, train_fn = DEPTH_METHODS[name]
    real = bool(cfg.depth_real.source)
    claim_work(work, "depth", None if real else world, cfg.depth, cfg.depth_real)
    if real:
        data = load_real_depth_data(cfg.depth_real)
    else:
        data = load_depth_transfer_data(world, cfg.depth, progress=progress)
    extra = {}
    if name == "spike_supervised":
        extra["labeled"] = (real_target_depth(cfg.depth_real) if real
                            else target_train_depth(world, cfg.depth))
    torch.manual_seed(seed)
    result = train_fn(data, method_config(cfg, name), work / f"seed_{seed}", seed=seed,
                      device=device, progress=progress, **extra)
    scores = score_depth(result.predict, data.test_labeled.read(EVALUATION), data.protocol)
    package = save_method_package(work.parent, name, seed, result, depth_input_spec(data),
                                  depth_range=(data.protocol.min_depth, data.protocol.max_depth))
    return Run(name, seed, scores, result.params, result.train_minutes, result, package)


def depth_input_spec(data: DepthTransferData) -> InputSpec:
    """How a spike recording becomes the clips the depth benchmark trained on (packages)."""
    h, w = data.test[0]["spikes"].shape[-2], data.width
    return InputSpec(modality="spikes", kind="spike_stack", frames=data.frames, sensor=(w, h),
                     size=(h, w), resize="nearest")


def summarize_depth(runs: list[Run]) -> dict:
    """`{"methods": {name: {abs_rel_mean, abs_rel_std, rmse_mean, …, d3_std, abs_rel: [per
    seed], train_minutes, params, seeds}}, "ratios": {...}, "protocol": {...}}`; `ratios` hold
    the acceptance ratios of BiCross's AbsRel to Pre_src's and to the supervised model's."""
    table: dict[str, dict] = {}
    for name in dict.fromkeys(r.method for r in runs):
        mine = [r for r in runs if r.method == name]
        row: dict = {}
        for key in DEPTH_SCORES:
            v = np.array([r.scores[key] for r in mine])
            row[f"{key}_mean"] = float(v.mean())
            row[f"{key}_std"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
        row.update(abs_rel=[r.scores["abs_rel"] for r in mine],
                   train_minutes=float(np.mean([r.train_minutes for r in mine])),
                   params=mine[0].params, seeds=[r.seed for r in mine])
        table[name] = row
    ratios = {f"bicross_over_{base}": table["bicross"]["abs_rel_mean"]
              / table[base]["abs_rel_mean"]
              for base in ("pre_src", "spike_supervised") if {"bicross", base} <= table.keys()}
    protocol = {"depth": "BiCross/KITTI form, per image then averaged",
                "valid": "min_depth < gt < max_depth (Garg crop if the protocol has it)"}
    return {"methods": table, "ratios": ratios, "protocol": protocol}


def markdown_depth(summary: dict) -> str:
    """The depth results as a markdown table (mean ± std over seeds)."""
    lines = ["| method | AbsRel | SqRel | RMSE | RMSElog | δ1 | δ2 | δ3 | train min | seeds |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in summary["methods"].items():
        cells = " | ".join(f"{r[k + '_mean']:.3f} ± {r[k + '_std']:.3f}" for k in DEPTH_SCORES)
        lines.append(f"| {name} | {cells} | {r['train_minutes']:.2f} | {len(r['seeds'])} |")
    ratios = summary.get("ratios", {})
    lines += [""] * bool(ratios) + [f"{k}: {v:.3f}" for k, v in ratios.items()]
    return "\n".join(lines) + "\n"


def run_depth_transfer(world: str | Path | None, methods: list[str], seeds: list[int],
                       out: str | Path, cfg: TransferBenchConfig, *, device: str = "cpu",
                       progress: bool = True) -> tuple[dict, list[Run]]:
    """The depth table (`cfg.bicross` settings; data: `cfg.depth` on `world`, or the real
    scenario `cfg.depth_real` when its source is set): `out/results.json` and `.md`."""
    world, out = (Path(world) if world is not None else None), Path(out)
    return _run_table(
        lambda name, seed: run_depth_method(name, world, cfg, seed, out / "work",
                                            torch.device(device), progress),
        lambda s: f"AbsRel {s['abs_rel']:.3f} RMSE {s['rmse']:.3f} δ1 {s['d1']:.3f}",
        summarize_depth, markdown_depth, _where(world, cfg.depth_real), methods, seeds, out,
        progress)
