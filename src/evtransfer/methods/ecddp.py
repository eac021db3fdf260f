"""ECDDP: self-supervised dense pre-training of event backbones, then dense fine-tuning.

Yang, Pan, Liu, "Event Camera Data Dense Pre-training", ECCV 2024. Public code:
Yan98/Event-Camera-Data-Dense-Pre-training (pre-training and DSEC segmentation only; the
flow and depth fine-tuning follow the supplement). Notes: ../shared/methods/ecddp.md.

1. Pre-training on events only (`pretrain_ecddp`). A student and its EMA teacher (momentum
   0.992 → 1, cosine, per iteration) share one architecture: a Swin-T (or MiT) encoder whose
   four stages are fused into dense stride-16 tokens (`models.ssl.DenseTokenEncoder`), and
   three heads. Views of each x⁺ (a random crop of a 6-bin, summed-polarity voxel grid): 2
   global and several local random resized crops with flips; student tokens of the global
   crops are block-masked (half of the samples, ratios spread over 0.1–0.5). Losses, all
   cross-entropies H(t, s) = −Σ t log softmax(s/τ_s) against Sinkhorn–Knopp teacher targets:
   - patch level (iBOT): the student predicts the teacher's embedding of every masked token;
   - context level: the teacher's tokens of x⁺ are clustered by cosine K-means (K = 8); each
     cluster is attention-pooled into a context embedding; the one-hot assignments are warped
     into each global crop, and the student pools its masked tokens with them and predicts
     every context that lands in the crop;
   - image level (DINO): attention-pooled embeddings, student locals vs both teacher globals
     and student global i vs teacher global j ≠ i.
   L = w·L_img,local + w·(2·L_ctx + 2·L_img,global) + L_patch, w = 1/(2 + 2 + 2·n_local)
   (the public code's normalisation).
2. Fine-tuning (`finetune_task`): the pretrained encoder (without its patch embedding, whose
   input differs) under UPerNet + 0.4 × FCN auxiliary head with CE + Dice (segmentation,
   flip × multi-scale test-time augmentation), an iterative RAFT-style head with a sequence
   L1 loss (flow, EPE), or UPerNet regressing normalised log depth with scale-invariant +
   gradient losses (depth, the MVSEC protocol).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from evtransfer.data._common import TensorDict
from evtransfer.data.augment import box_grid, resized_crops
from evtransfer.data.dense_tasks import DenseTaskConfig, DenseTaskData, label_subset
from evtransfer.data.firewall import EVALUATION
from evtransfer.data.pretrain_events import Group, PretrainDataConfig, ViewDataset
from evtransfer.data.transfer import TransferData
from evtransfer.engine.ema import EmaTeacher
from evtransfer.engine.fit import FitConfig, fingerprint, init_key, peak_memory_mb, stage_dir
from evtransfer.engine.loader import make_loader
from evtransfer.engine.loop import LoopConfig, TrainState, train
from evtransfer.engine.predict import predict, predict_depth, segment_tta
from evtransfer.engine.schedules import cosine_schedule
from evtransfer.engine.trainers import flow_valid, train_depth, train_flow, train_segmenter_with_aux
from evtransfer.methods.result import MethodResult
from evtransfer.metrics import DepthMetrics, evaluate_segmentation, flow_metrics
from evtransfer.models.flow import iterative_flow_net
from evtransfer.models.heads import init_weights
from evtransfer.models.mit import MixVisionTransformer, init_mit_weights, mit_config
from evtransfer.models.ssl import dense_token_encoder, projection_head
from evtransfer.models.swin import SwinTransformer, UPerNet, swin_init
from evtransfer.models.weights import load_encoder_init, save_encoder

TOKEN_STRIDE = 16


# --- configuration ---------------------------------------------------------------------------
@dataclass
class BackboneConfig:
    """The encoder; defaults are Swin-T/7 (code: ECDDP config/pretrain/swin_small.yml)."""

    arch: str = "swin"  # paper: Swin-T; "mit": the MiT option (MiT-`mit_variant`)
    embed_dim: int = 96  # code: swin_small.yml
    depths: tuple[int, ...] = (2, 2, 6, 2)  # code: swin_small.yml
    num_heads: tuple[int, ...] = (3, 6, 12, 24)  # code: swin_small.yml
    window: int = 7  # code: swin_small.yml
    mit_variant: str = "b0"  # unpublished: our choice (the MiT option)
    eps: float = 1e-6  # code: model/network/swin_pretrain.py (LayerNorm eps 1e-6)
    # code: model/network/swin_pretrain.py:496-511 defines a truncated-normal rule in
    # `init_weights` but never applies it (and `init_all` is False), so Swin's linear and conv
    # layers (and the fusion's) keep PyTorch's defaults: "torch". "trunc_normal": that rule
    # (weights N(0, 0.02) truncated, biases 0), except patch embeddings (see `build`)
    init: str = "torch"

    def build(self, in_chans: int, seed: int, mask_token: bool = False) -> nn.Module:
        """A seeded encoder with `in_chans` inputs (Swin with stage norms, or MiT). Swin follows
        `init` (see `swin_init`). Patch embeddings keep PyTorch's default conv init under both
        rules (non-zero bias, as the code's SWIN): with a zero bias, an empty patch — most of a
        sparse event tensor — reaches the patch LayerNorm as a zero vector, whose gradient is
        scaled by 1/√eps."""
        if self.arch == "swin":
            net = SwinTransformer(in_chans, 0, self.embed_dim, self.depths, self.num_heads,
                                  self.window, stage_norms=True, mask_token=mask_token,
                                  eps=self.eps)
            return swin_init(net, self.init, seed)
        if self.arch == "mit":
            cfg = mit_config(self.mit_variant, in_chans=in_chans, drop_path_rate=0.0)
            net = init_mit_weights(MixVisionTransformer(cfg), seed)
            for stage in net.stages:
                init_weights(stage.patch_embed.proj, seed, conv="uniform")
            return net
        raise ValueError(f"backbone.arch must be 'swin' or 'mit', got {self.arch!r}")

    def input_keys(self) -> tuple[str, ...]:
        """Name fragments of the first patch embedding (dropped when fine-tuning)."""
        return ("stages.0.patch_embed.",) if self.arch == "mit" else ("patch_embed.",)

    def token_dim(self) -> int:
        """Width of the dense tokens: 8 × embed for Swin (768 for Swin-T, as the code's
        `fpns`), the last stage's width for MiT."""
        if self.arch == "mit":
            return mit_config(self.mit_variant).embed_dims[-1]
        return self.embed_dim * 8


@dataclass
class HeadConfig:
    """The three projection heads (code: swin_small.yml dino / ibot sections)."""

    prototypes: int = 32768  # code: head_n_prototypes (2^15)
    hidden: int = 2048  # code: head_hidden_dim
    bottleneck: int = 256  # code: head_bottleneck_dim
    layers: int = 3  # code: head_nlayers


@dataclass
class ViewConfig:
    """x⁺ and its crops, in pixels (code: swin_small.yml crops; model/pretrain_model.py)."""

    view: int = 224  # code: input_size (random crop of the data set's 320² crop)
    global_size: int = 192  # code: global_crops_size
    global_scale: tuple[float, float] = (0.32, 1.0)  # code: global_crops_scale
    local_size: int = 96  # code: local_crops_size
    local_scale: tuple[float, float] = (0.05, 0.32)  # code: local_crops_scale
    local_number: int = 8  # code: local_crops_number
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # code: kornia RandomResizedCrop default


@dataclass
class MaskConfig:
    """Block masks on the global crops' token grid (code: model/pretrain_model.py)."""

    probability: float = 0.5  # code: mask_sample_probability
    ratio: tuple[float, float] = (0.1, 0.5)  # code: mask_ratio_min_max
    # code: model/pretrain_model.py:290,298 draws int(N·r) tokens with N = n_tokens² = 64
    # (BaseModel's default n_tokens=8, never passed) whatever the grid: 4–22 % of its 12 × 12
    # grid. `count_base` is that N; 0 reads the ratios as fractions of the grid (the config's
    # and the paper's reading, N = h·w)
    count_base: int = 64
    min_patches: int = 4  # code: MaskingGenerator min_num_patches
    min_aspect: float = 0.3  # code: MaskingGenerator min_aspect
    max_fraction: float = 0.5  # code: MaskingGenerator max_num_patches = 0.5·N


@dataclass
class PretrainConfig:
    """Stage 1. Epoch-based schedules are those of the code (trainer/pretrain_trainer.py)."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    heads: HeadConfig = field(default_factory=HeadConfig)
    views: ViewConfig = field(default_factory=ViewConfig)
    masks: MaskConfig = field(default_factory=MaskConfig)
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)
    clusters: int = 8  # paper (K = 8)
    kmeans_iters: int = 10  # code: batch_cosine_KMeans max_iter
    context_threshold: float = 0.25  # code: warped assignment maps > .25
    student_temp: float = 0.1  # code: DINOLoss student_temp
    teacher_temp: float = 0.07  # code: teacher_temp
    warmup_teacher_temp: float = 0.04  # code: warmup_teacher_temp
    teacher_temp_warmup_epochs: int = 30  # code: teacher_temp_warmup_epochs
    sinkhorn_iters: int = 3  # code: sinkhorn_knopp_teacher n_iterations
    epochs: int = 300  # paper (supp)
    batch: int = 1024  # paper (supp; global batch)
    base_lr: float = 5e-4  # code: base_lr, scaled by batch / 256
    min_lr: float = 1e-6  # code: min_lr
    warmup_epochs: int = 10  # code: warmup_epoch
    weight_decay: float = 0.04  # code: weight_decay
    weight_decay_end: float = 0.4  # code: weight_decay_end
    clip_grad: float = 3.0  # code: max_grad_norm
    patch_embed_lr_scale: float = 0.2  # code: patch_embed_lr_scale
    freeze_last_layer_epochs: int = 1  # code: delay_epoch
    momentum: float = 0.992  # code: moco_m (cosine to 1)
    amp: str = "fp16"  # code: precision 16 (CPU runs fall back to float32)
    max_steps: int = 0  # 0: all epochs
    log_every: int = 20
    ckpt_every: int = 200
    num_workers: int = 0


@dataclass
class FinetuneConfig:
    """Stage 2 on the world's dense tasks (segmentation values: code: config/seg/swin_small.yml
    and trainer/seg_trainer.py; flow and depth: the supplement)."""

    data: DenseTaskConfig = field(default_factory=DenseTaskConfig)
    label_fraction: float = 0.1  # the protocol: 10 % of the target train labels
    # code: keep_patch_keys false (a new patch embedding); true adapts the pretrained one
    keep_patch_embed: bool = False
    uper_channels: int = 512  # code: UPerHead channels
    aux_channels: int = 256  # code: model/encoderdecoder_model.py FCNHead channels
    aux_weight: float = 0.4  # code: auxiliary loss weight
    dice_weight: float = 1.0  # code: CE + Dice
    crop_scale: tuple[float, float] = (0.5, 1.0)  # unpublished: our choice (ECDDP pads then
    # RandomResizedCrop to the input size; this is the equivalent area range)
    tta_scales: tuple[float, ...] = (1.0, 1.5, 2.0)  # code: eval_seg.py
    tta_flip: bool = True  # code: eval_seg.py
    # clip_grad 0 (off) in all three: code: config/seg/swin_small.yml sets no max_grad_norm, so
    # trainer/base_trainer.py:28 never clips; the supplement names no clipping for flow/depth
    segmentation: FitConfig = field(default_factory=lambda: FitConfig(
        steps=2000, batch=8, lr=2.5e-4, weight_decay=0.05, warmup_steps=200,
        clip_grad=0.0))  # code (lr at B 8)
    flow: FitConfig = field(default_factory=lambda: FitConfig(
        steps=2000, batch=6, lr=2e-4, warmup_steps=100, clip_grad=0.0))  # paper (supp)
    depth: FitConfig = field(default_factory=lambda: FitConfig(
        steps=5600, batch=16, lr=2e-4, warmup_steps=100, clip_grad=0.0))  # paper (supp)
    flow_dim: int = 128  # unpublished: our choice (RAFT's feature width)
    flow_hidden: int = 96  # unpublished: our choice
    flow_iters: int = 6  # unpublished: our choice
    flow_gamma: float = 0.8  # paper (supp: sequence L1, γ 0.8)
    depth_grad_weight: float = 0.25  # paper (supp: + 0.25 × multi-scale gradient loss)
    # unpublished: our choice (the supplement names the scale-invariant loss without λ; λ = 1
    # leaves the global scale, which AbsRel measures, unconstrained; 0.5 is Eigen et al.'s)
    depth_si_lambda: float = 0.5
    max_flow: float = 400.0  # code: princeton-vl/RAFT train.py (MAX_FLOW; longer is invalid)
    max_depth: float = 80.0  # MVSEC protocol (protocols.md §4)
    source_init: FitConfig = field(default_factory=lambda: FitConfig(lr=2.5e-4))  # baseline


@dataclass
class EcddpConfig:
    """Both stages."""

    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


# --- losses ----------------------------------------------------------------------------------
@torch.no_grad()
def sinkhorn_knopp(logits: Tensor, temp: float, iters: int = 3) -> Tensor:
    """Teacher targets (N, P), rows summing to 1: Q = exp(logits/temp) normalised to total 1,
    then `iters` rounds of prototype (rows of Qᵀ to 1/P) and sample (to 1/N) normalisation,
    finally scaled by N (code: model/network/loss.py `sinkhorn_knopp_teacher`)."""
    q = torch.exp(logits.float() / temp).t()
    n, p = q.shape[1], q.shape[0]
    q = q / q.sum()
    for _ in range(iters):
        q = q / q.sum(1, keepdim=True) / p
        q = q / q.sum(0, keepdim=True) / n
    return (q * n).t()


def cross_entropy(targets: Tensor, student: Tensor, temp: float) -> Tensor:
    """mean over rows of −Σ_p t·log softmax(s/temp); targets and logits (N, P), N ≥ 1."""
    return -(targets * F.log_softmax(student.float() / temp, -1)).sum(-1).mean()


def patch_loss(targets: Tensor, student: Tensor, weights: Tensor, n_images: int,
               temp: float) -> Tensor:
    """iBOT's masked-token loss: −Σ_tokens w·Σ_p t·log softmax(s/temp) / n_images, with w =
    1/(masked tokens of the token's image); targets, logits (M, P), weights (M,)."""
    ce = (targets * F.log_softmax(student.float() / temp, -1)).sum(-1)
    return -(ce * weights).sum() / n_images


@torch.no_grad()
def cosine_kmeans(x: Tensor, k: int, iters: int, generator: torch.Generator
                  ) -> tuple[Tensor, Tensor]:
    """Per-item cosine K-means of tokens x (B, N, D): L2-normalised tokens, centroids from k
    distinct random tokens, `iters` rounds of (normalise centroids, assign to the most similar,
    centroid = mean of its tokens; an empty cluster's centroid is 0). Returns assignments
    (B, N) int64 and centroids (B, k, D) (code: model/pretrain_model.py)."""
    b, n, d = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"K-means needs 1 <= k <= tokens ({n}), got k={k}")
    x = F.normalize(x.float(), dim=2)
    pick = torch.rand(b, n, generator=generator).argsort(1)[:, :k].to(x.device)
    centroids = torch.gather(x, 1, pick[..., None].expand(-1, -1, d))
    assign = torch.zeros(b, n, dtype=torch.long, device=x.device)
    for _ in range(iters):
        sim = torch.einsum("bnd,bkd->bnk", x, F.normalize(centroids, dim=2))
        assign = sim.argmax(2)
        onehot = F.one_hot(assign, k).float()
        centroids = onehot.transpose(1, 2) @ x / onehot.sum(1)[..., None].clamp(min=1)
    return assign, centroids


