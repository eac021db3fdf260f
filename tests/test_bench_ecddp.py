"""ECDDP's study and CLI on the tiny world (budgets of a few iterations)."""

import json

import pytest
import torch
from safetensors.torch import save_file

from evtransfer.bench_ecddp import markdown, summarize
from evtransfer.cli import main

TINY = [
    "ecddp.pretrain.backbone.embed_dim=8", "ecddp.pretrain.backbone.depths=[1,1,1,1]",
    "ecddp.pretrain.backbone.num_heads=[1,1,2,2]", "ecddp.pretrain.backbone.window=2",
    "ecddp.pretrain.heads.prototypes=32", "ecddp.pretrain.heads.hidden=16",
    "ecddp.pretrain.heads.bottleneck=8", "ecddp.pretrain.views.view=64",
    "ecddp.pretrain.views.global_size=64", "ecddp.pretrain.views.local_size=32",
    "ecddp.pretrain.views.local_number=2", "ecddp.pretrain.masks.count_base=7",
    "ecddp.pretrain.batch=4",
    "ecddp.pretrain.max_steps=2", "ecddp.pretrain.data.recipe.video_factor=2",
    "ecddp.pretrain.amp='off'",
    "ecddp.finetune.label_fraction=1.0", "ecddp.finetune.uper_channels=8",
    "ecddp.finetune.aux_channels=4", "ecddp.finetune.flow_dim=8", "ecddp.finetune.flow_hidden=8",
    "ecddp.finetune.flow_iters=2", "ecddp.finetune.tta_scales=[1.0]",
    *[f"ecddp.finetune.{t}.{k}={v}" for t in ("segmentation", "flow", "depth", "source_init")
      for k, v in (("steps", 2), ("batch", 2), ("warmup_steps", 1))],
]


def _sets(extra=()):
    return [a for s in (*TINY, *extra) for a in ("--set", s)]


def test_summarize_compares_ecddp_with_each_rival():
    rows = [{"task": "segmentation", "init": i, "seed": s, "scores": {"miou": v}}
            for i, vals in (("random", (10, 14)), ("ecddp", (20, 22)), ("source", (30, 26)))
            for s, v in enumerate(vals)]
    rows += [{"task": "flow", "init": i, "seed": 0, "scores": {"epe": v}}
             for i, v in (("random", 2.0), ("ecddp", 1.5))]
    table = summarize(rows)
    seg = table["segmentation"]
    assert seg["ecddp"]["mean"] == 21 and seg["random"]["std"] == pytest.approx(2**0.5 * 2)
    assert seg["ecddp_beats_random"] and not seg["ecddp_beats_source"]
    assert table["flow"]["ecddp_beats_random"]  # lower EPE is better
    assert "depth" not in table
    text = markdown(table)
    assert "| source | 28.000 ± 2.828 (2) | – |" in text


def test_cli_pretrain_then_finetune_on_the_tiny_world(tiny_world, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["pretrain", "ecddp", "--world", str(tiny_world), "--out", str(out),
                 *_sets()]) == 0
    summary = json.loads((out / "pretrain.json").read_text())
    assert summary["steps"] == 2 and summary["samples_per_s"] > 0
    assert "samples/s" in capsys.readouterr().out
    assert main(["finetune", "ecddp", "--world", str(tiny_world), "--out", str(out),
                 "--seeds", "1", *_sets()]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["pretrain"]["encoder"] == summary["encoder"]  # pre-training reused
    assert {r["init"] for r in results["runs"]} == {"random", "ecddp", "source"}
    assert set(results["table"]) == {"segmentation", "flow", "depth"}
    ecddp_rows = [r for r in results["runs"] if r["init"] == "ecddp"]
    assert all(r["loaded_tensors"] > 0 for r in ecddp_rows)
    assert (out / "results.md").read_text().startswith("| init |")


def test_cli_pretrain_needs_data_and_train_init_guards_its_folder(tmp_path, capsys):
    assert main(["pretrain", "ecddp", "--out", str(tmp_path / "p")]) == 2
    assert "--world and/or --recording" in capsys.readouterr().err
    (tmp_path / "t" / "work").mkdir(parents=True)
    ckpt = tmp_path / "enc.safetensors"
    save_file({"w": torch.zeros(1)}, ckpt)
    assert main(["train", "source_only", "--init", str(ckpt), "--out", str(tmp_path / "t"),
                 "--world", "tiny"]) == 2
    assert "without --init" in capsys.readouterr().err


def _mvsec(folder, sequence, seed):
    """A tiny MVSEC pair (layout of evtransfer.io.mvsec): 4 depth maps, events between."""
    import h5py
    import numpy as np

    rng = np.random.default_rng(seed)
    n = 3000
    t = np.sort(rng.uniform(0, 0.4, n))
    rows = np.stack([rng.integers(0, 346, n), rng.integers(0, 260, n), t,
                     rng.choice([-1, 1], n)], 1).astype(np.float64)
    folder.mkdir(parents=True, exist_ok=True)
    with h5py.File(folder / f"{sequence}_data.hdf5", "w") as f:
        f.create_dataset("davis/left/events", data=rows)
    depth = rng.uniform(2, 40, (4, 260, 346)).astype(np.float32)
    depth[:, :20] = np.nan  # invalid rows
    with h5py.File(folder / f"{sequence}_gt.hdf5", "w") as f:
        f.create_dataset("davis/left/depth_image_rect", data=depth)
        f.create_dataset("davis/left/depth_image_rect_ts", data=np.array([0.0, 0.1, 0.2, 0.3]))


def test_cli_real_finetune_on_a_tiny_mvsec(tmp_path, capsys):
    _mvsec(tmp_path / "mvsec", "outdoor_day2", 0)
    _mvsec(tmp_path / "mvsec", "outdoor_day1", 1)
    args = ["finetune", "ecddp", "--real", "configs/ecddp/mvsec.yaml", "--out",
            str(tmp_path / "out"), *_sets([f"root={tmp_path / 'mvsec'}"])]
    assert main(args) == 0
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    assert result["task"] == "depth" and result["labeled"] == 3
    assert result["scores"]["n_images"] == 3 and result["scores"]["abs_rel"] > 0
