"""Losses shared by the trainers and the methods, each a small typed function naming the paper
or code it follows. A method's own paper losses stay in its method file (a method file reads
next to its paper); the generic ones live here, below the methods and the engine.

- segmentation: `segmentation_loss` (cross-entropy, ignore 255, + `dice_loss`, ESS's form);
- distillation: `kd_loss` (Hinton, T²-scaled KL);
- reconstruction: `gradient_loss` (L1 of finite differences);
- depth: `scale_invariant_loss` (Eigen et al.), `multiscale_gradient_loss` (E2Depth /
  MegaDepth);
- flow: `sequence_flow_loss` (RAFT).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE = 255


def dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE,
              smooth: float = 1.0) -> torch.Tensor:
    """Multi-class soft Dice (code: uzh-rpg/ess utils/loss_functions.py DiceLoss): per class
    1 - (2Σpg + s)/(Σp² + Σg² + s) summed over the batch, ignored pixels masked out of p and g,
    averaged over classes. logits (B, C, H, W), target (B, H, W) integer."""
    c, target = logits.shape[1], target.long()
    valid = (target != ignore_index).unsqueeze(1)
    p = logits.float().softmax(1) * valid
    g = F.one_hot(target.clamp(0, c - 1), c).permute(0, 3, 1, 2) * valid
    dims = (0, 2, 3)
    inter = (p * g).sum(dims)
    return (1 - (2 * inter + smooth) / ((p * p).sum(dims) + (g * g).sum(dims) + smooth)).mean()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, *, dice_weight: float = 0.0,
                      ignore_index: int = IGNORE) -> torch.Tensor:
    """Cross-entropy (ignore 255) on logits upsampled to the target size, plus `dice_weight` ×
    Dice (dice_weight 1 is ESS's TaskLoss, code: uzh-rpg/ess utils/loss_functions.py).
    logits (B, C, h, w) at any stride, target (B, H, W) integer (uint8 or int64)."""
    target = target.long()
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear",
                               align_corners=False)
    loss = F.cross_entropy(logits.float(), target, ignore_index=ignore_index)
    if dice_weight:
        loss = loss + dice_weight * dice_loss(logits, target, ignore_index)
    return loss


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0,
            mask: torch.Tensor | None = None) -> torch.Tensor:
    """Hinton et al.'s distillation: T² · KL(softmax(teacher/T) ‖ softmax(student/T)) per pixel,
    averaged over pixels (or over `mask` (B, H, W) bool). Logits (B, C, H, W); the teacher is
    detached."""
    t = temperature
    log_p = F.log_softmax(student.float() / t, 1)
    q = F.softmax(teacher.detach().float() / t, 1)
    kl = (q * (torch.log(q.clamp_min(1e-12)) - log_p)).sum(1) * t * t
    if mask is None:
        return kl.mean()
    return (kl * mask).sum() / mask.sum().clamp_min(1)


def gradient_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between horizontal and vertical finite differences of (B, 1, H, W) images (unpublished:
    our weight-free stand-in for E2VID's LPIPS term, which needs downloaded VGG weights)."""
    def grads(img):
        return img[..., :, 1:] - img[..., :, :-1], img[..., 1:, :] - img[..., :-1, :]

    (px, py), (tx, ty) = grads(pred), grads(target)
    return (px - tx).abs().mean() + (py - ty).abs().mean()


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


def sequence_flow_loss(preds: Sequence[Tensor], gt: Tensor, valid: Tensor,
                       gamma: float = 0.8) -> Tensor:
    """Σ_i γ^(N−1−i) · mean over valid pixels of |pred_i − gt|₁ (RAFT's sequence loss);
    preds (B, 2, H, W) each, gt (B, 2, H, W), valid (B, H, W) bool."""
    n = len(preds)
    mask = valid[:, None].float()
    count = (mask.sum() * 2).clamp(min=1)
    return sum(gamma ** (n - 1 - i) * ((p.float() - gt).abs() * mask).sum() / count
               for i, p in enumerate(preds))