def block_mask(h: int, w: int, n_mask: int, cfg: MaskConfig, generator: torch.Generator
               ) -> Tensor:
    """A BEiT-style (h, w) bool mask of about `n_mask` tokens made of rectangles (area ≥
    min_patches, aspect in [min_aspect, 1/min_aspect], each adding at most max_fraction·h·w
    new tokens; 10 placement attempts per rectangle)."""
    mask = torch.zeros(h, w, dtype=torch.bool)
    cap = int(cfg.max_fraction * h * w)
    lo, hi = math.log(cfg.min_aspect), math.log(1 / cfg.min_aspect)
    count = 0

    def uniform(a: float, b: float) -> float:
        return a + (b - a) * float(torch.rand((), generator=generator))

    while count < n_mask:
        budget, added = min(n_mask - count, cap), 0
        for _ in range(10):
            area, aspect = uniform(cfg.min_patches, budget), math.exp(uniform(lo, hi))
            bh, bw = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if bw < w and bh < h:
                top = int(torch.randint(0, h - bh + 1, (), generator=generator))
                left = int(torch.randint(0, w - bw + 1, (), generator=generator))
                box = mask[top:top + bh, left:left + bw]
                new = bh * bw - int(box.sum())
                if 0 < new <= budget:
                    box.fill_(True)
                    added = new
            if added:
                break
        if not added:
            break
        count += added
    return mask


