import collections
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from evtransfer.engine import (
    CheckpointError,
    EmaTeacher,
    LoopConfig,
    TrainState,
    cosine_schedule,
    make_loader,
    move_to_device,
    read_metrics,
    read_state,
    read_weights,
    save_checkpoint,
    train,
)

from . import tiny_run

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
QUIET = {"progress": False, "tensorboard": False}


def _losses(run_dir):
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in read_metrics(run_dir)]


def _weights(state):
    return {
        name: {k: v.clone() for k, v in m.state_dict().items()}
        for name, m in state.weight_modules().items()
    }


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for name in a:
        for key in a[name]:
            assert torch.equal(a[name][key], b[name][key]), (name, key)


def _data(n=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.utils.data.TensorDataset(
        torch.randn(n, 3, generator=gen), torch.randn(n, 1, generator=gen)
    )


def _loader_fn(dataset, batch=4):
    return lambda epoch, start: make_loader(dataset, batch, seed=0, epoch=epoch, start_batch=start)


def test_training_reduces_the_loss(tmp_path):
    tiny_run.run(tmp_path, epochs=5)
    losses = [r["loss"] for r in read_metrics(tmp_path)]
    assert len(losses) == 60
    assert np.mean(losses[-12:]) < 0.3 * np.mean(losses[:12])


def test_schedules_reach_param_groups_and_step_fn():
    net = nn.Linear(3, 1)
    opt = torch.optim.AdamW([{"params": [net.weight]}, {"params": [net.bias], "lr_scale": 0.5}])
    state = TrainState({"net": net}, {"opt": opt}, "cpu")
    lr = cosine_schedule(1e-2, 1e-4, 2, 3, warmup_epochs=1)
    temp = np.linspace(0.04, 0.07, 6)
    seen = []

    def step_fn(batch, state):
        groups = state.optimizers["opt"].param_groups
        seen.append((groups[0]["lr"], groups[1]["lr"], state.sched["temp"]))
        return {"loss": nn.functional.mse_loss(state.modules["net"](batch[0]), batch[1])}

    train(
        LoopConfig(epochs=2, **QUIET),
        state,
        step_fn,
        _loader_fn(_data()),
        schedules={"lr": lr, "temp": temp},
    )
    assert seen == [(lr[i], 0.5 * lr[i], temp[i]) for i in range(6)]
    assert state.step == 6 and state.epoch == 2


def test_ema_teacher_follows_the_momentum_schedule():
    torch.manual_seed(0)
    net = nn.Linear(3, 1)
    state = TrainState(
        {"net": net},
        {"sgd": torch.optim.SGD(net.parameters(), lr=0.1)},
        "cpu",
        ema={"net": EmaTeacher(net)},
    )
    teacher = {k: v.double().clone() for k, v in net.state_dict().items()}
    momentum = np.array([0.5, 0.9, 0.0, 0.7, 0.99, 1.0])
    students = []

    def step_fn(batch, state):
        return {"loss": nn.functional.mse_loss(state.modules["net"](batch[0]), batch[1])}

    cfg = LoopConfig(epochs=2, max_steps=6, **QUIET)
    loader = _loader_fn(_data())

    def recording_loader(epoch, start):
        for batch in loader(epoch, start):
            yield batch
            students.append({k: v.double().clone() for k, v in net.state_dict().items()})

    train(cfg, state, step_fn, recording_loader, schedules={"ema_momentum": momentum})
    assert len(students) == 6
    for m, s in zip(momentum, students, strict=True):
        teacher = {k: m * teacher[k] + (1 - m) * s[k] for k in teacher}
    for k, v in state.ema["net"].state_dict().items():
        torch.testing.assert_close(v.double(), teacher[k], rtol=0, atol=1e-6)


def test_gradient_clipping_golden():
    w = nn.Parameter(torch.zeros(4))
    c = torch.tensor([3.0, 4.0, 0.0, 12.0])  # gradient of w.c, norm 13

    class Lin(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = w

    state = TrainState({"m": Lin()}, {"sgd": torch.optim.SGD([w], lr=1.0)}, "cpu")
    cfg = LoopConfig(epochs=1, clip_grad=0.5, log_every=1, **QUIET)
    train(cfg, state, lambda b, s: {"loss": (s.modules["m"].w * c).sum()}, lambda e, k: [0])
    torch.testing.assert_close(w.detach(), -c * 0.5 / 13, rtol=1e-6, atol=0)


def test_clip_norm_is_logged(tmp_path):
    w = nn.Parameter(torch.zeros(2))
    holder = nn.Module()
    holder.w = w
    state = TrainState({"m": holder}, {"sgd": torch.optim.SGD([w], lr=0.0)}, "cpu")
    cfg = LoopConfig(epochs=1, clip_grad=1.0, log_every=1, **QUIET)
    c = torch.tensor([6.0, 8.0])
    train(cfg, state, lambda b, s: {"loss": (w * c).sum()}, lambda e, k: [0, 1], run_dir=tmp_path)
    assert [r["grad_norm"] for r in read_metrics(tmp_path)] == [10.0, 10.0]


def test_several_optimizers_in_one_step():
    a, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))
    ma, mb = nn.Module(), nn.Module()
    ma.p, mb.p = a, b
    opts = {"a": torch.optim.SGD([a], lr=0.1), "b": torch.optim.SGD([b], lr=0.5)}
    state = TrainState({"a": ma, "b": mb}, opts, "cpu")

    def step_fn(batch, state):
        state.optimize(a.sum(), "a")  # d/da = 1
        loss_b = (a * b).sum()  # d/db = a, d/da = b (must not move a)
        state.optimize(loss_b, "b")
        return {"loss_b": loss_b.detach()}

    train(LoopConfig(epochs=1, **QUIET), state, step_fn, lambda e, k: [0, 1])
    # a moves by its own gradient only, the one leaked from loss_b is never applied
    torch.testing.assert_close(a.detach(), torch.full((2,), 0.8))
    torch.testing.assert_close(b.detach(), torch.full((2,), 1 - 0.5 * 0.9 - 0.5 * 0.8))
    assert b.grad is None


