import json

import pytest

from evtransfer import __version__
from evtransfer.cli import main


def test_help_and_version(capsys):
    assert main([]) == 0
    assert "COMMAND" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--version"])
    assert __version__ in capsys.readouterr().out


def test_world_show_and_a_clean_error(tiny_world, tmp_path, capsys):
    out = tmp_path / "montage.png"
    assert main(["world", "show", str(tiny_world), "-o", str(out), "--samples", "2"]) == 0
    assert out.stat().st_size > 1000
    assert main(["world", "show", str(tmp_path), "-o", str(out)]) == 2
    assert "not a built world" in capsys.readouterr().err


def test_train_and_bench_on_a_built_world(tiny_world, tmp_path, capsys):
    steps = ["--set", "stages.source.steps=2", "--set", "stages.synthetic.steps=2",
             "--set", "baselines.oracle.steps=2"]
    assert main(["train", "source_only", "--world", str(tiny_world), "--out",
                 str(tmp_path / "train"), *steps]) == 0
    assert "source_only: mIoU" in capsys.readouterr().out
    assert main(["bench", "transfer", "--world", str(tiny_world), "--methods",
                 "source_only,oracle", "--seeds", "1", "--out", str(tmp_path / "bench"),
                 *steps]) == 0
    assert "| oracle |" in capsys.readouterr().out
    assert main(["train", "oracle", "--world", str(tiny_world), "--out", str(tmp_path / "x"),
                 "--set", "no.such=1"]) == 2
    assert "no" in capsys.readouterr().err


def test_demo_writes_its_report(tiny_world, tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--world", str(tiny_world), "--preset", "tiny",
                 "--steps", "2"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["methods"]) == {"source_only", "recon_source", "cmess", "oracle"}
    assert all({"miou", "acc", "minutes"} <= r.keys() for r in report["methods"].values())
    assert (out / "report.png").stat().st_size > 1000
