"""Metrics against hand-computed values (the arithmetic is written out in the comments)."""

import math

import numpy as np
import pytest
import torch

from evtransfer.metrics import (
    LOG_DEPTH_ALPHA,
    ConfusionMatrix,
    DepthMetrics,
    depth_metrics,
    depth_to_log_normalized,
    evaluate_segmentation,
    flow_metrics,
    garg_crop_mask,
    log_normalized_to_depth,
    segmentation_scores,
    topk_accuracy,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
approx = pytest.approx


# ----------------------------------------------------------------------------- segmentation

# (t, p) pairs: (0,0) (0,1) (1,1) (1,1) (2,0); the last pixel has target 255 and is skipped.
TARGET = [[0, 0, 1], [1, 2, 255]]
PRED = [[0, 1, 1], [1, 0, 2]]


@pytest.mark.parametrize("device", DEVICES)
def test_confusion_matrix_and_scores_by_hand(device):
    cm = ConfusionMatrix(3, device=device)
    cm.update(torch.tensor(PRED, device=device), torch.tensor(TARGET, device=device))
    # rows = target, columns = prediction
    assert cm.matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert cm.matrix.device.type == device
    s = cm.scores()
    # TP = [1, 2, 0]; union = colsum + rowsum - TP = [2+2-1, 3+2-2, 0+1-0] = [3, 3, 1]
    assert s["iou"] == approx([100 / 3, 200 / 3, 0.0])
    assert s["miou"] == approx(100 / 3)
    assert s["acc"] == approx(60.0)  # 3 correct of 5 counted pixels
    assert s["class_acc"] == approx([50.0, 100.0, 0.0])  # TP / rowsum = 1/2, 2/2, 0/1
    assert s["macc"] == approx(50.0)
    assert (s["miou_mode"], s["n_pixels"]) == ("ess", 5)


def test_absent_class_counts_zero_in_ess_and_is_skipped_in_nanmean():
    cm = ConfusionMatrix(4)  # class 3 never appears in target or prediction
    cm.update(np.array(PRED), np.array(TARGET))
    ess, nan = cm.scores("ess"), cm.scores("nanmean")
    assert ess["miou"] == approx((100 / 3 + 200 / 3 + 0 + 0) / 4)  # 25
    assert nan["miou"] == approx((100 / 3 + 200 / 3 + 0) / 3)  # 33.33
    assert ess["iou"][3] == 0.0 and math.isnan(nan["iou"][3])
    assert ess["macc"] == approx(150 / 4) and nan["macc"] == approx(50.0)
    assert ess["acc"] == nan["acc"] == approx(60.0)


def test_predicted_but_absent_in_target_is_zero_in_both_modes():
    # target [0, 0], pred [0, 2]: class 0 IoU = 1/(1+2-1) = 50; class 2 has FP = 1 so IoU 0;
    # class 1 never occurs: ESS 0, nanmean skip.
    conf = torch.tensor([[1, 0, 1], [0, 0, 0], [0, 0, 0]])
    assert segmentation_scores(conf, "ess")["miou"] == approx(50 / 3)
    assert segmentation_scores(conf, "nanmean")["miou"] == approx(25.0)


def test_updates_accumulate_and_match_a_numpy_reference_with_uint8_labels():
    rng = np.random.default_rng(0)
    c = 19  # 18 * 19 + 18 overflows uint8, so the count must widen first
    t = rng.integers(0, c, (2, 6, 7)).astype(np.uint8)
    t[0, 0, :3] = 255
    p = rng.integers(0, c, (2, 6, 7)).astype(np.uint8)
    ref = np.zeros((c, c), np.int64)
    keep = t != 255
    np.add.at(ref, (t[keep].astype(int), p[keep].astype(int)), 1)
    cm = ConfusionMatrix(c)
    cm.update(p[0], t[0])
    cm.update(torch.from_numpy(p[1:]), torch.from_numpy(t[1:]))
    np.testing.assert_array_equal(cm.matrix.numpy(), ref)
    cm.reset()
    assert int(cm.matrix.sum()) == 0


@pytest.mark.parametrize(
    "pred, target, message",
    [
        ([[0, 1]], [[0, 3]], "target has labels \\[3\\]"),
        ([[0, 7]], [[0, 1]], "pred has labels \\[7\\]"),
        ([[0, -1]], [[0, 1]], "pred has labels \\[-1\\]"),
        ([[0.0, 1.0]], [[0, 1]], "integer class ids"),
        ([[0, 1, 1]], [[0, 1]], "shape"),
    ],
)
def test_confusion_matrix_rejects_bad_labels(pred, target, message):
    with pytest.raises(ValueError, match=message):
        ConfusionMatrix(3).update(np.array(pred), np.array(target))


def test_prediction_under_ignored_pixels_is_not_checked():
    cm = ConfusionMatrix(3)
    cm.update(np.array([[0, 200]]), np.array([[0, 255]]))
    assert cm.matrix.tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 0]]


