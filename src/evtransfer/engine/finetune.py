"""Supervised dense fine-tuning over datasets of {"x", "y"} items (`TensorDict` for tensors):
segmentation with an auxiliary head and test-time augmentation, depth on normalised log depth,
optical flow with a sequence loss; plus the bookkeeping of fine-tuning stages (`fingerprint`
of the data, `init_key` of an initialisation, `peak_memory_mb`).

Every trainer runs through `dense.fit` (checkpoints, resume, `done.json`), so a finished run is
reused and a killed one resumes. Nothing here knows a paper; methods choose the weights.
- segmentation: `model.forward_all(x)` → (logits, aux_logits, …) (UPerNet); loss
  (CE + dice_weight·Dice)(logits) + aux_weight·(CE + dice_weight·Dice)(aux); training
  augmentation: random horizontal flip and a random resized crop (`scale`) of input and label
  (nearest), as ECDDP's segmentation pipeline; `segment_tta` averages the class
  probabilities over flips and scales.
- depth: the model's single output channel is the logit of the normalised log depth
  D̂ = 1 + ln(d/d_max)/α (E2Depth); loss = scale-invariant(D̂, λ) + grad_weight × multi-scale
  gradient(D̂) over valid pixels (depth > 0); flip augmentation.
- flow: `model.forward_all(x)` → the list of flow iterates; sequence L1 loss with weights
  γ^(N−1−i) over pixels whose flow is finite and shorter than `max_flow` (RAFT); flip
  augmentation negates the horizontal component.
"""

from __future__ import annotations

import hashlib
import resource
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from evtransfer.engine.dense import FitConfig, fit, hflip, predict, segmentation_loss
from evtransfer.engine.loop import TrainState
from evtransfer.metrics import depth_to_log_normalized, log_normalized_to_depth


def random_resized_crop(batch: dict, generator: torch.Generator, scale: tuple[float, float],
                        nearest: Sequence[str] = ("y",)) -> dict:
    """The same random crop (area fraction in `scale`, aspect ratio kept) of every (B, …, H, W)
    tensor of the batch, per sample, resized back to (H, W): bilinear for inputs, nearest for
    the keys in `nearest` (labels). scale (1, 1) returns the batch unchanged."""
    if scale[0] >= 1.0:
        return batch
    first = next(v for v in batch.values() if isinstance(v, Tensor))
    b = first.shape[0]
    frac = torch.empty(b).uniform_(scale[0], scale[1], generator=generator).sqrt()
    # the box's centre keeps it inside the image: |c| <= 1 - side, in normalised units
    centre = (1 - frac)[:, None] * (2 * torch.rand(b, 2, generator=generator) - 1)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = frac
    theta[:, :, 2] = centre
    out = dict(batch)
    for k, v in batch.items():
        if not isinstance(v, Tensor) or v.ndim < 3:
            continue
        x = v.unsqueeze(1) if v.ndim == 3 else v
        grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
        mode = "nearest" if k in nearest else "bilinear"
        y = F.grid_sample(x.float(), grid.to(torch.float32), mode=mode, align_corners=False)
        out[k] = (y.squeeze(1) if v.ndim == 3 else y).to(v.dtype)
    return out


def train_segmentation(model: nn.Module, dataset: Dataset, cfg: FitConfig, *,
                       run_dir: str | Path, seed: int, device: torch.device,
                       aux_weight: float = 0.4, dice_weight: float = 1.0,
                       scale: tuple[float, float] = (0.5, 1.0),
                       param_groups: list[dict] | None = None, progress: bool = True) -> float:
    """Fine-tune a segmenter with `forward_all` (main + auxiliary logits) on a dataset of
    {"x": (C, H, W) float, "y": (H, W) int64 labels, 255 = ignore} (`TensorDict(x=…, y=…)`
    for tensors); returns the training minutes."""

    def step(batch: dict, state: TrainState) -> dict:
        gen = state.generators["aug"]
        batch = random_resized_crop(hflip(batch, gen), gen, scale)
        out = state.modules["model"].forward_all(batch["x"])
        main = segmentation_loss(out.logits, batch["y"], dice_weight=dice_weight)
        loss = main
        if out.aux_logits is not None and aux_weight:
            loss = loss + aux_weight * segmentation_loss(out.aux_logits, batch["y"],
                                                         dice_weight=dice_weight)
        return {"loss": loss, "main": main.detach()}

    return fit({"model": model}, dataset, step, cfg, run_dir=run_dir, seed=seed,
               device=device, progress=progress, param_groups=param_groups)


