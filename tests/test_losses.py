"""Losses against float64 NumPy references and hand calculations."""

import numpy as np
import pytest
import torch

from evtransfer.losses import (
    dice_loss,
    gradient_loss,
    kd_loss,
    multiscale_gradient_loss,
    scale_invariant_loss,
    segmentation_loss,
    sequence_flow_loss,
)


def test_dice_matches_a_numpy_reference():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, generator=gen)
    target = torch.randint(0, 3, (2, 4, 5), generator=gen)
    target[0, 0, :2] = 255
    p = logits.softmax(1).numpy().astype(np.float64)
    valid = (target != 255).numpy()[:, None]
    g = np.stack([(target.numpy() == c) for c in range(3)], 1) * valid
    p = p * valid
    per_class = [1 - (2 * (p[:, c] * g[:, c]).sum() + 1)
                 / ((p[:, c] ** 2).sum() + g[:, c].sum() + 1) for c in range(3)]
    assert float(dice_loss(logits, target)) == pytest.approx(np.mean(per_class), rel=1e-5)


def test_segmentation_loss_upsamples_and_ignores():
    logits = torch.zeros(1, 2, 2, 2)
    logits[:, 1] = 10.0
    target = torch.full((1, 4, 4), 1)
    assert float(segmentation_loss(logits, target)) < 1e-3
    target[:] = 255
    target[0, 0, 0] = 0
    assert float(segmentation_loss(logits, target)) == pytest.approx(10.0, abs=1e-3)


def test_kd_loss_is_zero_for_equal_logits_and_scales_with_t_squared():
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 4, 3, 3, generator=gen), torch.randn(2, 4, 3, 3, generator=gen)
    assert float(kd_loss(a, a)) == pytest.approx(0.0, abs=1e-6)
    q = b.softmax(1)
    kl = (q * (q.log() - a.log_softmax(1))).sum(1).mean()
    assert float(kd_loss(a, b, temperature=1.0)) == pytest.approx(float(kl), rel=1e-5)
    student = a.clone().requires_grad_()
    teacher = b.clone().requires_grad_()
    kd_loss(student, teacher, 2.0).backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0


def test_scale_invariant_loss_matches_numpy_and_ignores_scale():
    gen = torch.Generator().manual_seed(0)
    pred, target = torch.rand(2, 4, 5, generator=gen), torch.rand(2, 4, 5, generator=gen)
    valid = torch.rand(2, 4, 5, generator=gen) > 0.3
    ref = []
    for p, t, v in zip(pred.double().numpy(), target.double().numpy(), valid.numpy(),
                       strict=True):
        d = (p - t)[v]
        ref.append((d**2).mean() - d.mean() ** 2)
    got = scale_invariant_loss(pred, target, valid)
    assert float(got) == pytest.approx(np.mean(ref), rel=1e-5)
    # a constant offset in log depth (a global scale in depth) costs nothing
    assert float(scale_invariant_loss(target + 0.3, target, valid)) == pytest.approx(0, abs=1e-6)


def test_multiscale_gradient_loss_matches_numpy():
    gen = torch.Generator().manual_seed(1)
    pred, target = torch.rand(1, 8, 8, generator=gen), torch.rand(1, 8, 8, generator=gen)
    valid = torch.rand(1, 8, 8, generator=gen) > 0.2
    total = 0.0
    for s in range(4):
        d = (pred - target)[0, :: 2**s, :: 2**s].double().numpy()
        v = valid[0, :: 2**s, :: 2**s].numpy()
        gx = np.abs(np.diff(d, axis=1))[v[:, 1:] & v[:, :-1]].sum()
        gy = np.abs(np.diff(d, axis=0))[v[1:] & v[:-1]].sum()
        total += (gx + gy) / max(v.sum(), 1)
    assert float(multiscale_gradient_loss(pred, target, valid)) == pytest.approx(total, rel=1e-5)


def test_sequence_flow_loss_by_hand():
    gt = torch.zeros(1, 2, 2, 2)
    preds = [torch.full((1, 2, 2, 2), 2.0), torch.full((1, 2, 2, 2), 1.0)]
    valid = torch.tensor([[[True, False], [True, True]]])
    assert float(sequence_flow_loss(preds, gt, valid, gamma=0.5)) == pytest.approx(0.5 * 2 + 1)


def test_gradient_loss_by_hand():
    pred = torch.tensor([[[[0.0, 1.0, 3.0], [0.0, 1.0, 3.0]]]])  # x steps 1, 2; y steps 0
    target = torch.zeros(1, 1, 2, 3)
    target[..., 1, :] = 2.0  # x steps 0; y steps 2
    # x: mean(|1|, |2|, |1|, |2|) = 1.5; y: mean(|0 − 2|) over 3 columns = 2
    assert float(gradient_loss(pred, target)) == pytest.approx(3.5)
