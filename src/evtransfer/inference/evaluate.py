"""Evaluate a packaged model under a benchmark's published protocol.

- `world`: the embedded world's target test split (the last half of the sequences, as
  `bench transfer`), the model's window before each label (50 ms for world-trained models),
  labels in the model's label space; segmentation scored as ESS (one dataset-wide confusion
  matrix, mIoU with absent classes counted 0, pixel accuracy); depth models on the spike clips
  with BiCross's per-image metrics (KITTI form, the package's depth range).
- `dsec-semantic`: ESS protocol (`data.dsec_semantic`: test sequences 13_a/14_c/15_a, the first
  6 labels dropped, every 2nd label, events rectified sub-pixel, bottom 40 rows cut → 440 ×
  640), ESS mIoU and accuracy; events per chunk from the model (count windows) or ESS's
  100 000, in the model's number of chunks.
- `ddd17`: ESS protocol (`data.ddd17`: split "valid" = dir[1], the split ESS reports; 346 → 352
  resize, bottom 60 rows cut → 200 × 352; 6 classes); ESS mIoU; 32 000 events per chunk unless
  the model counts its own. A model that takes EvDistill's images (its pre-rendered event
  images, or the APS frames of its teacher) is scored under EvDistill's protocol instead
  (`data.event_aps`: its released layout, `images/<split>/` side-by-side PNGs and
  `labels/<split>/`, split "test", resized to 256 × 512, one scale, no flip; mIoU with
  `nanmean`, addisonwang2013/evdistill evaluate.py).
- `mvsec-depth`: `data.mvsec` (outdoor: test on outdoor_day1; events between depth maps, or
  the model's event count), E2Depth's metrics per frame then averaged, on all valid pixels and
  with the 10/20/30 m cut-offs (`metrics.DepthMetrics` form "mvsec").
- `kitti-depth`: BiCross protocol (`data.depth_sources.KittiDepth` Eigen test list with spike
  arrays, KB crop 352 × 1216, the first T spike frames; the prediction pasted back into the
  full frame, clamped to [1e-3, 80] m, Garg crop, per image then averaged).
None of these protocols uses test-time augmentation (ESS, EvDistill, BiCross, E2Depth: single
pass); every result records it. A model trained on another sensor or size is refused unless
`resize` (see `inference.model`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

from evtransfer.events import Spikes
from evtransfer.inference.model import Model
from evtransfer.metrics import ConfusionMatrix, DepthMetrics, segmentation_scores
from evtransfer.represent import Representation

DATASETS = ("world", "dsec-semantic", "ddd17", "mvsec-depth", "kitti-depth")
TASK_OF = {"world": None, "dsec-semantic": "segmentation", "ddd17": "segmentation",
           "mvsec-depth": "depth", "kitti-depth": "depth"}
DEFAULT_SPLIT = {"world": "test", "dsec-semantic": "test", "ddd17": "valid",
                 "mvsec-depth": "test", "kitti-depth": "test"}


@dataclass(frozen=True)
class EvalOptions:
    """Dataset-independent choices of `evaluate`."""

    split: str | None = None  # default: the split the benchmark reports (DEFAULT_SPLIT)
    resize: bool = False  # allow a model trained on another sensor / input size
    batch: int = 8
    limit: int = 0  # only the first `limit` samples (0: all)
    progress: bool = True
    domain: str = "target"  # world: target domain or a built variant
    test_sequences: int = 0  # world: 0 = half of the sequences, as the transfer benchmark
    scenario: str = "outdoor"  # mvsec-depth: outdoor or indoor_flying
    split_id: int = 1  # mvsec-depth indoor_flying split


Batch = tuple[torch.Tensor, tuple[int, int], torch.Tensor]  # network input, out size, targets


def _indices(n: int, opts: EvalOptions) -> list[list[int]]:
    n = min(n, opts.limit) if opts.limit else n
    return [list(range(i, min(i + opts.batch, n))) for i in range(0, n, opts.batch)]


def _protocol_matched(model: Model, sensor: tuple[int, int], size: tuple[int, int],
                      resize: bool, name: str, log: Callable[[str], None]) -> bool:
    """Whether the protocol's tensors are the model's own input; raises without `resize`."""
    i = model.input
    if tuple(sensor) == tuple(i.sensor) and tuple(size) == tuple(i.size):
        return True
    what = (f"the {name} protocol gives {size[0]}x{size[1]} (HxW) inputs from a "
            f"{sensor[0]}x{sensor[1]} sensor, the model takes {i.size[0]}x{i.size[1]} from a "
            f"{i.sensor[0]}x{i.sensor[1]} sensor")
    if not resize:
        raise ValueError(f"{what}; pass --resize to resize the representation (and the "
                         "predictions back)")
    log(f"warning: {what}: resizing")
    return False


def _warn_sensor(model: Model, sensor: tuple[int, int], resize: bool, where: str,
                 log: Callable[[str], None]) -> None:
    """Log the model's sensor-mismatch message for `where`, if it has one."""
    warning = model.sensor_message(sensor, resize, where)
    if warning:
        log(f"warning: {warning}")


