"""BiCross: unsupervised spike-camera depth by cross-modality, cross-domain knowledge transfer.

Liu, Zhang, Li, Li, Wang, Lu, Huang, Zhang, "Unsupervised Spike Depth Estimation via
Cross-modality Cross-domain Knowledge Transfer", ICRA 2024 (arXiv 2208.12527); code
Theia-4869/BiCross (notes: ../shared/methods/bicross.md). The public code lacks the paper's
uncertainty-filtered fine distillation and its self-correcting alignment; both are here, with
the public code's behaviour one switch away (`fkd_filter`, `sca`).

0. RGB pre-training: a DPT depth network (ViT-hybrid or MiT encoder) with an uncertainty head
   is supervised on the labeled source RGB: L_sup = SigLoss + L1(uncertainty, clamped relative
   error).
1. Cross-modality, CFKD: spikes simulated from the same source frames (±1, T frames); the spike
   student is the RGB model with a new stem for T channels; the frozen RGB model teaches it:
   L = L_sup(spikes) + 0.01·(L_CKD + L_FKD), with L_CKD the InfoNCE between projected, pooled
   deepest features (RGB → spike) and L_FKD the MSE between the deepest decoder fusion maps,
   kept (paper) where the RGB uncertainty is low and the spike uncertainty is high.
2. Cross-domain, SCTS, on unlabeled target spikes: a mean teacher (EMA 0.999) whose pixels with
   uncertainty below the median are the student's pseudo-labels (SCP, SigLoss), plus a global
   alignment of the student's pooled deepest target features with the teacher's source ones
   (SCA). The public code's adversarial alternative (gradient reversal on the same features)
   is `adaptation="adversarial"`.

`pre_src` (the stage-1 student on the target) and `spike_supervised` (a spike model trained on
target depth: the upper bound) are the baselines of the paper's tables; `ABLATIONS` switch
off the CFKD filter, SCP or SCA. Networks, stages and predictions are device-agnostic.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from evtransfer.data.augment import hflip
from evtransfer.data.depth_transfer import DepthProtocol, DepthTransferData, unpack_spikes
from evtransfer.engine.ema import EmaTeacher
from evtransfer.engine.fit import FitConfig, fit, stage_dir
from evtransfer.engine.loop import TrainState
from evtransfer.engine.predict import predict
from evtransfer.methods.result import MethodResult
from evtransfer.metrics import garg_crop_mask
from evtransfer.models import create_model
from evtransfer.models.dpt import DPTDepth, DPTOutputs
from evtransfer.models.released.bicross import load_dpt_init
from evtransfer.models.weights import load_adapted


def _fit(steps: int, lr: float) -> Callable[[], FitConfig]:
    # weight_decay 0: code: BiCross/utils.py (Adam, no weight decay); steps and lr: our choice.
    # clip_grad 0 (off): code: BiCross/Trainer_*.py step their Adams on unclipped gradients
    # (the field stays a switch; FitConfig's own default is 1.0)
    return lambda: FitConfig(steps=steps, batch=8, lr=lr, min_lr=lr / 100, weight_decay=0.0,
                             clip_grad=0.0)


@dataclass
class BicrossConfig:
    """All stages; budgets and learning rates are CPU-sized (the paper: 30 / 10 / 20 epochs)."""

    model: str = "dpt_hybrid_small"  # unpublished: CPU preset (paper: DPT-Hybrid, `dpt_hybrid`)
    depth_scale: float = 0.1  # unpublished: our choice (paper 6.016e-5; see docs)
    depth_shift: float = 0.0125  # unpublished: our choice (raw 0 -> 80 m; paper 0.00579)
    init_depth: float = 10.0  # unpublished: our choice (head bias starts here; 0: builder's)
    # stage 0's start: "" (random, the world), a BiCross / DPT / timm-hybrid file in its
    # official layout (models/released/bicross.py), or a state dict in our names
    rgb_init: str = ""
    # code: BiCross/Trainer_crossmodality.py:73 swaps in timm's StdConv2dSame(128, 64, 7, 2)
    # at its default eps (1e-6 in timm >= 0.4.12); the RGB hybrid stem uses 1e-8
    spike_stem_eps: float = 1e-6
    input_size: tuple[int, int] = (0, 0)  # paper: 384×384; (0, 0): sides rounded up to ×32
    stem: str = "new"  # code: a fresh StdConv2dSame stem; "adapted": RGB filters tiled over T
    hflip: bool = False  # code: no augmentation
    sig_eps: float = 0.1  # code: BiCross/Loss.py SigLoss
    sig_lambda: float = 0.15  # code: BiCross/Loss.py SigLoss
    rgb_backbone_lr_scale: float = 0.1  # code: train_config.json (lr_backbone 1e-5 / 1e-4)
    backbone_lr_scale: float = 0.1  # code: train_config.json (lr 1e-5 backbone, 1e-4 rest)
    # code: BiCross/utils.py:66-71 get_optimizer puts net.pretrained into BOTH Adams (the
    # scratch list takes every top-level module, `pretrained` included), so the backbone
    # moves by (lr_backbone + lr_scratch): 1.1 x lr. True does that (one Adam group at
    # (scale + 1) x lr: equal, see docs); False: the paper's / our old reading, scale x lr.
    # The CKD / domain heads have their own Adam at lr_backbone in the code either way.
    backbone_in_both: bool = True
    rgb: FitConfig = field(default_factory=_fit(200, 1e-3))  # stage 0, from scratch
    cfkd: FitConfig = field(default_factory=_fit(150, 5e-4))  # stage 1
    kd_weight: float = 0.01  # code: Trainer_crossmodality.py (0.01·(CKD + FKD))
    ckd_hidden: int = 512  # code: Trainer_crossmodality.py head (768 → 512 → BN → ReLU → 256)
    ckd_dim: int = 256  # code: Trainer_crossmodality.py
    fkd_filter: bool = True  # paper (Fig. 3c); not in the public code (unfiltered MSE)
    scts: FitConfig = field(default_factory=_fit(120, 2e-4))  # stage 2
    adaptation: str = "mean_teacher"  # code: method "meanteacher"; or "adversarial"
    ema_momentum: float = 0.999  # code: train_config.json alpha
    warmup_steps: int = 3  # code: warmup_step 4 (the loop breaks at the 4th source batch)
    warmup_weight: float = 0.1  # code: Trainer_crossdomain.py (0.1·L_sup)
    scp: bool = True  # paper and code: uncertainty-filtered pseudo-labels
    pseudo_quantile: float = 0.5  # code: Trainer_crossdomain.py (the median)
    sca: bool = True  # paper (Fig. 2 b2); not in the public code
    sca_weight: float = 0.1  # unpublished: our choice (the loss form is unpublished too)
    adv_beta: float = 0.01  # code: train_config.json beta (gradient reversal)
    adv_weight: float = 0.1  # code: Trainer_crossdomain.py (0.1·NLL)
    supervised: FitConfig = field(default_factory=_fit(150, 5e-4))  # the upper bound

    def __post_init__(self) -> None:
        if self.stem not in ("new", "adapted"):
            raise ValueError(f"bicross.stem must be 'new' or 'adapted', got {self.stem!r}")
        if self.adaptation not in ("mean_teacher", "adversarial"):
            raise ValueError(f"bicross.adaptation must be 'mean_teacher' or 'adversarial', got "
                             f"{self.adaptation!r}")
        size = tuple(self.input_size)
        if len(size) != 2 or (size != (0, 0) and any(s <= 0 or s % 32 for s in size)):
            raise ValueError(f"bicross.input_size must be two positive multiples of 32 or "
                             f"(0, 0), got {self.input_size}")
        if self.init_depth < 0 or self.depth_scale <= 0:
            raise ValueError("bicross.init_depth must be >= 0 and depth_scale > 0")
        if not 0 < self.pseudo_quantile <= 1:
            raise ValueError(f"bicross.pseudo_quantile must be in (0, 1], got "
                             f"{self.pseudo_quantile}")
        for name in ("cfkd", "scts"):  # BatchNorm1d in the projection / domain heads
            if getattr(self, name).batch < 2:
                raise ValueError(f"bicross.{name}.batch must be >= 2 (batch-norm heads)")


# --- losses ---------------------------------------------------------------------------------
def sig_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 0.1,
             lam: float = 0.15) -> torch.Tensor:
    """Scale-invariant log loss over valid values (any shape, metres): g = ln(p + ε) − ln(y + ε),
    √(Var(g) + λ·mean(g)²), Var unbiased (BiCross `SigLoss`). Fewer than 2 values give 0; the
    root's argument is floored at 1e-12 so a perfect fit has a zero, not NaN, gradient."""
    g = torch.log(pred.float() + eps) - torch.log(target.float() + eps)
    if g.numel() < 2:
        return pred.sum() * 0.0
    return torch.sqrt((g.var() + lam * g.mean() ** 2).clamp_min(1e-12))


