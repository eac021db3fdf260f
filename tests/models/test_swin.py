"""Swin Transformer, dense-token fusion and UPerNet: counts, shapes, references."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evtransfer.models import swin
from evtransfer.models.registry import create_model

from .netref import DEVICES, n_params, randomize_


def swin_param_formula(in_chans, embed, depths, heads, window, num_classes, stage_norms,
                       patch=4, mlp_ratio=4):
    """Parameter count of a Swin Transformer from its configuration (independent formula)."""
    total = in_chans * embed * patch * patch + embed + 2 * embed  # patch conv + patch norm
    for i, (d, h) in enumerate(zip(depths, heads, strict=True)):
        c = embed * 2**i
        hidden = c * mlp_ratio
        block = (2 * c + 3 * c * c + 3 * c + c * c + c + (2 * window - 1) ** 2 * h
                 + 2 * c + c * hidden + hidden + hidden * c + c)
        total += d * block
        if i < len(depths) - 1:
            total += 2 * 4 * c + 4 * c * 2 * c  # merging: LayerNorm(4C) + Linear(4C, 2C)
    widths = [embed * 2**i for i in range(len(depths))]
    total += sum(2 * w for w in (widths if stage_norms else widths[-1:]))
    if num_classes:
        total += widths[-1] * num_classes + num_classes
    return total


def test_swin_t_matches_published_count():
    """Swin-T with a 1000-class head: 28 288 354 parameters (the official layout; the paper
    rounds it to 28M, timm lists 28.29M) — also the independent formula."""
    model = create_model("swin_t", num_classes=1000, stage_norms=False)
    assert n_params(model) == 28_288_354
    assert n_params(model) == swin_param_formula(3, 96, (2, 2, 6, 2), (3, 6, 12, 24), 7, 1000,
                                                 False)


@pytest.mark.parametrize("in_chans", [2, 20, 128])
def test_swin_count_formula_any_channels(in_chans):
    with torch.device("meta"):
        model = swin.swin_t(in_chans=in_chans, num_classes=0)
    assert n_params(model) == swin_param_formula(in_chans, 96, (2, 2, 6, 2), (3, 6, 12, 24), 7,
                                                 0, True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", [(64, 64), (67, 45)])
def test_swin_feature_shapes(device, size):
    model = swin.swin_t(in_chans=5, num_classes=0).to(device).eval()
    x = torch.randn(1, 5, *size, device=device)
    feats = model.forward_features(x)
    assert model.feature_strides == (4, 8, 16, 32)
    h, w = size
    for f, c, s in zip(feats, model.feature_channels, model.feature_strides, strict=True):
        assert f.shape == (1, c, -(-h // s), -(-w // s))
    assert model(x).shape == (1, 768)


def _naive_mask(hp, wp, ws, shift):
    """Shifted-window mask built as the official code does: label 9 regions by slices."""
    img = np.zeros((hp, wp), dtype=np.int64)
    cuts = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
    label = 0
    for hs in cuts:
        for wsl in cuts:
            img[hs, wsl] = label
            label += 1
    wins = img.reshape(hp // ws, ws, wp // ws, ws).transpose(0, 2, 1, 3).reshape(-1, ws * ws)
    diff = wins[:, None, :] != wins[:, :, None]
    return np.where(diff, -100.0, 0.0)


@pytest.mark.parametrize(("hp", "wp", "ws"), [(14, 21, 7), (8, 12, 4), (6, 6, 3)])
def test_shifted_window_mask_matches_region_labelling(hp, wp, ws):
    got = swin.shifted_window_mask(hp, wp, ws, ws // 2, torch.device("cpu")).numpy()
    np.testing.assert_array_equal(got, _naive_mask(hp, wp, ws, ws // 2))


def _hf_key(key: str) -> str:
    """Name of one of our UPerNet-Swin parameters in transformers' UperNet + SwinBackbone."""
    blk, hf = r"^encoder\.layers\.(\d+)\.blocks\.(\d+)\.", r"backbone.encoder.layers.\1.blocks.\2."
    head = "decode_head."
    rules = [
        (r"^encoder\.patch_embed\.proj\.", "backbone.embeddings.patch_embeddings.projection."),
        (r"^encoder\.patch_embed\.norm\.", "backbone.embeddings.norm."),
        (blk + r"norm1\.", hf + "layernorm_before."),
        (blk + r"norm2\.", hf + "layernorm_after."),
        (blk + r"attn\.proj\.", hf + "attention.o_proj."),
        (blk + r"attn\.relative_position_bias_table",
         hf + "attention.relative_position_bias.relative_position_bias_table"),
        (blk + r"mlp\.", hf + "mlp."),
        (r"^encoder\.layers\.(\d+)\.downsample\.", r"backbone.encoder.layers.\1.downsample."),
        (r"^encoder\.norm(\d)\.",
         lambda m: f"backbone.hidden_states_norms.stage{int(m[1]) + 1}."),
        (r"^decode_head\.ppm\.(\d+)\.1\.0\.", head + r"psp_modules.\1.1.conv."),
        (r"^decode_head\.ppm\.(\d+)\.1\.1\.", head + r"psp_modules.\1.1.batch_norm."),
        (r"^decode_head\.bottleneck\.0\.", head + "bottleneck.conv."),
        (r"^decode_head\.bottleneck\.1\.", head + "bottleneck.batch_norm."),
        (r"^decode_head\.fuse\.0\.", head + "fpn_bottleneck.conv."),
        (r"^decode_head\.fuse\.1\.", head + "fpn_bottleneck.batch_norm."),
        (r"^decode_head\.(lateral|fpn)\.(\d+)\.0\.", head + r"\1_convs.\2.conv."),
        (r"^decode_head\.(lateral|fpn)\.(\d+)\.1\.", head + r"\1_convs.\2.batch_norm."),
        (r"^decode_head\.classifier\.", head + "classifier."),
        (r"^aux_head\.convs\.(\d+)\.0\.", r"auxiliary_head.convs.\1.conv."),
        (r"^aux_head\.convs\.(\d+)\.1\.", r"auxiliary_head.convs.\1.batch_norm."),
        (r"^aux_head\.classifier\.", "auxiliary_head.classifier."),
    ]
    for pattern, repl in rules:
        new, n = re.subn(pattern, repl, key)
        if n:
            if new.startswith("backbone.") and "hidden_states_norms" not in new:
                new = new.replace("backbone.", "backbone.swin.", 1)
            return new
    raise KeyError(key)


