"""Runs that record themselves (config.yaml, meta.json), `--print-config`, `--steps/--quick`,
`--overwrite`, and unknown keys that suggest the valid ones."""

from __future__ import annotations

import json

import yaml

from evtransfer.cli import main
from evtransfer.config import git_sha
from tests.cli._run import one_line_error, run_cli


def test_train_records_its_run_and_refuses_another_config(tiny_world, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "source_only", "--world", str(tiny_world), "--out", str(out), "--steps", "2"]
    assert main(args) == 0
    assert "| stage | steps |" in capsys.readouterr().err  # the table of the stages trained
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["stages"]["source"]["steps"] == 2 and cfg["baselines"]["oracle"]["steps"] == 2
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["version"], meta["git_sha"], meta["device"]) == ("0.1.0", git_sha(), "cpu")
    assert meta["torch"] and meta["command"] == "train" and "argv" in meta
    assert main(args) == 0  # the same config: resumes (every stage is already done)
    capsys.readouterr()
    assert main([*args, "--set", "stages.source.lr=0.01"]) == 2
    err = capsys.readouterr().err
    assert "holds a run with another config (stages.source.lr differ)" in err
    assert main([*args, "--set", "stages.source.lr=0.01", "--overwrite"]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["stages"]["source"]["lr"] == 0.01


def test_print_config_and_quick():
    proc = run_cli("train", "cmess", "--out", "unused", "--quick", "--print-config")
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["cmess"]["cml"]["steps"] == 150 == cfg["stages"]["source"]["steps"]
    assert 0 < cfg["stages"]["source"]["warmup_steps"] < 150
    proc = run_cli("world", "build", "--preset", "tiny", "--out", "unused", "--print-config")
    assert yaml.safe_load(proc.stdout)["width"] == 64


def test_an_unknown_key_lists_the_nearest():
    err = one_line_error(run_cli("train", "cmess", "--out", "unused", "--print-config",
                                 "--set", "cmess.fuse_lamda=0.5"))
    assert "did you mean 'cmess.fuse_lambda'?" in err and "valid keys under 'cmess'" in err
