import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from evtransfer.bench import Run, gap_closed, markdown, run_transfer, score_segmentation, summarize
from evtransfer.data.firewall import EVALUATION
from evtransfer.data.transfer import load_real_transfer_data, load_transfer_data
from evtransfer.demo import demo_config
from tests.refs import import_ref, ref_attr


def _ess_reference(pred: torch.Tensor, label: torch.Tensor, num_classes: int) -> tuple:
    """(mIoU, acc) of uzh-rpg/ess evaluation/metrics.py's MetricsSemseg."""
    metrics = ref_attr(import_ref("uzh-rpg+ess", "evaluation.metrics"), "MetricsSemseg")
    m = metrics(num_classes, 255, [str(c) for c in range(num_classes)])
    m.update_batch(pred, label.long())
    out = m.get_metrics_summary()
    return float(out["mean_iou"]), float(out["acc"])


def _check_scores(run: Run, x: torch.Tensor, label: torch.Tensor, num_classes: int) -> None:
    """The benchmark scored `run` on these test windows and labels, as ESS's code does."""
    miou, acc = _ess_reference(run.result.predict(x).argmax(1), label, num_classes)
    assert run.scores["miou"] == pytest.approx(miou, abs=1e-9)
    assert run.scores["acc"] == pytest.approx(acc, abs=1e-9)


def test_score_segmentation_counts_an_absent_class_as_zero_as_ess():
    """Class 3 is absent from labels and predictions: ESS's mean counts it as IoU 0."""
    label = torch.tensor([[[0, 0], [1, 255]], [[2, 2], [1, 0]], [[0, 1], [2, 255]]])
    pred = torch.tensor([[[0, 1], [1, 2]], [[2, 0], [1, 0]], [[0, 1], [1, 1]]])
    x = pred[:, None].float()

    def predict(batch):
        return torch.nn.functional.one_hot(batch[:, 0].long(), 4).permute(0, 3, 1, 2).float()

    scores = score_segmentation(predict, x, label, num_classes=4, batch=2)
    # confusion rows (label) [3,1,0,0] [0,3,0,0] [1,1,1,0] [0,0,0,0]: IoU 60, 60, 33.3, 0
    assert scores["miou"] == pytest.approx((60 + 60 + 100 / 3 + 0) / 4)
    assert scores["acc"] == pytest.approx(70.0)
    assert (scores["miou"], scores["acc"]) == pytest.approx(_ess_reference(pred, label, 4))


def _run(method, seed, miou):
    return Run(method, seed, {"miou": miou, "acc": 50.0 + miou, "iou": [miou, miou]}, 10, 1.0,
               None)


def test_summary_statistics_and_gap():
    runs = [_run("source_only", 0, 20.0), _run("source_only", 1, 22.0),
            _run("oracle", 0, 60.0), _run("oracle", 1, 60.0),
            _run("cmess", 0, 40.0), _run("cmess", 1, 42.0)]
    summary = summarize(runs)
    so = summary["methods"]["source_only"]
    assert so["miou_mean"] == 21.0 and so["miou_std"] == pytest.approx(math.sqrt(2))
    assert so["seeds"] == [0, 1]
    assert gap_closed(summary) == pytest.approx((41 - 21) / (60 - 21))
    table = markdown(summary)
    assert "| cmess | 41.00 ± 1.41 |" in table


