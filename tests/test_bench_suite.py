import json
from dataclasses import replace

import pytest
import torch
import yaml

from evtransfer.bench_suite import (
    check_provenance,
    mean_table,
    run_transfer_suite,
    suite_markdown,
    world_table,
)
from evtransfer.cli import main
from evtransfer.config import to_dict
from evtransfer.data.transfer import TransferData
from evtransfer.demo import demo_config
from evtransfer.engine.fit import stage_dir
from evtransfer.methods._stages import StageConfig, source_stage_dir
from evtransfer.world.suites import resolve_suite

METHODS = ["source_only", "recon_source", "oracle"]
SOURCE_STAGES = ("M_S", "M_T", "recon")  # source_only: M_S, M_T'; recon_source: M_S, recon


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory, tiny_world):
    """Two tiny worlds of one source (the tiny preset's folder and report-sensor), two seeds,
    two-step budgets: `run_transfer_suite` once for the module; (out, result)."""
    root = tmp_path_factory.mktemp("bench_suite")
    spec = root / "two.yaml"
    spec.write_text(yaml.safe_dump({"role": "dev", "size": "tiny",
                                    "worlds": [str(tiny_world), "report-sensor"]}))
    result = run_transfer_suite(str(spec), METHODS, [0, 1], root / "out", demo_config(steps=2),
                                worlds_dir=root / "worlds", progress=False)
    return root / "out", result


def test_suite_trains_the_source_stages_once_per_seed(suite_run):
    out, _ = suite_run
    for stage in SOURCE_STAGES:
        assert len(list((out / "source").glob(f"{stage}-*"))) == 2, stage  # seeds 0 and 1
        assert not list((out / "runs").glob(f"*/work/seed_*/{stage}-*")), stage
    for world in ("small", "report-sensor"):  # the target-side stage stays per world
        assert len(list((out / "runs" / world / "work").glob("seed_*/oracle-*"))) == 2


def test_suite_tables_per_world_and_mean(suite_run):
    out, result = suite_run
    saved = json.loads((out / "results.json").read_text())
    assert list(saved["worlds"]) == ["small", "report-sensor"] and saved["role"] == "dev"
    for world in saved["worlds"].values():
        t = world["table"]
        so, oracle = t["source_only"]["miou_mean"], t["oracle"]["miou_mean"]
        assert t["source_only"]["gap_closed"] == 0 and t["oracle"]["gap_closed"] == 1
        assert t["recon_source"]["gap_closed"] == pytest.approx(
            (t["recon_source"]["miou_mean"] - so) / (oracle - so))
        assert len(t["oracle"]["miou"]) == 2
    # both worlds' source-only scores come from the same M_S / M_T' but other targets
    a, b = (w["table"]["source_only"]["miou"] for w in saved["worlds"].values())
    assert a != b
    recon = [w["table"]["recon_source"]["miou_mean"] for w in saved["worlds"].values()]
    assert saved["mean"]["recon_source"]["miou_mean"] == pytest.approx(sum(recon) / 2)
    assert saved["defaults_chosen_on"] == {m: [] for m in METHODS}
    md = (out / "results.md").read_text()
    assert "## small" in md and "## report-sensor" in md and "## mean over 2 worlds" in md
    assert "dev worlds: for choosing defaults" in md
    assert (out / "config.yaml").is_file() and (out / "runs/small/results.json").is_file()


def test_command_line_reruns_the_suite_from_its_stages(suite_run, capsys):
    """`evtransfer bench transfer --world LIST.yaml` into the same folder: every stage is
    reused (no new stage folder), the tables are the same."""
    out, result = suite_run
    config = out.parent / "config.yaml"
    config.write_text(yaml.safe_dump(to_dict(demo_config(steps=2))))
    folders = sorted(p.name for p in out.rglob("*-*") if p.is_dir())
    assert main(["bench", "transfer", "--world", str(out.parent / "two.yaml"), "--methods",
                 ",".join(METHODS), "--seeds", "2", "--out", str(out), "--config", str(config),
                 "--worlds-dir", str(out.parent / "worlds")]) == 0
    assert sorted(p.name for p in out.rglob("*-*") if p.is_dir()) == folders
    assert json.loads((out / "results.json").read_text())["mean"] == result["mean"]
    assert "## mean over 2 worlds" in capsys.readouterr().out