def test_grad_hook_sees_unscaled_gradients_before_the_step():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))
    seen = []

    def cancel_last_layer(state):
        seen.append(state.modules["n"][1].weight.grad.clone())
        for p in state.modules["n"][1].parameters():
            p.grad = None

    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    state = TrainState({"n": net}, {"o": opt}, "cpu", grad_hook=cancel_last_layer)
    last = [p.detach().clone() for p in net[1].parameters()]
    first = net[0].weight.detach().clone()
    x = torch.randn(5, 3)
    expected = torch.autograd.grad(net(x).pow(2).mean(), net[1].weight)[0]
    train(
        LoopConfig(**QUIET),
        state,
        lambda b, s: {"loss": s.modules["n"](x).pow(2).mean()},
        lambda e, k: [0],
    )
    torch.testing.assert_close(seen[0], expected)
    assert all(torch.equal(a, b) for a, b in zip(last, net[1].parameters(), strict=True))
    assert not torch.equal(first, net[0].weight)


def test_step_fn_contract_errors():
    net = nn.Linear(1, 1)
    state = TrainState({"n": net}, {"o": torch.optim.SGD(net.parameters(), lr=0.1)}, "cpu")
    cfg = LoopConfig(epochs=1, **QUIET)
    with pytest.raises(ValueError, match="'loss' tensor or call state.optimize"):
        train(cfg, state, lambda b, s: {"l": 1.0}, lambda e, k: [0])
    with pytest.raises(TypeError, match="dict of losses"):
        train(cfg, state, lambda b, s: 1.0, lambda e, k: [0])
    with pytest.raises(ValueError, match="unknown optimizer"):
        state.optimize(net.weight.sum(), "nope")
    with pytest.raises(ValueError, match="'lr' has 1 values"):
        train(
            cfg,
            state,
            lambda b, s: {"loss": net.weight.sum()},
            lambda e, k: [0, 1],
            schedules={"lr": [0.1]},
        )
    with pytest.raises(ValueError, match="ema teacher 'x'"):
        TrainState({"n": net}, {}, "cpu", ema={"x": EmaTeacher(net)})
    with pytest.raises(ValueError, match="reserved"):
        TrainState({"ema.n": net}, {}, "cpu")
    with pytest.raises(ValueError, match="train.log_every"):
        LoopConfig(log_every=0)


