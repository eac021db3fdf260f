import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evtransfer.models.mit import (
    EfficientAttention,
    MiTConfig,
    MixVisionTransformer,
    SegFormerHead,
    build_mit,
    build_segformer,
    mit_config,
)
from evtransfer.models.weights import hf_segformer_to_evtransfer

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
TINY = dict(embed_dims=(8, 16, 24, 32), depths=(1, 2, 1, 1), num_heads=(1, 2, 3, 4),
            sr_ratios=(4, 2, 2, 1), in_chans=2, drop_path_rate=0.0)


def tiny_encoder(seed: int = 0, **kw) -> MixVisionTransformer:
    from evtransfer.models.mit import init_mit_weights

    return init_mit_weights(MixVisionTransformer(MiTConfig(**{**TINY, **kw})), seed).eval()


def hand_param_count(dims, depths, sr, num_classes, decoder_dim, in_chans=3, mlp=4):
    """SegFormer parameter count from the architecture, written out by hand."""
    total, cin = 0, in_chans
    for i, (c, d, r) in enumerate(zip(dims, depths, sr, strict=True)):
        k = 7 if i == 0 else 3
        total += k * k * cin * c + c + 2 * c  # patch conv + LayerNorm
        block = 2 * c + (c * c + c) + (2 * c * c + 2 * c) + (c * c + c) + 2 * c  # n1 q kv proj n2
        block += (c * r * r * c + c + 2 * c) if r > 1 else 0  # reduction conv + LayerNorm
        block += (c * mlp * c + mlp * c) + (mlp * c * 9 + mlp * c) + (mlp * c * c + c)  # FFN
        total += d * block + 2 * c  # blocks + stage norm
        cin = c
    total += sum(c * decoder_dim + decoder_dim for c in dims)  # per-stage projections
    total += len(dims) * decoder_dim * decoder_dim + 2 * decoder_dim  # fuse + BatchNorm
    return total + decoder_dim * num_classes + num_classes  # classifier


def test_segformer_b0_has_3_72_m_parameters():
    model = build_segformer("b0", num_classes=19)
    n = sum(p.numel() for p in model.parameters())
    assert n == hand_param_count((32, 64, 160, 256), (2, 2, 2, 2), (8, 4, 2, 1), 19, 256)
    assert round(n / 1e6, 2) == 3.72  # CMESS project page table


@pytest.mark.parametrize("variant, millions", [("b0", 3.8), ("b4", 64.1), ("b5", 84.7)])
def test_ade20k_parameter_counts_match_the_paper(variant, millions):
    with torch.device("meta"):  # no memory, no init cost
        model = build_segformer(variant, num_classes=150)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == millions


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("in_chans, size", [(2, (64, 96)), (20, (61, 45)), (128, (32, 32))])
def test_feature_maps_have_documented_shapes(device, in_chans, size):
    enc = build_mit("b0", in_chans=in_chans).to(device).eval()
    x = torch.randn(2, in_chans, *size, device=device)
    feats = enc.forward_features(x)
    h, w = size
    for f, c, s in zip(feats, enc.feature_channels, enc.feature_strides, strict=True):
        assert f.shape == (2, c, math.ceil(h / s), math.ceil(w / s))
        assert torch.isfinite(f).all()
    assert enc.feature_strides == (4, 8, 16, 32)


def test_float64_model_runs_in_float64():
    enc = tiny_encoder().double()
    feats = enc.forward_features(torch.randn(1, 2, 40, 40, dtype=torch.float64))
    assert all(f.dtype == torch.float64 for f in feats)


def test_same_seed_same_weights_and_other_seed_differs():
    a, b, c = (build_segformer("b0", num_classes=3, in_chans=2, seed=s) for s in (1, 1, 2))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["encoder.stages.0.blocks.0.attn.q.weight"],
                           sc["encoder.stages.0.blocks.0.attn.q.weight"])


def np_layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * w + b


