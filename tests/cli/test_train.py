"""`evtransfer train`, `bench transfer` and `demo` on the tiny world."""

import json

from evtransfer.cli import main
from tests.cli._run import one_line_error, run_cli


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


def test_train_cmess_with_the_dsec_config_needs_no_world(tmp_path, capsys):
    """configs/cmess/dsec.yaml unchanged but for the data roots (and sizes / budgets that fit
    a test), on Cityscapes + DSEC-Semantic fixtures in the official layouts."""
    from tests.data.test_transfer_real import SEQ, dsec_real_roots

    cs, dsec = dsec_real_roots(tmp_path)
    sets = [f"real.target_root={dsec}", f"real.source.root={cs}", "real.source.resize_to=[44,64]",
            "real.dsec.resize_to=[44,64]", "real.dsec.events_per_window=400",
            f"real.dsec.sequences=[{SEQ}]", "data.synthetic.frames=5",
            "stages.recon_base_channels=8"]
    sets += [f"{s}.{k}={v}" for s in ("stages.source", "stages.synthetic", "stages.recon",
                                      "cmess.cml") for k, v in (("steps", 2), ("warmup_steps", 1))]
    out = tmp_path / "run"
    args = ["train", "cmess", "--config", "configs/cmess/dsec.yaml", "--out", str(out)]
    assert main([*args, *(a for s in sets for a in ("--set", s))]) == 0
    assert "cmess: mIoU" in capsys.readouterr().out
    assert not list(out.glob("world*")) and list((out / "cache").glob("real_*"))


def test_a_stage_budget_must_be_positive(tiny_world, tmp_path):
    """Issue 21, problem 6: `--set stages.source.steps=0` was a ZeroDivisionError, `-5` failed
    late."""
    base = ("train", "source_only", "--world", tiny_world, "--out", tmp_path / "t")
    err = one_line_error(run_cli(*base, "--set", "stages.source.steps=-5"))
    assert "stages.source: steps must be >= 0, got -5" in err
    proc = run_cli(*base, "--set", "stages.source.steps=0")  # fails once the data is loaded
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "needs steps >= 1, got 0" in proc.stderr.splitlines()[-1]


def test_an_incompatible_init_is_an_error(tiny_world, tmp_path, capsys):
    """Problem 7: `--init` with a checkpoint that fits nothing loaded 0 tensors and trained."""
    import torch
    from safetensors.torch import save_file

    save_file({"unrelated.weight": torch.zeros(2, 2)}, str(tmp_path / "other.safetensors"))
    assert main(["train", "source_only", "--world", str(tiny_world), "--out",
                 str(tmp_path / "t"), "--init", str(tmp_path / "other.safetensors"),
                 "--set", "stages.source.steps=2"]) == 2
    assert "matches no tensor" in capsys.readouterr().err
    assert not list((tmp_path / "t").rglob("done.json"))


def test_bench_transfer_takes_a_world_suite(tmp_path):
    """Issue 22: `bench transfer --world suite:…`; an unknown suite lists the choices, and a
    method whose defaults were chosen on a report world is refused before anything is built."""
    err = one_line_error(run_cli("bench", "transfer", "--world", "suite:nope", "--out",
                                 tmp_path / "nope"))
    assert "suite:nope" in err and "dev" in err and "report" in err
    err = one_line_error(run_cli("bench", "transfer", "--world", "suite:report:tiny",
                                 "--methods", "source_only,cmess", "--out", tmp_path / "r",
                                 "--set",
                                 "cmess.defaults_chosen_on=[small,report-light]"))
    assert "cmess" in err and "report-light" in err
    assert not (tmp_path / "r" / "worlds").exists()
