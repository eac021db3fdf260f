"""The training loop: a plain `train` over plain `train_one_epoch`, knowing no paper.

A method supplies the modules and optimizers (a `TrainState`), a `step_fn(batch, state)` that
returns its losses, and a `loader_fn(epoch, start_batch)` that returns the epoch's batches
(usually `make_loader`). The engine does the rest: device transfer of the batch, AMP
(bf16/fp16 autocast, a GradScaler for fp16), backward, gradient clipping, per-iteration
schedules for learning rate, weight decay and EMA momentum, EMA-teacher updates, metrics,
checkpoints every `ckpt_every` steps and at every epoch end, and exact resume. A loss term
or weight that becomes NaN or infinite stops the run with `NonFiniteError` (naming the step
and the term) at the next metrics record or checkpoint, before anything non-finite is saved
(`engine.guard`).

Example (how a method uses it)::

    cfg = load_config(MyConfig, "configs/my.yaml", overrides)       # holds `train: LoopConfig`
    info = init_distributed()                                     # no-op without torchrun
    seed_everything(derive_seed(cfg.seed, info.rank))
    device = select_device(cfg.device)
    student = wrap_ddp(build_student().to(device), device)
    opt = torch.optim.AdamW(param_groups(student), lr=cfg.lr)    # groups may set lr_scale
    state = TrainState({"student": student}, {"main": opt}, device,
                       ema={"student": EmaTeacher(student)})
    loader_fn = lambda epoch, start: make_loader(dataset, cfg.batch, seed=cfg.seed,
                                                 epoch=epoch, start_batch=start)
    ipe = len(loader_fn(0, 0))
    schedules = {"lr": cosine_schedule(cfg.lr, 1e-6, cfg.train.epochs, ipe, warmup_epochs=10),
                 "ema_momentum": cosine_schedule(0.992, 1.0, cfg.train.epochs, ipe)}

    def step_fn(batch, state):
        teacher = state.ema["student"].module
        with torch.no_grad():
            target = teacher(batch["view1"])
        loss = distill_loss(state.modules["student"](batch["view2"]), target)
        return {"loss": loss}          # or call state.optimize(loss, "main") yourself

    if is_main():
        save_resolved(cfg, run_dir)
    train(cfg.train, state, step_fn, loader_fn, run_dir=run_dir, schedules=schedules,
          resume=args.resume)

A step_fn that needs several optimisation steps per iteration (one loss per optimizer) calls
`state.optimize(loss, "name", ...)` for each and returns its losses only for logging.
Random augmentation inside DataLoader workers resumes exactly only if it is derived from
the sample index and epoch; randomness in `step_fn` (global torch RNG, `state.generators`)
always resumes exactly. Multi-node resume needs the run directory on a shared file system.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from evtransfer import __version__
from evtransfer.config import git_sha
from evtransfer.engine.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_state,
    resolve_checkpoint,
    save_checkpoint,
)
from evtransfer.engine.distributed import all_gather_objects, get_dist_info, is_main
from evtransfer.engine.ema import EmaTeacher
from evtransfer.engine.guard import FiniteWatch, NonFiniteError, nonfinite_parameter
from evtransfer.engine.logging import MetricLogger, progress
from evtransfer.engine.schedules import apply_schedules, check_schedules, schedule_values
from evtransfer.engine.seed import capture_rng_state, restore_rng_state

StepFn = Callable[[Any, "TrainState"], Mapping[str, torch.Tensor | float]]
LoaderFn = Callable[[int, int], Iterable[Any]]


@dataclass
class LoopConfig:
    """Settings of the loop itself (YAML section `train:` of a method config)."""

    epochs: int = 1  # library default; methods set their paper's value
    max_steps: int = 0  # stop after this many iterations (0: run all epochs)
    # autocast dtype; fp16 only on CUDA, where GradScaler's inf check reads the device each
    # step unless the optimizer is built with fused=True
    amp: Literal["off", "bf16", "fp16"] = "off"
    clip_grad: float = 0.0  # max global L2 gradient norm per optimizer step (0: off)
    log_every: int = 20  # steps per metrics record (the only host-device sync; NaN check)
    ckpt_every: int = 0  # steps between mid-epoch checkpoints (0: epoch ends only)
    progress: bool = True  # tqdm bar with ETA on a terminal
    tensorboard: bool = True  # also write TensorBoard scalars when it is installed
    best_metric: str = ""  # epoch_end metric that selects checkpoints/best ("": none)
    best_mode: Literal["min", "max"] = "min"

    def __post_init__(self) -> None:
        for name in ("epochs", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_steps", "ckpt_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if not (self.clip_grad >= 0 and math.isfinite(self.clip_grad)):
            raise ValueError(f"train.clip_grad must be finite and >= 0, got {self.clip_grad}")
        if self.amp not in ("off", "bf16", "fp16"):
            raise ValueError(f"train.amp must be off, bf16 or fp16, got {self.amp!r}")
        if self.best_mode not in ("min", "max"):
            raise ValueError(f"train.best_mode must be min or max, got {self.best_mode!r}")


@dataclass(eq=False)
class TrainState:
    """Everything a run trains and resumes: modules, optimizers, EMA teachers, counters.

    `modules` are the trained networks (set to train mode each epoch; keep frozen networks
    outside); `ema` maps a module name to its `EmaTeacher`; `generators` are named RNGs of
    the method and `extra` a dict of tensors/plain values it wants checkpointed. `step`
    counts iterations, `step_in_epoch` those of the current `epoch`. `sched` holds the
    current schedule values (floats) during a step. `grad_hook(state)`, when set, runs in
    `optimize` between backward and the optimizer step, on unscaled gradients (e.g. to
    cancel the last layer's gradients during the first epoch, as DINO does).
    """

    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    device: torch.device
    ema: dict[str, EmaTeacher] = field(default_factory=dict)
    generators: dict[str, torch.Generator] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    best: float | None = None
    sched: dict[str, float] = field(default_factory=dict)
    clip_grad: float = 0.0
    amp_dtype: torch.dtype | None = None
    grad_hook: Callable[[TrainState], None] | None = None
    scaler: torch.amp.GradScaler = field(
        default_factory=lambda: torch.amp.GradScaler("cuda", enabled=False)
    )
    _optimized: bool = field(default=False, init=False, repr=False)
    _watch: FiniteWatch | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.device = torch.device(self.device)
        for name in self.modules:
            if name.startswith("ema."):
                raise ValueError(f"module name {name!r}: the prefix 'ema.' is reserved")
        for name in self.ema:
            if name not in self.modules:
                raise ValueError(f"ema teacher {name!r} has no student in modules")

    def optimize(self, loss: torch.Tensor, *names: str) -> torch.Tensor | None:
        """Backward `loss` and step optimizers `names` (all when none are named).

        Zeroes those optimizers' gradients first, scales the loss for fp16, unscales, runs
        `grad_hook`, clips to `clip_grad` (global L2 norm over their parameters), steps and
        zeroes again. Returns the pre-clip gradient norm (a device tensor) or None without
        clipping.
        """
        unknown = [n for n in names if n not in self.optimizers]
        if unknown:
            raise ValueError(f"unknown optimizer(s) {unknown}; have {sorted(self.optimizers)}")
        opts = [self.optimizers[n] for n in names] if names else list(self.optimizers.values())
        if not opts:
            raise ValueError("optimize: the TrainState has no optimizer")
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        with _autocast(self.device, None):
            self.scaler.scale(loss).backward()
        if self.clip_grad > 0 or self.grad_hook is not None:
            for opt in opts:
                self.scaler.unscale_(opt)
        if self.grad_hook is not None:
            self.grad_hook(self)
        norm = None
        if self.clip_grad > 0:
            params = [p for o in opts for g in o.param_groups for p in g["params"]]
            norm = nn.utils.clip_grad_norm_(
                [p for p in params if p.grad is not None], self.clip_grad
            )
        for opt in opts:
            self.scaler.step(opt)
        self.scaler.update()
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        self._optimized = True
        return norm

    def weight_modules(self) -> dict[str, nn.Module]:
        """Modules whose weights a checkpoint holds: the trained ones and `ema.<name>` teachers."""
        return {**self.modules, **{f"ema.{n}": t.module for n, t in self.ema.items()}}


def train(
    cfg: LoopConfig,
    state: TrainState,
    step_fn: StepFn,
    loader_fn: LoaderFn,
    *,
    run_dir: str | Path | None = None,
    schedules: Mapping[str, np.ndarray] | None = None,
    epoch_end: Callable[[TrainState], Mapping[str, float]] | None = None,
    resume: bool | str | Path = False,
) -> TrainState:
    """Train `state` for `cfg.epochs` epochs (or `cfg.max_steps` iterations); return it.

    `schedules` maps names to per-iteration arrays (`cosine_schedule`): `lr` and
    `weight_decay` (optionally `lr/<optimizer>`) go to the param groups, `ema_momentum`
    (optionally `ema_momentum/<module>`) to the EMA teachers, and every value is visible to
    `step_fn` as `state.sched[name]`. `epoch_end(state)` runs after each epoch (validation;
    `state.epoch` then counts the finished epochs) and returns metrics to log. `resume=True`
    continues from `run_dir/checkpoints/last` and `resume=<path>` from that checkpoint; a
    fresh run refuses a `run_dir` that already has one. Only rank 0 writes files. Raises
    `NonFiniteError` when a loss term or weight becomes NaN or infinite (checkpoints keep the
    last finite state).
    """
    schedules = check_schedules(schedules or {})
    state._watch = FiniteWatch(state.device)
    state.clip_grad = cfg.clip_grad
    state.amp_dtype, state.scaler = _amp_setup(cfg.amp, state.device)
    ckpt_root = Path(run_dir) / "checkpoints" if run_dir is not None else None
    window = _start(state, ckpt_root, resume)
    logger = MetricLogger(
        run_dir, tensorboard=cfg.tensorboard, resume_step=state.step if resume else None
    )
    if window is not None:
        logger.load_state_dict(window, state.device)
    try:
        _run_epochs(cfg, state, step_fn, loader_fn, schedules, epoch_end, logger, ckpt_root)
    finally:
        logger.close()
    return state


def train_one_epoch(
    cfg: LoopConfig,
    state: TrainState,
    step_fn: StepFn,
    batches: Iterable[Any],
    schedules: Mapping[str, np.ndarray],
    logger: MetricLogger,
    ckpt_root: Path | None,
) -> bool:
    """Run the iterations of one epoch from `state.step_in_epoch` on.

    Returns True when `batches` was exhausted, False when `cfg.max_steps` stopped it.
    """
    if state._watch is None:
        state._watch = FiniteWatch(state.device)
    # an fp16 GradScaler skips overflowing steps by design: their inf gradient norm is no failure
    skip = ("grad_norm",) if state.scaler.is_enabled() else ()
    for module in state.modules.values():
        module.train()
    total = len(batches) + state.step_in_epoch if hasattr(batches, "__len__") else None
    bar = progress(
        batches,
        total=total,
        initial=state.step_in_epoch,
        desc=f"{ckpt_root.parent.name if ckpt_root else 'train'} epoch {state.epoch}",
        enabled=cfg.progress,
    )
    try:
        for batch in bar:
            if cfg.max_steps and state.step >= cfg.max_steps:
                return False
            values = _train_step(state, step_fn, batch, schedules)
            logger.update(values)
            state._watch.update(values, state.step, skip)
            if state.step % cfg.log_every == 0:
                _check_finite(state, ckpt_root)
                record = logger.flush(state.step, state.epoch, **state.sched)
                bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k in values})
            if cfg.ckpt_every and state.step % cfg.ckpt_every == 0:
                _save(ckpt_root, "last", state, logger)
    finally:
        bar.close()
    return True


def move_to_device(batch: Any, device: torch.device) -> Any:
    """`batch` with every tensor inside dicts, lists and tuples moved to `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(move_to_device(v, device) for v in batch))
    if isinstance(batch, list | tuple):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch


def _run_epochs(cfg, state, step_fn, loader_fn, schedules, epoch_end, logger, ckpt_root):
    saved_at = state.step
    while state.epoch < cfg.epochs and not (cfg.max_steps and state.step >= cfg.max_steps):
        batches = loader_fn(state.epoch, state.step_in_epoch)
        if not train_one_epoch(cfg, state, step_fn, batches, schedules, logger, ckpt_root):
            break
        if logger.pending():
            _check_finite(state, ckpt_root)
            logger.flush(state.step, state.epoch, **state.sched)
        finished = state.epoch
        state.epoch, state.step_in_epoch = state.epoch + 1, 0
        metrics = dict(epoch_end(state)) if epoch_end is not None else {}
        if metrics:
            logger.log_epoch(state.step, finished, metrics)
        improved = _update_best(cfg, state, metrics)
        _save(ckpt_root, "last", state, logger)
        if improved:
            _save(ckpt_root, "best", state, logger)
        saved_at = state.step
    if logger.pending():
        _check_finite(state, ckpt_root)
        logger.flush(state.step, state.epoch, **state.sched)
    if state.step != saved_at and not (cfg.ckpt_every and state.step % cfg.ckpt_every == 0):
        _save(ckpt_root, "last", state, logger)


def _train_step(state: TrainState, step_fn: StepFn, batch: Any, schedules) -> dict[str, Any]:
    """One iteration; returns the values to log (device tensors stay on the device)."""
    state.sched = schedule_values(schedules, state.step)
    apply_schedules(state.optimizers, state.sched)
    state._optimized = False
    batch = move_to_device(batch, state.device)
    with _autocast(state.device, state.amp_dtype):
        losses = step_fn(batch, state)
    if not isinstance(losses, Mapping):
        raise TypeError(f"step_fn must return a dict of losses, got {type(losses).__name__}")
    values = dict(losses)
    if not state._optimized:
        if not isinstance(values.get("loss"), torch.Tensor):
            raise ValueError("step_fn must return a 'loss' tensor or call state.optimize(...)")
        norm = state.optimize(values["loss"])
        if norm is not None:
            values["grad_norm"] = norm
    for name, teacher in state.ema.items():
        m = state.sched.get(f"ema_momentum/{name}", state.sched.get("ema_momentum"))
        teacher.update(state.modules[name], m)
    state.step += 1
    state.step_in_epoch += 1
    return values


def _check_finite(state: TrainState, ckpt_root: Path | None, weights: bool = False) -> None:
    """Raise `NonFiniteError` when a logged term (or, with `weights`, a parameter) is NaN or
    infinite. Called only where the loop synchronises anyway (metrics flush, checkpoint)."""
    failure = state._watch.first_failure() if state._watch is not None else None
    if failure is not None:
        step, terms = failure
        what = f"loss term{'s' if len(terms) > 1 else ''} {', '.join(terms)}"
    elif weights and (param := nonfinite_parameter(state.weight_modules())) is not None:
        step, terms = state.step, (f"weights:{param}",)
        what = f"parameter {param} (after a finite loss)"
    else:
        return
    where = f"{ckpt_root.parent}: " if ckpt_root is not None else ""
    kept = "no checkpoint was written"
    if ckpt_root is not None and _has_checkpoint(ckpt_root / "last"):
        saved = read_state(ckpt_root / "last")["step"]
        kept = f"checkpoints/last keeps step {saved}, the last finite state"
    raise NonFiniteError(
        f"{where}{what} not finite at step {step}: training stopped before saving that "
        f"state ({kept}); the run is not finished", step=step, terms=terms)


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        if torch.is_autocast_enabled(device.type):
            return torch.autocast(device.type, enabled=False)
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _amp_setup(mode: str, device: torch.device) -> tuple[torch.dtype | None, Any]:
    """Autocast dtype and GradScaler for `mode` on `device` (fp16 only on CUDA)."""
    dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[mode]
    supported = device.type == "cuda" or (device.type == "cpu" and mode == "bf16")
    if dtype is not None and not supported:
        warnings.warn(
            f"amp={mode} is not supported on {device.type}; training in float32", stacklevel=3
        )
        dtype = None
    scaler = torch.amp.GradScaler("cuda", enabled=dtype is torch.float16)
    return dtype, scaler


def _update_best(cfg: LoopConfig, state: TrainState, metrics: Mapping[str, float]) -> bool:
    if not cfg.best_metric:
        return False
    if cfg.best_metric not in metrics:
        raise ValueError(
            f"best_metric {cfg.best_metric!r} not among epoch metrics {sorted(metrics)}"
        )
    value = float(metrics[cfg.best_metric])
    if state.best is None:
        better = True
    else:
        better = value < state.best if cfg.best_mode == "min" else value > state.best
    if better:
        state.best = value
    return better


def _start(state: TrainState, ckpt_root: Path | None, resume: bool | str | Path):
    """Restore from a checkpoint when resuming (returns the logger window), else check."""
    if resume is False:
        if ckpt_root is not None and _has_checkpoint(ckpt_root / "last"):
            raise FileExistsError(
                f"{ckpt_root / 'last'} exists: resume the run or choose a new run directory"
            )
        return None
    if resume is True:
        if ckpt_root is None:
            raise ValueError("resume=True needs run_dir")
        path = ckpt_root / "last"
    else:
        path = Path(resume)
    return _restore(state, path)


def _has_checkpoint(path: Path) -> bool:
    try:
        resolve_checkpoint(path)
    except FileNotFoundError:
        return False
    return True


def _checkpoint_payload(state: TrainState, logger: MetricLogger) -> dict[str, Any]:
    """The resumable state (collective under DDP: every rank must build it)."""
    return {
        "step": state.step,
        "epoch": state.epoch,
        "step_in_epoch": state.step_in_epoch,
        "best": state.best,
        "optimizers": {n: o.state_dict() for n, o in state.optimizers.items()},
        "scaler": state.scaler.state_dict(),
        "rng": all_gather_objects(capture_rng_state(state.device)),
        "generators": {n: g.get_state() for n, g in state.generators.items()},
        "extra": state.extra,
        "logger": logger.state_dict(),
        "meta": {
            "version": __version__,
            "git_sha": git_sha(),
            "world_size": get_dist_info().world_size,
        },
    }


def _save(ckpt_root: Path | None, name: str, state: TrainState, logger: MetricLogger) -> None:
    if ckpt_root is None:
        return
    _check_finite(state, ckpt_root, weights=True)
    payload = _checkpoint_payload(state, logger)
    if is_main():
        save_checkpoint(ckpt_root / name, state.weight_modules(), payload)


_PAYLOAD_KEYS = frozenset(
    "step epoch step_in_epoch best optimizers scaler rng generators extra logger".split()
)


def _restore(state: TrainState, path: Path) -> dict[str, Any]:
    """Load a checkpoint into `state` (weights, optimizers, counters, RNG); return the window."""
    payload = load_checkpoint(path, state.weight_modules())
    where = resolve_checkpoint(path)
    missing = sorted(_PAYLOAD_KEYS - set(payload))
    if missing:
        raise CheckpointError(where, f"not a training checkpoint (missing {missing})")
    saved = payload["optimizers"]
    if set(saved) != set(state.optimizers):
        raise CheckpointError(where, f"optimizers {sorted(saved)} != {sorted(state.optimizers)}")
    for name, opt in state.optimizers.items():
        try:
            opt.load_state_dict(saved[name])
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(where, f"optimizer {name!r}: {exc}") from None
    if payload["scaler"] and state.scaler.is_enabled():
        state.scaler.load_state_dict(payload["scaler"])
    if set(payload["generators"]) != set(state.generators):
        raise CheckpointError(
            where, f"generators {sorted(payload['generators'])} != {sorted(state.generators)}"
        )
    for name, gen in state.generators.items():
        gen.set_state(payload["generators"][name])
    state.step, state.epoch = payload["step"], payload["epoch"]
    state.step_in_epoch, state.best = payload["step_in_epoch"], payload["best"]
    state.extra = payload["extra"]
    info = get_dist_info()
    rngs = payload["rng"]
    if len(rngs) != info.world_size:
        warnings.warn(
            f"checkpoint from {len(rngs)} processes resumed on {info.world_size}: "
            "random streams will differ from an uninterrupted run",
            stacklevel=3,
        )
    restore_rng_state(rngs[min(info.rank, len(rngs) - 1)], state.device)
    return payload["logger"]