def test_cross_attention_matches_float64_numpy_reference():
    torch.manual_seed(0)
    dim, heads, r, eps = 6, 2, 2, 1e-5
    attn = EfficientAttention(dim, heads, r, qkv_bias=True, eps=eps).double()
    with torch.no_grad():
        attn.sr_norm.weight.normal_()
        attn.sr_norm.bias.normal_()
    hq, wq, hk, wk = 3, 5, 4, 6  # queries and context of different sizes
    q_tok = torch.randn(1, hq * wq, dim, dtype=torch.float64)
    kv_tok = torch.randn(1, hk * wk, dim, dtype=torch.float64)
    out = attn(q_tok, (hq, wq), context=(kv_tok, (hk, wk))).detach().numpy()[0]

    p = {k: v.detach().numpy() for k, v in attn.state_dict().items()}
    grid = kv_tok.numpy()[0].reshape(hk, wk, dim)
    reduced = np.zeros((hk // r, wk // r, dim))
    for i in range(hk // r):  # the strided conv written as a sum over each r×r patch
        for j in range(wk // r):
            patch = grid[i * r:(i + 1) * r, j * r:(j + 1) * r]  # (r, r, C_in)
            reduced[i, j] = np.einsum("oikl,kli->o", p["sr.weight"], patch) + p["sr.bias"]
    ctx = np_layer_norm(reduced.reshape(-1, dim), p["sr_norm.weight"], p["sr_norm.bias"], eps)
    q = q_tok.numpy()[0] @ p["q.weight"].T + p["q.bias"]
    kv = ctx @ p["kv.weight"].T + p["kv.bias"]
    k, v, d = kv[:, :dim], kv[:, dim:], dim // heads
    heads_out = []
    for h in range(heads):
        s = q[:, h * d:(h + 1) * d] @ k[:, h * d:(h + 1) * d].T / np.sqrt(d)
        a = np.exp(s - s.max(-1, keepdims=True))
        heads_out.append(a / a.sum(-1, keepdims=True) @ v[:, h * d:(h + 1) * d])
    ref = np.concatenate(heads_out, -1) @ p["proj.weight"].T + p["proj.bias"]
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-12)


def reference_cross(enc, x_q, x_kv, cross_stages):
    """The cross branch by its definition: K/V stream run alone, block by block."""
    c, s, out = x_q, x_kv, []
    for i, stage in enumerate(enc.stages):
        c_tok, c_hw = stage.patch_embed(c)
        s_tok, s_hw = stage.patch_embed(s)
        for block in stage.blocks:
            ctx = (s_tok, s_hw) if i in cross_stages else None
            c_tok, s_tok = block(c_tok, c_hw, context=ctx), block(s_tok, s_hw)
        c = stage.norm(c_tok).transpose(1, 2).reshape(-1, c_tok.shape[-1], *c_hw)
        s = stage.norm(s_tok).transpose(1, 2).reshape(-1, s_tok.shape[-1], *s_hw)
        out.append(c)
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kv_size", [(40, 56), (48, 40)])
@pytest.mark.parametrize("cross_stages", [None, (1, 2), (3,)])
def test_forward_branches_match_separate_runs(device, kv_size, cross_stages):
    enc = tiny_encoder().double().to(device)
    g = torch.Generator().manual_seed(3)
    x_q = torch.randn(2, 2, 40, 56, generator=g, dtype=torch.float64).to(device)
    x_kv = torch.randn(2, 2, *kv_size, generator=g, dtype=torch.float64).to(device)
    with torch.no_grad():
        br = enc.forward_branches(x_q, x_kv, cross_stages)
        expect_cross = reference_cross(enc, x_q, x_kv, set(cross_stages or range(4)))
        expect_q, expect_kv = enc.forward_features(x_q), enc.forward_features(x_kv)
        via_context = enc.forward_features(x_q, context=x_kv, cross_stages=cross_stages)
    for got, want in [(br.cross, expect_cross), (br.q_self, expect_q), (br.kv_self, expect_kv),
                      (via_context, expect_cross)]:
        for g_, w_ in zip(got, want, strict=True):
            torch.testing.assert_close(g_, w_, rtol=1e-10, atol=1e-10)


def test_cross_branch_with_itself_is_self_attention_and_otherwise_differs():
    enc = tiny_encoder()
    x, y = torch.randn(2, 2, 40, 40), torch.randn(2, 2, 40, 40)
    with torch.no_grad():
        same = enc.forward_branches(x, x.clone())
        other = enc.forward_branches(x, y)
        none = enc.forward_branches(x, y, cross_stages=())
    for a, b in zip(same.cross, same.q_self, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for a, b in zip(none.cross, none.q_self, strict=True):
        assert torch.equal(a, b)
    assert not torch.allclose(other.cross[-1], other.q_self[-1], atol=1e-3)


def test_branches_backpropagate_into_every_parameter():
    enc = tiny_encoder().train()
    br = enc.forward_branches(torch.randn(2, 2, 40, 40), torch.randn(2, 2, 40, 40))
    sum(f.square().mean() for branch in br for f in branch).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())


def test_segformer_branches_give_logits_per_branch():
    model = build_segformer("b0", num_classes=5, in_chans=2).eval()
    x_q, x_kv = torch.randn(1, 2, 64, 64), torch.randn(1, 2, 48, 80)
    with torch.no_grad():
        br = model.forward_branches(x_q, x_kv, cross_stages=(2, 3))
        torch.testing.assert_close(br.q_self, model(x_q))
        torch.testing.assert_close(br.kv_self, model(x_kv))
        torch.testing.assert_close(br.cross, model(x_q, context=x_kv, cross_stages=(2, 3)))
    assert model.forward_upsampled(x_q).shape == (1, 5, 64, 64)


@pytest.mark.parametrize("batch", [1, 2])  # both memory layouts the head picks
@pytest.mark.parametrize("grad", [False, True])  # in-place and autograd accumulation
def test_decoder_equals_concat_then_fuse_reference(batch, grad):
    torch.manual_seed(0)
    chans, d, k = (4, 6, 8, 10), 12, 3
    head = SegFormerHead(chans, d, k).double().eval()
    with torch.no_grad():
        head.norm.running_mean.normal_()
        head.norm.running_var.uniform_(0.5, 2.0)
    sizes = [(11, 13), (6, 7), (3, 4), (2, 2)]
    feats = [torch.randn(batch, c, *s, dtype=torch.float64)
             for c, s in zip(chans, sizes, strict=True)]
    ups = []
    for f, proj in zip(feats, head.proj, strict=True):  # the paper's order of operations
        y = torch.einsum("bchw,dc->bdhw", f, proj.weight) + proj.bias[:, None, None]
        ups.append(F.interpolate(y, size=sizes[0], mode="bilinear", align_corners=False))
    fused = torch.einsum("bchw,dc->bdhw", torch.cat(ups[::-1], 1), head.fuse.weight)
    bn = head.norm
    z = (fused - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var + bn.eps)[:, None,
                                                                                        None]
    z = torch.relu(z * bn.weight[:, None, None] + bn.bias[:, None, None])
    ref = torch.einsum("bchw,kc->bkhw", z, head.classifier.weight[:, :, 0, 0])
    ref = ref + head.classifier.bias[:, None, None]
    with torch.set_grad_enabled(grad):
        out = head(feats)
    assert out.is_contiguous()
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bad, message", [
    (torch.randn(1, 3, 64, 64), "shape \\(B, 2, H, W\\)"),
    (torch.randn(1, 2, 24, 64), "too small"),
    (torch.zeros(1, 2, 64, 64, dtype=torch.int64), "floating"),
    (torch.randn(2, 64, 64), "shape"),
])
def test_bad_inputs_raise_clear_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        build_mit("b0", in_chans=2).forward_features(bad)


def test_bad_branch_arguments_raise():
    enc = tiny_encoder()
    x = torch.randn(2, 2, 40, 40)
    with pytest.raises(ValueError, match="same batch size"):
        enc.forward_branches(x, x[:1])
    with pytest.raises(ValueError, match="cross_stages"):
        enc.forward_branches(x, x, cross_stages=(4,))
    with pytest.raises(ValueError, match="not divisible"):
        MiTConfig(embed_dims=(10, 16, 24, 32))
    with pytest.raises(ValueError, match="one per stage"):
        MiTConfig(depths=(2, 2))
    with pytest.raises(ValueError, match="unknown MiT variant"):
        mit_config("b9")


def perturbed_hf_segformer(num_labels=19, **config):
    """A randomly initialised `transformers` SegFormer-B0 whose norms and BatchNorm
    statistics are moved off their identity defaults so that a mis-mapped norm shows."""
    transformers = pytest.importorskip("transformers", reason="transformers not installed")
    torch.manual_seed(0)
    cfg = transformers.SegformerConfig(num_labels=num_labels, **config)
    hf = transformers.SegformerForSemanticSegmentation(cfg).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in hf.state_dict().items():
            if t.is_floating_point() and t.ndim == 1:
                t.add_(0.1 * torch.randn(t.shape, generator=g))
                if "running_var" in name:
                    t.abs_().add_(0.5)
    return hf


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_logits_match_transformers_segformer(dtype, tol):
    hf = perturbed_hf_segformer()
    n_hf = sum(p.numel() for p in hf.parameters())
    ours = build_segformer("b0", num_classes=19, norm_eps=1e-5).eval()
    assert sum(p.numel() for p in ours.parameters()) == n_hf
    ours.load_state_dict(hf_segformer_to_evtransfer(hf.state_dict()), strict=True)
    hf.to(dtype)
    ours.to(dtype)
    g = torch.Generator().manual_seed(2)
    for shape in [(2, 3, 64, 64), (1, 3, 72, 100)]:
        x = torch.randn(*shape, generator=g, dtype=dtype)
        with torch.no_grad():
            want = hf(pixel_values=x).logits
            got = ours(x)
        assert got.shape == want.shape
        assert (got - want).abs().max().item() < tol
