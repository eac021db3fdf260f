"""Metrics: JSONL always, TensorBoard when installed, progress with ETA (a tqdm bar on a
terminal, plain lines in logs) and a table of the finished stages.

Loss tensors are summed on their device and fetched to the host only when a record is
written (every `log_every` steps), so logging adds no device sync per step. Under DDP the
window sums are averaged over ranks at that moment (one collective); only rank 0 writes.
`metrics.jsonl` holds one JSON object per line: `{"kind": "train", "step", "epoch", ...means}`
or `{"kind": "epoch", "step", "epoch", ...metrics}`; `step` counts completed iterations.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from evtransfer.engine.distributed import all_reduce_mean, is_main

METRICS_FILE = "metrics.jsonl"


class MetricLogger:
    """Accumulate per-step values and write windowed means to `run_dir/metrics.jsonl`.

    `update` takes 0-dim (or one-element) tensors, kept on their device, and Python numbers.
    `resume_step` (when continuing a run) drops records written after that step, so the file
    lists every step once. `enabled=None` means "rank 0 only"; `run_dir=None` writes nothing.
    """

    def __init__(
        self,
        run_dir: str | Path | None,
        *,
        tensorboard: bool = True,
        resume_step: int | None = None,
        enabled: bool | None = None,
    ):
        self.enabled = (is_main() if enabled is None else enabled) and run_dir is not None
        self.path = Path(run_dir) / METRICS_FILE if run_dir is not None else None
        self._dev: dict[str, torch.Tensor] = {}
        self._host: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._start = time.monotonic()
        self._writer = None
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        else:
            _truncate_after(self.path, resume_step)
        if tensorboard:
            self._writer = _open_tensorboard(self.path.parent / "tensorboard")

    def update(self, values: Mapping[str, torch.Tensor | float]) -> None:
        """Add one step's values to the current window (no host-device transfer)."""
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                if value.numel() != 1:
                    raise ValueError(f"logged value {key!r} must be a scalar, got {value.shape}")
                v = value.detach().reshape(()).float()
                self._dev[key] = self._dev[key] + v if key in self._dev else v.clone()
            else:
                self._host[key] = self._host.get(key, 0.0) + float(value)
            self._counts[key] = self._counts.get(key, 0) + 1

    def pending(self) -> bool:
        """True when the window holds values not yet written."""
        return bool(self._counts)

    def flush(self, step: int, epoch: int, **fixed: float) -> dict[str, Any]:
        """Write the window's means (plus `fixed` host values) as a train record; reset it.

        Every rank must call this at the same steps under DDP (it averages over ranks).
        Returns the record.
        """
        means = self._window_means()
        record = {"kind": "train", "step": step, "epoch": epoch, **fixed, **means}
        record["elapsed_s"] = round(time.monotonic() - self._start, 3)
        self._write(record, "train")
        self._dev, self._host, self._counts = {}, {}, {}
        return record

    def log_epoch(self, step: int, epoch: int, metrics: Mapping[str, float]) -> dict[str, Any]:
        """Write an end-of-epoch record (validation metrics and such) and return it."""
        record = {"kind": "epoch", "step": step, "epoch": epoch}
        record.update({k: float(v) for k, v in metrics.items()})
        self._write(record, "epoch")
        return record

    def state_dict(self) -> dict[str, Any]:
        """The unwritten window, averaged over ranks, for a checkpoint (collective under DDP)."""
        dev_keys = sorted(self._dev)
        reduced = {}
        if dev_keys:
            stacked = all_reduce_mean(torch.stack([self._dev[k] for k in dev_keys])).cpu()
            reduced = dict(zip(dev_keys, stacked.unbind(), strict=True))
        return {"device_sums": reduced, "host_sums": dict(self._host), "counts": dict(self._counts)}

    def load_state_dict(self, state: Mapping[str, Any], device: torch.device) -> None:
        """Restore a window saved by `state_dict` (on every rank)."""
        self._dev = {k: v.to(device) for k, v in state["device_sums"].items()}
        self._host = dict(state["host_sums"])
        self._counts = dict(state["counts"])

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _window_means(self) -> dict[str, float]:
        means = {k: v / self._counts[k] for k, v in self._host.items()}
        dev_keys = sorted(self._dev)
        if dev_keys:
            sums = all_reduce_mean(torch.stack([self._dev[k] for k in dev_keys])).tolist()
            means.update({k: s / self._counts[k] for k, s in zip(dev_keys, sums, strict=True)})
        return means

    def _write(self, record: Mapping[str, Any], tag: str) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self._writer is not None:
            for key, value in record.items():
                if key not in ("kind", "step", "epoch") and isinstance(value, float | int):
                    self._writer.add_scalar(f"{tag}/{key}", value, record["step"])
            self._writer.flush()