def _chunk_rep(model: Model, normalize: bool) -> Representation:
    rep = model.input.representation()
    return replace(rep, normalize=normalize and rep.normalize)


def _events_per_chunk(model: Model, protocol_count: int) -> int:
    return model.input.window_events or protocol_count


def _dataset_batches(model: Model, ds, target: str, matched: bool,
                     opts: EvalOptions) -> Iterator[Batch]:
    """Batches of a benchmark dataset built with a representation (protocol tensors)."""
    for idx in _indices(len(ds), opts):
        samples = [ds[i] for i in idx]
        reps = torch.stack([s["representation"] for s in samples])
        targets = torch.stack([s[target] for s in samples])
        yield model.fit_input(reps, raw=not matched), tuple(targets.shape[-2:]), targets


def _check_task(model: Model, task: str, dataset: str) -> None:
    if model.task != task:
        raise ValueError(f"{dataset} evaluates {task} but the package ({model.spec.method}) is a "
                         f"{model.task} model")


def _check_modality(model: Model, modality: str, dataset: str) -> None:
    if model.input.modality != modality:
        raise ValueError(f"{dataset} provides {modality} but the model takes "
                         f"{model.input.modality}")


# --- segmentation --------------------------------------------------------------------------
def _score_segmentation(model: Model, batches: Iterator[Batch], total: int,
                        opts: EvalOptions, miou: str = "ess") -> dict:
    conf = ConfusionMatrix(model.num_classes)
    samples = empty = 0
    for x, out_size, labels in tqdm(batches, total=total, desc="evaluate", unit="batch",
                                    disable=not opts.progress):
        empty += int((x.flatten(1) == 0).all(1).sum())
        pred = model.forward(x, out_size, logits=True).max(1).indices.cpu()  # = argmax, faster
        conf.update(pred, labels[..., : out_size[0], :])
        samples += len(x)
    scores = segmentation_scores(conf.matrix, mode=miou)
    per_class = [{"class": name, "iou": iou, "acc": acc} for name, iou, acc in
                 zip(model.class_names, scores["iou"], scores["class_acc"], strict=True)]
    return {"samples": samples, "empty_windows": empty, "miou": scores["miou"],
            "acc": scores["acc"], "macc": scores["macc"], "n_pixels": scores["n_pixels"],
            "per_class": per_class, "confusion": conf.matrix.tolist()}


def _world_segmentation(model: Model, root: Path, opts: EvalOptions, split: str, log):
    from evtransfer.data.world import LABEL_SPACES, WorldTarget, WorldTargetConfig

    i = model.input
    if model.spec.label_space not in LABEL_SPACES:
        raise ValueError(f"the world has labels in {LABEL_SPACES}; the model's label space is "
                         f"{model.spec.label_space!r}")
    cfg = WorldTargetConfig(domain=opts.domain, split=split, test_sequences=opts.test_sequences,
                            window_us=i.window_us or 50_000, label_space=model.spec.label_space)
    ds = WorldTarget(root, cfg)
    sensor = ds.reader(0).info()
    _warn_sensor(model, (sensor.width, sensor.height), opts.resize, "the world", log)

    def batches() -> Iterator[Batch]:
        for idx in _indices(len(ds), opts):
            samples = [ds[k] for k in idx]
            events = [s["events"] for s in samples]
            if not i.window_us:
                events = [ds.reader(ds.items[k][0]).read_last(s["t_us"], i.num_windows
                                                               * i.window_events)
                          for k, s in zip(idx, samples, strict=True)]
            prepared = model.represent(events, resize=opts.resize, allow_empty=True,
                                       warn=False)
            yield (prepared.x, prepared.out_size, torch.stack([s["label"] for s in samples]))

    protocol = {"split": f"{split} (last {opts.test_sequences or 'half'} of the sequences)",
                "window": i.window_text() + " before each label",
                "labels": model.spec.label_space}
    return batches(), len(_indices(len(ds), opts)), protocol