def test_segmentation_argument_errors():
    with pytest.raises(ValueError, match="ignore_index 1 is a valid class"):
        ConfusionMatrix(3, ignore_index=1)
    with pytest.raises(ValueError, match="square"):
        segmentation_scores(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="mode"):
        segmentation_scores(np.zeros((2, 2)), mode="mean")


# ----------------------------------------------------------------------------- depth

# Image A: (g, p) = (2, 1) and (4, 4). Image B: (10, 12) and a NaN GT pixel.
GT_AB = np.array([[[2.0, 4.0]], [[10.0, np.nan]]])
PRED_AB = np.array([[[1.0, 4.0]], [[12.0, 5.0]]])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kitti_per_image_by_hand(device, dtype):
    r = depth_metrics(torch.tensor(PRED_AB, dtype=dtype, device=device),
                      torch.tensor(GT_AB, dtype=dtype, device=device))
    # A: abs_rel (1/2 + 0)/2 = .25; sq_rel (1/2 + 0)/2 = .25; rmse sqrt(1/2);
    #    rmse_log sqrt(ln2²/2); silog 100·sqrt(ln2²/2 − (ln2/2)²) = 100·ln2/2; δ: 1 of 2.
    # B: abs_rel 2/10; sq_rel 4/10; rmse 2; rmse_log ln1.2; silog 0; ratio 1.2 < 1.25 so δ all 1.
    ln2 = math.log(2)
    assert r["abs_rel"] == approx((0.25 + 0.2) / 2)
    assert r["sq_rel"] == approx((0.25 + 0.4) / 2)
    assert r["rmse"] == approx((math.sqrt(0.5) + 2) / 2)
    assert r["rmse_log"] == approx((ln2 / math.sqrt(2) + math.log(1.2)) / 2)
    assert r["silog"] == approx((100 * ln2 / 2 + 0) / 2, rel=1e-5)
    assert r["mae"] == approx((0.5 + 2) / 2)
    assert [r["d1"], r["d2"], r["d3"]] == approx([0.75, 0.75, 0.75])
    assert (r["n_valid"], r["n_images"], r["depth_form"], r["depth_averaging"]) == (
        3, 2, "kitti", "per_image")


def test_global_pools_pixels_and_differs_from_per_image():
    r = depth_metrics(PRED_AB, GT_AB, per_image=False)
    # three pixels: abs_rel (1/2 + 0 + 2/10)/3; sq_rel (1/2 + 0 + 4/10)/3; rmse sqrt((1+0+4)/3)
    assert r["abs_rel"] == approx(0.7 / 3)
    assert r["sq_rel"] == approx(0.9 / 3)
    assert r["rmse"] == approx(math.sqrt(5 / 3))
    assert r["d1"] == approx(2 / 3)
    assert r["depth_averaging"] == "global"
    assert r["rmse"] != approx(depth_metrics(PRED_AB, GT_AB)["rmse"])


def test_kitti_delta_is_strict_and_predictions_are_clamped():
    # ratio exactly 1.25 fails δ1 (strict <) and passes δ2
    r = depth_metrics(np.array([[1.0, 1.25]]), np.array([[1.25, 1.0]]))
    assert (r["d1"], r["d2"]) == (0.0, 1.0)
    # 100 m and +inf predictions clamp to 80: |50 − 80|/50 = 0.6; 0 clamps to min 1e-3
    r = depth_metrics(np.array([[100.0, np.inf]]), np.array([[50.0, 50.0]]))
    assert r["abs_rel"] == approx(0.6)
    r = depth_metrics(np.array([[0.0]]), np.array([[2.0]]))
    assert r["abs_rel"] == approx((2 - 1e-3) / 2)


def test_invalid_gt_and_images_without_valid_pixels_are_skipped():
    gt = np.array([[[0.0, np.nan, np.inf, 90.0]], [[3.0, 0.0, 0.0, 0.0]]])
    pred = np.full_like(gt, 3.0)
    pred[1, 0, 0] = 6.0
    r = depth_metrics(pred, gt)
    # image 0 has no valid pixel (0, NaN, inf, beyond 80 m); image 1 one pixel: |3−6|/3 = 1
    assert (r["n_valid"], r["n_images"]) == (1, 1)
    assert r["abs_rel"] == approx(1.0)
    empty = depth_metrics(pred[:1], gt[:1])
    assert empty["n_valid"] == 0 and math.isnan(empty["abs_rel"])


