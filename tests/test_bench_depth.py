import json
import math

import numpy as np
import pytest
import torch

from evtransfer import load_model
from evtransfer.bench import (
    Run,
    TransferBenchConfig,
    markdown_depth,
    method_config,
    run_depth_transfer,
    run_transfer,
    score_depth,
    summarize_depth,
)
from evtransfer.cli import main
from evtransfer.config import load_config
from evtransfer.data._common import TensorDict
from evtransfer.data.depth_transfer import DepthProtocol, load_depth_transfer_data
from evtransfer.data.firewall import EVALUATION
from evtransfer.data.world import WorldTarget, WorldTargetConfig
from evtransfer.methods.bicross import BicrossConfig


def test_score_depth_per_image_with_the_protocol():
    gt = torch.tensor([[[10.0, 20.0], [0.0, 100.0]], [[5.0, 5.0], [5.0, 5.0]]])
    pred = torch.tensor([[[11.0, 22.0], [3.0, 3.0]], [[5.0, 5.0], [5.0, 10.0]]])
    test = TensorDict(spikes=torch.arange(2), depth=gt)
    scores = score_depth(lambda i: pred[i], test, DepthProtocol())
    # image 1: two valid pixels (0 and 100 m are invalid), AbsRel 0.1 each; image 2: 0.25
    assert scores["abs_rel"] == pytest.approx((0.1 + 0.25) / 2)
    assert scores["d1"] == pytest.approx((1.0 + 0.75) / 2)
    assert scores["rmse"] == pytest.approx((math.sqrt((1 + 4) / 2) + math.sqrt(25 / 4)) / 2)
    assert scores["n_images"] == 2 and scores["depth_averaging"] == "per_image"


def test_score_depth_pastes_crops_into_full_size_ground_truth():
    full = torch.zeros(5, 7)
    full[3:5, 2:6] = torch.tensor([[4.0, 5, 6, 7], [8, 9, 10, 11]])
    items = [{"spikes": torch.tensor(0), "depth": full, "crop_box": torch.tensor([3, 2, 2, 4])},
             {"spikes": torch.tensor(1), "depth": full[:4], "crop_box": torch.tensor([2, 2, 2, 4])}]
    crops = [full[3:5, 2:6], full[2:4, 2:6]]

    def predict(i):  # the crop of each item, 10 % too far
        return 1.1 * crops[int(i)][None]

    scores = score_depth(predict, items, DepthProtocol(garg_crop=False))
    assert scores["abs_rel"] == pytest.approx(0.1) and scores["d1"] == 1.0
    assert scores["n_valid"] == 8 + 4


def _run(method, seed, abs_rel):
    scores = {k: abs_rel for k in ("abs_rel", "sq_rel", "rmse", "rmse_log")}
    scores.update(d1=1 - abs_rel, d2=1.0, d3=1.0)
    return Run(method, seed, scores, 7, 2.0, None)


def test_depth_summary_and_acceptance_ratios():
    runs = [_run("pre_src", 0, 0.4), _run("pre_src", 1, 0.6), _run("bicross", 0, 0.3),
            _run("bicross", 1, 0.3), _run("spike_supervised", 0, 0.25),
            _run("spike_supervised", 1, 0.25)]
    summary = summarize_depth(runs)
    pre = summary["methods"]["pre_src"]
    assert pre["abs_rel_mean"] == pytest.approx(0.5)
    assert pre["abs_rel_std"] == pytest.approx(math.sqrt(0.02))
    assert pre["abs_rel"] == [0.4, 0.6] and pre["seeds"] == [0, 1]
    assert summary["ratios"]["bicross_over_pre_src"] == pytest.approx(0.6)
    assert summary["ratios"]["bicross_over_spike_supervised"] == pytest.approx(1.2)
    table = markdown_depth(summary)
    assert "| bicross | 0.300 ± 0.000 |" in table and "bicross_over_pre_src: 0.600" in table


def test_depth_methods_read_the_bicross_section_only():
    cfg = TransferBenchConfig()
    assert isinstance(method_config(cfg, "pre_src"), BicrossConfig)
    assert method_config(cfg, "bicross_no_sca") is cfg.bicross


