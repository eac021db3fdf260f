import json
import sys
import types

import pytest
import torch

from evtransfer.engine import MetricLogger, read_metrics
from evtransfer.engine.logging import progress


def test_windowed_means(tmp_path):
    log = MetricLogger(tmp_path, tensorboard=False, enabled=True)
    for v in (1.0, 2.0, 6.0):
        log.update({"loss": torch.tensor(v), "aux": v * 10})
    log.flush(3, 0, lr=0.5)
    log.update({"loss": torch.tensor([4.0])})
    log.flush(4, 1)
    recs = read_metrics(tmp_path)
    assert [r["step"] for r in recs] == [3, 4]
    assert recs[0]["loss"] == pytest.approx(3.0) and recs[0]["aux"] == pytest.approx(30.0)
    assert recs[0]["lr"] == 0.5 and recs[0]["epoch"] == 0
    assert recs[1]["loss"] == 4.0 and "aux" not in recs[1]
    log.log_epoch(4, 0, {"miou": 0.25})
    assert read_metrics(tmp_path, kind="epoch") == [
        {"kind": "epoch", "step": 4, "epoch": 0, "miou": 0.25}
    ]
    with pytest.raises(ValueError, match="'x' must be a scalar"):
        log.update({"x": torch.ones(2)})


def test_disabled_logger_writes_nothing(tmp_path):
    log = MetricLogger(tmp_path / "run", tensorboard=False, enabled=False)
    log.update({"loss": torch.tensor(1.0)})
    assert log.flush(1, 0)["loss"] == 1.0
    assert not (tmp_path / "run").exists()
    assert not MetricLogger(None).enabled


def test_resume_truncates_later_records(tmp_path):
    lines = [json.dumps({"kind": "train", "step": s, "loss": s}) for s in range(1, 11)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"kind": "tr')
    log = MetricLogger(tmp_path, tensorboard=False, resume_step=6, enabled=True)
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4, 5, 6]
    log.update({"loss": 7.0})
    log.flush(7, 0)
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4, 5, 6, 7]
    MetricLogger(tmp_path, tensorboard=False, enabled=True)  # a fresh run starts empty
    assert read_metrics(tmp_path) == []


def test_window_survives_a_checkpoint(tmp_path):
    a = MetricLogger(None)
    for v in (1.0, 2.0):
        a.update({"loss": torch.tensor(v), "lr": 0.1})
    saved = a.state_dict()
    b = MetricLogger(None)
    b.load_state_dict(saved, torch.device("cpu"))
    for log in (a, b):
        log.update({"loss": torch.tensor(6.0), "lr": 0.4})
    assert a.flush(3, 0) | {"elapsed_s": 0} == b.flush(3, 0) | {"elapsed_s": 0}
    assert a.pending() is False


def test_no_host_fetch_per_step(monkeypatch):
    """Device values are fetched once per record, never per update."""
    calls = []
    for name in ("item", "tolist", "__float__", "__bool__", "__int__", "cpu", "numpy"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _name=name, _orig=original, **kwargs):
            calls.append(_name)
            return _orig(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    for n_updates in (3, 30):
        log = MetricLogger(None)
        losses = torch.linspace(0, 1, n_updates)
        calls.clear()
        for i in range(n_updates):
            log.update({"loss": losses[i], "aux": losses[i] * 2})
        assert calls == []  # nothing during updates
        log.flush(n_updates, 0)
        assert len(calls) == 1  # one fetch for the whole record


def test_tensorboard_when_installed(tmp_path, monkeypatch):
    scalars = []

    class Writer:
        def __init__(self, log_dir):
            self.log_dir = log_dir

        def add_scalar(self, tag, value, step):
            scalars.append((tag, value, step))

        def flush(self):
            pass

        def close(self):
            scalars.append("closed")

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = Writer
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    log = MetricLogger(tmp_path, enabled=True)
    log.update({"loss": torch.tensor(2.0)})
    log.flush(5, 0, lr=0.1)
    log.close()
    assert ("train/loss", 2.0, 5) in scalars and ("train/lr", 0.1, 5) in scalars
    assert scalars[-1] == "closed"


def test_tensorboard_absent_is_fine(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    log = MetricLogger(tmp_path, enabled=True)
    log.update({"loss": 1.0})
    log.flush(1, 0)
    assert read_metrics(tmp_path)[0]["loss"] == 1.0


def test_progress_passes_items_through():
    items = list(progress(range(5), total=5, initial=0, desc="e", enabled=True))
    assert items == [0, 1, 2, 3, 4]


def test_plain_progress_lines_and_the_stage_table(capsys, monkeypatch):
    """In a non-terminal: one plain line per record (name, step/total, values, it/s, ETA);
    a closed run joins the table of stages."""
    from evtransfer.engine import logging as log

    monkeypatch.setattr(log, "STAGES", [])
    monkeypatch.setattr(log.sys.stderr, "isatty", lambda: False, raising=False)
    bar = log.progress(range(10), total=10, initial=0, desc="M_S epoch 0", enabled=True)
    assert isinstance(bar, log.PlainProgress)
    for k in bar:
        if k == 4:
            bar.set_postfix({"loss": "0.5"})
    bar.close()
    line = capsys.readouterr().err.strip()
    assert line.startswith("M_S epoch 0: step 4/10, loss 0.5, ") and "it/s, ETA 0:00:" in line
    table = log.stage_table()
    assert "| M_S epoch 0 | 10 | loss 0.5 |" in table
