"""Evaluation metrics: segmentation, depth, optical flow and classification.

Every function takes torch tensors (any device) or NumPy arrays and computes on the device of
its torch input, in float64 where sums are involved. Each metric names the paper whose
definition it follows, because the papers this library reproduces disagree in small ways
(an absent class counted as 0 or skipped, SqRel over g or over g², δ with < or ≤, per-image
or pooled averaging); a result must say which variant produced it, so the scoring functions
return the variant next to the numbers. Definitions: shared/methods/protocols.md §4–§6.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray
Device = torch.device | str | None
MIoUMode = Literal["ess", "nanmean"]
DepthForm = Literal["kitti", "mvsec"]

# Normalised log depth of E2Depth (code: uzh-rpg/rpg_e2depth evaluation.py `reg_factor`).
LOG_DEPTH_ALPHA = 3.70378
# Garg et al. ECCV 2016 evaluation crop, as fractions of the full image (rows, then columns).
GARG_CROP = (0.40810811, 0.99189189, 0.03594771, 0.96405229)
_MVSEC_EPS = 1e-5  # code: uzh-rpg/rpg_e2depth evaluation.py `add_to_metrics`


def _tensor(name: str, x: ArrayLike, device: torch.device | None = None) -> torch.Tensor:
    """`x` as a tensor (NumPy arrays are wrapped without copying where possible)."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    elif isinstance(x, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(x))
    else:
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
    return t if device is None else t.to(device)