def sample_masks(n: int, h: int, w: int, cfg: MaskConfig, generator: torch.Generator
                 ) -> Tensor:
    """(n, h, w) bool masks: int(n·probability) samples get about int(N·r) masked tokens
    (N = `cfg.count_base`, or h·w when it is 0; sample i draws r in [r_i, r_{i+1}] of a
    linspace over `cfg.ratio`), the rest none; order shuffled."""
    base = cfg.count_base or h * w
    if not 0 < base <= h * w:
        raise ValueError(f"masks.count_base must be in [0, {h * w}] (the {h}x{w} token grid of "
                         f"a global crop), got {cfg.count_base}")
    masked = int(n * cfg.probability)
    edges = torch.linspace(cfg.ratio[0], cfg.ratio[1], masked + 1).tolist()
    masks = []
    for i in range(masked):
        r = edges[i] + (edges[i + 1] - edges[i]) * float(torch.rand((), generator=generator))
        masks.append(block_mask(h, w, int(base * r), cfg, generator))
    masks += [torch.zeros(h, w, dtype=torch.bool)] * (n - masked)
    return torch.stack(masks)[torch.randperm(n, generator=generator)]


def warp_contexts(assign: Tensor, k: int, hw: tuple[int, int], grid: Tensor,
                  threshold: float) -> tuple[Tensor, Tensor]:
    """One-hot cluster maps of x⁺'s tokens (assign (B, h·w)) sampled into the crops (grid
    (c·B, n, n, 2), crop major) and thresholded: maps (c·B, k, n·n) bool, and keep (c·B, k),
    True for clusters with at least one token inside the crop."""
    onehot = F.one_hot(assign, k).transpose(1, 2).float().view(-1, k, *hw)
    onehot = onehot.repeat(grid.shape[0] // onehot.shape[0], 1, 1, 1)
    warped = F.grid_sample(onehot, grid.to(onehot.dtype), mode="bilinear", align_corners=True)
    maps = (warped > threshold).flatten(2)
    return maps, maps.sum(-1) >= 1


# --- stage 1: pre-training -------------------------------------------------------------------
class EcddpNet(nn.Module):
    """Student or teacher: dense-token backbone and the image (`dino_head`), context
    (`cluster_head`) and patch (`ibot_head`) heads; the first two own attention pools."""

    def __init__(self, cfg: PretrainConfig, in_chans: int, seed: int) -> None:
        super().__init__()
        dim = cfg.backbone.token_dim()
        encoder = cfg.backbone.build(in_chans, seed, mask_token=True)
        self.backbone = dense_token_encoder(encoder, dim, seed)
        if cfg.backbone.arch == "swin":  # the fusion is part of the code's SWIN
            swin_init(self.backbone.fusion, cfg.backbone.init, seed)
        h = cfg.heads
        args = (dim, h.prototypes, h.hidden, h.bottleneck, h.layers)
        self.dino_head = projection_head(*args, pool=True, seed=seed + 1)
        self.cluster_head = projection_head(*args, pool=True, seed=seed + 2)
        self.ibot_head = projection_head(*args, seed=seed + 3)

    def tokens(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, tuple[int, int]]:
        """Dense tokens (B, h·w, dim) of x and their grid (h, w)."""
        t = self.backbone(x, mask)
        return t.flatten(2).transpose(1, 2), (t.shape[2], t.shape[3])


def check_views(cfg: ViewConfig) -> None:
    """Every view size must be a multiple of 32 (the stride-16 token fusion needs it)."""
    sizes = (cfg.view, cfg.global_size, cfg.local_size)
    if any(s <= 0 or s % 32 for s in sizes):
        raise ValueError(f"views: view, global_size and local_size must be positive multiples "
                         f"of 32, got {sizes}")


class Views(NamedTuple):
    """The crops of one batch of x⁺ (B, C, V, V), crop major: `global_crops` (2B, C, G, G),
    `local_crops` (n_local·B, C, L, L), `grid` (2B, G/16, G/16, 2) the global crops' token
    positions in x⁺ (grid_sample coordinates), `masks` (2B, G/16, G/16) bool."""

    global_crops: Tensor
    local_crops: Tensor
    grid: Tensor
    masks: Tensor


def sample_views(view: Tensor, cfg: PretrainConfig, generator: torch.Generator) -> Views:
    """Two global and `local_number` local random resized crops of every x⁺, the global crops'
    token grids, and their block masks."""
    b, v = view.shape[0], cfg.views
    g_crops, g_boxes, g_flips = resized_crops(view, 2, v.global_size, v.global_scale, v.ratio,
                                              generator)
    l_crops, _, _ = resized_crops(view, v.local_number, v.local_size, v.local_scale, v.ratio,
                                  generator)
    ng = v.global_size // TOKEN_STRIDE
    grid = box_grid(g_boxes, g_flips, ng, view.shape[-1]).to(view.device)
    masks = sample_masks(2 * b, ng, ng, cfg.masks, generator).to(view.device)
    return Views(g_crops, l_crops, grid, masks)


def ecddp_losses(student: EcddpNet, teacher: EcddpNet, view: Tensor, cfg: PretrainConfig,
                 teacher_temp: float, generator: torch.Generator,
                 views: Views | None = None) -> dict[str, Tensor]:
    """The three losses of one batch of views x⁺ (B, C, V, V) and their weighted sum; the
    crops are `views`, or sampled from `generator` (which then also seeds K-means)."""
    b, k, n_local = view.shape[0], cfg.clusters, cfg.views.local_number
    g_crops, l_crops, grid, masks = views or sample_views(view, cfg, generator)
    flat_mask = masks.flatten()
    temp, it = teacher_temp, cfg.sinkhorn_iters
    with torch.no_grad():
        tv, hw_v = teacher.tokens(view)
        assign, _ = cosine_kmeans(tv, k, cfg.kmeans_iters, generator)
        region = F.one_hot(assign, k).transpose(1, 2).bool()
        contexts = teacher.cluster_head.pooled(tv, hw_v, k, region)
        maps, keep = warp_contexts(assign, k, hw_v, grid, cfg.context_threshold)
        tg, hw_g = teacher.tokens(g_crops)
        t_img = sinkhorn_knopp(teacher.dino_head(teacher.dino_head.pooled(tg, hw_g)[:, 0]),
                               temp, it)
        t_ctx = sinkhorn_knopp(teacher.cluster_head(contexts.flatten(0, 1)), temp, it)
        t_patch = (sinkhorn_knopp(teacher.ibot_head(tg.flatten(0, 1)[flat_mask]), temp, it)
                   if flat_mask.any() else None)
    sg, _ = student.tokens(g_crops, masks)
    sl, hw_l = student.tokens(l_crops)
    tau = cfg.student_temp
    s_local = student.dino_head(student.dino_head.pooled(sl, hw_l)[:, 0]).chunk(n_local)
    l_local = sum(cross_entropy(t, s, tau) for s in s_local for t in t_img.chunk(2))
    s_img = student.dino_head(student.dino_head.pooled(sg, hw_g)[:, 0])
    l_img = cross_entropy(torch.cat(t_img.chunk(2)[::-1]), s_img, tau)
    zero = s_img.new_zeros(())
    l_ctx = zero
    if keep.any():
        s_ctx = student.cluster_head.pooled(sg, hw_g, k, maps)[keep]
        l_ctx = cross_entropy(t_ctx.view(b, k, -1).repeat(2, 1, 1)[keep],
                              student.cluster_head(s_ctx), tau)
    l_patch = zero
    if t_patch is not None:
        counts = masks.flatten(1).sum(1).clamp(min=1)
        weights = (1.0 / counts)[:, None].expand_as(masks.flatten(1)).flatten()[flat_mask]
        l_patch = patch_loss(t_patch, student.ibot_head(sg.flatten(0, 1)[flat_mask]), weights,
                             2 * b, tau)
    w = 1.0 / (2 + 2 + 2 * n_local)
    loss = w * l_local + w * (2 * l_ctx + 2 * l_img) + l_patch
    return {"loss": loss, "image_local": l_local.detach(), "image_global": l_img.detach(),
            "context": l_ctx.detach(), "patch": l_patch.detach(),
            "contexts_kept": keep.float().sum(1).mean()}


def param_groups(student: EcddpNet, patch_embed_lr_scale: float) -> list[dict]:
    """The code's groups: decayed weights, undecayed biases and 1-D parameters, and the first
    patch embedding at a reduced learning rate (trainer/pretrain_trainer.py)."""
    first = ("backbone.encoder.patch_embed.", "backbone.encoder.stages.0.patch_embed.")
    groups: dict[str, list] = {"decay": [], "no_decay": [], "patch": []}
    for name, p in student.named_parameters():
        if name.startswith(first):
            groups["patch"].append(p)
        elif name.endswith(".bias") or p.ndim == 1:
            groups["no_decay"].append(p)
        else:
            groups["decay"].append(p)
    return [{"params": groups["decay"]}, {"params": groups["no_decay"], "wd_scale": 0.0},
            {"params": groups["patch"], "lr_scale": patch_embed_lr_scale}]


def pretrain_schedules(cfg: PretrainConfig, iters_per_epoch: int, batch: int
                       ) -> dict[str, np.ndarray]:
    """Per-iteration lr (5e-4·B/256, warm-up, cosine), weight decay (cosine up), EMA momentum
    (cosine to 1) and teacher temperature (linear warm-up per epoch, then constant)."""
    e, ipe = cfg.epochs, iters_per_epoch
    lr = cfg.base_lr * batch / 256
    warm = min(cfg.teacher_temp_warmup_epochs, e)
    temps = np.concatenate([np.linspace(cfg.warmup_teacher_temp, cfg.teacher_temp, warm),
                            np.full(e - warm, cfg.teacher_temp)])
    return {"lr": cosine_schedule(lr, cfg.min_lr, e, ipe, warmup_epochs=min(cfg.warmup_epochs, e)),
            "weight_decay": cosine_schedule(cfg.weight_decay, cfg.weight_decay_end, e, ipe),
            "ema_momentum": cosine_schedule(cfg.momentum, 1.0, e, ipe),
            "teacher_temp": np.repeat(temps, ipe)}


def pretrain_ecddp(groups: list[Group], cfg: PretrainConfig, root: str | Path, *, seed: int = 0,
                   device: str | torch.device = "cpu", progress: bool = True,
                   resume: bool = True) -> dict:
    """Stage 1 on pre-training windows (`data.pretrain_events.load_pretrain_windows`), in the
    stage folder `root/ECDDP-pretrain-<hash>` (resumable; a finished stage is reused).
    Returns its summary: `encoder` (path of encoder.safetensors), `steps`, `minutes`,
    `samples_per_s`, `peak_memory_mb`, `memory_kind`, final losses."""
    check_views(cfg.views)
    grid = (cfg.views.global_size // TOKEN_STRIDE) ** 2
    if cfg.masks.count_base > grid:
        raise ValueError(f"masks.count_base {cfg.masks.count_base} exceeds the {grid} tokens of "
                         f"a {cfg.views.global_size}-px global crop (the code's 64 is for its "
                         f"192-px crops; scale it, or 0 for the ratio reading)")
    device = torch.device(device)
    run = stage_dir(root, "ECDDP-pretrain", cfg, fingerprint(*(t for g in groups for t in g)),
                    seed)
    done = run / "done.json"
    if done.exists():
        return json.loads(done.read_text())
    in_chans = groups[0][0].shape[1]
    dataset = ViewDataset(groups, cfg.views.view, seed=seed, min_events=cfg.data.min_events)
    batch = min(cfg.batch, len(dataset))
    ipe = max(1, len(dataset) // batch)
    student = EcddpNet(cfg, in_chans, seed).to(device)
    teacher = EmaTeacher(student, cfg.momentum)
    opt = torch.optim.AdamW(param_groups(student, cfg.patch_embed_lr_scale),
                            lr=cfg.base_lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.999))
    last = [p for n, p in student.named_parameters() if "last_layer" in n]

    def freeze_last_layer(state: TrainState) -> None:
        if state.epoch < cfg.freeze_last_layer_epochs:
            for p in last:
                p.grad = None

    state = TrainState({"student": student}, {"main": opt}, device, ema={"student": teacher},
                       generators={"views": torch.Generator().manual_seed(seed)},
                       grad_hook=freeze_last_layer)

    calls = [0]  # iterations run by this process (a resumed run starts mid-way)

    def step(batch_views: Tensor, st: TrainState) -> dict:
        calls[0] += 1
        return ecddp_losses(st.modules["student"], st.ema["student"].module, batch_views, cfg,
                            st.sched["teacher_temp"], st.generators["views"])

    def loader_fn(epoch: int, start: int):
        dataset.epoch = epoch
        return make_loader(dataset, batch, seed=seed, epoch=epoch, start_batch=start,
                           num_workers=cfg.num_workers)

    loop = LoopConfig(epochs=cfg.epochs, max_steps=cfg.max_steps, amp=cfg.amp,
                      clip_grad=cfg.clip_grad, log_every=cfg.log_every,
                      ckpt_every=cfg.ckpt_every, progress=progress, tensorboard=False)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    resumed = resume and (run / "checkpoints" / "last").exists()
    tic = time.perf_counter()
    train(loop, state, step, loader_fn, run_dir=run, schedules=pretrain_schedules(cfg, ipe, batch),
          resume=resumed)
    wall = time.perf_counter() - tic
    memory, kind = peak_memory_mb(device)
    save_encoder(run / "encoder.safetensors", student.backbone.encoder,
                 {"method": "ecddp", "in_chans": str(in_chans),
                  "backbone": json.dumps(asdict(cfg.backbone))})
    final, collapsed = image_level_collapse(run / "metrics.jsonl", cfg.heads.prototypes)
    summary = {"encoder": str(run / "encoder.safetensors"), "steps": state.step,
               "batch": batch, "windows": len(dataset), "minutes": wall / 60,
               "samples_per_s": calls[0] * batch / max(wall, 1e-9),
               "peak_memory_mb": memory, "memory_kind": kind, "device": str(device),
               "resumed_from_step": state.step - calls[0], "final_losses": final,
               "image_level_collapsed": collapsed}
    done.write_text(json.dumps(summary, indent=1))
    return summary


def image_level_collapse(metrics: Path, prototypes: int, tol: float = 1e-3
                         ) -> tuple[dict[str, float], bool]:
    """The last logged losses of a pre-training run, and whether its image-level (DINO) loss
    ended at ln(prototypes): the student predicts the uniform distribution because the
    teacher's Sinkhorn targets no longer differ between images (docs/methods/ecddp.md). A
    collapse is also reported as a warning, since the run itself finishes normally."""
    records = [json.loads(line) for line in metrics.read_text().splitlines()
               if line.strip()] if metrics.exists() else []
    train_logs = [r for r in records if r.get("kind") == "train"]
    if not train_logs:
        return {}, False
    last = train_logs[-1]
    final = {k: float(last[k]) for k in ("image_global", "image_local", "context", "patch")
             if k in last}
    collapsed = abs(final.get("image_global", 0.0) - math.log(prototypes)) < tol
    if collapsed:
        warnings.warn(f"{metrics.parent}: the image-level loss ended at ln({prototypes}) = "
                      f"{math.log(prototypes):.4f}: the teacher's image targets are uniform, so "
                      f"that term taught nothing (docs/methods/ecddp.md)", stacklevel=2)
    return final, collapsed



# --- stage 2: fine-tuning --------------------------------------------------------------------
def task_network(task: str, cfg: EcddpConfig, in_chans: int, num_classes: int, seed: int
                 ) -> tuple[nn.Module, nn.Module]:
    """(network, its encoder) for `task`: UPerNet + FCN auxiliary head (segmentation), UPerNet
    with one output (depth: the logit of normalised log depth), or the iterative flow head
    over an encoder of the input's halves (flow)."""
    ft, bb = cfg.finetune, cfg.pretrain.backbone
    if task == "flow":
        encoder = bb.build(in_chans // 2, seed)
        return iterative_flow_net(encoder, ft.flow_dim, ft.flow_hidden, ft.flow_iters,
                                  seed=seed), encoder
    encoder = bb.build(in_chans, seed)
    if task == "segmentation":
        net = UPerNet(encoder, num_classes, ft.uper_channels, ft.aux_channels)
    elif task == "depth":
        net = UPerNet(encoder, 1, ft.uper_channels, None)
    else:
        raise ValueError(f"task must be segmentation, flow or depth, got {task!r}")
    return init_weights(net, seed, skip=[encoder]), encoder


@torch.no_grad()
def evaluate_task(task: str, net: nn.Module, x: Tensor, y: Tensor, num_classes: int,
                  cfg: FinetuneConfig, device: torch.device) -> dict:
    """Test scores: segmentation mIoU/acc/mACC (ESS mIoU, flip × scales TTA), flow EPE
    (pooled over pixels with finite flow shorter than `max_flow`), depth in the MVSEC form
    (per image, then averaged)."""
    if task == "segmentation":
        probs = segment_tta(net, x, scales=cfg.tta_scales, flip=cfg.tta_flip, device=device)
        scores = evaluate_segmentation(probs.argmax(1), y, num_classes)
        return {k: scores[k] for k in ("miou", "acc", "macc")} | {
            "tta": f"flip={cfg.tta_flip} scales={list(cfg.tta_scales)}"}
    if task == "flow":
        net.eval()
        return flow_metrics(predict(net, x, device=device), torch.nan_to_num(y),
                            flow_valid(y, cfg.max_flow))
    metrics = DepthMetrics(form="mvsec", max_depth=cfg.max_depth)
    metrics.update(predict_depth(net, x, max_depth=cfg.max_depth, device=device), y)
    return metrics.compute(per_image=True)


def finetune_task(data: DenseTaskData, cfg: EcddpConfig, init: str | Path | None,
                  root: str | Path, *, seed: int = 0, device: str | torch.device = "cpu",
                  progress: bool = True, evaluate: bool = True) -> dict:
    """Fine-tune on a seeded `label_fraction` of the train split from the encoder checkpoint
    `init` (None: random initialisation), in a stage folder keyed by the settings, the init and
    the seed; returns `scores` on the test split, `minutes`, `labeled`, `loaded` (tensors taken
    from the checkpoint) and `network`."""
    device, ft, task = torch.device(device), cfg.finetune, data.task
    idx = label_subset(len(data.train_x), ft.label_fraction, seed)
    if len(idx) < 2 and task != "flow":
        raise ValueError(f"{task}: {len(idx)} labeled sample; UPerNet's BatchNorm needs at least "
                         f"2 (raise finetune.label_fraction or use a larger world)")
    net, encoder = task_network(task, cfg, data.channels, data.num_classes, seed)
    loaded = 0
    if init is not None:
        drop = () if ft.keep_patch_embed else cfg.pretrain.backbone.input_keys()
        loaded = len(load_encoder_init(encoder, init, drop=drop,
                                       adapt_input_conv=ft.keep_patch_embed).loaded)
    net = net.to(device)
    fit_cfg = {"segmentation": ft.segmentation, "flow": ft.flow, "depth": ft.depth}[task]
    run = stage_dir(root, f"ECDDP-{task}", cfg.pretrain.backbone, ft, init_key(init),
                    fingerprint(data.train_y, data.test_x), seed)
    labeled = TensorDict(x=data.train_x[idx], y=data.train_y[idx])
    common = {"run_dir": run, "seed": seed, "device": device, "progress": progress}
    if task == "segmentation":
        minutes = train_segmenter_with_aux(net, labeled, fit_cfg, aux_weight=ft.aux_weight,
                                           dice_weight=ft.dice_weight, scale=ft.crop_scale,
                                           **common)
    elif task == "flow":
        minutes = train_flow(net, labeled, fit_cfg, gamma=ft.flow_gamma, max_flow=ft.max_flow,
                             **common)
    else:
        minutes = train_depth(net, labeled, fit_cfg, max_depth=ft.max_depth,
                              grad_weight=ft.depth_grad_weight, si_lambda=ft.depth_si_lambda,
                              **common)
    scores = (evaluate_task(task, net, data.test_x, data.test_y.read(EVALUATION),
                            data.num_classes, ft, device) if evaluate else {})
    return {"scores": scores, "minutes": minutes, "labeled": len(idx), "loaded": loaded,
            "network": net}


def train_ecddp(data: TransferData, cfg: EcddpConfig, root: str | Path, *, seed: int = 0,
                device: str | torch.device = "cpu", progress: bool = True,
                labels: Tensor | None = None) -> MethodResult:
    """The transfer-table entry: pre-train on the table's unlabeled windows (target train and
    synthetic; their representation, without event counts), then fine-tune segmentation on a
    `label_fraction` of the target train labels (`labels`, (K, H, W)); predicts with TTA."""
    if labels is None:
        raise ValueError("ecddp fine-tunes on target labels: pass the train split's labels")
    root = Path(root)
    windows = torch.cat([data.target_x, data.synth_x]).half()
    summary = pretrain_ecddp([(windows, None)], cfg.pretrain, root, seed=seed, device=device,
                             progress=progress)
    task = DenseTaskData("segmentation", data.target_x, labels, data.test_x, data.test_label,
                         data.num_classes)
    out = finetune_task(task, cfg, summary["encoder"], root, seed=seed, device=device,
                        progress=progress, evaluate=False)
    net, ft = out["network"], cfg.finetune
    return MethodResult(
        lambda x: segment_tta(net, x, scales=ft.tta_scales, flip=ft.tta_flip, device=device),
        net, {"pretrain": summary["minutes"], "finetune": out["minutes"]})