@torch.no_grad()
def segment_tta(model: nn.Module, x: Tensor, *, scales: Sequence[float] = (1.0,),
                flip: bool = False, batch: int = 16,
                device: torch.device | str = "cpu") -> Tensor:
    """Class probabilities (N, K, H, W) averaged over input scales (bilinear resize of the
    input, logits resized back) and, with `flip`, horizontal flips."""
    model.eval()

    def probs(inp: Tensor) -> Tensor:
        size = inp.shape[-2:]
        total = 0
        for s in scales:
            scaled = inp if s == 1 else F.interpolate(
                inp, size=(round(size[0] * s), round(size[1] * s)), mode="bilinear",
                align_corners=False)
            for flipped in (False, True) if flip else (False,):
                logits = model(scaled.flip(-1) if flipped else scaled)
                logits = logits.flip(-1) if flipped else logits
                logits = F.interpolate(logits.float(), size=size, mode="bilinear",
                                       align_corners=False)
                total = total + logits.softmax(1)
        return total / (len(scales) * (2 if flip else 1))

    return predict(probs, x, batch=batch, device=device)


def scale_invariant_loss(pred: Tensor, target: Tensor, valid: Tensor,
                         lam: float = 1.0) -> Tensor:
    """mean(d²) − λ·mean(d)² with d = pred − target over the valid pixels of each image, then
    averaged over the images with any valid pixel; (B, H, W) tensors, valid bool. λ = 1 is
    blind to a constant offset (a global depth scale), λ = 0.5 is Eigen et al.'s."""
    d = torch.where(valid, pred - target, 0.0)
    n = valid.sum((1, 2)).clamp(min=1)
    per_image = d.square().sum((1, 2)) / n - lam * (d.sum((1, 2)) / n).square()
    has = valid.any(1).any(1)
    return (per_image * has).sum() / has.sum().clamp(min=1)


def multiscale_gradient_loss(pred: Tensor, target: Tensor, valid: Tensor,
                             scales: int = 4) -> Tensor:
    """Σ over `scales` (stride-2^s subsampling) of the mean absolute x and y differences of
    d = pred − target, where both pixels of a difference are valid (E2Depth / MegaDepth)."""
    total = pred.new_zeros(())
    for s in range(scales):
        step = 2**s
        d = (pred - target)[:, ::step, ::step]
        v = valid[:, ::step, ::step]
        vx = v[:, :, 1:] & v[:, :, :-1]
        vy = v[:, 1:, :] & v[:, :-1, :]
        gx = torch.where(vx, (d[:, :, 1:] - d[:, :, :-1]).abs(), 0.0)
        gy = torch.where(vy, (d[:, 1:, :] - d[:, :-1, :]).abs(), 0.0)
        n = v.sum().clamp(min=1)
        total = total + (gx.sum() + gy.sum()) / n
    return total


def train_depth(model: nn.Module, dataset: Dataset, cfg: FitConfig, *,
                run_dir: str | Path, seed: int, device: torch.device, max_depth: float = 80.0,
                grad_weight: float = 0.25, si_lambda: float = 1.0,
                param_groups: list[dict] | None = None, progress: bool = True) -> float:
    """Fine-tune a depth network (one output channel: the logit of D̂) on a dataset of
    {"x": (C, H, W), "y": (H, W) depth in metres, 0 or non-finite = invalid}; returns the
    training minutes."""

    def step(batch: dict, state: TrainState) -> dict:
        batch = hflip(batch, state.generators["aug"])
        pred = torch.sigmoid(state.modules["model"](batch["x"])[:, 0].float())
        gt = batch["y"]
        valid = torch.isfinite(gt) & (gt > 0)
        target = depth_to_log_normalized(torch.where(valid, gt, 1.0), max_depth)
        si = scale_invariant_loss(pred, target, valid, si_lambda)
        grad = multiscale_gradient_loss(pred, target, valid)
        return {"loss": si + grad_weight * grad, "si": si.detach(), "grad": grad.detach()}

    return fit({"model": model}, dataset, step, cfg, run_dir=run_dir,
               seed=seed, device=device, progress=progress, param_groups=param_groups)