def test_cutoffs_limit_gt_range():
    gt = np.array([[5.0, 15.0, 25.0]])
    assert [depth_metrics(gt, gt, cutoff=c)["n_valid"] for c in (10, 20, 30)] == [1, 2, 3]


def test_garg_crop_mask_coordinates():
    # 375×1242 (KITTI): rows int(153.04)=153 … int(371.96)=371,
    # columns int(44.65)=44 … int(1197.35)=1197 (end-exclusive)
    m = garg_crop_mask(375, 1242)
    assert m.shape == (375, 1242) and m.dtype == torch.bool
    assert m[153, 44] and m[370, 1196]
    assert not m[152, 44] and not m[371, 100] and not m[200, 43] and not m[200, 1197]
    assert int(m.sum()) == (371 - 153) * (1197 - 44)
    # 10×30: rows 4 … 8, cols 1 … 27 → 5 · 27 valid pixels
    gt = np.full((10, 30), 5.0)
    assert depth_metrics(gt, gt, garg_crop=True)["n_valid"] == 5 * 27


def test_mask_argument_restricts_pixels():
    gt = np.array([[2.0, 4.0]])
    r = depth_metrics(np.array([[1.0, 4.0]]), gt, mask=np.array([[False, True]]))
    assert (r["n_valid"], r["abs_rel"]) == (1, 0.0)


# MVSEC frame: max 40 m < 80 m, so E2Depth rescales the GT ×2 to [20, 40, 80, NaN].
GT_MV = np.array([[10.0, 20.0, 40.0, np.nan]])
PRED_MV = np.array([[20.0, 50.0, 70.0, 30.0]])


def test_mvsec_form_reproduces_e2depth_by_hand():
    r = depth_metrics(PRED_MV, GT_MV, form="mvsec")
    # valid: 0 < g < 80 and 0 < p < 80 → pixels (20, 20) and (40, 50); g = 80 is excluded.
    eps = 1e-5
    assert r["n_valid"] == 2
    assert r["abs_rel"] == approx((0 + 10 / (40 + eps)) / 2)
    assert r["sq_rel"] == approx((0 + 100 / (1600 + eps)) / 2)
    assert r["rmse"] == approx(math.sqrt(100 / 2))
    dl = math.log(40 + eps) - math.log(50 + eps)
    assert r["rmse_log"] == approx(math.sqrt(dl**2 / 2))
    assert r["silog"] == approx(dl**2 / 2 - (dl / 2) ** 2)  # no root, no ×100
    # ratio max(40/(50+ε), 50/(40+ε)) = 1.2499997 ≤ 1.25
    assert r["d1"] == 1.0


def test_mvsec_rescale_quirk_is_an_explicit_option():
    r = depth_metrics(PRED_MV, GT_MV, form="mvsec", rescale_gt=False)
    # top = 40: only (10, 20) is valid (p = 50, 70 ≥ 40; g = 40 not < 40)
    assert r["n_valid"] == 1
    assert r["abs_rel"] == approx(10 / (10 + 1e-5))
    # the KITTI form keeps all three finite pixels: (10/10 + 30/20 + 30/40)/3
    assert depth_metrics(PRED_MV, GT_MV)["abs_rel"] == approx((1 + 1.5 + 0.75) / 3)


def test_mvsec_cutoff_applies_to_the_rescaled_gt():
    # rescaled GT [20, 40, 80]: only g = 20 is < 30 m (before rescaling 10 and 20 would be)
    assert depth_metrics(PRED_MV, GT_MV, form="mvsec", cutoff=30)["n_valid"] == 1


def test_accumulator_matches_one_batch_and_its_state_sums():
    rng = np.random.default_rng(1)
    gt = rng.uniform(1, 70, (4, 5, 6))
    pred = gt * rng.uniform(0.7, 1.4, gt.shape)
    gt[0, 0, :2] = np.nan
    whole = depth_metrics(pred, gt, per_image=True)
    a, b = DepthMetrics(), DepthMetrics()
    a.update(pred[:1], gt[:1])
    b.update(torch.from_numpy(pred[1:]), torch.from_numpy(gt[1:]))
    a.state += b.state  # what an all-reduce does
    merged = a.compute(per_image=True)
    for k in ("abs_rel", "sq_rel", "rmse", "rmse_log", "silog", "d1", "n_valid", "n_images"):
        assert merged[k] == approx(whole[k])
    # the global RMSE is the root of the pooled mean square error of the clamped prediction
    ok = np.isfinite(gt)
    assert a.compute(per_image=False)["rmse"] == approx(
        np.sqrt(np.mean((gt[ok] - np.clip(pred[ok], 1e-3, 80)) ** 2)))


