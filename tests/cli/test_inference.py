"""`predict`, `evaluate` and `export` through a subprocess: issue 21's problems 3-6 and 8."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evtransfer.events import Events
from evtransfer.io.dsec import write_events_h5
from tests.cli._run import one_line_error, run_cli
from tests.inference._packages import segmenter_package
from tests.io.evio_encoders import encode_evt2, header


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    return segmenter_package(d / "m.safetensors", window_us=20_000, sensor=(64, 48),
                             size=(48, 64))


def _recording(path, duration_us: int, n: int = 2000):
    rng = np.random.default_rng(0)
    t = np.linspace(0, duration_us - 1, n).astype(np.int64)
    ev = Events(rng.integers(0, 64, n), rng.integers(0, 48, n), t, rng.choice([-1, 1], n),
                64, 48)
    return write_events_h5(path, ev)


def test_a_second_predict_replaces_the_first(model, tmp_path):
    """Problem 3: a rerun into the same -o left the first run's PNGs beside the second's."""
    rec = _recording(tmp_path / "r.h5", 100_000)
    out = tmp_path / "p"
    assert run_cli("predict", "--checkpoint", model, rec, "-o", out, "--every", "10ms",
                   "--overlays").returncode == 0
    assert len(list((out / "labels").glob("*.png"))) == 9
    assert run_cli("predict", "--checkpoint", model, rec, "-o", out, "--every", "40ms"
                   ).returncode == 0
    assert len(list((out / "labels").glob("*.png"))) == 3  # ends at 20, 60, 100 ms
    assert not list((out / "overlay").glob("*.png"))
    assert (out / "legend.png").stat().st_size > 500


def test_partial_predicts_a_recording_shorter_than_a_window(model, tmp_path):
    """Problem 4: `--partial` on a recording shorter than one window asked for --partial."""
    rec = _recording(tmp_path / "short.h5", 8_000, n=300)
    err = one_line_error(run_cli("predict", "--checkpoint", model, rec, "-o", tmp_path / "a"))
    assert "--partial" in err
    proc = run_cli("predict", "--checkpoint", model, rec, "-o", tmp_path / "b", "--partial")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "b" / "windows.json").read_text())["predicted"] == 1


def test_one_bad_file_does_not_abort_a_folder(model, tmp_path):
    """Problem 5: the good recordings of a folder are predicted and kept; exit 2 names the
    bad one."""
    folder = tmp_path / "recs"
    folder.mkdir()
    _recording(folder / "a.h5", 60_000)
    t = [0, 30_000, 10_000]  # decreasing timestamps: detected as EVT 2.0, fails reading
    (folder / "b.raw").write_bytes(header("evt 2.0", "geometry 64x48", "end")
                                   + encode_evt2([1, 2, 3], [1, 2, 3], t, [1, 1, 1]))
    _recording(folder / "c.h5", 60_000)
    proc = run_cli("predict", "--checkpoint", model, folder, "-o", tmp_path / "p")
    err = one_line_error(proc)
    assert "1 of 3 recordings failed" in err and "b.raw" in err
    for name in ("a_h5", "c_h5"):
        assert json.loads((tmp_path / "p" / name / "windows.json").read_text())["predicted"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--limit", "-1"], "--limit: must be >= 1, got -1"),
    (["--limit", "0"], "--limit: must be >= 1, got 0"),
    (["--batch", "0"], "--batch: must be >= 1, got 0"),
])
def test_counts_must_be_positive(model, tmp_path, argv, message):
    """Problem 8: `predict --limit -1` said "too short"; `evaluate --limit 0` evaluated all."""
    for command in (["predict", "--checkpoint", str(model), str(tmp_path), "-o",
                     str(tmp_path / "p")],
                    ["evaluate", "--checkpoint", str(model), "--dataset", "world", "--root",
                     str(tmp_path)]):
        proc = run_cli(*command, *argv)
        assert proc.returncode == 2 and message in proc.stderr


def test_export_with_a_too_old_opset_is_one_line(model, tmp_path):
    """Problem 6: `export --opset 5` was a traceback."""
    err = one_line_error(run_cli("export", "--checkpoint", model, "--to", "onnx", "-o",
                                 tmp_path / "m.onnx", "--opset", "9"))
    assert "--opset 9" in err and "not supported" in err
