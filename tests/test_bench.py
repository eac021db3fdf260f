import json
import math

import pytest

from evtransfer.bench import Run, gap_closed, markdown, run_transfer, summarize
from evtransfer.demo import demo_config


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
        assert 0 <= r["miou_mean"] <= 100
    assert (tmp_path / "results.md").read_text().startswith("| method |")
    with pytest.raises(ValueError, match="unknown method"):
        run_transfer(tiny_world, ["nope"], [0], tmp_path, cfg, progress=False)
