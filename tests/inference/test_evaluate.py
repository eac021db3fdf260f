"""Benchmark protocols on tiny fixtures in the real layouts, scored with models whose output is
known (a constant class or depth), so every expected figure is a hand calculation."""

import json

import h5py
import numpy as np
import pytest
from data._layouts import ddd17_recording, dsec_sequence, mvsec_pair
from PIL import Image

from evtransfer.data.world import WorldTarget, WorldTargetConfig
from evtransfer.events import Events
from evtransfer.inference import load_model
from evtransfer.inference.evaluate import EvalOptions, evaluate, format_table
from evtransfer.io.images import write_png16

from ._packages import depth_package, segmenter_package

QUIET = EvalOptions(progress=False)


def _opts(**kw):
    return EvalOptions(progress=False, **kw)


# --- world ---------------------------------------------------------------------------------
def test_world_protocol_reproduces_the_benchmark(tiny_run, tiny_world):
    out, runs = tiny_run
    by_name = {r.method: r for r in runs}
    assert by_name["recon_source"].package is None  # reconstruction + segmenter: no package
    assert by_name["source_only"].package == out / "models" / "source_only-seed0.safetensors"
    bench = json.loads((out / "results.json").read_text())["methods"]["source_only"]
    result = evaluate(load_model(by_name["source_only"].package), "world", tiny_world, QUIET)
    assert result["miou"] == pytest.approx(bench["miou_mean"], abs=0.05)
    assert result["acc"] == pytest.approx(bench["acc_mean"], abs=0.05)
    assert [c["iou"] for c in result["per_class"]] == pytest.approx(bench["iou_per_class"],
                                                                    abs=0.5)
    assert result["protocol"]["tta"] == "none" and result["split"] == "test"
    json.dumps(result)
    assert "road" in format_table(result)


def test_world_depth_protocol(tiny_world, tmp_path):
    c = 7.5
    model = load_model(depth_package(tmp_path / "d.safetensors", constant=c, modality="spikes",
                                     kind="spike_stack", frames=8, sensor=(64, 48),
                                     size=(64, 64), resize="nearest"))
    result = evaluate(model, "world", tiny_world, QUIET)
    test = WorldTarget(tiny_world, WorldTargetConfig(split="test", with_depth=True))
    per_image = []
    for i in range(len(test)):
        g = test[i]["depth"].numpy().astype(np.float64)
        valid = (g > 1e-3) & (g < 80)
        if valid.any():
            per_image.append(np.mean(np.abs(g[valid] - c) / g[valid]))
    assert result["samples"] == len(test)
    assert result["metrics"]["abs_rel"] == pytest.approx(np.mean(per_image), rel=1e-6)
    assert result["metrics"]["n_images"] == len(per_image)


# --- DSEC-Semantic -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dsec_root(tmp_path_factory):
    """The three ESS test sequences, 8 labels each (label k filled with k % 11)."""
    root = tmp_path_factory.mktemp("dsec")
    rng = np.random.default_rng(0)
    for name in ("zurich_city_13_a", "zurich_city_14_c", "zurich_city_15_a"):
        n = 4000
        ev = Events(rng.integers(0, 640, n), rng.integers(0, 480, n),
                    np.sort(rng.integers(0, 90_000, n)), rng.choice([-1, 1], n), 640, 480)
        dsec_sequence(root / "test" / name, ev, np.arange(1, 9) * 10_000)
    return root


DSEC_INPUT = dict(window_events=500, sensor=(640, 480), crop_bottom=40, size=(440, 640))


def test_dsec_semantic_label_sampling_and_scores(dsec_root, tmp_path):
    # ESS drops the first 6 labels and takes every 2nd: one sample per sequence, label 6
    right = load_model(segmenter_package(tmp_path / "a.safetensors", constant=6, **DSEC_INPUT))
    result = evaluate(right, "dsec-semantic", dsec_root, _opts(batch=2))
    assert result["samples"] == 3 and result["n_pixels"] == 3 * 440 * 640
    assert result["acc"] == pytest.approx(100.0)
    assert result["miou"] == pytest.approx(100 / 11)  # absent classes count 0 (ESS)
    wrong = load_model(segmenter_package(tmp_path / "b.safetensors", constant=7, **DSEC_INPUT))
    assert evaluate(wrong, "dsec-semantic", dsec_root, QUIET)["miou"] == 0.0


