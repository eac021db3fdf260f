"""ECDDP: losses, Sinkhorn-Knopp, K-means, masking, views, EMA schedule, pre-training and
fine-tuning stages on small tensors and the tiny world."""

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evtransfer.data.augment import box_grid, resized_crops
from evtransfer.data.dense_tasks import DenseTaskData
from evtransfer.engine import EmaTeacher
from evtransfer.engine.fit import FitConfig
from evtransfer.methods.ecddp import (
    BackboneConfig,
    EcddpConfig,
    EcddpNet,
    FinetuneConfig,
    HeadConfig,
    MaskConfig,
    PretrainConfig,
    ViewConfig,
    block_mask,
    cosine_kmeans,
    cross_entropy,
    ecddp_losses,
    finetune_task,
    image_level_collapse,
    patch_loss,
    pretrain_ecddp,
    pretrain_schedules,
    sample_masks,
    sinkhorn_knopp,
    warp_contexts,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
TINY_BACKBONE = BackboneConfig(embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2),
                               window=2)


def tiny_pretrain(**kw) -> PretrainConfig:
    base = dict(backbone=TINY_BACKBONE, heads=HeadConfig(prototypes=32, hidden=16, bottleneck=8),
                views=ViewConfig(view=64, global_size=64, local_size=32, local_number=2),
                masks=MaskConfig(count_base=7),
                epochs=2, batch=4, amp="off", log_every=1, ckpt_every=0,
                teacher_temp_warmup_epochs=1, warmup_epochs=1)
    return PretrainConfig(**{**base, **kw})


def np_sinkhorn(logits, temp, iters):
    """Independent float64 matrix scaling: rows of Q (prototypes) to 1/P, columns to 1/N."""
    q = np.exp(logits.astype(np.float64) / temp).T
    p, n = q.shape
    q /= q.sum()
    for _ in range(iters):
        q /= q.sum(axis=1, keepdims=True) * p
        q /= q.sum(axis=0, keepdims=True) * n
    return (q * n).T


@pytest.mark.parametrize("device", DEVICES)
def test_sinkhorn_matches_float64_reference_and_balances(device):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(12, 7, generator=gen)
    got = sinkhorn_knopp(logits.to(device), 0.07, 3).cpu().double().numpy()
    np.testing.assert_allclose(got, np_sinkhorn(logits.numpy(), 0.07, 3), rtol=1e-4)
    np.testing.assert_allclose(got.sum(1), 1.0, rtol=1e-5)  # each target is a distribution
    many = sinkhorn_knopp(logits.to(device), 0.5, 200).cpu().double().numpy()
    np.testing.assert_allclose(many.sum(0), 12 / 7, rtol=1e-3)  # equipartition over prototypes


def test_sinkhorn_of_equal_logits_is_uniform():
    np.testing.assert_allclose(sinkhorn_knopp(torch.zeros(5, 4), 0.04).numpy(), 0.25)


def test_cross_entropy_and_patch_loss_by_hand():
    t = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    s = torch.tensor([[0.2, 0.0], [0.0, 0.0]])
    tau = 0.1
    log_p0 = 2.0 - math.log(math.exp(2.0) + 1.0)  # log softmax([2, 0])[0]
    expected = -(log_p0 + math.log(0.5)) / 2
    assert float(cross_entropy(t, s, tau)) == pytest.approx(expected, rel=1e-6)
    # image 0 has one masked token (weight 1), image 1 has two (weights 1/2); 3 images
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    logits = torch.zeros(3, 2)
    weights = torch.tensor([1.0, 0.5, 0.5])
    assert float(patch_loss(targets, logits, weights, 3, tau)) == pytest.approx(
        2 * math.log(2) / 3, rel=1e-6)


def test_cosine_kmeans_separates_directions_and_is_a_fixed_point():
    gen = torch.Generator().manual_seed(1)
    a = torch.tensor([1.0, 0.0, 0.0]) + 0.05 * torch.randn(6, 3, generator=gen)
    b = torch.tensor([0.0, 0.0, 1.0]) + 0.05 * torch.randn(5, 3, generator=gen)
    x = torch.cat([a * 3.0, b * 0.5])[None]  # cosine: the scale must not matter
    assign, centroids = cosine_kmeans(x, 2, 10, torch.Generator().manual_seed(0))
    assert len(set(assign[0, :6].tolist())) == 1 and len(set(assign[0, 6:].tolist())) == 1
    assert assign[0, 0] != assign[0, 6]
    unit = F.normalize(x[0], dim=1)
    for k in range(2):
        torch.testing.assert_close(centroids[0, k], unit[assign[0] == k].mean(0))
    sim = unit @ F.normalize(centroids[0], dim=1).T
    assert torch.equal(sim.argmax(1), assign[0])