def test_run_transfer_writes_results(tiny_world, tmp_path):
    cfg = demo_config(steps=2)
    summary, runs = run_transfer(tiny_world, ["source_only", "oracle"], [0], tmp_path, cfg,
                                 progress=False)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["methods"]) == {"source_only", "oracle"}
    for r in saved["methods"].values():
        assert {"miou_mean", "miou_std", "acc_mean", "train_minutes", "params"} <= r.keys()
    data = load_transfer_data(tiny_world, cfg.data, progress=False)
    for run in runs:  # scored on the test split with its labels, as ESS's code scores
        _check_scores(run, data.test_x, data.test_label.read(EVALUATION), data.num_classes)
        assert saved["methods"][run.method]["miou_mean"] == run.scores["miou"]
    assert (tmp_path / "results.md").read_text().startswith("| method |")
    with pytest.raises(ValueError, match="unknown method"):
        run_transfer(tiny_world, ["nope"], [0], tmp_path, cfg, progress=False)
    # the stage folders are keyed by training settings: other data must not reuse them
    other = replace(cfg, data=replace(cfg.data, window_us=cfg.data.window_us // 2))
    with pytest.raises(ValueError, match="other data settings"):
        run_transfer(tiny_world, ["source_only"], [0], tmp_path, other, progress=False)


def _real_config(tmp_path, **dsec):
    """Two-step budgets on the Cityscapes -> DSEC-Semantic fixtures (`dsec`: overrides of the
    target's DsecSemanticConfig)."""
    from tests.data.test_transfer_real import dsec_real_roots, dsec_scenario

    real, data = dsec_scenario(*dsec_real_roots(tmp_path))
    cfg = replace(demo_config(steps=2), real=replace(real, dsec=replace(real.dsec, **dsec)),
                  data=data)
    cfg.ess.init = replace(cfg.ess.init, steps=2, batch=2)
    cfg.ess.uda = replace(cfg.ess.uda, steps=2, batch=2)
    return cfg


def test_real_scenario_runs_every_method_from_the_config_sections(tmp_path):
    """Cityscapes -> DSEC-Semantic fixtures in the official layouts, through `run_transfer`
    with no world: the same code path as `configs/cmess/dsec.yaml` on the real data."""
    from evtransfer.engine.package import read_package

    cfg = _real_config(tmp_path)
    methods = ["source_only", "recon_source", "cmess", "oracle", "ess"]
    summary, runs = run_transfer(None, methods, [0], tmp_path / "out", cfg, progress=False)
    assert list(summary["methods"]) == methods
    assert summary["real"]["target"] == "dsec_semantic"
    data = load_real_transfer_data(cfg.real, cfg.data, tmp_path / "out" / "cache")
    for run in runs:
        _check_scores(run, data.test_x, data.test_label.read(EVALUATION), data.num_classes)
    inputs = read_package(runs[2].package)[0].input
    assert inputs.sensor == (640, 480) and inputs.crop_bottom == 40 and inputs.size == (44, 64)
    assert inputs.num_windows == 1 and inputs.window_events == 400
    assert len(list((tmp_path / "out" / "cache").glob("real_*"))) == 1


@pytest.mark.parametrize("path", sorted(Path("configs").glob("[ce]*ss/*.yaml")),
                         ids=lambda p: str(p))
def test_cmess_and_ess_configs_load(path):
    from evtransfer.bench import TransferBenchConfig
    from evtransfer.config import load_config

    cfg = load_config(TransferBenchConfig, path)
    if path.stem in ("dsec", "ddd17"):
        assert cfg.real.target == {"dsec": "dsec_semantic", "ddd17": "ddd17"}[path.stem]
        assert cfg.real.source.size() == ((440, 640) if path.stem == "dsec" else (200, 352))
        assert cfg.stages.recon_base_channels == 32


def test_ess_runs_recurrently_over_the_real_windows(tmp_path):
    """ESS's real configs stack 20 windows (here 2): the target inputs have 2 x 5 channels
    while the synthetic windows that train the event encoder have 5."""
    cfg = _real_config(tmp_path, num_windows=2, events_per_window=200)
    summary, runs = run_transfer(None, ["ess"], [0], tmp_path / "out", cfg, progress=False)
    data = load_real_transfer_data(cfg.real, cfg.data, tmp_path / "out" / "cache")
    _check_scores(runs[0], data.test_x, data.test_label.read(EVALUATION), data.num_classes)
    assert runs[0].result.predict(torch.zeros(1, 10, 44, 64)).shape == (1, 11, 44, 64)