def _dsec(model: Model, root: Path, opts: EvalOptions, split: str, log):
    from evtransfer.data.dsec_semantic import DsecSemantic, DsecSemanticConfig

    _check_modality(model, "events", "dsec-semantic")
    if model.num_classes not in (11, 19):
        raise ValueError(f"DSEC-Semantic has 11 or 19 classes; the model predicts "
                         f"{model.num_classes}")
    matched = _protocol_matched(model, (640, 480), (440, 640), opts.resize, "DSEC-Semantic",
                                log)
    cfg = DsecSemanticConfig(num_classes=model.num_classes,
                             num_windows=model.input.num_windows,
                             events_per_window=_events_per_chunk(model, 100_000),
                             subpixel=model.input.representation().splats_subpixel)
    ds = DsecSemantic(root, split, cfg, representation=_chunk_rep(model, matched))
    protocol = {"split": f"{split}: {', '.join(s.name for s in ds.sequences)}",
                "labels": f"first {cfg.labels_dropped()} dropped, every {cfg.label_stride}nd",
                "window": f"{cfg.num_windows} × {cfg.events_per_window} events (ESS chunks)",
                "geometry": "rectified (sub-pixel), bottom 40 rows cut: 440x640"}
    return (_dataset_batches(model, ds, "label", matched, opts), len(_indices(len(ds), opts)),
            protocol)


def _evdistill_layout(model: Model, root: Path, opts: EvalOptions, split: str):
    from evtransfer.data.event_aps import EventApsPairs

    ds = EventApsPairs(root, split, size=tuple(model.input.size))
    half = "events" if model.input.kind == "event_image" else "aps"

    def batches() -> Iterator[Batch]:
        for idx in _indices(len(ds), opts):
            samples = [ds[i] for i in idx]
            labels = torch.stack([s["label"] for s in samples])
            x = torch.stack([s[half] for s in samples])
            yield x, tuple(labels.shape[-2:]), labels

    protocol = {"split": f"{split}: {len(ds)} images (EvDistill's released layout)",
                "window": f"the {half} half of each PNG",
                "geometry": f"halves resized bicubically to {ds.size[0]}x{ds.size[1]}, labels "
                            "nearest"}
    return batches(), len(_indices(len(ds), opts)), protocol


def _ddd17(model: Model, root: Path, opts: EvalOptions, split: str, log):
    from evtransfer.data.ddd17 import Ddd17Config, Ddd17Segmentation

    if model.num_classes != 6:
        raise ValueError(f"DDD17 has 6 classes; the model predicts {model.num_classes}")
    if model.input.modality == "images":
        return _evdistill_layout(model, root, opts, split)
    _check_modality(model, "events", "ddd17")
    matched = _protocol_matched(model, (346, 260), (200, 352), opts.resize, "DDD17", log)
    cfg = Ddd17Config(num_windows=model.input.num_windows,
                      events_per_window=_events_per_chunk(model, 32_000))
    ds = Ddd17Segmentation(root, split, cfg, representation=_chunk_rep(model, matched))
    protocol = {"split": f"{split}: {', '.join(r.name for r in ds.recordings)}",
                "window": f"{cfg.num_windows} × {cfg.events_per_window} events (ESS chunks)",
                "geometry": "260x346 resized to 260x352, bottom 60 rows cut: 200x352"}
    return (_dataset_batches(model, ds, "label", matched, opts), len(_indices(len(ds), opts)),
            protocol)


