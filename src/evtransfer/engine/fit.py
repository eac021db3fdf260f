"""Supervised training runs and their caching: `fit` trains modules over a dataset on top of
`train` (so it checkpoints and resumes), and a stage's run folder is keyed by its config
(`stage_dir`), its data (`fingerprint`) and its initialisation (`init_key`), so a finished
stage is reused instead of retrained. Processes that share a stage folder (two suites on one
`--source-dir`) train it once: the first holds the folder's lock, the others wait for it and
reuse the result. Nothing here knows a paper.
"""

from __future__ import annotations

import hashlib
import json
import math
import resource
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from evtransfer.engine.distributed import get_dist_info, is_main
from evtransfer.engine.loader import make_loader
from evtransfer.engine.loop import LoopConfig, TrainState, train
from evtransfer.engine.schedules import cosine_schedule
from evtransfer.engine.seed import derive_seed, seed_everything

try:
    import fcntl
except ImportError:  # no advisory locks (Windows): runs in parallel must not share stage folders
    fcntl = None

_NOT_IDENTITY = ("log_every", "ckpt_every", "source_cache", "defaults_chosen_on")


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
    Returns the training minutes, killed attempts included. Another process training the
    same `run_dir` is waited for, then its run is reused."""
    run_dir = Path(run_dir)
    if cfg.steps < 1:
        raise ValueError(f"{run_dir}: a training run needs steps >= 1, got {cfg.steps}")
    done = run_dir / "done.json"
    if not done.exists():
        with stage_lock(run_dir):
            if not done.exists():
                return _train_run(modules, dataset, step, cfg, run_dir, seed, device, progress,
                                  param_groups, optimizer)
    from evtransfer.engine.checkpoint import load_module_weights

    for name, module in modules.items():
        load_module_weights(run_dir / "checkpoints" / "last", name, module)
    return float(json.loads(done.read_text())["minutes"])


@contextmanager
def stage_lock(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir/.lock` exclusively (blocking until another process releases it; the OS
    releases it when its holder dies, so a killed run leaves no stale lock). A no-op in a
    distributed run, whose ranks train the folder together, and without `fcntl`."""
    if fcntl is None or get_dist_info().distributed:
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _train_run(modules: dict[str, nn.Module], dataset: Dataset, step: Step, cfg: FitConfig,
               run_dir: Path, seed: int, device, progress: bool, param_groups: list[dict] | None,
               optimizer: Callable[[list[dict]], torch.optim.Optimizer] | None) -> float:
    """`fit`'s training, new or resumed, in a folder without `done.json`."""
    done = run_dir / "done.json"
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
