"""The non-finite guard: a run whose loss (or weights) become NaN/inf stops with an error naming
the step and the term, keeps the last finite checkpoint and is never marked finished."""

import json
import math

import pytest
import torch
from torch import nn

from evtransfer.data._common import TensorDict
from evtransfer.engine import (
    LoopConfig,
    NonFiniteError,
    TrainState,
    make_loader,
    read_metrics,
    read_state,
    read_weights,
    train,
)
from evtransfer.engine.fit import FitConfig, fit
from evtransfer.engine.guard import FiniteWatch, nonfinite_parameter

QUIET = {"progress": False, "tensorboard": False}


def _state(seed=0):
    torch.manual_seed(seed)
    net = nn.Linear(3, 1)
    return TrainState({"net": net}, {"opt": torch.optim.AdamW(net.parameters(), lr=1e-2)}, "cpu")


def _loader_fn(n=32, batch=4):
    gen = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(n, 3, generator=gen),
                                          torch.randn(n, 1, generator=gen))
    return lambda epoch, start: make_loader(data, batch, seed=0, epoch=epoch, start_batch=start)


def _poisoned_step(bad_step, term="loss", value=math.nan):
    """A step whose `term` is `value` at iteration `bad_step` (counted from 1 as metrics.jsonl
    counts steps; step_fn sees state.step = bad_step - 1 then)."""

    def step_fn(batch, state):
        out = state.modules["net"](batch[0])
        a = nn.functional.mse_loss(out, batch[1])
        b = out.abs().mean()
        poison = torch.tensor(value if state.step == bad_step - 1 else 1.0)
        if term == "b":
            b = b * poison
        if term == "aux":
            return {"loss": a + b, "a": a.detach(), "b": b.detach(), "aux": poison}
        loss = (a + b) * (poison if term == "loss" else 1.0)
        return {"loss": loss, "a": a.detach(), "b": b.detach()}

    return step_fn


@pytest.mark.parametrize(("log_every", "ckpt_every", "kept", "logged"), [
    (4, 3, 6, [4]),  # found at the flush of step 8, after the save at 6
    (5, 4, 4, [5]),  # found at the save of step 8, before the flush at 10
])
def test_nan_at_step_k_stops_and_keeps_the_last_finite_checkpoint(
        tmp_path, log_every, ckpt_every, kept, logged):
    state = _state()
    cfg = LoopConfig(epochs=3, log_every=log_every, ckpt_every=ckpt_every, **QUIET)
    with pytest.raises(NonFiniteError, match=r"loss term loss \(nan\) not finite at step 7") as e:
        train(cfg, state, _poisoned_step(7), _loader_fn(), run_dir=tmp_path)
    assert e.value.step == 7 and e.value.terms == ("loss (nan)",)
    assert str(tmp_path) in str(e.value) and f"checkpoints/last keeps step {kept}" in str(e.value)
    last = tmp_path / "checkpoints" / "last"
    assert read_state(last)["step"] == kept
    assert all(torch.isfinite(t).all() for t in read_weights(last)["net"].values())
    assert not (tmp_path / "checkpoints" / "best").exists()
    assert [r["step"] for r in read_metrics(tmp_path)] == logged  # no NaN record written
    assert not (tmp_path / "checkpoints" / ".last.tmp").exists()


def test_inf_in_one_term_of_several_names_that_term(tmp_path):
    with pytest.raises(NonFiniteError, match=r"loss terms b \(inf\), loss \(inf\) not finite "
                                             r"at step 3") as e:
        train(LoopConfig(epochs=2, log_every=2, **QUIET), _state(),
              _poisoned_step(3, "b", math.inf), _loader_fn(), run_dir=tmp_path)
    assert "a (" not in str(e.value) and "no checkpoint was written" in str(e.value)
    with pytest.raises(NonFiniteError, match=r"loss term aux \(-inf\) not finite at step 2"):
        train(LoopConfig(epochs=1, log_every=3, **QUIET), _state(),
              _poisoned_step(2, "aux", -math.inf), _loader_fn(), run_dir=tmp_path / "aux")