@torch.no_grad()
def test_upernet_swin_matches_transformers_reference():
    """A small UPerNet-Swin equals transformers' UperNet + SwinBackbone with the same weights
    (window 4, 144×160 input: every stage is padded to the window, the last one shifted)."""
    tr = pytest.importorskip("transformers")
    bc = tr.SwinConfig(patch_size=4, num_channels=5, embed_dim=16, depths=[2, 2, 2, 2],
                       num_heads=[1, 2, 2, 4], window_size=4,
                       out_features=["stage1", "stage2", "stage3", "stage4"])
    cfg = tr.UperNetConfig(backbone_config=bc, hidden_size=32, auxiliary_in_channels=64,
                           auxiliary_channels=16, num_labels=7)
    ref = tr.UperNetForSemanticSegmentation(cfg).eval().double()
    encoder = swin.SwinTransformer(5, 0, 16, (2, 2, 2, 2), (1, 2, 2, 4), 4)
    ours = randomize_(swin.UPerNet(encoder, 7, channels=32, aux_channels=16)).eval().double()
    target = ref.state_dict()
    for key, value in ours.state_dict().items():
        if key.endswith("relative_position_index"):
            continue
        if key.endswith("attn.qkv.weight") or key.endswith("attn.qkv.bias"):
            base = _hf_key(key.replace("attn.qkv", "attn.proj")).replace("o_proj", "{}")
            for part, name in zip(value.chunk(3), ("q_proj", "k_proj", "v_proj"), strict=True):
                target[base.format(name)] = part
            continue
        target[_hf_key(key)] = value
    ref.load_state_dict(target)
    x = torch.randn(2, 5, 144, 160, dtype=torch.float64)
    out = ours.forward_all(x)
    want = ref(pixel_values=x)
    torch.testing.assert_close(out.logits, want.logits, rtol=1e-9, atol=1e-9)
    feats = ref.backbone(x).feature_maps
    for ours_f, ref_f in zip(out.features, feats, strict=True):
        torch.testing.assert_close(ours_f, ref_f, rtol=1e-9, atol=1e-9)
    aux = F.interpolate(ref.auxiliary_head(feats), size=x.shape[-2:], mode="bilinear")
    torch.testing.assert_close(out.aux_logits, aux, rtol=1e-9, atol=1e-9)


def upernet_head_formula(in_channels, channels, num_classes, aux_in, aux_channels):
    """Parameters of UPerHead (PPM 1-2-3-6) + FCN auxiliary head (independent formula)."""
    bn = 2 * channels
    top = in_channels[-1]
    total = 4 * (top * channels + bn)  # PPM 1×1 branches
    total += (top + 4 * channels) * channels * 9 + bn  # bottleneck
    total += sum(c * channels + bn for c in in_channels[:-1])  # laterals
    total += 3 * (channels * channels * 9 + bn)  # FPN convs
    total += 4 * channels * channels * 9 + bn  # fused bottleneck
    total += channels * num_classes + num_classes
    total += aux_in * aux_channels * 9 + 2 * aux_channels + aux_channels * num_classes + num_classes
    return total