def test_mean_table_by_hand():
    def row(miou, gap):
        return {"miou_mean": miou, "miou_std": 0.0, "miou": [miou], "acc_mean": 50.0,
                "gap_closed": gap}

    tables = {"w1": {"source_only": row(20.0, 0.0), "cmess": row(25.0, 0.25),
                     "oracle": row(40.0, 1.0)},
              "w2": {"source_only": row(30.0, 0.0), "cmess": row(28.0, -0.2),
                     "oracle": row(40.0, 1.0)}}
    mean = mean_table(tables)
    # means: source_only 25, cmess 26.5, oracle 40: (26.5 - 25) / 15 = 0.1
    assert mean["cmess"]["miou_mean"] == 26.5
    assert mean["cmess"]["gap_closed"] == pytest.approx(0.1)
    assert mean["cmess"]["gap_closed_mean"] == pytest.approx(0.025)
    assert mean["cmess"]["at_or_above_source_only"] == "1/2"
    md = suite_markdown({"suite": "s", "role": "report", "size": "tiny", "seeds": [0],
                         "worlds": {w: {"path": w, "table": t} for w, t in tables.items()},
                         "mean": mean, "defaults_chosen_on": {"cmess": ["small"]}})
    assert "| cmess | 26.50 | 10 % | 2 % | 1/2 |" in md
    assert "| cmess | 28.00 ± 0.00 | 28.00 | 50.00 | -20 % |" in md
    assert "Defaults chosen on: cmess: small" in md


def test_world_table_without_an_oracle_has_no_gap():
    summary = {"methods": {"source_only": {"miou_mean": 20.0, "miou_std": 0.0, "miou": [20.0],
                                           "acc_mean": 60.0}}}
    assert world_table(summary)["source_only"]["gap_closed"] is None


def test_report_suite_refuses_a_world_that_chose_a_default():
    cfg = demo_config(steps=2)
    assert cfg.cmess.defaults_chosen_on == ["small", "dev-rain"]  # docs/methods/cmess.md
    assert cfg.evdistill.defaults_chosen_on == ["small"]  # docs/methods/evdistill.md
    report = resolve_suite("suite:report:tiny")
    check_provenance(report, ["source_only", "cmess", "evdistill"], cfg)  # none chose there
    cfg.cmess.defaults_chosen_on = ["small", "report-light"]
    with pytest.raises(ValueError, match="cmess: its config's defaults_chosen_on names "
                                         "report-light"):
        check_provenance(report, ["source_only", "cmess"], cfg)
    check_provenance(report, ["source_only", "evdistill"], cfg)  # cmess not run: fine
    check_provenance(resolve_suite("suite:dev:tiny"), ["cmess"], demo_config(steps=2))


def test_refusal_comes_before_any_build(tmp_path):
    cfg = demo_config(steps=2)
    cfg.evdistill.defaults_chosen_on = ["report-motion"]
    with pytest.raises(ValueError, match="evdistill: .*report-motion"):
        run_transfer_suite("suite:report:tiny", ["evdistill"], [0], tmp_path, cfg,
                           progress=False)
    assert not (tmp_path / "worlds").exists()
    with pytest.raises(ValueError, match="not segmentation methods: bicross, nope; available: "):
        run_transfer_suite("suite:dev:tiny", ["bicross", "nope"], [0], tmp_path, cfg,
                           progress=False)
    real = replace(cfg, real=replace(cfg.real, target="ddd17"))
    with pytest.raises(ValueError, match="real.target is 'ddd17'"):
        run_transfer_suite("suite:dev:tiny", ["source_only"], [0], tmp_path, real,
                           progress=False)


def _data(source_label_value: int) -> TransferData:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 4, 4, generator=g)
    label = torch.full((2, 4, 4), source_label_value)
    return TransferData(2, x, label, x[:, :2], label, x[:, 0], x, x, label, x)


def test_source_stage_folders_follow_the_source_data(tmp_path):
    own = StageConfig()
    shared = replace(own, source_cache=str(tmp_path / "source"))
    key = ("segformer_b0", True, 0)
    # without a source cache: the stage key of single-world runs, unchanged
    assert source_stage_dir(tmp_path, "M_S", _data(0), own, *key) == stage_dir(
        tmp_path, "M_S", *key)
    same = source_stage_dir(tmp_path, "M_S", _data(0), shared, *key)
    assert same.parent == tmp_path / "source"
    assert source_stage_dir(tmp_path / "other", "M_S", _data(0), shared, *key) == same
    assert source_stage_dir(tmp_path, "M_S", _data(1), shared, *key) != same
    # where the stages are stored is not part of any stage key (TPL and CML hash `stages`)
    assert stage_dir(tmp_path, "TPL", own) == stage_dir(tmp_path, "TPL", shared)