def _stochastic_state(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.3), nn.Linear(8, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    return TrainState(
        {"net": net},
        {"adam": opt},
        "cpu",
        ema={"net": EmaTeacher(net)},
        generators={"g": torch.Generator().manual_seed(5)},
    )


def _stochastic_step(batch, state):
    x = batch[0] + torch.randn(batch[0].shape, generator=state.generators["g"])
    return {"loss": nn.functional.mse_loss(state.modules["net"](x), batch[1])}


class _Crash(Exception):
    pass


@pytest.mark.parametrize("crash_at", [5, 7, 10])
def test_crash_then_resume_equals_uninterrupted(tmp_path, crash_at):
    """An exception kills iteration `crash_at`; resuming reproduces every record and weight."""
    data = _data(16)  # 4 batches per epoch: epoch ends at steps 4, 8, 12
    sched = {"ema_momentum": cosine_schedule(0.9, 1.0, 3, 4)}
    cfg = LoopConfig(epochs=3, log_every=5, ckpt_every=3, **QUIET)

    def crashing_step(batch, state):
        if state.step == crash_at:
            raise _Crash
        return _stochastic_step(batch, state)

    ref = train(
        cfg,
        _stochastic_state(),
        _stochastic_step,
        _loader_fn(data),
        run_dir=tmp_path / "ref",
        schedules=sched,
    )
    with pytest.raises(_Crash):
        train(
            cfg,
            _stochastic_state(),
            crashing_step,
            _loader_fn(data),
            run_dir=tmp_path / "b",
            schedules=sched,
        )
    torch.manual_seed(123)  # the checkpoint must bring back every random stream
    resumed = train(
        cfg,
        _stochastic_state(seed=9),
        _stochastic_step,
        _loader_fn(data),
        run_dir=tmp_path / "b",
        schedules=sched,
        resume=True,
    )
    _assert_same_weights(_weights(ref), _weights(resumed))
    assert _losses(tmp_path / "b") == _losses(tmp_path / "ref")
    assert [r["step"] for r in _losses(tmp_path / "ref")] == [4, 5, 8, 10, 12]


def test_max_steps_stops_and_saves(tmp_path):
    cfg = LoopConfig(epochs=3, max_steps=6, **QUIET)
    state = train(
        cfg, _stochastic_state(), _stochastic_step, _loader_fn(_data(16)), run_dir=tmp_path
    )
    saved = read_state(tmp_path / "checkpoints" / "last")
    assert state.step == saved["step"] == 6 and (saved["epoch"], saved["step_in_epoch"]) == (1, 2)
    again = train(
        LoopConfig(epochs=3, max_steps=6, **QUIET),
        _stochastic_state(),
        _stochastic_step,
        _loader_fn(_data(16)),
        run_dir=tmp_path,
        resume=True,
    )
    assert again.step == 6


def test_run_dir_guards(tmp_path):
    net = nn.Linear(3, 1)

    def make():
        return TrainState({"n": net}, {"o": torch.optim.SGD(net.parameters(), lr=0.1)}, "cpu")

    cfg = LoopConfig(epochs=1, **QUIET)
    step = lambda b, s: {"loss": nn.functional.mse_loss(s.modules["n"](b[0]), b[1])}  # noqa: E731
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(cfg, make(), step, _loader_fn(_data()), run_dir=tmp_path, resume=True)
    train(cfg, make(), step, _loader_fn(_data()), run_dir=tmp_path)
    with pytest.raises(FileExistsError, match="resume the run"):
        train(cfg, make(), step, _loader_fn(_data()), run_dir=tmp_path)
    other = TrainState({"n": net}, {"x": torch.optim.SGD(net.parameters(), lr=0.1)}, "cpu")
    with pytest.raises(CheckpointError, match="optimizers"):
        train(cfg, other, step, _loader_fn(_data()), run_dir=tmp_path, resume=True)
    save_checkpoint(tmp_path / "weights_only", {"n": net}, {"step": 3})
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        train(cfg, make(), step, _loader_fn(_data()), resume=tmp_path / "weights_only")


def test_best_checkpoint_tracks_the_metric(tmp_path):
    net = nn.Linear(3, 1)
    state = TrainState({"n": net}, {"o": torch.optim.SGD(net.parameters(), lr=0.01)}, "cpu")
    scores = iter([3.0, 1.0, 2.0])
    cfg = LoopConfig(epochs=3, best_metric="val", **QUIET)
    step = lambda b, s: {"loss": nn.functional.mse_loss(s.modules["n"](b[0]), b[1])}  # noqa: E731
    train(
        cfg,
        state,
        step,
        _loader_fn(_data()),
        run_dir=tmp_path,
        epoch_end=lambda s: {"val": next(scores)},
    )
    best = read_state(tmp_path / "checkpoints" / "best")
    assert best["epoch"] == 2 and best["best"] == 1.0 and state.best == 1.0
    assert [r["val"] for r in read_metrics(tmp_path, kind="epoch")] == [3.0, 1.0, 2.0]
    assert read_state(tmp_path / "checkpoints" / "last")["epoch"] == 3


def test_bf16_autocast_on_cpu_and_fp16_fallback():
    net = nn.Linear(3, 1)
    dtypes = []

    def step_fn(batch, state):
        out = state.modules["n"](batch[0])
        dtypes.append(out.dtype)
        return {"loss": out.float().pow(2).mean()}

    for amp, expected in (("bf16", torch.bfloat16), ("off", torch.float32)):
        state = TrainState({"n": net}, {"o": torch.optim.SGD(net.parameters(), lr=0.1)}, "cpu")
        train(LoopConfig(amp=amp, **QUIET), state, step_fn, _loader_fn(_data()))
        assert dtypes[-1] == expected and net.weight.dtype == torch.float32
    state = TrainState({"n": net}, {"o": torch.optim.SGD(net.parameters(), lr=0.1)}, "cpu")
    with pytest.warns(UserWarning, match="amp=fp16 is not supported on cpu"):
        train(LoopConfig(amp="fp16", **QUIET), state, step_fn, _loader_fn(_data()))
    assert dtypes[-1] == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_cuda_amp_trains(tmp_path, amp):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 1)).cuda()
    state = TrainState({"n": net}, {"o": torch.optim.AdamW(net.parameters(), lr=1e-2)}, "cuda")

    def step_fn(batch, state):
        return {"loss": nn.functional.mse_loss(state.modules["n"](batch[0]).float(), batch[1])}

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(
            LoopConfig(epochs=20, amp=amp, log_every=3, **QUIET),
            state,
            step_fn,
            _loader_fn(_data(48)),
            run_dir=tmp_path,
        )
    losses = [r["loss"] for r in read_metrics(tmp_path)]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert state.scaler.is_enabled() == (amp == "fp16")