def test_depth_input_errors():
    with pytest.raises(ValueError, match="pred contains NaN"):
        depth_metrics(np.array([[np.nan]]), np.array([[1.0]]))
    with pytest.raises(ValueError, match="shape"):
        depth_metrics(np.ones((2, 3)), np.ones((3, 2)))
    with pytest.raises(ValueError, match="float depth"):
        depth_metrics(np.ones((2, 3), int), np.ones((2, 3)))
    with pytest.raises(ValueError, match="min_depth > 0"):
        DepthMetrics(min_depth=0.0)
    with pytest.raises(ValueError, match="form"):
        DepthMetrics(form="nyu")


def test_log_depth_transform_by_hand():
    a = LOG_DEPTH_ALPHA
    d = torch.tensor([80.0, 80 * math.exp(-a / 2), 80 * math.exp(-a), 0.0, 200.0, math.nan])
    out = depth_to_log_normalized(d)
    assert out[:5].tolist() == approx([1.0, 0.5, 0.0, 0.0, 1.0], abs=1e-6)
    assert math.isnan(out[5])
    back = log_normalized_to_depth(np.array([1.0, 0.5, 0.0]))
    assert isinstance(back, np.ndarray)
    assert back.tolist() == approx([80.0, 80 * math.exp(-a / 2), 80 * math.exp(-a)])


# ----------------------------------------------------------------------------- flow


@pytest.mark.parametrize("device", DEVICES)
def test_flow_metrics_by_hand(device):
    # pixel 1: gt (3, 4), |gt| 5, pred (3, 0): EPE 4 > 3 and > 0.25 → outlier
    # pixel 2: gt (100, 0), pred (104, 0): EPE 4 > 3 but < 5 % of 100 → not an outlier
    # pixel 3: gt (0, 0), pred (0, 2): EPE 2
    gt = torch.tensor([[[3.0, 100.0, 0.0]], [[4.0, 0.0, 0.0]]], device=device)
    pred = torch.tensor([[[3.0, 104.0, 0.0]], [[0.0, 0.0, 2.0]]], device=device)
    r = flow_metrics(pred, gt)
    assert r["epe"] == approx(10 / 3)
    assert r["outlier"] == approx(100 / 3)
    assert (r["1pe"], r["2pe"], r["3pe"]) == approx((100.0, 200 / 3, 200 / 3))
    assert r["n_valid"] == 3
    r = flow_metrics(pred, gt, valid=torch.tensor([[False, True, True]], device=device))
    assert (r["epe"], r["outlier"], r["n_valid"]) == approx((3.0, 0.0, 2))


def test_flow_nonfinite_gt_is_invalid_and_errors_are_clear():
    gt = np.array([[[1.0, np.nan]], [[0.0, 0.0]]])
    assert flow_metrics(np.zeros_like(gt), gt)["n_valid"] == 1
    with pytest.raises(ValueError, match="\\(2, H, W\\)"):
        flow_metrics(np.zeros((3, 2, 2)), np.zeros((3, 2, 2)))
    with pytest.raises(ValueError, match="valid must be bool"):
        flow_metrics(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), valid=np.ones((2, 2)))


# ----------------------------------------------------------------------------- classification


@pytest.mark.parametrize("device", DEVICES)
def test_topk_by_hand(device):
    logits = torch.tensor([[0.1, 0.5, 0.3, 0.2],    # label 1: rank 1
                           [0.4, 0.1, 0.3, 0.2],    # label 2: rank 2
                           [0.9, 0.05, 0.01, 0.04]],  # label 2: rank 4
                          device=device)
    r = topk_accuracy(logits, torch.tensor([1, 2, 2], device=device), ks=(1, 2, 3))
    assert (r["top1"], r["top2"], r["top3"]) == approx((100 / 3, 200 / 3, 200 / 3))
    assert r["n_samples"] == 3
    with pytest.raises(ValueError, match="ks must be in \\[1, 4\\]"):
        topk_accuracy(logits, torch.tensor([1, 2, 2], device=device), ks=(1, 5))
    with pytest.raises(ValueError, match="labels must lie"):
        topk_accuracy(logits, torch.tensor([1, 2, 4], device=device), ks=(1,))


def test_evaluate_segmentation_counts_absent_classes_as_zero():
    pred = torch.tensor([[[0, 1], [1, 1]]])
    label = torch.tensor([[[0, 1], [1, 255]]])
    scores = evaluate_segmentation(pred, label, 3)
    assert scores["acc"] == pytest.approx(100.0)
    assert scores["miou"] == pytest.approx(200.0 / 3)
