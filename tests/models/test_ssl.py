"""Self-supervised pieces: dense-token encoder with masking, attention pooling, heads."""

import pytest
import torch

from evtransfer.models.mit import build_mit
from evtransfer.models.ssl import (
    AttentionPool,
    DenseTokenEncoder,
    dense_token_encoder,
    projection_head,
)
from evtransfer.models.swin import SwinTransformer

from .netref import DEVICES


def _swin(mask_token=True):
    return SwinTransformer(4, 0, 8, (1, 1, 1, 1), (1, 1, 2, 2), 2, mask_token=mask_token)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["swin", "mit"])
def test_dense_tokens_shape_and_masking(device, kind):
    encoder = _swin() if kind == "swin" else build_mit("b0", in_chans=4, drop_path_rate=0.0)
    net = dense_token_encoder(encoder, 32).to(device).eval()
    x = torch.randn(2, 4, 64, 96, device=device)
    tokens = net(x)
    assert tokens.shape == (2, 32, 4, 6)
    none = torch.zeros(2, 4, 6, dtype=torch.bool, device=device)
    torch.testing.assert_close(net(x, none), tokens)
    some = none.clone()
    some[0, 1, 2] = True
    masked = net(x, some)
    torch.testing.assert_close(masked[1], tokens[1])  # the other sample is untouched
    assert not torch.allclose(masked[0], tokens[0])


def test_dense_token_encoder_needs_a_mask_token_on_swin():
    with pytest.raises(ValueError, match="mask_token=True"):
        DenseTokenEncoder(_swin(mask_token=False), 16)


def test_attention_pool_mask_restricts_each_query_to_its_tokens():
    torch.manual_seed(0)
    pool = AttentionPool(32).eval()
    tokens = torch.randn(1, 6, 32)
    mask = torch.tensor([[[True, True, False, False, False, False],
                          [False, False, True, True, True, True]]])
    out = pool(tokens, (2, 3), queries=2, mask=mask)
    changed = tokens.clone()
    changed[0, 3:] += 5.0  # tokens only query 1 may read
    again = pool(changed, (2, 3), queries=2, mask=mask)
    torch.testing.assert_close(again[0, 0], out[0, 0])
    assert not torch.allclose(again[0, 1], out[0, 1])
    empty = torch.zeros(1, 2, 6, dtype=torch.bool)
    assert torch.isfinite(pool(tokens, (2, 3), 2, empty)).all()  # a query sees itself


def test_projection_head_prototypes_have_norm_g():
    head = projection_head(16, 10, hidden=8, bottleneck=4, seed=0)
    w = head.last_layer.weight_g * torch.nn.functional.normalize(head.last_layer.weight_v, dim=1)
    torch.testing.assert_close(w.norm(dim=1), torch.ones(10))
    logits = head(torch.randn(3, 16)).detach()
    assert logits.shape == (3, 10) and float(logits.abs().max()) <= 1.0 + 1e-5  # cosines
    with pytest.raises(ValueError, match="pool=True"):
        head.pooled(torch.randn(1, 4, 16), (2, 2))
