"""Dense-prediction building blocks shared by the methods: losses, a supervised `fit` over
in-memory tensors (on top of `train`, so it checkpoints and resumes), batched prediction and
segmentation evaluation. Nothing here knows a paper; the methods compose these pieces.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from evtransfer.data._common import TensorDict
from evtransfer.engine.distributed import is_main
from evtransfer.engine.loader import make_loader
from evtransfer.engine.loop import LoopConfig, TrainState, train
from evtransfer.engine.schedules import cosine_schedule
from evtransfer.engine.seed import derive_seed, seed_everything
from evtransfer.metrics import ConfusionMatrix, segmentation_scores

IGNORE = 255
# how a run is logged, where shared stages are stored and which worlds chose a method's
# defaults do not change its result
_NOT_IDENTITY = ("log_every", "ckpt_every", "source_cache", "defaults_chosen_on")


def dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE,
              smooth: float = 1.0) -> torch.Tensor:
    """Multi-class soft Dice (ESS form): per class 1 - (2Σpg + s)/(Σp² + Σg² + s) summed over
    the batch, ignored pixels masked out of p and g, averaged over classes. logits (B, C, H, W),
    target (B, H, W) integer."""
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
    Dice. logits (B, C, h, w) at any stride, target (B, H, W) integer (uint8 or int64)."""
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
    """Hinton distillation: T² · KL(softmax(teacher/T) ‖ softmax(student/T)) per pixel, averaged
    over pixels (or over `mask` (B, H, W) bool). Logits (B, C, H, W); the teacher is detached."""
    t = temperature
    log_p = F.log_softmax(student.float() / t, 1)
    q = F.softmax(teacher.detach().float() / t, 1)
    kl = (q * (torch.log(q.clamp_min(1e-12)) - log_p)).sum(1) * t * t
    if mask is None:
        return kl.mean()
    return (kl * mask).sum() / mask.sum().clamp_min(1)


def hflip(batch: Mapping[str, torch.Tensor], generator: torch.Generator) -> dict:
    """Flip a random half of the batch horizontally: every (B, ..., W) tensor of the batch
    with the same per-sample choice (inputs, labels and depths stay aligned)."""
    out = dict(batch)
    first = next(v for v in batch.values() if isinstance(v, torch.Tensor))
    flip = torch.rand(first.shape[0], generator=generator) < 0.5
    for k, v in batch.items():
        if isinstance(v, torch.Tensor) and v.ndim >= 3:
            f = flip.to(v.device).view(-1, *([1] * (v.ndim - 1)))
            out[k] = torch.where(f, v.flip(-1), v)
    return out


@dataclass
class FitConfig:
    """A supervised run: AdamW, linear warm-up then cosine decay per iteration."""

    steps: int = 400  # unpublished: our choice (a CPU-sized budget; configs raise it)
    batch: int = 8  # paper (CMESS cost study: batch 8)
    lr: float = 1e-3  # unpublished: our choice (from scratch, short schedule)
    min_lr: float = 1e-5
    weight_decay: float = 0.01  # code: NVlabs/SegFormer local_configs (AdamW wd 0.01)
    warmup_steps: int = 20
    clip_grad: float = 1.0
    amp: str = "off"
    log_every: int = 25
    ckpt_every: int = 100

    def __post_init__(self):
        counts = {"steps": (self.steps, 0), "batch": (self.batch, 1),
                  "warmup_steps": (self.warmup_steps, 0), "log_every": (self.log_every, 1),
                  "ckpt_every": (self.ckpt_every, 0)}
        for name, (value, least) in counts.items():
            if value < least:
                raise ValueError(f"{name} must be >= {least}, got {value}")


Step = Callable[[dict, TrainState], Mapping[str, torch.Tensor]]