def test_upernet_swin_t_count():
    """UPerNet Swin-T for ADE20K (150 classes): the Swin paper lists 60M parameters."""
    with torch.device("meta"):
        model = swin.upernet_swin_t(num_classes=150)
    backbone = swin_param_formula(3, 96, (2, 2, 6, 2), (3, 6, 12, 24), 7, 0, True)
    heads = upernet_head_formula((96, 192, 384, 768), 512, 150, 384, 256)
    assert n_params(model) == backbone + heads
    assert round(n_params(model) / 1e6) == 60


@pytest.mark.parametrize("device", DEVICES)
def test_upernet_shapes_and_gradients(device):
    model = swin.upernet_swin_t(in_chans=20, num_classes=11, channels=32,
                                aux_channels=16).to(device)
    x = torch.randn(2, 20, 64, 96, device=device)
    out = model.forward_all(x)
    assert out.logits.shape == (2, 11, 64, 96)
    assert out.aux_logits.shape == (2, 11, 64, 96)
    (out.logits.mean() + out.aux_logits.mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []


def test_dense_token_fusion_matches_manual_float64():
    """Average of the four projections, each computed by hand (pooling as block means,
    1×1 convs and the 2×2 stride-2 transposed conv as einsums)."""
    torch.manual_seed(0)
    fusion = randomize_(swin.dense_token_fusion((8, 16, 32, 64), dim=12)).double()
    feats = [torch.randn(2, c, 32 // 2**i, 48 // 2**i, dtype=torch.float64)
             for i, c in enumerate((8, 16, 32, 64))]
    got = fusion(feats)

    def pool(x, k):
        b, c, h, w = x.shape
        return x.reshape(b, c, h // k, k, w // k, k).mean(dim=(3, 5))

    w1, w2, w3 = (fusion.fpns[i][-1].weight[:, :, 0, 0] for i in range(3))
    wt = fusion.fpns[3][0].weight  # (in, out, 2, 2)
    p1 = torch.einsum("oc,bchw->bohw", w1, pool(feats[0], 4))
    p2 = torch.einsum("oc,bchw->bohw", w2, pool(feats[1], 2))
    p3 = torch.einsum("oc,bchw->bohw", w3, feats[2])
    p4 = torch.einsum("coij,bchw->bohiwj", wt, feats[3]).reshape(2, 12, 8, 12)
    torch.testing.assert_close(got, (p1 + p2 + p3 + p4) / 4, rtol=1e-12, atol=1e-12)
    assert got.shape == (2, 12, 8, 12)


def test_dense_tokens_from_swin_stride_16():
    model = swin.swin_t(in_chans=6, num_classes=0, eps=1e-6)
    fusion = swin.dense_token_fusion()
    out = fusion(model.forward_features(torch.randn(1, 6, 96, 64)))
    assert out.shape == (1, 768, 6, 4)
    with pytest.raises(ValueError, match="channels"):
        fusion(model.forward_features(torch.randn(1, 6, 96, 64))[:3])


def test_mask_token_replaces_masked_patches():
    model = swin.swin_t(in_chans=2, num_classes=0, mask_token=True).eval()
    with torch.no_grad():
        model.mask_token.fill_(3.0)
    x = torch.randn(2, 2, 48, 48)
    mask = torch.zeros(2, 3, 3, dtype=torch.bool)
    mask[0, 1, 2] = True
    tokens = model._embed(x, mask)
    assert torch.all(tokens[0, 4:8, 8:12] == 3.0)
    torch.testing.assert_close(tokens[1], model._embed(x, None)[1])
    torch.testing.assert_close(tokens[0, :4], model._embed(x, None)[0, :4])
    with pytest.raises(ValueError, match="mask"):
        model.forward_features(x, mask=torch.zeros(2, 5, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask_token"):
        swin.swin_t(in_chans=2, num_classes=0).forward_features(x, mask=mask)


def test_shift_changes_output_and_input_checks():
    model = swin.swin_t(in_chans=3, num_classes=0).eval()
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model.forward_features(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match="floating"):
        model.forward_features(torch.zeros(1, 3, 32, 32, dtype=torch.int64))
    x = torch.randn(1, 3, 56, 56)
    base = model.forward_features(x)[0]
    block = model.layers[0].blocks[1]
    block.shift = 0
    unshifted = model.forward_features(x)[0]
    assert not torch.allclose(base, unshifted)
    assert F.mse_loss(base, unshifted) > 0