def test_move_to_device_nested():
    Pair = collections.namedtuple("Pair", "a b")
    batch = {"x": torch.ones(2), "meta": [Pair(torch.zeros(1), "s"), (3, torch.ones(1))]}
    for device in DEVICES:
        out = move_to_device(batch, torch.device(device))
        assert out["x"].device.type == device and isinstance(out["meta"][0], Pair)
        assert out["meta"][0].b == "s" and out["meta"][1][0] == 3
        assert out["meta"][1][1].device.type == device


def _last_step(path: Path) -> int:
    """The step of the last complete record of a metrics file being written (0 if none)."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return 0
    for line in reversed(lines):
        try:
            return json.loads(line)["step"]
        except json.JSONDecodeError:
            continue
    return 0


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path):
    """Kill a run with SIGKILL after a mid-epoch checkpoint; the resumed curve is identical."""
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "killed"
    cmd = [
        sys.executable,
        str(Path(tiny_run.__file__)),
        "--run-dir",
        str(run_dir),
        "--stochastic",
        "--ckpt-every",
        "5",
        "--hang-at",
        "18",
    ]
    proc = subprocess.Popen(
        cmd,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while _last_step(run_dir / "metrics.jsonl") < 18:  # then iteration 19 hangs
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    saved = read_state(run_dir / "checkpoints" / "last")
    assert (saved["step"], saved["epoch"], saved["step_in_epoch"]) == (15, 1, 3)  # mid-epoch
    assert _last_step(run_dir / "metrics.jsonl") == 18  # records 16-18 must be dropped

    ref = tiny_run.run(ref_dir, stochastic=True)
    resumed = tiny_run.run(run_dir, stochastic=True, resume=True)
    assert _losses(run_dir) == _losses(ref_dir)
    assert [r["step"] for r in _losses(run_dir)] == list(range(1, 61))
    _assert_same_weights(_weights(ref), _weights(resumed))
    on_disk = read_weights(run_dir / "checkpoints" / "last")
    assert all(
        torch.equal(v, on_disk["ema.net"][k]) for k, v in ref.ema["net"].state_dict().items()
    )
