"""Every subcommand, run as a user runs it (a subprocess), on bad input: a folder where a file
goes (or a file where a folder goes), an unwritable output, a missing and a corrupt config,
checkpoint and recording. Each must exit 2 with one line on stderr naming the bad path, and no
traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evtransfer.events import Events
from evtransfer.io.dsec import write_events_h5
from tests.inference._packages import segmenter_package

SRC = Path(__file__).resolve().parents[2] / "src"

# (id, argv with {d} for the fixture folder, the path the error must name)
OUT_FILE = [  # commands writing one file: -o is a folder / under a regular file
    ("render", "render {d}/good.h5 -o {out}"),
    ("convert", "convert {d}/good.h5 -o {out}"),
    ("simulate-events", "simulate events {d}/good.png --motion random --frames 3 -o {out}"),
    ("simulate-spikes", "simulate spikes {d}/good.png --ticks 10 -o {out}"),
    ("world-show", "world show {d}/adir -o {out}"),
    ("evaluate", "evaluate --checkpoint {d}/good.safetensors --dataset world --root {d}/adir "
                 "-o {out}"),
    ("export", "export --checkpoint {d}/good.safetensors --to torchscript -o {out}"),
]
OUT_DIR = [  # commands writing a folder: --out is a regular file / under a regular file
    ("demo", "demo --out {out} --world {d}/adir"),
    ("world-build", "world build --preset tiny --out {out}"),
    ("train", "train source_only --world {d}/adir --out {out}"),
    ("bench", "bench transfer --world {d}/adir --seeds 1 --out {out}"),
    ("evdistill", "evdistill segment --config {d}/good.yaml --out {out}"),
    ("pretrain", "pretrain ecddp --world {d}/adir --out {out}"),
    ("finetune", "finetune ecddp --world {d}/adir --out {out}"),
    ("predict", "predict --checkpoint {d}/good.safetensors {d}/good.h5 -o {out}"),
]
CONFIG = [  # {cfg}: a missing or a corrupt YAML
    ("world-build", "world build --world {cfg} --out {d}/w"),
    ("train", "train source_only --config {cfg} --world {d}/adir --out {d}/t"),
    ("bench", "bench transfer --config {cfg} --world {d}/adir --out {d}/t"),
    ("evdistill", "evdistill recognize --config {cfg} --out {d}/t"),
    ("pretrain", "pretrain ecddp --config {cfg} --world {d}/adir --out {d}/t"),
    ("finetune", "finetune ecddp --config {cfg} --world {d}/adir --out {d}/t"),
    ("finetune-real", "finetune ecddp --real {cfg} --out {d}/t"),
]
CHECKPOINT = [  # {ckpt}: a missing or a corrupt model file
    ("predict", "predict --checkpoint {ckpt} {d}/good.h5 -o {d}/p"),
    ("evaluate", "evaluate --checkpoint {ckpt} --dataset world --root {d}/adir -o {d}/e.json"),
    ("export", "export --checkpoint {ckpt} --to onnx -o {d}/m.onnx"),
    ("train-init", "train source_only --init {ckpt} --world {d}/adir --out {d}/t"),
]
RECORDING = [  # {rec}: a missing or a corrupt recording / input
    ("info", "info {rec}"),
    ("render", "render {rec} -o {d}/r.png"),
    ("convert", "convert {rec} -o {d}/c.raw"),
    ("predict", "predict --checkpoint {d}/good.safetensors {rec} -o {d}/p"),
    ("pretrain", "pretrain ecddp --recording {rec} --out {d}/t"),
]
BAD_RECORDINGS = ["bad.h5", "bad.aedat4", "bad.raw", "bad.npy", "bad.npz", "damaged.h5"]


def _cases():
    for name, argv in OUT_FILE:
        yield f"{name}-out-folder", argv.replace("{out}", "{d}/adir"), "adir"
    for name, argv in OUT_DIR:
        yield f"{name}-out-file", argv.replace("{out}", "{d}/afile"), "afile"
    for name, argv in OUT_FILE + OUT_DIR:
        yield f"{name}-unwritable", argv.replace("{out}", "{d}/afile/out.x"), "afile"
    for name, argv in CONFIG:
        for cfg in ("none.yaml", "bad.yaml"):
            yield f"{name}-{cfg}", argv.replace("{cfg}", "{d}/" + cfg), cfg
    for name, argv in CHECKPOINT:
        for ckpt in ("none.safetensors", "bad.safetensors"):
            yield f"{name}-{ckpt}", argv.replace("{ckpt}", "{d}/" + ckpt), ckpt
    for name, argv in RECORDING:
        for rec in ["none.h5", *BAD_RECORDINGS] if name == "info" else ["none.h5", "bad.h5"]:
            yield f"{name}-{rec}", argv.replace("{rec}", "{d}/" + rec), rec
    yield "simulate-bad-image", "simulate spikes {d}/bad.png -o {d}/s.dat", "bad.png"
    yield "simulate-no-input", "simulate events {d}/none.png -o {d}/s.h5", "none.png"


CASES = list(_cases())


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bad_input")
    rng = np.random.default_rng(0)
    n = 400
    write_events_h5(d / "good.h5", Events(rng.integers(0, 64, n), rng.integers(0, 48, n),
                                          np.arange(n) * 250, rng.choice([-1, 1], n), 64, 48))
    Image.fromarray(rng.integers(0, 256, (16, 24), dtype=np.uint8)).save(d / "good.png")
    segmenter_package(d / "good.safetensors", window_us=20_000, sensor=(64, 48), size=(48, 64))
    (d / "good.yaml").write_text("{}\n")
    junk = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    for name in ["bad.safetensors", "bad.png", *BAD_RECORDINGS]:
        (d / name).write_bytes(junk)
    (d / "bad.npy").write_bytes(b"\x93NUMPY\x01\x00" + junk)  # a damaged header
    (d / "bad.npz").write_bytes(b"PK\x03\x04" + junk)  # a damaged zip
    (d / "damaged.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + junk)  # HDF5 magic, damaged header
    (d / "bad.yaml").write_text("stages: [1, 2\n")
    (d / "afile").write_text("a regular file\n")
    (d / "adir").mkdir()
    return d


@pytest.mark.parametrize(("argv", "names"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(folder, argv, names):
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "evtransfer.cli", *argv.format(d=folder).split()]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    err = proc.stderr
    assert (proc.returncode, err.count("\n")) == (2, 1), err
    assert "Traceback" not in err and err.startswith("evtransfer ")
    assert names in err, err
