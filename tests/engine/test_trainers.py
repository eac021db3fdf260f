"""Dense fine-tuning: losses against NumPy, augmentation, TTA, and the three trainers."""

import numpy as np
import pytest
import torch
from torch import nn

from evtransfer.data._common import TensorDict
from evtransfer.data.augment import random_resized_crop
from evtransfer.engine.fit import FitConfig
from evtransfer.engine.predict import predict_depth, segment_tta
from evtransfer.engine.trainers import train_depth, train_flow, train_segmenter_with_aux
from evtransfer.losses import multiscale_gradient_loss, scale_invariant_loss, sequence_flow_loss
from evtransfer.models.flow import iterative_flow_net
from evtransfer.models.swin import SwinTransformer, UPerNet

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
FIT = FitConfig(steps=2, batch=2, ckpt_every=0, log_every=1, warmup_steps=1)


def _swin(in_chans):
    return SwinTransformer(in_chans, 0, 8, (1, 1, 1, 1), (1, 1, 2, 2), 2)


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


def test_random_resized_crop_keeps_pairs_aligned():
    x = torch.arange(64.0).view(1, 1, 8, 8).repeat(3, 2, 1, 1)
    y = torch.arange(64).view(1, 8, 8).repeat(3, 1, 1)
    batch = {"x": x, "y": y}
    assert random_resized_crop(batch, torch.Generator(), (1.0, 1.0)) is batch
    out = random_resized_crop(batch, torch.Generator().manual_seed(0), (0.3, 0.6))
    assert out["y"].dtype == torch.int64 and out["x"].shape == x.shape
    assert set(out["y"].unique().tolist()) <= set(range(64))  # nearest: no new label values
    assert not torch.equal(out["y"], y)


def test_segment_tta_of_a_flip_equivariant_model_equals_one_pass():
    model = nn.Conv2d(3, 4, 1)
    x = torch.randn(2, 3, 8, 10)
    one = segment_tta(model, x)
    torch.testing.assert_close(segment_tta(model, x, flip=True), one)
    multi = segment_tta(model, x, scales=(1.0, 2.0), flip=True)
    torch.testing.assert_close(multi.sum(1), torch.ones(2, 8, 10))


@pytest.mark.parametrize("device", DEVICES)
def test_trainers_run_and_predict(tmp_path, device):
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 4, 32, 32, generator=gen)
    seg = UPerNet(_swin(4), 3, 8, 4).to(dev)
    labels = torch.randint(0, 3, (4, 32, 32), generator=gen)
    minutes = train_segmenter_with_aux(seg, TensorDict(x=x, y=labels), FIT,
                                       run_dir=tmp_path / "seg", seed=0, device=dev,
                                       progress=False)
    assert minutes >= 0 and (tmp_path / "seg" / "done.json").exists()
    depth_net = UPerNet(_swin(4), 1, 8, None).to(dev)
    depth = torch.rand(4, 32, 32, generator=gen) * 40
    depth[:, :4] = 0  # invalid rows
    train_depth(depth_net, TensorDict(x=x, y=depth), FIT, run_dir=tmp_path / "depth", seed=0,
                device=dev, progress=False)
    pred = predict_depth(depth_net, x, device=dev)
    assert pred.shape == (4, 32, 32) and float(pred.min()) > 0 and float(pred.max()) <= 80
    flow_net = iterative_flow_net(_swin(2), dim=8, hidden=8, iters=2).to(dev)
    flow = torch.randn(4, 2, 32, 32, generator=gen)
    train_flow(flow_net, TensorDict(x=x, y=flow), FIT, run_dir=tmp_path / "flow", seed=0,
               device=dev, progress=False)
    assert (tmp_path / "flow" / "done.json").exists()