def test_kmeans_rejects_more_clusters_than_tokens():
    with pytest.raises(ValueError, match="k <= tokens"):
        cosine_kmeans(torch.randn(1, 3, 4), 4, 2, torch.Generator())


def test_block_masks_are_rectangles_within_budget():
    cfg = MaskConfig()
    gen = torch.Generator().manual_seed(0)
    for n_mask in (4, 10, 30):
        m = block_mask(12, 12, n_mask, cfg, gen)
        assert 0 < int(m.sum()) <= n_mask
    rows = sample_masks(10, 12, 12, cfg, gen)
    masked = (rows.flatten(1).sum(1) > 0).sum()
    assert int(masked) <= 5  # int(10 · 0.5) samples are masked
    assert int(rows.flatten(1).sum(1).max()) <= int(144 * 0.5)
    single = block_mask(6, 6, 4, MaskConfig(min_patches=4), torch.Generator().manual_seed(3))
    ys, xs = torch.nonzero(single, as_tuple=True)
    box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    assert int(box) == int(single.sum())  # one block: a full rectangle


def test_views_sample_the_box_they_report():
    v = ViewConfig(view=64, global_size=32)
    size = 64
    img = torch.arange(size, dtype=torch.float32).expand(1, 1, size, size).clone()  # x coord
    crops, boxes, flips = resized_crops(img, 3, 32, v.global_scale, v.ratio,
                                        torch.Generator().manual_seed(0))
    grid = box_grid(boxes, flips, 32, size)
    for i in range(3):
        expected = (grid[i, 0, :, 0] + 1) * (size - 1) / 2  # normalised → pixel x
        torch.testing.assert_close(crops[i, 0, 0], expected, atol=1e-3, rtol=0)
        left, w = float(boxes[i, 1]), float(boxes[i, 3])
        ends = sorted([float(expected[0]), float(expected[-1])])
        assert ends == pytest.approx([left, left + w - 1], abs=1e-3)
        assert (float(expected[0]) > float(expected[-1])) == bool(flips[i])


def test_warp_contexts_identity_and_flip():
    assign = torch.tensor([[0, 0, 1, 2]])  # a 2×2 grid, clusters 0, 1, 2 of K = 4
    full = torch.tensor([[0.0, 0.0, 64.0, 64.0]])
    grid = box_grid(full, torch.tensor([False]), 2, 64)
    maps, keep = warp_contexts(assign, 4, (2, 2), grid, 0.25)
    assert torch.equal(maps[0].float(), F.one_hot(assign[0], 4).T.float())
    assert keep.tolist() == [[True, True, True, False]]
    flipped, _ = warp_contexts(assign, 4, (2, 2), box_grid(full, torch.tensor([True]), 2, 64),
                               0.25)
    assert torch.equal(flipped[0, 1], torch.tensor([False, False, False, True]))


def test_ema_momentum_schedule_is_the_codes_cosine():
    cfg = tiny_pretrain(epochs=5)
    sched = pretrain_schedules(cfg, iters_per_epoch=4, batch=8)
    m = sched["ema_momentum"]
    i = np.arange(20)
    np.testing.assert_allclose(m, 1 - 0.5 * (1 + np.cos(np.pi * i / 20)) * (1 - 0.992))
    assert sched["lr"].max() == pytest.approx(5e-4 * 8 / 256)
    assert sched["teacher_temp"][0] == 0.04 and sched["teacher_temp"][-1] == 0.07
    student = torch.nn.Linear(2, 1)
    teacher = EmaTeacher(student)
    before = teacher.module.weight.detach().clone()
    with torch.no_grad():
        student.weight.add_(1.0)
    teacher.update(student, float(m[3]))
    torch.testing.assert_close(teacher.module.weight,
                               m[3] * before + (1 - m[3]) * student.weight.detach())