# --- depth ---------------------------------------------------------------------------------
def _score_depth(model: Model, batches: Iterator[Batch], total: int, opts: EvalOptions,
                 metrics: dict[str, DepthMetrics], paste: bool = False) -> dict:
    samples = empty = 0
    for x, out_size, targets in tqdm(batches, total=total, desc="evaluate", unit="batch",
                                     disable=not opts.progress):
        empty += int((x.flatten(1) == 0).all(1).sum())
        pred = model.forward(x, out_size).cpu()
        gt, box = targets if paste else (targets, None)
        if box is not None:
            top, left, h, w = box
            full = torch.zeros(gt.shape, dtype=pred.dtype)
            full[:, top:top + h, left:left + w] = pred
            pred = full
        for acc in metrics.values():
            acc.update(pred, gt)
        samples += len(x)
    scores = {name: acc.compute(per_image=True) for name, acc in metrics.items()}
    return {"samples": samples, "empty_windows": empty,
            "metrics": scores["all"] if list(scores) == ["all"] else scores}


def _world_depth(model: Model, root: Path, opts: EvalOptions, split: str, log):
    from evtransfer.data.world import WorldTarget, WorldTargetConfig

    _check_modality(model, "spikes", "the world's depth protocol")
    ds = WorldTarget(root, WorldTargetConfig(domain=opts.domain, split=split, with_depth=True,
                                             with_spikes=True,
                                             test_sequences=opts.test_sequences))
    first = ds[0]["spikes"]
    _warn_sensor(model, (first.width, first.height), opts.resize, "the world", log)

    def batches() -> Iterator[Batch]:
        for idx in _indices(len(ds), opts):
            samples = [ds[k] for k in idx]
            prepared = model.represent([s["spikes"] for s in samples], resize=opts.resize,
                                       allow_empty=True, warn=False)
            yield prepared.x, prepared.out_size, torch.stack([s["depth"] for s in samples])

    lo, hi = model.spec.depth_range
    metrics = {"all": DepthMetrics(form="kitti", min_depth=lo, max_depth=hi)}
    protocol = {"split": split, "window": f"last {model.input.frames} spike frames",
                "depth": f"BiCross/KITTI form, valid {lo} < d < {hi} m, per image"}
    return batches(), len(_indices(len(ds), opts)), protocol, metrics


def _mvsec(model: Model, root: Path, opts: EvalOptions, split: str, log):
    from evtransfer.data.mvsec import MvsecDepth, MvsecDepthConfig

    _check_modality(model, "events", "mvsec-depth")
    matched = _protocol_matched(model, (346, 260), (260, 346), opts.resize, "MVSEC", log)
    i = model.input
    count = bool(i.window_events)
    cfg = MvsecDepthConfig(scenario=opts.scenario, split_id=opts.split_id,
                           window="count" if count else "between",
                           num_events=i.num_windows * i.window_events if count else 30_000,
                           num_windows=i.num_windows)
    ds = MvsecDepth(root, split, cfg, representation=_chunk_rep(model, matched))
    metrics = {"all": DepthMetrics(form="mvsec")}
    metrics.update({f"cutoff_{c}m": DepthMetrics(form="mvsec", cutoff=float(c))
                    for c in (10, 20, 30)})
    protocol = {"split": f"{opts.scenario} {split}: {', '.join(ds.sequences)}",
                "window": (f"last {cfg.num_events} events" if count
                           else "events between consecutive depth maps"),
                "depth": "E2Depth form (GT rescaled to its frame maximum), per frame; all "
                         "valid pixels and 10/20/30 m cut-offs"}
    batches = _dataset_batches(model, ds, "depth", matched, opts)
    return batches, len(_indices(len(ds), opts)), protocol, metrics


def _kitti(model: Model, root: Path, opts: EvalOptions, split: str, log):
    from evtransfer.data.depth_sources import KB_CROP, KittiDepth, PairedDepthConfig
    from evtransfer.data.depth_transfer import RealSpikeDepth

    _check_modality(model, "spikes", "kitti-depth")
    i = model.input
    base = KittiDepth(root, split, PairedDepthConfig(crop=KB_CROP, load_spikes=True))
    ds = RealSpikeDepth(base, i.frames, ("depth", "crop_box"))
    _warn_sensor(model, KB_CROP[::-1], opts.resize, "KITTI (KB crop)", log)
    n = min(len(ds), opts.limit) if opts.limit else len(ds)

    def batches() -> Iterator:
        for k in range(n):
            s = ds[k]
            top, left, h, w = (int(v) for v in s["crop_box"])
            clip = Spikes(s["spikes"].numpy(), 20_000.0, width=w, packed=True)
            prepared = model.represent(clip, resize=opts.resize, allow_empty=True, warn=False)
            yield prepared.x, (h, w), (s["depth"][None], (top, left, h, w))

    lo, hi = model.spec.depth_range
    metrics = {"all": DepthMetrics(form="kitti", min_depth=lo, max_depth=hi, garg_crop=True)}
    protocol = {"split": f"Eigen {split} ({base.missing} listed pairs missing)",
                "window": f"first {i.frames} spike frames", "geometry": "KB crop 352x1216",
                "depth": f"pasted into the full frame, clamped to [{lo}, {hi}] m, Garg crop, "
                         "per image"}
    return batches(), n, protocol, metrics


