"""The iterative flow network: correlation volume, lookup, shapes."""

import numpy as np
import pytest
import torch

from evtransfer.models.flow import correlation_pyramid, iterative_flow_net, lookup
from evtransfer.models.swin import SwinTransformer

from .netref import DEVICES


def test_correlation_matches_float64_reference():
    gen = torch.Generator().manual_seed(0)
    f1, f2 = torch.randn(1, 4, 3, 5, generator=gen), torch.randn(1, 4, 3, 5, generator=gen)
    pyr = correlation_pyramid(f1, f2, 2)
    a, b = f1[0].double().numpy().reshape(4, -1), f2[0].double().numpy().reshape(4, -1)
    ref = (a.T @ b / 2.0).reshape(15, 3, 5)  # sqrt(C) = 2
    np.testing.assert_allclose(pyr[0][:, 0].numpy(), ref, rtol=1e-5, atol=1e-6)
    assert pyr[1].shape == (15, 1, 2, 3)  # ceil-mode pooling of the second grid


def test_lookup_at_zero_flow_reads_the_same_position():
    gen = torch.Generator().manual_seed(1)
    f1, f2 = torch.randn(2, 8, 4, 6, generator=gen), torch.randn(2, 8, 4, 6, generator=gen)
    pyr = correlation_pyramid(f1, f2, 1)
    ys, xs = torch.meshgrid(torch.arange(4.0), torch.arange(6.0), indexing="ij")
    coords = torch.stack([xs, ys])[None].expand(2, -1, -1, -1)
    out = lookup(pyr, coords, radius=1)
    assert out.shape == (2, 9, 4, 6)
    own = (f1 * f2).sum(1) / 8**0.5  # centre of the 3×3 window: the same pixel
    torch.testing.assert_close(out[:, 4], own, atol=1e-5, rtol=1e-5)
    shifted = lookup(pyr, coords + torch.tensor([1.0, 0.0]).view(1, 2, 1, 1), radius=0)
    torch.testing.assert_close(shifted[:, 0, :, :-1], (f1[..., :-1] * f2[..., 1:]).sum(1)
                               / 8**0.5, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_flow_net_returns_every_iterate_at_input_size(device):
    encoder = SwinTransformer(3, 0, 8, (1, 1, 1, 1), (1, 1, 2, 2), 2)
    net = iterative_flow_net(encoder, dim=8, hidden=8, iters=3, seed=0).to(device)
    flows = net.forward_all(torch.randn(2, 6, 40, 56, device=device))
    assert len(flows) == 3 and all(f.shape == (2, 2, 40, 56) for f in flows)
    sum(f.mean() for f in flows).backward()
    assert encoder.patch_embed.proj.weight.grad is not None
    with pytest.raises(ValueError, match="2C"):
        net(torch.randn(1, 5, 40, 56, device=device))
