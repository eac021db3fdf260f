"""Batched inference: test-time augmentation and reconstruction over windows."""

import pytest
import torch
from torch import nn

from evtransfer.engine.predict import reconstruct, reconstruct_images, segment_tta
from evtransfer.models import create_model


def test_segment_tta_of_a_flip_equivariant_model_equals_one_pass():
    model = nn.Conv2d(3, 4, 1)
    x = torch.randn(2, 3, 8, 10)
    one = segment_tta(model, x)
    torch.testing.assert_close(segment_tta(model, x, flip=True), one)
    multi = segment_tta(model, x, scales=(1.0, 2.0), flip=True)
    torch.testing.assert_close(multi.sum(1), torch.ones(2, 8, 10))


def test_reconstruct_runs_a_recurrent_network_over_consecutive_windows():
    net = create_model("e2vid", in_chans=3, base_channels=4, seed=0).eval()
    x = torch.randn(2, 9, 16, 24)
    with torch.no_grad():
        state = None
        for window in x.split(3, dim=1):
            image, state = net(window, state)
        torch.testing.assert_close(reconstruct(net, x), image)
        torch.testing.assert_close(reconstruct(net, x[:, 6:]), net(x[:, 6:])[0])
    with pytest.raises(ValueError, match=r"\(B, K·3, H, W\)"):
        reconstruct(net, x[:, :8])


def test_reconstruct_images_batches_and_clamps_to_the_unit_range():
    net = nn.Conv2d(2, 1, 1)
    x = torch.randn(5, 2, 4, 6, generator=torch.Generator().manual_seed(0)) * 3
    with torch.no_grad():
        want = net(x).clamp(0, 1)
    got = reconstruct_images(net, x, "cpu", batch=2)
    assert got.shape == (5, 1, 4, 6) and float(got.min()) >= 0 and float(got.max()) <= 1
    assert 0 < float((got == 0).float().mean()) < 1  # clamping happened, not everywhere
    torch.testing.assert_close(got, want)
