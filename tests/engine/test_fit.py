"""Supervised runs (`fit`: learning, reuse, repeatability, optimizers) and the stage
folders keyed by their config (`stage_dir`)."""

import json
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass

import pytest
import torch

from evtransfer.data._common import TensorDict
from evtransfer.engine.fit import FitConfig, fit, stage_dir
from evtransfer.engine.trainers import train_segmenter


def test_stage_dir_is_keyed_by_config(tmp_path):
    a = stage_dir(tmp_path, "M_S", FitConfig(steps=3), 0)
    assert a == stage_dir(tmp_path, "M_S", FitConfig(steps=3), 0)
    assert a != stage_dir(tmp_path, "M_S", FitConfig(steps=4), 0)
    assert a != stage_dir(tmp_path, "M_S", FitConfig(steps=3), 1)


@dataclass
class _Stages:
    first: FitConfig
    second: FitConfig


def test_stage_dir_ignores_logging_settings_at_any_depth(tmp_path):
    def key(**second):
        return stage_dir(tmp_path, "M", _Stages(FitConfig(steps=3), FitConfig(steps=5, **second)))

    assert key() == key(log_every=1, ckpt_every=2)
    assert key() != key(lr=1.0)


def test_fit_learns_then_a_finished_run_is_reused(tmp_path):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 2, 8, 8, generator=gen)
    y = (x[:, 0] > 0).long()  # learnable from the input pixel by pixel
    model = torch.nn.Conv2d(2, 2, 1)
    cfg = FitConfig(steps=60, batch=8, lr=5e-2, warmup_steps=2, ckpt_every=0, log_every=10)
    minutes = train_segmenter(model, x, y, cfg, run_dir=tmp_path / "run", seed=0,
                              device=torch.device("cpu"), progress=False)
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean()
    assert acc > 0.9
    assert json.loads((tmp_path / "run/done.json").read_text())["steps"] == 60
    again = torch.nn.Conv2d(2, 2, 1)
    reused = fit({"model": again}, TensorDict(x=x, y=y), None, cfg, run_dir=tmp_path / "run",
                 seed=0, device=torch.device("cpu"), progress=False)
    assert reused == minutes and torch.equal(again.weight, model.weight)


def _fit_logging_pids(run_dir, log):
    """Child process: a short fit whose steps append this process's id to `log`."""
    model = torch.nn.Linear(4, 1)

    def step(batch, state):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.02)  # long enough for the other process to arrive mid-run
        return {"loss": state.modules["model"](batch["x"]).pow(2).mean()}

    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    fit({"model": model}, TensorDict(x=x), step, FitConfig(steps=15, batch=4, ckpt_every=5),
        run_dir=run_dir, seed=0, device=torch.device("cpu"), progress=False)
    torch.save(model.state_dict(), f"{log}.{os.getpid()}.pt")


@pytest.mark.skipif(sys.platform == "win32", reason="advisory file locks: fcntl")
def test_two_processes_on_one_stage_folder_train_it_once(tmp_path):
    """Two suites sharing a source stage cache: the second process waits for the first's run
    and reuses it, instead of interleaving steps and checkpoints in one folder."""
    ctx = multiprocessing.get_context("fork")
    log = tmp_path / "steps.log"
    procs = [ctx.Process(target=_fit_logging_pids, args=(tmp_path / "run", log))
             for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    pids = log.read_text().split()
    assert len(pids) == 15 and len(set(pids)) == 1  # one process trained every step
    weights = [torch.load(f"{log}.{p.pid}.pt", weights_only=True) for p in procs]
    torch.testing.assert_close(weights[0], weights[1], rtol=0, atol=0)  # the other reused it


def test_fit_is_repeatable_whatever_ran_before(tmp_path):
    """Dropout draws from the global RNG; two runs with one seed end with equal weights even
    when the global RNG was left in different states."""
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))

    def run(name: str) -> torch.Tensor:
        model = torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.Linear(4, 1))
        with torch.no_grad():
            model[1].weight.fill_(0.1)
            model[1].bias.zero_()

        def step(batch, state):
            return {"loss": state.modules["model"](batch["x"]).pow(2).mean()}

        torch.rand(len(name))  # leave the global RNG somewhere else each time
        fit({"model": model}, TensorDict(x=x), step, FitConfig(steps=5, batch=4, ckpt_every=0),
            run_dir=tmp_path / name, seed=3, device=torch.device("cpu"), progress=False)
        return model[1].weight.detach().clone()

    assert torch.equal(run("a"), run("bb"))


def test_fit_builds_the_given_optimizer_with_scaled_group_rates(tmp_path):
    """RAdam with β1 = 0 takes plain gradient steps while its variance estimate is unreliable
    (ρ_1 = 1 ≤ 5), so one step moves each parameter by lr · lr_scale · gradient."""
    a, b = torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)
    wa, wb = a.weight.item(), b.weight.item()

    def step(batch, state):  # d loss / d w_a = 2, d loss / d w_b = -3
        return {"loss": 2 * state.modules["a"].weight.sum() - 3 * state.modules["b"].weight.sum()}

    cfg = FitConfig(steps=1, batch=1, lr=0.1, min_lr=0.1, warmup_steps=0, clip_grad=0.0,
                    ckpt_every=0)
    groups = [{"params": list(a.parameters()), "lr_scale": 0.5}, {"params": list(b.parameters())}]
    fit({"a": a, "b": b}, TensorDict(x=torch.zeros(1, 1)), step, cfg, run_dir=tmp_path / "run",
        seed=0, device=torch.device("cpu"), progress=False, param_groups=groups,
        optimizer=lambda g: torch.optim.RAdam(g, lr=cfg.lr, betas=(0.0, 0.999)))
    assert a.weight.item() == pytest.approx(wa - 0.1 * 0.5 * 2, abs=1e-6)
    assert b.weight.item() == pytest.approx(wb + 0.1 * 3, abs=1e-6)