# --- entry point ---------------------------------------------------------------------------
def evaluate(model: Model, dataset: str, root: str | Path, opts: EvalOptions | None = None,
             log: Callable[[str], None] | None = None) -> dict:
    """Scores of `model` on `dataset` (one of `DATASETS`) at `root` under its published
    protocol (module docstring). Returns a JSON-ready dict: dataset, split, protocol (with
    "tta": "none"), samples, empty_windows and the metrics — segmentation: miou, acc, macc
    (ESS: absent classes count 0), per_class [{class, iou, acc}] and the dataset-wide
    `confusion` matrix (rows: ground truth, columns: prediction); depth: metrics (one dict
    of AbsRel, SqRel, RMSE, ... or one per cut-off)."""
    opts = opts or EvalOptions()
    log = log or (lambda text: print(text, file=sys.stderr))
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    if opts.batch < 1:
        raise ValueError(f"batch must be >= 1, got {opts.batch}")
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such folder (--root)")
    split = opts.split or DEFAULT_SPLIT[dataset]
    if dataset == "ddd17" and model.input.modality == "images" and not opts.split:
        split = "test"  # EvDistill's release holds its test split only (README)
    if TASK_OF[dataset] is not None:
        _check_task(model, TASK_OF[dataset], dataset)
    if model.task == "segmentation":
        if dataset == "world":
            batches, total, protocol = _world_segmentation(model, root, opts, split, log)
        else:
            batches, total, protocol = {"dsec-semantic": _dsec, "ddd17": _ddd17}[dataset](
                model, root, opts, split, log)
        evdistill = model.input.modality == "images"
        result = _score_segmentation(model, batches, total, opts,
                                     "nanmean" if evdistill else "ess")
        protocol.update(miou="nanmean (absent class skipped)" if evdistill
                        else "ess (absent class = 0)", acc="pixel accuracy")
    else:
        if dataset == "world":
            batches, total, protocol, metrics = _world_depth(model, root, opts, split, log)
        else:
            batches, total, protocol, metrics = {"mvsec-depth": _mvsec, "kitti-depth": _kitti}[
                dataset](model, root, opts, split, log)
        result = _score_depth(model, batches, total, opts, metrics,
                              paste=dataset == "kitti-depth")
    protocol["tta"] = "none"
    return {"dataset": dataset, "root": str(root), "split": split,
            "model": str(model.path) if model.path else None, "method": model.spec.method,
            "task": model.task, "limit": opts.limit or None, "resize": opts.resize,
            "protocol": protocol, **result}


def format_table(result: dict) -> str:
    """The scores of `evaluate` as a plain-text table (per-class IoU for segmentation)."""
    head = (f"{result['method']} on {result['dataset']} ({result['split']}, "
            f"{result['samples']} samples, {result['empty_windows']} empty windows)")
    if result["task"] == "segmentation":
        rows = [head, f"mIoU {result['miou']:.2f}  acc {result['acc']:.2f}  "
                      f"mean class acc {result['macc']:.2f}", "class            IoU    acc"]
        rows += [f"{c['class'][:15]:<15} {c['iou']:6.2f} {c['acc']:6.2f}"
                 for c in result["per_class"]]
        return "\n".join(rows)
    metrics = result["metrics"]
    tables = metrics if "abs_rel" not in metrics else {"all": metrics}
    keys = ("abs_rel", "sq_rel", "rmse", "rmse_log", "d1", "d2", "d3")
    rows = [head, f"{'pixels':<12}" + "".join(f"{k:>10}" for k in keys)]
    for name, m in tables.items():
        rows.append(f"{name:<12}" + "".join(f"{m[k]:10.4f}" for k in keys))
    return "\n".join(rows)