def predict_depth(model: nn.Module, x: Tensor, *, max_depth: float = 80.0, batch: int = 16,
                  device: torch.device | str = "cpu") -> Tensor:
    """Depth (N, H, W) metres from a model trained by `train_depth`."""
    model.eval()
    logits = predict(model, x, batch=batch, device=device)
    return log_normalized_to_depth(torch.sigmoid(logits[:, 0]), max_depth)


def sequence_flow_loss(preds: Sequence[Tensor], gt: Tensor, valid: Tensor,
                       gamma: float = 0.8) -> Tensor:
    """Σ_i γ^(N−1−i) · mean over valid pixels of |pred_i − gt|₁ (RAFT's sequence loss);
    preds (B, 2, H, W) each, gt (B, 2, H, W), valid (B, H, W) bool."""
    n = len(preds)
    mask = valid[:, None].float()
    count = (mask.sum() * 2).clamp(min=1)
    return sum(gamma ** (n - 1 - i) * ((p.float() - gt).abs() * mask).sum() / count
               for i, p in enumerate(preds))


def _flip_flow(batch: dict, generator: torch.Generator) -> dict:
    """Random horizontal flips of x and the flow, whose x component changes sign."""
    b = batch["x"].shape[0]
    flip = (torch.rand(b, generator=generator) < 0.5).to(batch["x"].device).view(-1, 1, 1, 1)
    sign = torch.tensor([-1.0, 1.0], device=batch["y"].device).view(1, 2, 1, 1)
    return {"x": torch.where(flip, batch["x"].flip(-1), batch["x"]),
            "y": torch.where(flip, batch["y"].flip(-1) * sign, batch["y"])}


def flow_valid(flow: Tensor, max_flow: float) -> Tensor:
    """(B, H, W) bool: finite flow (B, 2, H, W) shorter than `max_flow` pixels (RAFT's
    training mask; it also drops a renderer's near-camera singularities)."""
    finite = torch.isfinite(flow).all(1)
    return finite & (torch.nan_to_num(flow).norm(dim=1) < max_flow)


def train_flow(model: nn.Module, dataset: Dataset, cfg: FitConfig, *,
               run_dir: str | Path, seed: int, device: torch.device, gamma: float = 0.8,
               max_flow: float = 400.0, param_groups: list[dict] | None = None,
               progress: bool = True) -> float:
    """Fine-tune a flow network with `forward_all` (iterates) on a dataset of
    {"x": (C, H, W), "y": (2, H, W) flow in pixels}, supervised where `flow_valid`; returns
    the training minutes."""

    def step(batch: dict, state: TrainState) -> dict:
        batch = _flip_flow(batch, state.generators["aug"])
        valid = flow_valid(batch["y"], max_flow)
        gt = torch.nan_to_num(batch["y"], nan=0.0, posinf=0.0, neginf=0.0)
        preds = state.modules["model"].forward_all(batch["x"])
        loss = sequence_flow_loss(preds, gt, valid, gamma)
        epe = torch.linalg.vector_norm(preds[-1].detach().float() - gt, dim=1)[valid].mean()
        return {"loss": loss, "epe": epe}

    return fit({"model": model}, dataset, step, cfg, run_dir=run_dir, seed=seed,
               device=device, progress=progress, param_groups=param_groups)


def fingerprint(*tensors: Tensor | None) -> str:
    """A short key of tensors' shapes and float64 sums, so that a stage folder changes with
    its data (another world, other recordings) and not only with its config."""
    parts = [(tuple(t.shape), float(t.double().sum())) if t is not None else None
             for t in tensors]
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def init_key(init: str | Path | None) -> str:
    """A stage-folder key for an initialisation: 'random' or the checkpoint's content hash."""
    if init is None:
        return "random"
    return hashlib.sha256(Path(init).read_bytes()).hexdigest()[:16]


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """Peak memory of this process: CUDA allocated bytes on a GPU, else the peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "cpu_peak_rss"
