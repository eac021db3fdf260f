import json

import numpy as np

from evtransfer.cli import main
from evtransfer.engine.checkpoint import save_checkpoint
from evtransfer.events import Events
from evtransfer.io.dsec import write_events_h5
from evtransfer.models import create_model
from tests.cli._run import run_cli

from ._packages import segmenter_package


def test_train_output_folder_drives_evaluate(tiny_run, tiny_world, tmp_path, capsys):
    out, _ = tiny_run
    bench = json.loads((out / "results.json").read_text())["methods"]["source_only"]
    # the folder holds one package (recon_source wrote none)
    rc = main(["evaluate", "--checkpoint", str(out), "--dataset", "world", "--root",
               str(tiny_world), "-o", str(tmp_path / "e.json")])
    assert rc == 0
    saved = json.loads((tmp_path / "e.json").read_text())
    assert abs(saved["miou"] - bench["miou_mean"]) < 0.05
    assert "mIoU" in capsys.readouterr().out


def test_predict_and_export_commands(tmp_path, capsys):
    package = segmenter_package(tmp_path / "m.safetensors", window_us=20_000, sensor=(64, 48),
                                size=(48, 64))
    rng = np.random.default_rng(0)
    n = 4000
    ev = Events(rng.integers(0, 64, n), rng.integers(0, 48, n), np.arange(n) * 25,
                rng.choice([-1, 1], n), 64, 48)
    rec = write_events_h5(tmp_path / "r.h5", ev)
    rc = main(["predict", "--checkpoint", str(package), str(rec), "-o", str(tmp_path / "p"),
               "--every", "10ms", "--batch", "2"])
    assert rc == 0
    summary = json.loads((tmp_path / "p" / "windows.json").read_text())
    assert summary["predicted"] == 8  # events end at 99 975 µs: windows end at 20, ..., 90 ms
    assert "8 of 8 windows predicted" in capsys.readouterr().out
    rc = main(["export", "--checkpoint", str(package), "--to", "torchscript", "-o",
               str(tmp_path / "m.pt")])
    assert rc == 0 and (tmp_path / "m.pt").is_file()
    assert "input  [1, 5, 48, 64] float32 (N dynamic)" in capsys.readouterr().out


def test_clear_errors(tmp_path, capsys):
    net = create_model("segformer_b0", in_chans=5, num_classes=11)
    ckpt = save_checkpoint(tmp_path / "stage" / "checkpoints" / "last", {"model": net}, {})
    rc = main(["predict", "--checkpoint", str(ckpt / "model.safetensors"), str(tmp_path),
               "-o", str(tmp_path / "o")])
    assert rc == 2 and "training checkpoint" in capsys.readouterr().err
    package = segmenter_package(tmp_path / "m.safetensors", window_us=20_000, sensor=(64, 48),
                                size=(48, 64))
    rc = main(["predict", "--checkpoint", str(package), str(tmp_path / "none.h5"), "-o",
               str(tmp_path / "o"), "--every", "soon"])
    assert rc == 2 and "--every 'soon'" in capsys.readouterr().err


def test_evaluate_writes_beside_the_checkpoint(tiny_run, tiny_world, tmp_path):
    """Problem 8: `evaluate` wrote evaluation-<dataset>.json into the current folder."""
    out, _ = tiny_run
    proc = run_cli("evaluate", "--checkpoint", out, "--dataset", "world", "--root", tiny_world,
                   "--limit", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "evaluation-world.json").read_text())
    assert result["limit"] == 2 and not list(tmp_path.iterdir())