@pytest.mark.parametrize("arch", ["swin", "mit"])
def test_losses_train_the_student_only(arch):
    bb = TINY_BACKBONE if arch == "swin" else BackboneConfig(arch="mit")
    cfg = tiny_pretrain(backbone=bb)
    student = EcddpNet(cfg, 6, seed=0)
    teacher = copy.deepcopy(student).requires_grad_(False)
    view = torch.randn(2, 6, 64, 64, generator=torch.Generator().manual_seed(0))
    out = ecddp_losses(student, teacher, view, cfg, 0.04, torch.Generator().manual_seed(0))
    parts = {k: float(out[k]) for k in ("image_local", "image_global", "context", "patch")}
    assert all(v > 0 and math.isfinite(v) for v in parts.values()), parts
    w = 1 / (2 + 2 + 2 * 2)
    expected = w * parts["image_local"] + w * (2 * parts["context"] + 2 * parts["image_global"])
    assert float(out["loss"].detach()) == pytest.approx(expected + parts["patch"], rel=1e-5)
    out["loss"].backward()
    assert student.backbone.fusion.fpns[0][1].weight.grad is not None
    assert student.cluster_head.pool.query.grad is not None
    assert all(p.grad is None for p in teacher.parameters())


def test_pretrain_runs_resumes_and_exports(tmp_path):
    gen = torch.Generator().manual_seed(0)
    groups = [(torch.randn(6, 6, 40, 72, generator=gen).half(),
               torch.full((6, 1, 40, 72), 2.0).half())]
    cfg = tiny_pretrain(max_steps=3, ckpt_every=1, epochs=4)  # 1 batch of 4 per epoch
    summary = pretrain_ecddp(groups, cfg, tmp_path, progress=False)
    assert summary["steps"] == 3 and summary["samples_per_s"] > 0
    assert summary["peak_memory_mb"] > 0
    run = next(tmp_path.glob("ECDDP-pretrain-*"))
    (run / "done.json").unlink()
    again = pretrain_ecddp(groups, cfg, tmp_path, progress=False)  # resumes at its last step
    assert again["steps"] == 3 and again["resumed_from_step"] == 3
    assert json.loads((run / "done.json").read_text())["encoder"].endswith("encoder.safetensors")
    assert set(summary["final_losses"]) == {"image_global", "image_local", "context", "patch"}
    final, collapsed = image_level_collapse(run / "metrics.jsonl", cfg.heads.prototypes)
    assert again["image_level_collapsed"] is collapsed and again["final_losses"] == final
    with pytest.raises(ValueError, match="count_base 64 exceeds the 16 tokens"):
        pretrain_ecddp(groups, tiny_pretrain(masks=MaskConfig()), tmp_path, progress=False)


def test_a_diverged_pretraining_is_never_marked_done(tmp_path, monkeypatch):
    """`pretrain_ecddp` drives `engine.train` itself: a NaN loss term stops it with the step
    and the term named, before `done.json` and the encoder export, and a rerun of the same
    stage resumes the last finite checkpoint instead of reusing the diverged one."""
    from evtransfer.engine import NonFiniteError, read_state
    from evtransfer.methods import ecddp

    def poisoned(student, teacher, view, cfg, temp, generator):
        out = dict(ecddp_losses(student, teacher, view, cfg, temp, generator))
        calls.append(1)
        if len(calls) == 3:  # the third iteration of this process
            out["patch"] = out["patch"] * math.nan
            out["loss"] = out["loss"] + out["patch"]
        return out

    monkeypatch.setattr(ecddp, "ecddp_losses", poisoned)
    groups = [(torch.randn(6, 6, 40, 72, generator=torch.Generator().manual_seed(0)).half(),
               torch.full((6, 1, 40, 72), 2.0).half())]
    cfg = tiny_pretrain(max_steps=6, ckpt_every=1, log_every=2, epochs=6)  # 1 batch an epoch
    for kept in (2, 4):  # the rerun resumes at step 2 and fails at its own third iteration
        calls = []
        with pytest.raises(NonFiniteError, match=rf"loss terms loss \(nan\), patch \(nan\) "
                                                 rf"not finite at step {kept + 1}"):
            pretrain_ecddp(groups, cfg, tmp_path, progress=False)
        run = next(tmp_path.glob("ECDDP-pretrain-*"))
        assert not (run / "done.json").exists() and not (run / "encoder.safetensors").exists()
        assert read_state(run / "checkpoints" / "last")["step"] == kept