def fit(modules: dict[str, nn.Module], dataset: Dataset, step: Step, cfg: FitConfig, *,
        run_dir: str | Path, seed: int, device: torch.device, progress: bool = True,
        param_groups: list[dict] | None = None,
        optimizer: Callable[[list[dict]], torch.optim.Optimizer] | None = None) -> float:
    """Train `modules` with `step(batch, state) -> {"loss": ..., ...}` over `dataset` for
    `cfg.steps` iterations; checkpoints in `run_dir` and resumes a killed run. A finished run
    (`run_dir/done.json`) is skipped. `optimizer(param_groups)` builds the optimizer (default
    AdamW with `cfg.lr` and `cfg.weight_decay`); the schedule sets each group's rate to the
    scheduled `lr` times the group's `lr_scale`. The global RNGs (dropout, drop-path) are
    seeded from `seed`, so a run does not depend on what ran before it in the process.
    Returns the training minutes, killed attempts included."""
    run_dir = Path(run_dir)
    if cfg.steps < 1:
        raise ValueError(f"{run_dir}: a training run needs steps >= 1, got {cfg.steps}")
    done = run_dir / "done.json"
    if done.exists():
        from evtransfer.engine.checkpoint import load_module_weights

        for name, module in modules.items():
            load_module_weights(run_dir / "checkpoints" / "last", name, module)
        return float(json.loads(done.read_text())["minutes"])
    seed_everything(derive_seed(seed, 1))
    params = param_groups or [{"params": [p for m in modules.values() for p in m.parameters()
                                          if p.requires_grad]}]
    opt = (optimizer(params) if optimizer is not None
           else torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay))
    state = TrainState(modules, {"main": opt}, device,
                       generators={"aug": torch.Generator().manual_seed(seed)})
    per_epoch = max(1, len(dataset) // cfg.batch)
    epochs = math.ceil(cfg.steps / per_epoch)
    schedules = {"lr": cosine_schedule(cfg.lr, cfg.min_lr, 1, cfg.steps,
                                       warmup_epochs=min(1.0, cfg.warmup_steps / cfg.steps))}
    loop = LoopConfig(epochs=epochs, max_steps=cfg.steps, amp=cfg.amp, clip_grad=cfg.clip_grad,
                      log_every=cfg.log_every, ckpt_every=cfg.ckpt_every, progress=progress,
                      tensorboard=False)

    def loader_fn(epoch: int, start: int):
        return make_loader(dataset, min(cfg.batch, len(dataset)), seed=seed, epoch=epoch,
                           start_batch=start)

    resume = (run_dir / "checkpoints" / "last").exists()
    before = _logged_minutes(run_dir) if resume else 0.0
    start = time.perf_counter()
    train(loop, state, step, loader_fn, run_dir=run_dir, schedules=schedules, resume=resume)
    minutes = before + (time.perf_counter() - start) / 60
    if is_main():
        done.write_text(json.dumps({"minutes": minutes, "steps": cfg.steps}))
    return minutes


def _logged_minutes(run_dir: Path) -> float:
    """Training time of earlier (killed) attempts of a run: the sum of each attempt's last
    `elapsed_s` in its metrics log (each attempt restarts the clock)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return 0.0
    elapsed = [json.loads(line).get("elapsed_s", 0.0) for line in path.read_text().splitlines()
               if line.strip()]
    ends = [a for a, b in zip(elapsed, elapsed[1:] + [0.0], strict=True) if b < a]
    return sum(ends) / 60


@torch.no_grad()
def predict(fn: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, *, batch: int = 16,
            device: torch.device | str = "cpu") -> torch.Tensor:
    """Concatenated `fn(inputs[i:i+batch])` outputs moved to the CPU (inputs (N, ...))."""
    outs = [fn(inputs[i:i + batch].to(device)).float().cpu() for i in range(0, len(inputs), batch)]
    return torch.cat(outs)


def segment(model: nn.Module, inputs: torch.Tensor, *, batch: int = 16,
            device: torch.device | str = "cpu") -> torch.Tensor:
    """Class probabilities (N, C, H, W) of a segmentation model at the inputs' size."""
    model.eval()

    def probs(x: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits.softmax(1)

    return predict(probs, inputs, batch=batch, device=device)


def evaluate_segmentation(pred: torch.Tensor, labels: torch.Tensor, num_classes: int,
                          mode: str = "ess") -> dict:
    """Scores of predicted classes (N, H, W) against labels (N, H, W) from one dataset-wide
    confusion matrix (`metrics.segmentation_scores`; mIoU and accuracy in %)."""
    conf = ConfusionMatrix(num_classes)
    conf.update(pred, labels)
    return segmentation_scores(conf.matrix, mode=mode)


def stage_dir(root: str | Path, name: str, *config) -> Path:
    """`root/name-<hash>`: a stage's run folder keyed by its config, so methods that share a
    stage with the same settings (and seed) reuse its outputs instead of retraining. Logging
    and checkpoint frequencies, at any depth of a nested config, are not part of the key."""
    def key(c):
        if isinstance(c, dict):
            return {k: key(v) for k, v in c.items() if k not in _NOT_IDENTITY}
        return key(asdict(c)) if is_dataclass(c) else c

    blob = json.dumps([key(c) for c in config], sort_keys=True, default=str)
    return Path(root) / f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def train_segmenter(model: nn.Module, x: torch.Tensor, label: torch.Tensor, cfg: FitConfig, *,
                    run_dir: str | Path, seed: int, device: torch.device,
                    progress: bool = True, dice_weight: float = 0.0) -> float:
    """Supervised segmentation on inputs x (N, C, H, W) and labels (N, H, W) with random
    horizontal flips; CE (+ Dice). Returns training minutes."""

    def step(batch: dict, state: TrainState) -> dict:
        batch = hflip(batch, state.generators["aug"])
        logits = state.modules["model"](batch["x"])
        return {"loss": segmentation_loss(logits, batch["y"], dice_weight=dice_weight)}

    return fit({"model": model}, TensorDict(x=x, y=label), step, cfg, run_dir=run_dir,
               seed=seed, device=device, progress=progress)


def gradient_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between horizontal and vertical finite differences of (B, 1, H, W) images."""
    def grads(img):
        return img[..., :, 1:] - img[..., :, :-1], img[..., 1:, :] - img[..., :-1, :]

    (px, py), (tx, ty) = grads(pred), grads(target)
    return (px - tx).abs().mean() + (py - ty).abs().mean()


def train_reconstructor(model: nn.Module, x: torch.Tensor, image: torch.Tensor, cfg: FitConfig, *,
                        run_dir: str | Path, seed: int, device: torch.device,
                        progress: bool = True) -> float:
    """Event → image reconstruction on windows x (N, C, H, W) and intensities (N, H, W) in
    [0, 1]: L1 + image-gradient L1 (E2VID's LPIPS needs downloaded VGG weights; this is the
    weight-free substitute) on the image `reconstruct` gives, so a recurrent model over
    several windows per sample learns through all of them (BPTT) from the last one's target."""

    def step(batch: dict, state: TrainState) -> dict:
        batch = hflip(batch, state.generators["aug"])
        pred = reconstruct(state.modules["model"], batch["x"])
        target = batch["y"].unsqueeze(1)
        l1 = (pred - target).abs().mean()
        grad = gradient_loss(pred, target)
        return {"loss": l1 + grad, "l1": l1.detach(), "grad": grad.detach()}

    return fit({"model": model}, TensorDict(x=x, y=image), step, cfg, run_dir=run_dir,
               seed=seed, device=device, progress=progress)


def reconstruct(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) image of a reconstruction network from x (B, C, H, W). A recurrent network
    whose `in_chans` b divides C runs over the C / b windows of x, oldest first, from a fresh
    state, and gives the last window's image (E2VID over consecutive windows); any other
    network maps x in one pass."""
    if not getattr(model, "recurrent", False):
        return model(x)
    last, state = model.history(x)
    return model(last, state)[0]
