"""A tiny deterministic training run for the engine tests (imported, or run as a script).

A 2-layer MLP regresses a fixed random linear map on 96 samples with AdamW, cosine schedules
for lr / weight decay / EMA momentum, an EMA teacher and gradient clipping. `stochastic=True`
adds dropout (global torch RNG) and input jitter (a named generator in the TrainState), so
exact resume also has to restore the random streams. As a script it runs under torchrun too;
each rank then saves its final weights as `final_rank<R>.safetensors` in the run directory.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import safetensors.torch
import torch
from torch import nn

from evtransfer.engine import (
    EmaTeacher,
    LoopConfig,
    TrainState,
    cosine_schedule,
    destroy_distributed,
    get_dist_info,
    init_distributed,
    make_generator,
    make_loader,
    seed_everything,
    train,
    wrap_ddp,
)

N_SAMPLES = 96
N_IN = 6


def make_dataset(seed: int = 7) -> torch.utils.data.TensorDataset:
    gen = make_generator(seed)
    x = torch.randn(N_SAMPLES, N_IN, generator=gen)
    w = torch.randn(N_IN, 2, generator=gen)
    y = x @ w + 0.1 * torch.randn(N_SAMPLES, 2, generator=gen)
    return torch.utils.data.TensorDataset(x, y)


def make_model(stochastic: bool) -> nn.Module:
    layers = [nn.Linear(N_IN, 16), nn.Tanh()]
    if stochastic:
        layers.append(nn.Dropout(0.2))
    layers += [nn.Linear(16, 2)]
    return nn.Sequential(*layers)


@contextlib.contextmanager
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run(
    run_dir: str | Path | None,
    *,
    epochs: int = 5,
    batch_size: int = 8,
    ckpt_every: int = 5,
    log_every: int = 1,
    stochastic: bool = False,
    resume: bool = False,
    hang_at: int | None = None,
    seed: int = 0,
) -> TrainState:
    """Train the tiny model; `batch_size` is per process.

    `hang_at=K` makes iteration K (0-based) sleep for minutes, so that a test can kill the
    process at a known point, right after the record of step K was written.
    """
    info = get_dist_info()
    dataset = make_dataset()
    with _one_thread():
        seed_everything(seed)
        device = torch.device("cpu")
        model = wrap_ddp(make_model(stochastic), device)
        groups = [
            {"params": [p for p in model.parameters() if p.ndim > 1]},
            {"params": [p for p in model.parameters() if p.ndim == 1], "wd_scale": 0.0},
        ]
        opt = torch.optim.AdamW(groups, lr=1e-2)
        state = TrainState(
            {"net": model},
            {"main": opt},
            device,
            ema={"net": EmaTeacher(model)},
            generators={"jitter": make_generator(seed, 1)},
        )

        def loader_fn(epoch: int, start: int):
            return make_loader(dataset, batch_size, seed=seed, epoch=epoch, start_batch=start)

        ipe = N_SAMPLES // (batch_size * info.world_size)
        schedules = {
            "lr": cosine_schedule(2e-2, 1e-3, epochs, ipe, warmup_epochs=1),
            "weight_decay": cosine_schedule(0.04, 0.4, epochs, ipe),
            "ema_momentum": cosine_schedule(0.9, 1.0, epochs, ipe),
        }

        def step_fn(batch, state: TrainState):
            x, y = batch
            if stochastic:
                x = x + 0.05 * torch.randn(x.shape, generator=state.generators["jitter"])
            loss = nn.functional.mse_loss(state.modules["net"](x), y)
            if state.step == hang_at:
                time.sleep(300)
            return {"loss": loss}

        cfg = LoopConfig(
            epochs=epochs,
            clip_grad=1.0,
            log_every=log_every,
            ckpt_every=ckpt_every,
            progress=False,
            tensorboard=False,
        )
        return train(
            cfg, state, step_fn, loader_fn, run_dir=run_dir, schedules=schedules, resume=resume
        )


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--run-dir", required=True)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--ckpt-every", type=int, default=5)
    p.add_argument("--stochastic", action="store_true")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--hang-at", type=int, default=None)
    args = p.parse_args(argv)
    info = init_distributed()
    try:
        state = run(
            args.run_dir,
            epochs=args.epochs,
            batch_size=args.batch_size,
            ckpt_every=args.ckpt_every,
            stochastic=args.stochastic,
            resume=args.resume,
            hang_at=args.hang_at,
        )
        net = state.modules["net"]
        weights = {k: v.contiguous() for k, v in getattr(net, "module", net).state_dict().items()}
        out = Path(args.run_dir) / f"final_rank{info.rank}.safetensors"
        safetensors.torch.save_file(weights, str(out))
    finally:
        destroy_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