def test_dsec_semantic_scores_a_varying_model_as_ess_scores_its_windows(dsec_root, tmp_path):
    """A random-weight model (its classes vary over the image, unlike the constant ones):
    `evaluate` scores what the model predicts on the ESS samples, with ESS's own metric
    (uzh-rpg/ess evaluation/metrics.py)."""
    import torch

    from evtransfer.data.dsec_semantic import DsecSemantic, DsecSemanticConfig
    from evtransfer.data.transfer import EventInput
    from tests.refs import import_ref, ref_attr

    model = load_model(segmenter_package(tmp_path / "r.safetensors", seed=3, **DSEC_INPUT))
    result = evaluate(model, "dsec-semantic", dsec_root, _opts(batch=2))
    ds = DsecSemantic(dsec_root, "test", DsecSemanticConfig(num_windows=1, events_per_window=500),
                      representation=EventInput().representation())
    metrics = ref_attr(import_ref("uzh-rpg+ess", "evaluation.metrics"), "MetricsSemseg")(
        11, 255, [str(c) for c in range(11)])
    for item in ds:
        pred = model.forward(item["representation"][None]).argmax(1)
        metrics.update_batch(pred, item["label"][None])
    ref = metrics.get_metrics_summary()
    assert len(torch.unique(pred)) > 1  # not a constant model
    assert result["miou"] == pytest.approx(float(ref["mean_iou"]), abs=1e-9)
    assert result["acc"] == pytest.approx(float(ref["acc"]), abs=1e-9)
    assert 0 < result["acc"] < 100


def test_dsec_semantic_with_a_world_model_needs_resize(dsec_root, tmp_path):
    model = load_model(segmenter_package(tmp_path / "w.safetensors", constant=6,
                                         window_us=50_000, sensor=(64, 48), size=(48, 64)))
    with pytest.raises(ValueError, match="pass --resize"):
        evaluate(model, "dsec-semantic", dsec_root, QUIET)
    notes = []
    result = evaluate(model, "dsec-semantic", dsec_root, _opts(resize=True), log=notes.append)
    assert result["acc"] == pytest.approx(100.0) and "resizing" in notes[0]
    assert "100000 events" in result["protocol"]["window"]


# --- DDD17 ---------------------------------------------------------------------------------
def test_ddd17_valid_split_scores(tmp_path):
    rng = np.random.default_rng(1)
    n = 600
    for i in range(7):
        t_ns = np.sort(rng.integers(0, 10**9, n)) + 10**15
        rows = [[t_ns[j * 100], j * 100, max(0, j * 100 - 50)] for j in range(6)]
        ddd17_recording(tmp_path / "ddd17" / f"dir{i}", t_ns, rng.integers(0, 346, n),
                        rng.integers(0, 260, n), rng.integers(0, 2, n), rows, (2, 4, 6))
    model = load_model(segmenter_package(
        tmp_path / "m.safetensors", constant=2, num_classes=6, label_space="ddd17", num_windows=3,
        window_events=40, sensor=(346, 260), crop_bottom=60, size=(200, 352)))
    result = evaluate(model, "ddd17", tmp_path / "ddd17", QUIET)
    # the layout's masks: column c holds c % 6, pixel (0, 0) the mask number % 6; OpenCV
    # nearest resizing 346 → 352 columns reads column floor(c · 346/352)
    cols = np.minimum(np.floor(np.arange(352) * (1.0 / (352 / 346))).astype(int), 345)
    share = []
    for m in (2, 4, 6):
        label = np.tile(np.arange(346) % 6, (200, 1))
        label[0, 0] = m % 6
        share.append(label[:, cols] == 2)
    acc = 100 * np.mean(share)
    assert result["split"] == "valid" and result["samples"] == 3
    assert result["acc"] == pytest.approx(acc)
    assert result["miou"] == pytest.approx(acc / 6)  # IoU of class 2 = TP / (TP + FP) = acc