def uncertainty_loss(unc: torch.Tensor, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean |u − clamp(|p − y| / y, 0, 1)| over valid values (BiCross `Uncertainty_L1_Loss`;
    p is not detached, as in the code). Empty input gives 0."""
    if unc.numel() == 0:
        return unc.sum() * 0.0
    err = ((pred.float() - target).abs() / target).clamp(0.0, 1.0)
    return (unc.float() - err).abs().mean()


def ckd_loss(rgb: torch.Tensor, spike: torch.Tensor) -> torch.Tensor:
    """Coarse distillation: InfoNCE with logits r·sᵀ (temperature 1) between projected RGB and
    spike embeddings (B, D), positives on the diagonal, softmax over the spike axis, one
    direction (BiCross `ContrastiveLoss`)."""
    logits = rgb.float() @ spike.float().t()
    return -F.log_softmax(logits, dim=1).diagonal().mean()


def fkd_mask(unc_rgb: torch.Tensor, unc_spike: torch.Tensor,
             size: tuple[int, int]) -> torch.Tensor:
    """The spike-oriented uncertainty filter (paper Fig. 3c) at a feature map's `size`:
    (B, 1, h, w) bool, true where the RGB uncertainty is below its per-image mean (reliable
    RGB knowledge) and the spike uncertainty above its per-image mean (knowledge the spike
    model lacks). Uncertainties (B, 1, H, W) are area-averaged to `size` first; the mean as
    the threshold ε^var is our choice (the paper does not define it)."""
    r = F.adaptive_avg_pool2d(unc_rgb.float(), size)
    s = F.adaptive_avg_pool2d(unc_spike.float(), size)
    return (r < r.mean((2, 3), keepdim=True)) & (s > s.mean((2, 3), keepdim=True))


def fkd_loss(rgb: torch.Tensor, spike: torch.Tensor,
             mask: torch.Tensor | None = None) -> torch.Tensor:
    """Fine distillation: MSE between decoder maps (B, C, h, w), over all elements or over the
    `mask` (B, 1, h, w) pixels (all channels); an empty mask gives 0."""
    sq = (spike.float() - rgb.detach().float()) ** 2
    if mask is None:
        return sq.mean()
    m = mask.to(sq.dtype)
    return (sq * m).sum() / (m.sum() * sq.shape[1]).clamp_min(1.0)


def pseudo_mask(depth: torch.Tensor, unc: torch.Tensor, protocol: DepthProtocol,
                quantile: float | None) -> torch.Tensor:
    """Pixels of the teacher's prediction (B, 1, H, W) used as pseudo-labels: valid depth
    (min < d̂ < max, Garg crop if the protocol has it) and, with `quantile` q (SCP), an
    uncertainty at most the k-th smallest of the batch's valid ones, k = ⌊n·q⌋ counted from
    0 (BiCross: q = 0.5 and `u < u_k + 1e-8`, which in float32 drops ties above ~0.2)."""
    mask = valid_mask(depth[:, 0], protocol)[:, None]
    if quantile is None or not bool(mask.any()):
        return mask
    values = unc[mask]
    k = min(int(values.numel() * quantile), values.numel() - 1)
    threshold = torch.kthvalue(values.float(), k + 1).values
    return mask & (unc <= threshold)


def alignment_loss(target: torch.Tensor, source: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """SCA: global alignment of pooled deepest features (B, C) of the target batch to the
    (detached) source batch by their first two moments, in units of the source spread (so the
    weight does not depend on a backbone's feature scale): per channel ((μ_t − μ_s) / σ_s)²
    + (ln σ_t − ln σ_s)², averaged over channels; σ over the batch (unbiased) + `eps`. The
    form is our choice: the paper names the alignment, not its loss."""
    t, s = target.float(), source.detach().float()
    sd_t, sd_s = t.std(0) + eps, s.std(0) + eps
    return (((t.mean(0) - s.mean(0)) / sd_s) ** 2 + (sd_t.log() - sd_s.log()) ** 2).mean()


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, beta: float) -> torch.Tensor:
        ctx.beta = beta
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.beta * grad, None


def grad_reverse(x: torch.Tensor, beta: float) -> torch.Tensor:
    """Identity forward, gradient × (−beta) backward (DANN's reversal layer)."""
    return _GradReverse.apply(x, beta)


def domain_loss(head: nn.Module, source: torch.Tensor, target: torch.Tensor,
                beta: float) -> torch.Tensor:
    """Adversarial alignment: NLL of a domain classifier on reversed deepest maps (B, C, h, w),
    source = 0 and target = 1. One classifier sees both domains (the public code trains one
    head per domain, each on its own constant label). Both domains share one forward, so the
    head's batch norm sees mixed statistics."""
    logits = head(grad_reverse(torch.cat([source, target]), beta)).float()
    n = len(source)
    zeros = torch.zeros(n, dtype=torch.long, device=logits.device)
    ones = torch.ones(len(logits) - n, dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits[:n], zeros) + F.cross_entropy(logits[n:], ones)


# --- networks and their inputs --------------------------------------------------------------
def model_kwargs(cfg: BicrossConfig, in_chans: int) -> dict:
    """`create_model` options of the depth network for `in_chans` (3: RGB, T: spikes)."""
    kwargs = {"in_chans": in_chans, "uncertainty": True, "depth_mode": "inverse_affine",
              "scale": cfg.depth_scale, "shift": cfg.depth_shift}
    if cfg.model.startswith("dpt_hybrid") and in_chans != 3:
        kwargs["stem_eps"] = cfg.spike_stem_eps
    return kwargs


def build_depth_model(cfg: BicrossConfig, in_chans: int, seed: int) -> DPTDepth:
    """The DPT depth network with uncertainty head and inverse-affine depth output; with
    `init_depth` > 0 the head's last bias is shifted so an untrained network predicts about
    `init_depth` metres (a from-scratch head otherwise starts at 1 / shift)."""
    model = create_model(cfg.model, **model_kwargs(cfg, in_chans), seed=seed)
    if cfg.init_depth > 0:
        last = [m for m in model.head if isinstance(m, nn.Conv2d)][-1]
        with torch.no_grad():
            last.bias += (1.0 / cfg.init_depth - cfg.depth_shift) / cfg.depth_scale
    return model


def projection_head(in_dim: int, hidden: int, out: int) -> nn.Sequential:
    """Pool → Linear → BatchNorm1d → ReLU → Linear on a (B, C, h, w) map (BiCross's heads)."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(in_dim, hidden),
                         nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, out))


def network_size(height: int, width: int, cfg: BicrossConfig) -> tuple[int, int]:
    """The network input size: `cfg.input_size`, or the sides rounded up to multiples of 32."""
    if tuple(cfg.input_size) != (0, 0):
        return tuple(cfg.input_size)
    return (math.ceil(height / 32) * 32, math.ceil(width / 32) * 32)


def run_model(model: nn.Module, x: torch.Tensor, size: tuple[int, int],
              mode: str) -> DPTOutputs:
    """`forward_all` on x (B, C, H, W) resized to `size` (`mode`: BiCross resizes RGB
    bilinearly and spikes by nearest neighbour); outputs stay at the network size."""
    if tuple(x.shape[-2:]) != tuple(size):
        kw = {"align_corners": False} if mode == "bilinear" else {}
        x = F.interpolate(x, size=size, mode=mode, **kw)
    return model.forward_all(x)


def resize_map(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, 1, h, w) → (B, 1, H, W) bicubic (BiCross resizes predictions before the loss)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False)


def rgb_input(rgb: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] normalised with mean = std = 0.5 (BiCross's transforms)."""
    return (rgb - 0.5) / 0.5


def valid_mask(depth: torch.Tensor, protocol: DepthProtocol) -> torch.Tensor:
    """(B, H, W) bool: min_depth < d < max_depth, inside the Garg crop when the protocol says."""
    mask = (depth > protocol.min_depth) & (depth < protocol.max_depth)
    if protocol.garg_crop:
        mask = mask & garg_crop_mask(*depth.shape[-2:], device=depth.device)
    return mask


def supervised_loss(out: DPTOutputs, depth: torch.Tensor, protocol: DepthProtocol,
                    cfg: BicrossConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(L_sup, SigLoss, uncertainty loss) of network outputs against depth (B, H, W) metres:
    predictions resized to the depth's size and floored at min_depth, valid pixels only."""
    size = depth.shape[-2:]
    pred = resize_map(out.depth, size)[:, 0].clamp_min(protocol.min_depth)
    unc = resize_map(out.uncertainty, size)[:, 0]
    mask = valid_mask(depth, protocol)
    sig = sig_loss(pred[mask], depth[mask], cfg.sig_eps, cfg.sig_lambda)
    l_u = uncertainty_loss(unc[mask], pred[mask], depth[mask])
    return sig + l_u, sig, l_u


def _param_groups(model: DPTDepth, heads: list[nn.Module], scale: float,
                  in_both: bool) -> list[dict]:
    """Adam groups of a stage: the network's backbone at (scale + 1) × lr when `in_both` (the
    code steps it with both of its Adams, see `BicrossConfig.backbone_in_both`) or scale × lr,
    the heads (CKD projections, domain classifier: their own Adam at lr_backbone in the code)
    at scale × lr, the rest of the network at lr."""
    backbone = [p for m in _backbone(model) for p in m.parameters() if p.requires_grad]
    seen = {id(p) for p in backbone}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in seen]
    groups = [{"params": backbone, "lr_scale": scale + 1.0 if in_both else scale},
              {"params": rest}]
    head_params = [p for m in heads for p in m.parameters() if p.requires_grad]
    return groups + ([{"params": head_params, "lr_scale": scale}] if head_params else [])


def _backbone(model: DPTDepth) -> list[nn.Module]:
    """The encoder and (hybrid) its reassemble layers: BiCross's `pretrained` group."""
    return [model.encoder, *([model.readouts, model.post3, model.post4] if model.hybrid else [])]


def init_from_rgb(student: DPTDepth, rgb: DPTDepth, stem: str) -> list[str]:
    """Copy the RGB model into the spike student; the input conv (T channels) is fresh
    (`stem="new"`) or the RGB filters tiled over T (`"adapted"`). Returns the stem keys."""
    if stem == "adapted":
        return load_adapted(student, rgb.state_dict())
    own = student.state_dict()
    state = {k: v for k, v in rgb.state_dict().items() if own[k].shape == v.shape}
    fresh = sorted(own.keys() - state.keys())
    student.load_state_dict({**own, **state})
    return fresh


# --- stage 0: RGB pre-training --------------------------------------------------------------
def _rgb_key(cfg: BicrossConfig) -> tuple:
    """Every setting stage 0 depends on (the later stages start from its result)."""
    return (cfg.model, cfg.depth_scale, cfg.depth_shift, cfg.init_depth, cfg.input_size,
            cfg.hflip, cfg.sig_eps, cfg.sig_lambda, cfg.rgb, cfg.rgb_backbone_lr_scale,
            cfg.backbone_in_both, cfg.rgb_init)


def train_rgb(data: DepthTransferData, cfg: BicrossConfig, root: Path, seed: int, device,
              progress: bool) -> tuple[DPTDepth, float]:
    """The RGB depth model supervised on the source (L_sup); (model, minutes)."""
    h, w = data.source[0]["depth"].shape
    size = network_size(h, w, cfg)
    model = build_depth_model(cfg, 3, seed)
    if cfg.rgb_init:
        load_dpt_init(model, cfg.rgb_init, "bicross.rgb_init")
    model = model.to(device)

    def step(batch: dict, state: TrainState) -> dict:
        batch = {"x": rgb_input(batch["rgb"]), "depth": batch["depth"]}
        if cfg.hflip:
            batch = hflip(batch, state.generators["aug"])
        out = run_model(state.modules["model"], batch["x"], size, "bilinear")
        loss, sig, unc = supervised_loss(out, batch["depth"], data.protocol, cfg)
        return {"loss": loss, "sig": sig.detach(), "unc": unc.detach()}

    run = stage_dir(root, "bicross_rgb", _rgb_key(cfg), data.key, seed)
    groups = _param_groups(model, [], cfg.rgb_backbone_lr_scale, cfg.backbone_in_both)
    minutes = fit({"model": model}, data.source, step, cfg.rgb, run_dir=run, seed=seed,
                  device=device, progress=progress, param_groups=groups)
    return model, minutes


# --- stage 1: cross-modality, CFKD ----------------------------------------------------------
def cfkd_losses(student: DPTDepth, rgb_out: DPTOutputs, heads: nn.ModuleDict, x: torch.Tensor,
                depth: torch.Tensor, size: tuple[int, int], protocol: DepthProtocol,
                cfg: BicrossConfig) -> dict[str, torch.Tensor]:
    """L = L_sup(spikes) + kd_weight·(L_CKD + L_FKD) of one batch: spikes x (B, T, H, W) ±1,
    the frozen RGB model's outputs on the same frames, depth (B, H, W) metres."""
    out = run_model(student, x, size, "nearest")
    l_sup, sig, unc = supervised_loss(out, depth, protocol, cfg)
    l_ckd = ckd_loss(heads["rgb"](rgb_out.layers[3]), heads["spike"](out.layers[3]))
    mask = None
    if cfg.fkd_filter:
        mask = fkd_mask(rgb_out.uncertainty, out.uncertainty.detach(), out.paths[3].shape[-2:])
    l_fkd = fkd_loss(rgb_out.paths[3], out.paths[3], mask)
    loss = l_sup + cfg.kd_weight * (l_ckd + l_fkd)
    return {"loss": loss, "sig": sig.detach(), "unc": unc.detach(), "ckd": l_ckd.detach(),
            "fkd": l_fkd.detach()}


def train_cfkd(rgb: DPTDepth, data: DepthTransferData, cfg: BicrossConfig, root: Path,
               seed: int, device, progress: bool) -> tuple[DPTDepth, float]:
    """The spike student (from the RGB model, new stem) trained by CFKD; (model, minutes)."""
    h, w = data.source[0]["depth"].shape
    size = network_size(h, w, cfg)
    student = build_depth_model(cfg, data.frames, seed).to(device)
    init_from_rgb(student, rgb, cfg.stem)
    dim = student.feature_channels[3]
    heads = nn.ModuleDict({k: projection_head(dim, cfg.ckd_hidden, cfg.ckd_dim)
                           for k in ("rgb", "spike")}).to(device)
    rgb.eval().requires_grad_(False)

    def step(batch: dict, state: TrainState) -> dict:
        batch = {"x": unpack_spikes(batch["spikes"], data.width), "rgb": batch["rgb"],
                 "depth": batch["depth"]}
        if cfg.hflip:
            batch = hflip(batch, state.generators["aug"])
        with torch.no_grad():
            rgb_out = run_model(rgb, rgb_input(batch["rgb"]), size, "bilinear")
        return cfkd_losses(state.modules["student"], rgb_out, state.modules["heads"],
                           batch["x"], batch["depth"], size, data.protocol, cfg)

    run = stage_dir(root, "bicross_cfkd", _rgb_key(cfg), cfg.cfkd, cfg.stem,
                    cfg.backbone_lr_scale, cfg.backbone_in_both, cfg.kd_weight, cfg.ckd_hidden,
                    cfg.ckd_dim, cfg.fkd_filter, cfg.spike_stem_eps, data.key, seed)
    groups = _param_groups(student, [heads], cfg.backbone_lr_scale, cfg.backbone_in_both)
    minutes = fit({"student": student, "heads": heads}, data.source, step, cfg.cfkd,
                  run_dir=run, seed=seed, device=device, progress=progress, param_groups=groups)
    return student, minutes


# --- stage 2: cross-domain, SCTS ------------------------------------------------------------
class DomainPairs(Dataset):
    """Item i: target clip i mod K (`x_t`) with source clip perm[i] mod N and its depth
    (`x_s`, `depth_s`); length max(K, N), the permutation seeded."""

    def __init__(self, target: Dataset, source: Dataset, seed: int):
        self.target, self.source = target, source
        n = max(len(target), len(source))
        self.perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return len(self.perm)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        t = self.target[i % len(self.target)]
        s = self.source[int(self.perm[i]) % len(self.source)]
        return {"x_t": t["spikes"], "x_s": s["spikes"], "depth_s": s["depth"]}


def scts_losses(student: DPTDepth, teacher: DPTDepth, x_t: torch.Tensor, x_s: torch.Tensor,
                size: tuple[int, int], protocol: DepthProtocol,
                cfg: BicrossConfig) -> dict[str, torch.Tensor]:
    """L = L_SCP + sca_weight·L_SCA of one batch of target (x_t) and source (x_s) spikes: the
    teacher's filtered depth supervises the student (SigLoss on the pseudo-label pixels, at the
    network size); the student's pooled deepest target features follow the teacher's source
    ones."""
    with torch.no_grad():
        pseudo = run_model(teacher, x_t, size, "nearest")
    out = run_model(student, x_t, size, "nearest")
    mask = pseudo_mask(pseudo.depth, pseudo.uncertainty, protocol,
                       cfg.pseudo_quantile if cfg.scp else None)
    pred = out.depth.clamp_min(protocol.min_depth)
    l_scp = sig_loss(pred[mask], pseudo.depth[mask], cfg.sig_eps, cfg.sig_lambda)
    losses = {"scp": l_scp.detach(), "kept": mask.float().mean()}
    loss = l_scp
    if cfg.sca:
        with torch.no_grad():
            anchor = run_model(teacher, x_s, size, "nearest").layers[3].mean((2, 3))
        l_sca = alignment_loss(out.layers[3].mean((2, 3)), anchor)
        loss = loss + cfg.sca_weight * l_sca
        losses["sca"] = l_sca.detach()
    return {"loss": loss, **losses}


def train_scts(student: DPTDepth, data: DepthTransferData, cfg: BicrossConfig, run: Path,
               seed: int, device, progress: bool) -> tuple[DPTDepth, float]:
    """Stage 2 from the stage-1 student: mean teacher (or adversarial) on unlabeled target
    spikes after `warmup_steps` source batches at warmup_weight·L_sup; (student, minutes)."""
    h, w = data.source[0]["depth"].shape
    size = network_size(h, w, cfg)
    model = build_depth_model(cfg, data.frames, seed).to(device)
    model.load_state_dict(student.state_dict())
    ema = EmaTeacher(model, cfg.ema_momentum)
    modules: dict[str, nn.Module] = {"student": model, "teacher": ema.module}
    if cfg.adaptation == "adversarial":
        modules["domain"] = projection_head(model.feature_channels[3], 256, 2).to(device)

    def step(batch: dict, state: TrainState) -> dict:
        x_t = unpack_spikes(batch["x_t"], data.width)
        x_s = unpack_spikes(batch["x_s"], data.width)
        net = state.modules["student"]
        if state.step < cfg.warmup_steps:
            out = run_model(net, x_s, size, "nearest")
            loss = cfg.warmup_weight * supervised_loss(out, batch["depth_s"], data.protocol,
                                                       cfg)[0]
            return {"loss": loss}
        if cfg.adaptation == "adversarial":
            return _adversarial_losses(net, state.modules["domain"], x_t, x_s,
                                       batch["depth_s"], size, data.protocol, cfg)
        ema.module.eval()
        losses = scts_losses(net, ema.module, x_t, x_s, size, data.protocol, cfg)
        state.optimize(losses["loss"])
        ema.update(net)
        return losses

    pairs = DomainPairs(data.target, data.source, seed)
    groups = _param_groups(model, [modules["domain"]] if "domain" in modules else [],
                           cfg.backbone_lr_scale, cfg.backbone_in_both)
    minutes = fit(modules, pairs, step, cfg.scts, run_dir=run, seed=seed, device=device,
                  progress=progress, param_groups=groups)
    return model, minutes


def _adversarial_losses(net: DPTDepth, head: nn.Module, x_t: torch.Tensor, x_s: torch.Tensor,
                        depth_s: torch.Tensor, size: tuple[int, int], protocol: DepthProtocol,
                        cfg: BicrossConfig) -> dict[str, torch.Tensor]:
    """The public code's `adversarial` path: L_sup on source + adv_weight · domain NLL."""
    out_s = run_model(net, x_s, size, "nearest")
    out_t = run_model(net, x_t, size, "nearest")
    l_sup = supervised_loss(out_s, depth_s, protocol, cfg)[0]
    l_adv = domain_loss(head, out_s.layers[3], out_t.layers[3], cfg.adv_beta)
    return {"loss": l_sup + cfg.adv_weight * l_adv, "sup": l_sup.detach(),
            "adv": l_adv.detach()}


# --- the upper bound: supervised on target spikes -------------------------------------------
def train_on_target(rgb: DPTDepth, labeled: Dataset, data: DepthTransferData,
                    cfg: BicrossConfig, run: Path, seed: int, device,
                    progress: bool) -> tuple[DPTDepth, float]:
    """A spike model initialised like the student (the RGB model, new stem) and trained with
    L_sup on target spikes and their depth (the oracle no transfer method has); (model,
    minutes)."""
    h, w = labeled[0]["depth"].shape
    size = network_size(h, w, cfg)
    model = build_depth_model(cfg, data.frames, seed).to(device)
    init_from_rgb(model, rgb, cfg.stem)

    def step(batch: dict, state: TrainState) -> dict:
        batch = {"x": unpack_spikes(batch["spikes"], data.width), "depth": batch["depth"]}
        if cfg.hflip:
            batch = hflip(batch, state.generators["aug"])
        out = run_model(state.modules["model"], batch["x"], size, "nearest")
        loss, sig, unc = supervised_loss(out, batch["depth"], data.protocol, cfg)
        return {"loss": loss, "sig": sig.detach(), "unc": unc.detach()}

    groups = _param_groups(model, [], cfg.backbone_lr_scale, cfg.backbone_in_both)
    minutes = fit({"model": model}, labeled, step, cfg.supervised, run_dir=run, seed=seed,
                  device=device, progress=progress, param_groups=groups)
    return model, minutes


# --- entry points ---------------------------------------------------------------------------
def predict_spike_depth(model: DPTDepth, spikes: torch.Tensor, width: int, cfg: BicrossConfig, *,
                  device: str | torch.device = "cpu", batch: int = 16) -> torch.Tensor:
    """Depth (N, H, W) metres of packed spike clips (N, T, H, ⌈W/8⌉) uint8, at their size."""
    model.eval()

    def depth(packed: torch.Tensor) -> torch.Tensor:
        x = unpack_spikes(packed, width)
        out = run_model(model, x, network_size(*x.shape[-2:], cfg), "nearest")
        return resize_map(out.depth, x.shape[-2:])[:, 0]

    return predict(depth, spikes, batch=batch, device=device)


def _result(model: DPTDepth, data: DepthTransferData, cfg: BicrossConfig, device,
            minutes: dict[str, float]) -> MethodResult:
    """The student as a `MethodResult`, with the spec that rebuilds it for a model package."""
    model.eval()
    height = data.test[0]["spikes"].shape[-2]
    spec = {"model": cfg.model, "kwargs": model_kwargs(cfg, data.frames), "task": "depth",
            "output": "depth",
            "input": {"size": network_size(height, data.width, cfg), "resize": "nearest"}}
    return MethodResult(lambda x: predict_spike_depth(model, x, data.width, cfg, device=device),
                        model, minutes, spec)


def _stages01(data, cfg, root, seed, device, progress):
    rgb, t_rgb = train_rgb(data, cfg, root, seed, device, progress)
    student, t_cfkd = train_cfkd(rgb, data, cfg, root, seed, device, progress)
    return student, {"rgb": t_rgb, "cfkd": t_cfkd}


def pre_src(data: DepthTransferData, cfg: BicrossConfig, root: str | Path, *, seed: int = 0,
            device: str | torch.device = "cpu", progress: bool = True) -> MethodResult:
    """Pre_src: the stage-1 spike student applied to the target without stage 2."""
    root, device = Path(root), torch.device(device)
    student, minutes = _stages01(data, cfg, root, seed, device, progress)
    return _result(student, data, cfg, device, minutes)


def train_bicross(data: DepthTransferData, cfg: BicrossConfig, root: str | Path, *,
                  seed: int = 0, device: str | torch.device = "cpu",
                  progress: bool = True) -> MethodResult:
    """Run stages 0, 1 and 2 in `root` (finished stages are reused, a killed run resumes).
    The result predicts depth (N, H, W) metres from packed target clips with the student."""
    root, device = Path(root), torch.device(device)
    student, minutes = _stages01(data, cfg, root, seed, device, progress)
    run = stage_dir(root, "bicross_scts", cfg, data.key, seed)
    model, minutes["scts"] = train_scts(student, data, cfg, run, seed, device, progress)
    return _result(model, data, cfg, device, minutes)


def spike_supervised(data: DepthTransferData, cfg: BicrossConfig, root: str | Path, *,
                     seed: int = 0, device: str | torch.device = "cpu", progress: bool = True,
                     labeled: Dataset | None = None) -> MethodResult:
    """The upper bound: a spike model from the RGB model (new stem, like the student) trained
    on target train spikes with depth (`labeled`: `data.depth_transfer.target_train_depth` or
    `real_target_depth`)."""
    if labeled is None:
        raise ValueError("spike_supervised needs the labeled target train clips (`labeled`)")
    root, device = Path(root), torch.device(device)
    rgb, t_rgb = train_rgb(data, cfg, root, seed, device, progress)
    run = stage_dir(root, "bicross_supervised", _rgb_key(cfg), cfg.supervised, cfg.stem,
                    cfg.backbone_lr_scale, cfg.backbone_in_both, cfg.spike_stem_eps, data.key,
                    seed)
    model, t_sup = train_on_target(rgb, labeled, data, cfg, run, seed, device, progress)
    return _result(model, data, cfg, device, {"rgb": t_rgb, "supervised": t_sup})


ABLATIONS = {
    "bicross_no_filter": {"fkd_filter": False},  # CFKD with the public code's unfiltered FKD
    "bicross_no_scp": {"scp": False},  # mean teacher on every valid teacher pixel
    "bicross_no_sca": {"sca": False},  # the public code's mean teacher
}


def ablation(name: str) -> Callable[..., MethodResult]:
    """`train_bicross` with the switches of `ABLATIONS[name]` turned off."""
    changes = ABLATIONS[name]

    def train(data: DepthTransferData, cfg: BicrossConfig, root: str | Path, **kw):
        return train_bicross(data, replace(cfg, **changes), root, **kw)

    train.__name__ = name
    return train


ENTRIES: dict[str, Callable[..., MethodResult]] = {
    "pre_src": pre_src,
    "bicross": train_bicross,
    **{name: ablation(name) for name in ABLATIONS},
    "spike_supervised": spike_supervised,
}