def test_depth_table_and_cli_on_a_built_world(tiny_world, tmp_path, capsys):
    steps = ["--set", "depth.frames=8", "--set", "bicross.rgb.steps=2",
             "--set", "bicross.cfkd.steps=2", "--set", "bicross.scts.steps=4",
             "--set", "bicross.supervised.steps=2", "--set", "bicross.cfkd.batch=2",
             "--set", "bicross.scts.batch=2"]
    out = tmp_path / "bench"
    assert main(["bench", "transfer", "--task", "depth", "--world", str(tiny_world), "--seeds",
                 "1", "--out", str(out), *steps]) == 0
    printed = capsys.readouterr().out
    assert "| bicross |" in printed and "bicross_over_pre_src" in printed
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["methods"]) == {"pre_src", "bicross", "spike_supervised"}
    for row in saved["methods"].values():
        assert {"abs_rel_mean", "abs_rel_std", "rmse_mean", "d1_mean", "d1_std"} <= row.keys()
    # the student runs alone at inference: its model package predicts what the method does
    cfg = load_config(TransferBenchConfig, None, steps[1::2])
    _, runs = run_depth_transfer(tiny_world, ["bicross"], [0], out, cfg, progress=False)
    clip = WorldTarget(tiny_world, WorldTargetConfig(split="test", with_spikes=True))[0]["spikes"]
    packed = torch.from_numpy(clip.frames(len(clip) - 8, len(clip)).pack().data.copy())
    model = load_model(out / "models" / "bicross-seed0.safetensors")
    torch.testing.assert_close(model(clip), runs[0].result.predict(packed[None]),
                               rtol=1e-4, atol=1e-4)
    # scored on the withheld test depth, per image with predictions clamped (BiCross/KITTI)
    test = load_depth_transfer_data(tiny_world, cfg.depth, progress=False).test_labeled
    test = test.read(EVALUATION).tensors
    pred = runs[0].result.predict(test["spikes"]).double().clamp(1e-3, 80).numpy()
    abs_rel, d1 = [], []
    for p, g in zip(pred, test["depth"].double().numpy(), strict=True):
        v = (g > 1e-3) & (g < 80)
        abs_rel.append(np.mean(np.abs(p[v] - g[v]) / g[v]))
        d1.append(np.mean(np.maximum(p[v] / g[v], g[v] / p[v]) < 1.25))
    assert runs[0].scores["abs_rel"] == pytest.approx(np.mean(abs_rel), rel=1e-5)
    assert runs[0].scores["d1"] == pytest.approx(np.mean(d1), rel=1e-5)
    assert main(["train", "bicross", "--world", str(tiny_world), "--out", str(out), *steps]) == 0
    assert "bicross: AbsRel" in capsys.readouterr().out
    with pytest.raises(ValueError, match="depth method"):
        run_transfer(tiny_world, ["bicross"], [0], tmp_path / "seg", TransferBenchConfig(),
                     progress=False)


def test_a_real_scenario_runs_without_a_world(bicross_real_roots, tmp_path, capsys):
    vkitti, kitti = bicross_real_roots
    real = ["--set", "depth_real.source=vkitti2", "--set", f"depth_real.source_root={vkitti}",
            "--set", f"depth_real.target_root={kitti}", "--set", "depth_real.frames=4",
            "--set", "depth_real.crop=[4, 10]", "--set", "bicross.input_size=[32, 32]"]
    steps = ["--set", "bicross.rgb.steps=1", "--set", "bicross.cfkd.steps=1",
             "--set", "bicross.supervised.steps=1", "--set", "bicross.cfkd.batch=2",
             "--set", "bicross.rgb.batch=2", "--set", "bicross.supervised.batch=2"]
    out = tmp_path / "real"
    assert main(["bench", "transfer", "--task", "depth", "--world", "no-such-world",
                 "--methods", "pre_src,spike_supervised", "--seeds", "1", "--out", str(out),
                 *real, *steps]) == 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["real"]["source"] == "vkitti2" and "world" not in saved
    assert saved["methods"]["pre_src"]["abs_rel_mean"] > 0
    assert not (out / "world-no-such-world").exists()