def _pair(names: tuple[str, str], a: ArrayLike, b: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Two inputs as tensors on one device: a torch input's device wins over a NumPy one."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.device != b.device:
        raise ValueError(f"{names[0]} is on {a.device} but {names[1]} is on {b.device}")
    device = next((x.device for x in (a, b) if isinstance(x, torch.Tensor)), None)
    return _tensor(names[0], a, device), _tensor(names[1], b, device)


# --------------------------------------------------------------------------- segmentation


class ConfusionMatrix:
    """Dataset-wide C×C confusion matrix for semantic segmentation.

    `matrix[t, p]` (int64, on `device`) counts pixels of ground-truth class t predicted as p;
    pixels whose target equals `ignore_index` are skipped. `update` accepts (H, W) or
    (B, H, W) integer label maps (torch on any device, or NumPy). The matrix is a plain
    tensor so a distributed engine can `all_reduce` it (sum) before `scores`.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, device: Device = None):
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if 0 <= int(ignore_index) < int(num_classes):
            raise ValueError(f"ignore_index {ignore_index} is a valid class id (< {num_classes})")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64,
                                  device=device)

    def reset(self) -> None:
        """Set every count back to zero."""
        self.matrix.zero_()

    def update(self, pred: ArrayLike, target: ArrayLike) -> None:
        """Add one batch: `pred` and `target` are integer class maps of equal shape.

        Raises ValueError for float labels, shape mismatch, or a value outside [0, C) that is
        not the ignore index (in `target`; in `pred` at non-ignored pixels).
        """
        p, t = _pair(("pred", "target"), pred, target)
        for name, x in (("pred", p), ("target", t)):
            if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
                raise ValueError(f"{name} must hold integer class ids, got dtype {x.dtype}")
        if p.shape != t.shape:
            raise ValueError(f"pred shape {tuple(p.shape)} != target shape {tuple(t.shape)}")
        c = self.num_classes
        p, t = p.reshape(-1).long(), t.reshape(-1).long()
        keep = t != self.ignore_index
        bad_t = keep & ((t < 0) | (t >= c))
        bad_p = keep & ((p < 0) | (p >= c))
        if bool((bad_t | bad_p).any()):
            name, bad, x = ("target", bad_t, t) if bool(bad_t.any()) else ("pred", bad_p, p)
            values = torch.unique(x[bad])[:5].tolist()
            raise ValueError(
                f"{name} has labels {values} outside [0, {c}) that are not the ignore index "
                f"{self.ignore_index}"
            )
        counts = torch.bincount(t[keep] * c + p[keep], minlength=c * c)
        self.matrix += counts.reshape(c, c).to(self.matrix.device)

    def scores(self, mode: MIoUMode = "ess") -> dict:
        """`segmentation_scores` of the accumulated matrix."""
        return segmentation_scores(self.matrix, mode=mode)


def segmentation_scores(conf: ArrayLike, mode: MIoUMode = "ess") -> dict:
    """IoU, mIoU, pixel accuracy and mean class accuracy (all in %) from a C×C matrix.

    `conf[t, p]` counts target t predicted as p. IoU_c = TP/(TP+FP+FN); a class with
    TP+FP+FN = 0 scores 0 in mode "ess" (uzh-rpg/ess evaluation/metrics.py, also ECDDP) and
    is skipped (NaN, `nanmean`) in mode "nanmean" (EvDistill evaluate.py). Class accuracy
    TP/(TP+FN) follows the same rule (ECDDP eval_seg.py mACC). `acc` = trace/sum (ESS "Acc").
    Returns {"iou": [C floats], "miou", "acc", "class_acc": [C floats], "macc",
    "miou_mode", "n_pixels"}.
    """
    if mode not in ("ess", "nanmean"):
        raise ValueError(f"mode must be 'ess' or 'nanmean', got {mode!r}")
    m = _tensor("conf", conf).double()
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"conf must be a square (C, C) matrix, got shape {tuple(m.shape)}")
    tp = m.diag()
    union = m.sum(0) + m.sum(1) - tp
    support = m.sum(1)
    total = m.sum()
    if mode == "ess":
        iou = 100 * tp / union.clamp(min=1e-12)
        class_acc = 100 * tp / support.clamp(min=1e-12)
        miou, macc = iou.mean(), class_acc.mean()
    else:
        iou = torch.where(union > 0, 100 * tp / union.clamp(min=1e-12), math.nan)
        class_acc = torch.where(support > 0, 100 * tp / support.clamp(min=1e-12), math.nan)
        miou, macc = iou.nanmean(), class_acc.nanmean()
    return {
        "iou": iou.tolist(),
        "miou": float(miou),
        "acc": float(100 * tp.sum() / total.clamp(min=1e-12)),
        "class_acc": class_acc.tolist(),
        "macc": float(macc),
        "miou_mode": mode,
        "n_pixels": int(total),
    }


# --------------------------------------------------------------------------- depth

# Per-image sufficient statistics: every metric, per image or pooled, is a function of these.
_STATS = ("n", "abs_rel", "sq_rel", "sq", "log_sq", "log", "abs", "d1", "d2", "d3")
DEPTH_KEYS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "silog", "mae", "d1", "d2", "d3")


def evaluate_segmentation(pred: torch.Tensor, labels: torch.Tensor, num_classes: int,
                          mode: str = "ess") -> dict:
    """Scores of predicted classes (N, H, W) against labels (N, H, W) from one dataset-wide
    confusion matrix (`metrics.segmentation_scores`; mIoU and accuracy in %)."""
    conf = ConfusionMatrix(num_classes)
    conf.update(pred, labels)
    return segmentation_scores(conf.matrix, mode=mode)


def depth_to_log_normalized(depth: ArrayLike, max_depth: float = 80.0,
                            alpha: float = LOG_DEPTH_ALPHA) -> ArrayLike:
    """Metres → E2Depth normalised log depth D̂ = 1 + ln(clip(d, 0, max)/max)/α, in [0, 1].

    Any shape, float; returns the input's kind (tensor or ndarray). Depth 0 maps to 0, NaN
    stays NaN (invalid). Source: uzh-rpg/rpg_e2depth, RAM-Net dataset_mvsec.py (α = 3.70378).
    """
    d = _tensor("depth", depth)
    if not d.is_floating_point():
        raise ValueError(f"depth must be a float array, got dtype {d.dtype}")
    out = (1 + torch.log(d.clamp(0, max_depth) / max_depth) / alpha).clamp(0, 1)
    return out.numpy() if isinstance(depth, np.ndarray) else out


def log_normalized_to_depth(log_depth: ArrayLike, max_depth: float = 80.0,
                            alpha: float = LOG_DEPTH_ALPHA) -> ArrayLike:
    """Inverse of `depth_to_log_normalized`: d = max·exp(α(D̂ − 1)) in metres, any shape."""
    d = _tensor("log_depth", log_depth)
    if not d.is_floating_point():
        raise ValueError(f"log_depth must be a float array, got dtype {d.dtype}")
    out = max_depth * torch.exp(alpha * (d - 1))
    return out.numpy() if isinstance(log_depth, np.ndarray) else out


def garg_crop_mask(height: int, width: int, device: Device = None) -> torch.Tensor:
    """(H, W) bool mask of the Garg crop: rows ⌊0.40810811·H⌋ … ⌊0.99189189·H⌋ − 1, columns
    ⌊0.03594771·W⌋ … ⌊0.96405229·W⌋ − 1 of the full image (BiCross, Monodepth convention)."""
    r0, r1 = int(GARG_CROP[0] * height), int(GARG_CROP[1] * height)
    c0, c1 = int(GARG_CROP[2] * width), int(GARG_CROP[3] * width)
    mask = torch.zeros(height, width, dtype=torch.bool, device=device)
    mask[r0:r1, c0:c1] = True
    return mask


def _depth_batch(name: str, x: torch.Tensor) -> torch.Tensor:
    """(H, W), (B, H, W) or (B, 1, H, W) → (B, H, W) float64."""
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    elif x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"{name} must be (H, W), (B, H, W) or (B, 1, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be float depth in metres, got dtype {x.dtype}")
    return x.double()


class DepthMetrics:
    """Streaming depth metrics, per-image averaged and pooled, in one of two published forms.

    form "kitti" (BiCross Trainer_*.py `validate_errors`, Monodepth/KITTI): predictions are
    clamped to [min_depth, max_depth] (inf → max); valid GT is finite with min_depth < g <
    max_depth; AbsRel |g−p|/g, SqRel (g−p)²/g, δ_k: max(g/p, p/g) < 1.25^k, SILog =
    100·√(mean Δ² − (mean Δ)²) (KITTI benchmark), Δ = ln g − ln p.

    form "mvsec" (uzh-rpg/rpg_e2depth evaluation.py): GT is clipped to [0, max_depth] and,
    when `rescale_gt` (default for this form), divided by its per-frame maximum and multiplied
    by max_depth — E2Depth's quirk, reproduced on purpose. Valid: min_depth < g < top and
    min_depth < p < top, top = the processed frame's maximum; predictions are not clamped.
    With ε = 1e-5: AbsRel |g−p|/(g+ε), SqRel (g−p)²/(g²+ε), Δ = ln(g+ε) − ln(p+ε),
    δ_k: max(g/(p+ε), p/(g+ε)) ≤ 1.25^k, SILog = mean Δ² − (mean Δ)² (no root, no ×100).

    In both forms NaN/±inf/0 GT is invalid, `cutoff` (e.g. 10/20/30 m) keeps g < cutoff,
    `garg_crop` keeps the Garg crop of the full frame, and an optional `mask` (B, H, W) bool
    keeps further pixels (e.g. pixels with events). A NaN prediction raises.
    `state` (float64 tensor) holds every sum, so a distributed engine can all-reduce it.
    """

    def __init__(self, *, form: DepthForm = "kitti", min_depth: float | None = None,
                 max_depth: float = 80.0, cutoff: float | None = None, garg_crop: bool = False,
                 rescale_gt: bool | None = None, device: Device = None):
        if form not in ("kitti", "mvsec"):
            raise ValueError(f"form must be 'kitti' or 'mvsec', got {form!r}")
        min_depth = (1e-3 if form == "kitti" else 0.0) if min_depth is None else float(min_depth)
        if form == "kitti" and min_depth <= 0:
            raise ValueError(f"form 'kitti' needs min_depth > 0 (log of a clamped 0), got "
                             f"{min_depth}")
        if not 0 <= min_depth < max_depth:
            raise ValueError(f"need 0 <= min_depth < max_depth, got {min_depth}, {max_depth}")
        if cutoff is not None and cutoff <= min_depth:
            raise ValueError(f"cutoff {cutoff} must exceed min_depth {min_depth}")
        self.form, self.min_depth, self.max_depth = form, min_depth, float(max_depth)
        self.cutoff, self.garg_crop = cutoff, bool(garg_crop)
        self.rescale_gt = (form == "mvsec") if rescale_gt is None else bool(rescale_gt)
        # [pooled sums of _STATS | sum over images of DEPTH_KEYS | number of images]
        self.state = torch.zeros(len(_STATS) + len(DEPTH_KEYS) + 1, dtype=torch.float64,
                                 device=device)

    def reset(self) -> None:
        """Forget every image seen so far."""
        self.state.zero_()

    def update(self, pred: ArrayLike, gt: ArrayLike, mask: ArrayLike | None = None) -> None:
        """Add a batch: `pred`, `gt` float metres of shape (H, W), (B, H, W) or (B, 1, H, W).

        Images with no valid pixel add nothing to the per-image average (E2Depth would add
        NaN) and are not counted in `n_images`.
        """
        p, g = _pair(("pred", "gt"), pred, gt)
        p, g = _depth_batch("pred", p), _depth_batch("gt", g)
        if p.shape != g.shape:
            raise ValueError(f"pred shape {tuple(p.shape)} != gt shape {tuple(g.shape)}")
        if bool(torch.isnan(p).any()):
            raise ValueError("pred contains NaN depth")
        keep = self._keep(mask, g)
        p, g, valid = (self._kitti if self.form == "kitti" else self._mvsec)(p, g, keep)
        if self.cutoff is not None:  # on the processed GT, as E2Depth does after rescaling
            valid = valid & (g < self.cutoff)
        stats = self._stats(p, g, valid)
        per_image = _finish(stats, self.form)
        has = stats[:, 0] > 0
        update = torch.cat([stats.sum(0), torch.where(has[:, None], per_image, 0.0).sum(0),
                            has.sum(0, keepdim=True).double()])
        self.state += update.to(self.state.device)

    def compute(self, per_image: bool = True) -> dict:
        """Metrics averaged over images (`per_image`, BiCross and E2Depth) or over all pooled
        valid pixels. Returns DEPTH_KEYS floats (NaN when nothing was valid), "n_valid",
        "n_images", "depth_form" and "depth_averaging" ("per_image" or "global")."""
        s = self.state.cpu()
        k = len(_STATS)
        n_images = int(s[-1])
        if per_image:
            values = s[k:-1] / n_images if n_images else torch.full((len(DEPTH_KEYS),), math.nan)
        else:
            values = _finish(s[:k][None], self.form)[0]
        out: dict = dict(zip(DEPTH_KEYS, values.tolist(), strict=True))
        out.update(n_valid=int(s[0]), n_images=n_images, depth_form=self.form,
                   depth_averaging="per_image" if per_image else "global")
        return out

    def _keep(self, mask: ArrayLike | None, g: torch.Tensor) -> torch.Tensor:
        """Caller mask ∧ Garg crop, (B, H, W) bool on g's device."""
        keep = torch.ones_like(g, dtype=torch.bool)
        if mask is not None:
            m = _tensor("mask", mask, g.device)
            if m.dtype != torch.bool:
                raise ValueError(f"mask must be bool, got dtype {m.dtype}")
            m = m[None] if m.ndim == 2 else m
            if m.shape != g.shape:
                raise ValueError(f"mask shape {tuple(m.shape)} != depth shape {tuple(g.shape)}")
            keep = keep & m
        if self.garg_crop:
            keep = keep & garg_crop_mask(g.shape[1], g.shape[2], g.device)
        return keep

    def _kitti(self, p, g, keep):
        valid = keep & torch.isfinite(g) & (g > self.min_depth) & (g < self.max_depth)
        return p.clamp(self.min_depth, self.max_depth), g, valid

    def _mvsec(self, p, g, keep):
        g = torch.where(torch.isfinite(g), g, math.nan).clamp(0, self.max_depth)
        top = torch.where(torch.isnan(g), -math.inf, g).amax(dim=(1, 2), keepdim=True)
        if self.rescale_gt:
            g = g / torch.where(top > 0, top, 1.0) * self.max_depth
            top = torch.where(torch.isnan(g), -math.inf, g).amax(dim=(1, 2), keepdim=True)
        lo = self.min_depth
        valid = keep & (g > lo) & (g < top) & (p > lo) & (p < top)
        return p, g, valid

    def _stats(self, p: torch.Tensor, g: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(B, len(_STATS)) float64 per-image sums over valid pixels."""
        eps = _MVSEC_EPS if self.form == "mvsec" else 0.0
        # Invalid pixels may hold NaN/0; give them harmless values before any division.
        g = torch.where(valid, g, 1.0)
        p = torch.where(valid, p, 1.0)
        err = g - p
        log = torch.log(g + eps) - torch.log(p + eps)
        ratio = torch.maximum(g / (p + eps), p / (g + eps))
        if self.form == "mvsec":
            sq_rel = err**2 / (g**2 + eps)
            hits = [ratio <= 1.25**k for k in (1, 2, 3)]
        else:
            sq_rel = err**2 / g
            hits = [ratio < 1.25**k for k in (1, 2, 3)]
        terms = [valid, err.abs() / (g + eps), sq_rel, err**2, log**2, log, err.abs(), *hits]
        return torch.stack([torch.where(valid, x.double(), 0.0).sum(dim=(1, 2)) for x in terms],
                           dim=1)


def _finish(stats: torch.Tensor, form: str) -> torch.Tensor:
    """(N, len(_STATS)) sums → (N, len(DEPTH_KEYS)) metrics (NaN where n = 0)."""
    n = stats[:, 0].clamp(min=1)
    m = {name: stats[:, i] / n for i, name in enumerate(_STATS)}
    var = m["log_sq"] - m["log"] ** 2
    silog = var if form == "mvsec" else 100 * var.clamp(min=0).sqrt()
    out = torch.stack([m["abs_rel"], m["sq_rel"], m["sq"].sqrt(), m["log_sq"].sqrt(), silog,
                       m["abs"], m["d1"], m["d2"], m["d3"]], dim=1)
    return torch.where(stats[:, :1] > 0, out, math.nan)


def depth_metrics(pred: ArrayLike, gt: ArrayLike, *, min_depth: float | None = None,
                  max_depth: float = 80.0, cutoff: float | None = None, per_image: bool = True,
                  garg_crop: bool = False, form: DepthForm = "kitti",
                  rescale_gt: bool | None = None, mask: ArrayLike | None = None) -> dict:
    """Depth metrics of one batch (H, W) / (B, H, W) float metres; see `DepthMetrics` for the
    two forms, validity rules and returned keys. For a dataset, feed a `DepthMetrics`."""
    acc = DepthMetrics(form=form, min_depth=min_depth, max_depth=max_depth, cutoff=cutoff,
                       garg_crop=garg_crop, rescale_gt=rescale_gt,
                       device=pred.device if isinstance(pred, torch.Tensor) else None)
    acc.update(pred, gt, mask)
    return acc.compute(per_image=per_image)


# --------------------------------------------------------------------------- flow


def _flow_batch(name: str, x: torch.Tensor) -> torch.Tensor:
    """(2, H, W) or (B, 2, H, W) → (B, 2, H, W) float64."""
    x = x[None] if x.ndim == 3 else x
    if x.ndim != 4 or x.shape[1] != 2:
        raise ValueError(f"{name} must be (2, H, W) or (B, 2, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be float flow in pixels, got dtype {x.dtype}")
    return x.double()


def flow_metrics(pred: ArrayLike, gt: ArrayLike, valid: ArrayLike | None = None) -> dict:
    """Optical-flow errors pooled over all valid pixels of (2, H, W) / (B, 2, H, W) flow (px).

    `valid` is an optional (H, W) / (B, H, W) bool mask; GT with a non-finite component is
    invalid too; a NaN prediction raises. Returns "epe" (mean end-point error, px),
    "outlier" (% with EPE > 3 px and EPE > 5 % of |gt|, KITTI 2015 Fl), "1pe", "2pe", "3pe"
    (% with EPE > 1, 2, 3 px, DSEC benchmark) and "n_valid"; values are NaN when n_valid = 0.
    Means over pixels: combine batches by weighting with n_valid.
    """
    p, g = _pair(("pred", "gt"), pred, gt)
    p, g = _flow_batch("pred", p), _flow_batch("gt", g)
    if p.shape != g.shape:
        raise ValueError(f"pred shape {tuple(p.shape)} != gt shape {tuple(g.shape)}")
    if bool(torch.isnan(p).any()):
        raise ValueError("pred contains NaN flow")
    ok = torch.isfinite(g).all(dim=1)
    if valid is not None:
        v = _tensor("valid", valid, g.device)
        v = v[None] if v.ndim == 2 else v
        if v.dtype != torch.bool or v.shape != ok.shape:
            raise ValueError(f"valid must be bool of shape {tuple(ok.shape)}, got "
                             f"{v.dtype} {tuple(v.shape)}")
        ok = ok & v
    epe = torch.linalg.vector_norm(p - g, dim=1)[ok]
    mag = torch.linalg.vector_norm(g, dim=1)[ok]
    n = int(epe.numel())
    if n == 0:
        return {"epe": math.nan, "outlier": math.nan, "1pe": math.nan, "2pe": math.nan,
                "3pe": math.nan, "n_valid": 0}
    return {
        "epe": float(epe.mean()),
        "outlier": float(100 * ((epe > 3) & (epe > 0.05 * mag)).double().mean()),
        "1pe": float(100 * (epe > 1).double().mean()),
        "2pe": float(100 * (epe > 2).double().mean()),
        "3pe": float(100 * (epe > 3).double().mean()),
        "n_valid": n,
    }


# --------------------------------------------------------------------------- classification


def topk_accuracy(logits: ArrayLike, labels: ArrayLike, ks: Sequence[int] = (1, 5)) -> dict:
    """Top-k accuracy in % for (N, C) float scores and (N,) integer labels in [0, C).

    A sample counts for top-k when its label is among the k highest scores (ties broken by
    `torch.topk`). Returns {"top1": …, "top5": …, "n_samples": N}.
    """
    x, y = _pair(("logits", "labels"), logits, labels)
    if x.ndim != 2 or not x.is_floating_point():
        raise ValueError(f"logits must be (N, C) float, got {x.dtype} {tuple(x.shape)}")
    if y.ndim != 1 or y.shape[0] != x.shape[0] or y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"labels must be ({x.shape[0]},) integer, got {y.dtype} {tuple(y.shape)}")
    n, c = x.shape
    ks = [int(k) for k in ks]
    if not ks or min(ks) < 1 or max(ks) > c:
        raise ValueError(f"every k in ks must be in [1, {c}] (number of classes), got {ks}")
    y = y.long()
    if n and bool(((y < 0) | (y >= c)).any()):
        raise ValueError(f"labels must lie in [0, {c})")
    top = x.topk(max(ks), dim=1).indices == y[:, None]
    out: dict = {f"top{k}": float(100 * top[:, :k].any(1).double().mean()) if n else math.nan
                 for k in ks}
    out["n_samples"] = int(n)
    return out