def test_a_run_without_run_dir_still_stops_at_its_end():
    cfg = LoopConfig(epochs=1, log_every=100, **QUIET)  # one flush, at the end of the epoch
    with pytest.raises(NonFiniteError, match="at step 5"):
        train(cfg, _state(), _poisoned_step(5), _loader_fn())


def test_non_finite_weights_after_a_finite_loss_are_never_saved(tmp_path):
    state = _state()

    def poison_grads(state):  # e.g. an overflow in backward that the loss does not show
        if state.step == 4:
            state.modules["net"].weight.grad.fill_(math.inf)

    state.grad_hook = poison_grads
    with pytest.raises(NonFiniteError, match=r"parameter net\.weight \(after a finite loss\) "
                                             r"not finite at step 5.*keeps step 4"):
        train(LoopConfig(epochs=1, ckpt_every=1, **QUIET), state, _poisoned_step(99),
              _loader_fn(), run_dir=tmp_path)
    assert read_state(tmp_path / "checkpoints" / "last")["step"] == 4


def test_finite_runs_are_untouched(tmp_path):
    state = train(LoopConfig(epochs=1, log_every=3, ckpt_every=2, **QUIET), _state(),
                  _poisoned_step(99), _loader_fn(), run_dir=tmp_path)
    assert state.step == 8 and read_state(tmp_path / "checkpoints" / "last")["step"] == 8


def test_watch_reports_the_earliest_failure_of_device_and_host_values():
    watch = FiniteWatch(torch.device("cpu"))
    watch.update({"x": torch.tensor(1.0), "y": 2.0}, 1)
    assert watch.first_failure() is None
    watch.update({"x": torch.tensor(1.0), "y": math.inf}, 4)
    watch.update({"x": torch.tensor(math.nan), "y": 0.0, "z": torch.tensor(-math.inf)}, 3)
    watch.update({"x": torch.tensor(math.inf)}, 6)
    assert watch.first_failure() == (3, ("x (nan)", "z (-inf)"))
    watch.update({"grad_norm": torch.tensor(math.inf)}, 2, skip=("grad_norm",))
    assert watch.first_failure()[0] == 3


def test_nonfinite_parameter_names_the_first_bad_one():
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    assert nonfinite_parameter({"a": a, "b": b}) is None
    with torch.no_grad():
        b.bias[1] = math.nan
    a.register_buffer("mask", torch.tensor([-math.inf]))  # buffers may hold inf
    assert nonfinite_parameter({"a": a, "b": b}) == "b.bias"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_watch_update_does_not_synchronise():
    watch = FiniteWatch(torch.device("cuda"))
    values = {"loss": torch.tensor(1.0, device="cuda"), "n": 3.0}
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(1, 4):
            watch.update(values, step)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert watch.first_failure() is None


def test_fit_never_marks_a_diverged_stage_done(tmp_path):
    gen = torch.Generator().manual_seed(0)
    data = TensorDict(x=torch.randn(16, 3, generator=gen), y=torch.randn(16, 1, generator=gen))
    cfg = FitConfig(steps=12, batch=4, warmup_steps=1, log_every=4, ckpt_every=4)
    run = tmp_path / "stage"

    def step(nan_at):
        def step_fn(batch, state):
            loss = nn.functional.mse_loss(state.modules["net"](batch["x"]), batch["y"])
            return {"loss": loss * (math.nan if state.step == nan_at - 1 else 1.0)}
        return step_fn

    def run_fit(nan_at):
        torch.manual_seed(0)
        net = nn.Linear(3, 1)
        return net, fit({"net": net}, data, step(nan_at), cfg, run_dir=run, seed=0,
                        device=torch.device("cpu"), progress=False)

    for _ in range(2):  # the rerun resumes the last finite state and diverges again
        # fit clips gradients, so the logged gradient norm is NaN as well
        with pytest.raises(NonFiniteError, match=r"stage: loss terms grad_norm \(nan\), loss "
                                                 r"\(nan\) not finite at step 10.*keeps step 8"):
            run_fit(10)
        assert not (run / "done.json").exists()
        assert read_state(run / "checkpoints" / "last")["step"] == 8
    net, _ = run_fit(99)  # a fixed step resumes from step 8 and finishes
    assert json.loads((run / "done.json").read_text())["steps"] == 12
    assert torch.isfinite(net.weight).all()