def test_a_collapsed_image_level_loss_is_reported(tmp_path):
    log = tmp_path / "metrics.jsonl"
    rows = [{"kind": "train", "step": 1, "image_global": 5.0, "patch": 3.0},
            {"kind": "train", "step": 2, "image_global": math.log(1024) + 1e-5, "patch": 2.0},
            {"kind": "eval", "step": 2}]
    log.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.warns(UserWarning, match=r"ln\(1024\)"):
        final, collapsed = image_level_collapse(log, 1024)
    assert collapsed and final == {"image_global": rows[1]["image_global"], "patch": 2.0}
    assert image_level_collapse(log, 2048)[1] is False
    assert image_level_collapse(tmp_path / "none.jsonl", 1024) == ({}, False)


def test_finetune_from_checkpoint_loads_all_but_the_patch_embedding(tmp_path):
    groups = [(torch.randn(4, 6, 64, 64, generator=torch.Generator().manual_seed(0)).half(),
               None)]
    pre = pretrain_ecddp(groups, tiny_pretrain(max_steps=1), tmp_path, progress=False)
    fit = FitConfig(steps=2, batch=2, ckpt_every=0, log_every=1, warmup_steps=1)
    cfg = EcddpConfig(pretrain=tiny_pretrain(), finetune=FinetuneConfig(
        uper_channels=8, aux_channels=4, depth=fit, label_fraction=1.0))
    gen = torch.Generator().manual_seed(1)
    depth = torch.rand(3, 32, 32, generator=gen) * 50
    data = DenseTaskData("depth", torch.rand(3, 20, 32, 32, generator=gen), depth,
                         torch.rand(2, 20, 32, 32, generator=gen), depth[:2], 11)
    out = finetune_task(data, cfg, pre["encoder"], tmp_path, progress=False)
    encoder_tensors = len(out["network"].encoder.state_dict())
    assert out["loaded"] == encoder_tensors - 4  # patch_embed proj and norm: re-learnt
    assert 0 <= out["scores"]["abs_rel"] and out["labeled"] == 3


def test_transfer_table_entry_pretrains_then_fine_tunes(tiny_world, tmp_path):
    from evtransfer.data.transfer import TransferDataConfig, load_transfer_data, target_train_labels
    from evtransfer.methods.ecddp import train_ecddp

    data_cfg = TransferDataConfig()
    data = load_transfer_data(tiny_world, data_cfg, cache_dir=tmp_path / "cache", progress=False)
    labels = target_train_labels(tiny_world, data_cfg, cache_dir=tmp_path / "cache")
    fit = FitConfig(steps=2, batch=2, ckpt_every=0, log_every=1, warmup_steps=1)
    cfg = EcddpConfig(pretrain=tiny_pretrain(max_steps=1), finetune=FinetuneConfig(
        uper_channels=8, aux_channels=4, segmentation=fit, label_fraction=1.0,
        tta_scales=(1.0,)))
    with pytest.raises(ValueError, match="target labels"):
        train_ecddp(data, cfg, tmp_path / "run", progress=False)
    result = train_ecddp(data, cfg, tmp_path / "run", labels=labels, progress=False)
    assert set(result.minutes) == {"pretrain", "finetune"}
    probs = result.predict(data.test_x[:2])
    assert probs.shape == (2, data.num_classes, *data.test_x.shape[-2:])
    torch.testing.assert_close(probs.sum(1), torch.ones(2, *data.test_x.shape[-2:]))


def test_image_target_diagnostics_see_identical_windows_as_uninformative():
    from evtransfer.bench_ecddp import image_target_diagnostics

    cfg = tiny_pretrain()
    gen = torch.Generator().manual_seed(0)
    one = torch.rand(1, 2, 64, 64, generator=gen)
    one = (one + one.flip(-1)).repeat(6, 1, 1, 1)  # mirror-symmetric: flips change nothing
    cfg.views.global_scale = (1.0, 1.0)  # every crop the whole (identical) window
    cfg.views.ratio = (1.0, 1.0)
    same = image_target_diagnostics(one, cfg, temps=(0.07,))
    assert same["cos_pooled"] == pytest.approx(1.0, abs=1e-5)
    assert same["entropy_0.07"] == pytest.approx(math.log(32), abs=1e-4)
    varied = image_target_diagnostics(torch.rand(6, 2, 64, 64, generator=gen), cfg)
    assert varied["cos_tokens"] < varied["cos_pooled"] < 1 - 1e-4
    assert varied["entropy_0.04"] < varied["entropy_0.07"] < math.log(32)