def read_metrics(path: str | Path, kind: str | None = "train") -> list[dict[str, Any]]:
    """Records of a `metrics.jsonl` file (or a run directory), optionally of one `kind`."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if kind is None or r.get("kind") == kind]


def progress(
    iterable: Iterable, *, total: int | None, initial: int, desc: str, enabled: bool
) -> Iterable:
    """Progress over `iterable` on rank 0 when enabled: a tqdm bar with ETA on a terminal,
    elsewhere (logs, CI) a plain line at each `set_postfix` (each metrics record). Either way
    the run is added to `STAGES` when closed, for `stage_table`."""
    show = enabled and is_main()
    if show and not sys.stderr.isatty():
        return PlainProgress(iterable, total=total, initial=initial, desc=desc)
    bar = tqdm(iterable, total=total, initial=initial, desc=desc, disable=not show,
               dynamic_ncols=True)
    return _Recorded(bar, desc, initial) if show else bar


STAGES: list[dict[str, Any]] = []  # finished progress runs of this process, for stage_table


class PlainProgress:
    """One line per update for a non-terminal: `desc: step k/total, loss …, it/s, ETA`."""

    def __init__(self, iterable: Iterable, *, total: int | None, initial: int, desc: str):
        self.iterable, self.total, self.desc = iterable, total, desc
        self.n = self.start = initial
        self.postfix: dict[str, str] = {}
        self._t0 = time.monotonic()

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.n += 1

    def set_postfix(self, values: Mapping[str, str]) -> None:
        self.postfix = dict(values)
        print(self.line(), file=sys.stderr, flush=True)

    def rate(self) -> float:
        """Iterations per second since this progress started."""
        return (self.n - self.start) / max(time.monotonic() - self._t0, 1e-9)

    def line(self) -> str:
        rate = self.rate()
        total = f"/{self.total}" if self.total else ""
        left = (self.total - self.n) / rate if self.total and rate > 0 else None
        eta = f", ETA {_clock(left)}" if left is not None else ""
        losses = "".join(f", {k} {v}" for k, v in self.postfix.items())
        return f"{self.desc}: step {self.n}{total}{losses}, {rate:.2f} it/s{eta}"

    def close(self) -> None:
        _finish(self.desc, self.n - self.start, self.postfix, time.monotonic() - self._t0)


class _Recorded:
    """A tqdm bar that adds its run to `STAGES` when closed."""

    def __init__(self, bar, desc: str, initial: int):
        self.bar, self.desc, self.initial, self.postfix = bar, desc, initial, {}
        self._t0 = time.monotonic()

    def __iter__(self):
        return iter(self.bar)

    def set_postfix(self, values: Mapping[str, str]) -> None:
        self.postfix = dict(values)
        self.bar.set_postfix(values)

    def close(self) -> None:
        self.bar.close()
        _finish(self.desc, self.bar.n - self.initial, self.postfix, time.monotonic() - self._t0)


def _finish(desc: str, steps: int, postfix: Mapping[str, str], seconds: float) -> None:
    if steps > 0:
        STAGES.append({"stage": desc, "steps": steps, "last": dict(postfix),
                       "seconds": round(seconds, 2)})


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}"


def stage_table(stages: list[dict[str, Any]] | None = None) -> str:
    """A Markdown table of the finished progress runs (default: this process's `STAGES`)."""
    rows = STAGES if stages is None else stages
    if not rows:
        return ""
    lines = ["| stage | steps | last values | seconds | it/s |", "|---|---:|---|---:|---:|"]
    for r in rows:
        last = ", ".join(f"{k} {v}" for k, v in r["last"].items()) or "-"
        rate = r["steps"] / r["seconds"] if r["seconds"] > 0 else 0.0
        lines.append(f"| {r['stage']} | {r['steps']} | {last} | {r['seconds']:.1f} | "
                     f"{rate:.2f} |")
    return "\n".join(lines)


def _truncate_after(path: Path, step: int) -> None:
    """Keep only well-formed records with `step <= step` (atomically rewritten)."""
    if not path.exists():
        path.write_text("")
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("step", math.inf) <= step:
            kept.append(line + "\n")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(kept), encoding="utf-8")
    os.replace(tmp, path)


def _open_tensorboard(log_dir: Path):
    """A SummaryWriter, or None when TensorBoard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(log_dir))