# --- MVSEC depth ---------------------------------------------------------------------------
def test_mvsec_depth_protocol(tmp_path):
    rng = np.random.default_rng(2)
    t0, n = 1_504_000_000_000_000, 3000
    depth_ts = t0 + 50_000 * np.arange(1, 5)
    mvsec_pair(tmp_path / "outdoor_day", "outdoor_day1",
               t0 + np.sort(rng.integers(0, 250_000, n)), rng.integers(0, 346, n),
               rng.integers(0, 260, n), rng.choice([-1, 1], n), depth_ts)
    gt = rng.uniform(2.0, 60.0, (4, 260, 346)).astype(np.float32)
    gt[:, :10] = np.nan
    with h5py.File(tmp_path / "outdoor_day" / "outdoor_day1_gt.hdf5", "r+") as f:
        f["davis/left/depth_image_rect"][...] = gt
    c = 20.0
    model = load_model(depth_package(tmp_path / "d.safetensors", constant=c, window_us=50_000,
                                     sensor=(346, 260), size=(256, 352)))
    with pytest.raises(ValueError, match="pass --resize"):
        evaluate(model, "mvsec-depth", tmp_path, QUIET)
    result = evaluate(model, "mvsec-depth", tmp_path, _opts(resize=True), log=lambda _: None)

    def abs_rel(cutoff):  # E2Depth: GT over its frame maximum × 80; 0 < g, p < 80; per frame
        values = []
        for g in gt[1:].astype(np.float64):  # "between" windows skip depth map 0
            g = np.clip(g, 0, 80) / np.nanmax(g) * 80
            valid = (g > 0) & (g < np.nanmax(g)) & (c < np.nanmax(g)) & (g < cutoff)
            values.append(np.mean(np.abs(g[valid] - c) / (g[valid] + 1e-5)))
        return np.mean(values)

    assert result["samples"] == 3
    assert result["metrics"]["all"]["abs_rel"] == pytest.approx(abs_rel(np.inf), rel=1e-6)
    assert result["metrics"]["cutoff_10m"]["abs_rel"] == pytest.approx(abs_rel(10), rel=1e-6)
    assert "cutoff_30m" in format_table(result)


# --- KITTI depth ---------------------------------------------------------------------------
def test_kitti_depth_protocol(tmp_path):
    rng = np.random.default_rng(3)
    h, w, gts, lines = 360, 1220, [], []
    for k in range(2):
        scene = tmp_path / "input" / "2011_09_26" / f"drive_{k}"
        for sub in ("rgb", "depth", "spike/npy"):
            (scene / sub).mkdir(parents=True)
        name = f"{k:010d}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(scene / "rgb" / name)
        raw = rng.integers(256, 60 * 256, (h, w)).astype(np.uint16)
        raw[:20] = 0  # no LiDAR return
        write_png16(scene / "depth" / name, raw)
        gts.append(raw / 256.0)
        np.save(scene / "spike" / "npy" / f"{k:010d}.npy",
                (rng.random((4, h, w)) < 0.3).astype(np.uint8))
        lines.append(f"2011_09_26/drive_{k}/image_02/data/{name} x\n")
    (tmp_path / "kitti_eigen_test.txt").write_text("".join(lines))
    c = 12.0
    model = load_model(depth_package(tmp_path / "d.safetensors", constant=c, modality="spikes",
                                     kind="spike_stack", frames=4, sensor=(64, 32),
                                     size=(32, 64), resize="nearest"))
    with pytest.raises(ValueError, match="1216x352 differs"):
        evaluate(model, "kitti-depth", tmp_path, QUIET)
    result = evaluate(model, "kitti-depth", tmp_path, _opts(resize=True), log=lambda _: None)
    # Garg crop rows ⌊0.40810811·H⌋..⌊0.99189189·H⌋, columns ⌊0.03594771·W⌋..⌊0.96405229·W⌋;
    # it lies inside the bottom-centre 352 × 1216 crop, where the prediction is c
    rows = slice(int(0.40810811 * h), int(0.99189189 * h))
    cols = slice(int(0.03594771 * w), int(0.96405229 * w))
    per_image = []
    for g in gts:
        g = g[rows, cols]
        g = g[(g > 1e-3) & (g < 80)]
        per_image.append(np.mean(np.abs(g - c) / g))
    assert result["samples"] == 2
    assert result["metrics"]["abs_rel"] == pytest.approx(np.mean(per_image), rel=1e-6)


def test_bad_requests(tiny_world, tmp_path):
    seg = load_model(segmenter_package(tmp_path / "s.safetensors", window_us=50_000,
                                       sensor=(64, 48), size=(48, 64)))
    with pytest.raises(ValueError, match="unknown dataset"):
        evaluate(seg, "cityscapes", tiny_world, QUIET)
    with pytest.raises(FileNotFoundError, match="--root"):
        evaluate(seg, "world", tmp_path / "nowhere", QUIET)
    with pytest.raises(ValueError, match="mvsec-depth evaluates depth"):
        evaluate(seg, "mvsec-depth", tmp_path, QUIET)
    limited = evaluate(seg, "world", tiny_world, _opts(limit=2, batch=1))
    assert limited["samples"] == 2 and limited["limit"] == 2
    counted = load_model(segmenter_package(tmp_path / "c.safetensors", window_events=300,
                                           sensor=(64, 48), size=(48, 64)))
    result = evaluate(counted, "world", tiny_world, _opts(limit=3))
    assert result["samples"] == 3 and result["protocol"]["window"].startswith("300 events")
