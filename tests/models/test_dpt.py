"""DPT depth network on ViT-hybrid and MiT encoders: reference, counts, outputs, checks."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evtransfer.models import dpt
from evtransfer.models.registry import create_model

from .netref import DEVICES, n_params, randomize_


@pytest.mark.parametrize(("n", "k", "s"), [(7, 7, 2), (8, 7, 2), (9, 3, 2), (10, 3, 1), (5, 1, 2)])
def test_pad_same_gives_ceil_output(n, k, s):
    """TF "same": output ⌈n/s⌉, total padding max((⌈n/s⌉−1)·s + k − n, 0), the odd pixel at
    the end; the input sits unchanged at offset total // 2."""
    x = torch.randn(1, 1, n, n + 1)
    padded = dpt.pad_same(x, k, s, value=-7.0)
    totals = [max((math.ceil(m / s) - 1) * s + k - m, 0) for m in (n, n + 1)]
    assert padded.shape[-2:] == (n + totals[0], n + 1 + totals[1])
    top, left = totals[0] // 2, totals[1] // 2
    torch.testing.assert_close(padded[..., top:top + n, left:left + n + 1], x, rtol=0, atol=0)
    assert (padded == -7.0).sum() == padded.numel() - x.numel()
    y = F.conv2d(padded, torch.ones(1, 1, k, k), stride=s)
    assert y.shape[-2:] == (math.ceil(n / s), math.ceil((n + 1) / s))


def test_std_conv_standardises_weights_float64():
    torch.manual_seed(0)
    conv = dpt.StdConv2d(3, 4, 3).double()
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64)
    w = conv.weight.detach().numpy()
    flat = w.reshape(4, -1)
    std_w = (flat - flat.mean(1, keepdims=True)) / np.sqrt(flat.var(1, keepdims=True) + 1e-8)
    want = F.conv2d(x, torch.from_numpy(std_w.reshape(w.shape)), padding=1)
    torch.testing.assert_close(conv(x), want, rtol=1e-12, atol=1e-12)


def _hf_key(key: str) -> str | None:
    """Name of one of our DPT-hybrid parameters in transformers' DPTForDepthEstimation."""
    stem = "dpt.embeddings.backbone.bit."
    layer = stem + r"encoder.stages.\1.layers.\2."
    block, hf = r"^encoder\.blocks\.(\d+)\.", r"dpt.encoder.layer.\1."
    reassemble = "neck.reassemble_stage."

    def fusion(part):
        return lambda m: f"neck.fusion_stage.layers.{3 - int(m[1])}.{part}".format(*m.groups())

    rules = [
        (r"^encoder\.stem_conv\.", stem + "embedder.convolution."),
        (r"^encoder\.stem_norm\.", stem + "embedder.norm."),
        (r"^encoder\.stages\.(\d+)\.(\d+)\.down\.0\.", layer + "downsample.conv."),
        (r"^encoder\.stages\.(\d+)\.(\d+)\.down\.1\.", layer + "downsample.norm."),
        (r"^encoder\.stages\.(\d+)\.(\d+)\.", layer),
        (r"^encoder\.patch_proj\.", "dpt.embeddings.projection."),
        (r"^encoder\.cls_token$", "dpt.embeddings.cls_token"),
        (r"^encoder\.pos_embed$", "dpt.embeddings.position_embeddings"),
        (block + r"norm1\.", hf + "layernorm_before."),
        (block + r"norm2\.", hf + "layernorm_after."),
        (block + r"attn\.proj\.", hf + "attention.output.dense."),
        (block + r"mlp\.0\.", hf + "intermediate.dense."),
        (block + r"mlp\.2\.", hf + "output.dense."),
        (r"^readouts\.(\d+)\.project\.0\.",
         lambda m: f"{reassemble}readout_projects.{int(m[1]) + 2}.0."),
        (r"^post3\.", reassemble + "layers.2.projection."),
        (r"^post4\.0\.", reassemble + "layers.3.projection."),
        (r"^post4\.1\.", reassemble + "layers.3.resize."),
        (r"^layer_rn\.(\d+)\.", r"neck.convs.\1."),
        (r"^fusion\.(\d+)\.skip_unit\.conv(\d)\.", fusion("residual_layer1.convolution{1}.")),
        (r"^fusion\.(\d+)\.unit\.conv(\d)\.", fusion("residual_layer2.convolution{1}.")),
        (r"^fusion\.(\d+)\.out_conv\.", fusion("projection.")),
        (r"^head\.", "head.head."),
    ]
    for pattern, repl in rules:
        new, n = re.subn(pattern, repl, key)
        if n:
            return new
    raise KeyError(key)


@torch.no_grad()
def test_dpt_hybrid_matches_transformers_reference():
    """A small DPT-hybrid (BiT stem 1-1-1, 4-block ViT, hooks 1 and 3, readout project) equals
    transformers' DPTForDepthEstimation with the same weights (its head ends in a ReLU, so
    ours is built with `non_negative=True`)."""
    tr = pytest.importorskip("transformers")
    bc = tr.BitConfig(num_channels=6, layer_type="bottleneck", global_padding="same",
                      embedding_dynamic_padding=True, depths=[1, 1, 1],
                      hidden_sizes=[128, 256, 512], out_features=["stage1", "stage2", "stage3"])
    cfg = tr.DPTConfig(is_hybrid=True, backbone_config=bc, backbone_featmap_shape=[1, 512, 4, 4],
                       hidden_size=96, num_hidden_layers=4, num_attention_heads=3,
                       intermediate_size=384, image_size=64, patch_size=16, num_channels=6,
                       backbone_out_indices=[0, 1, 1, 3], neck_hidden_sizes=[128, 256, 96, 96],
                       reassemble_factors=[1, 1, 1, 0.5], fusion_hidden_size=32,
                       readout_type="project", layer_norm_eps=1e-6, head_in_index=-1)
    ref = tr.DPTForDepthEstimation(cfg).eval().double()
    encoder = dpt.ViTHybrid(6, (1, 1, 1), (128, 256, 512), 96, 4, 3, (1, 3), pretrain_grid=4)
    ours = dpt.DPTDepth(encoder, features=32, uncertainty=False, non_negative=True)
    ours = randomize_(ours).eval().double()
    target = ref.state_dict()
    for key, value in ours.state_dict().items():
        if ".attn.qkv." in key:
            layer = re.match(r"encoder\.blocks\.(\d+)\.", key)[1]
            kind = key.rsplit(".", 1)[1]
            for part, name in zip(value.chunk(3), ("query", "key", "value"), strict=True):
                target[f"dpt.encoder.layer.{layer}.attention.attention.{name}.{kind}"] = part
            continue
        target[_hf_key(key)] = value
    ref.load_state_dict(target)
    x = torch.randn(2, 6, 64, 64, dtype=torch.float64)
    got = ours(x)
    want = ref(pixel_values=x).predicted_depth
    assert got.shape == (2, 1, 64, 64)
    torch.testing.assert_close(got[:, 0], want, rtol=1e-8, atol=1e-9)


def test_dpt_hybrid_count_matches_published():
    """DPT-Hybrid is listed with 123M parameters (DPT paper). That figure includes three parts
    DPT never uses and we do not build: timm's 1000-class head (768·1000 + 1000), the ViT's
    final LayerNorm (2·768) and the deepest fusion block's first residual unit
    (2·(256·256·9 + 256))."""
    with torch.device("meta"):
        model = dpt.dpt_hybrid()
    unused = (768 * 1000 + 1000) + 2 * 768 + 2 * (256 * 256 * 9 + 256)
    assert round((n_params(model) + unused) / 1e6) == 123
    with torch.device("meta"):
        spikes = dpt.dpt_hybrid(in_chans=128)
    assert n_params(spikes) - n_params(model) == (128 - 3) * 64 * 7 * 7


@pytest.mark.parametrize("device", DEVICES)
def test_forward_all_shapes_and_gradients(device):
    model = dpt.dpt_hybrid_small(in_chans=128).to(device)
    x = torch.randn(2, 128, 64, 96, device=device)
    out = model.forward_all(x)
    assert out.depth.shape == out.raw.shape == out.uncertainty.shape == (2, 1, 64, 96)
    assert [t.shape[1:] for t in out.layers] == [(64, 16, 24), (128, 8, 12), (192, 4, 6),
                                                 (192, 2, 3)]
    assert [t.shape[-2:] for t in out.paths] == [(32, 48), (16, 24), (8, 12), (4, 6)]
    (out.depth.mean() + out.uncertainty.mean()).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_inverse_affine_depth_float64():
    model = dpt.dpt_hybrid_small(in_chans=3, depth_mode="inverse_affine", scale=3.05e-4,
                                 shift=0.1378).double().eval()
    with torch.no_grad():
        model.head[-2].bias.fill_(-500.0)  # drive some s·x + t below the 1e-8 floor
        out = model.forward_all(torch.randn(1, 3, 64, 64, dtype=torch.float64))
    raw = out.raw.numpy()
    want = 1.0 / np.maximum(3.05e-4 * raw + 0.1378, 1e-8)
    np.testing.assert_allclose(out.depth.numpy(), want, rtol=1e-12)
    assert (3.05e-4 * raw + 0.1378 < 1e-8).any()


@pytest.mark.parametrize(("act", "low", "high"), [("sigmoid", 0.0, 1.0), ("softplus", 0.0, None)])
def test_uncertainty_activation(act, low, high):
    model = dpt.dpt_hybrid_small(uncertainty_activation=act).eval()
    with torch.no_grad():
        u = model.forward_all(torch.randn(1, 3, 32, 32)).uncertainty
    assert (u > low).all()
    assert high is None or (u < high).all()
    assert dpt.dpt_hybrid_small(uncertainty=False).forward_all(
        torch.randn(1, 3, 32, 32)).uncertainty is None


def test_readout_modes():
    counts = {r: n_params(dpt.dpt_hybrid_small(readout=r)) for r in ("ignore", "add", "project")}
    assert counts["ignore"] == counts["add"]
    assert counts["project"] - counts["ignore"] == 2 * (2 * 192 * 192 + 192)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        a = dpt.dpt_hybrid_small(readout="ignore").eval()(x)
        b = dpt.dpt_hybrid_small(readout="add").eval()(x)
    assert not torch.allclose(a, b)


def test_position_embedding_resized_for_other_grids():
    model = dpt.dpt_hybrid_small().eval()
    tokens = model.encoder.forward_tokens(torch.randn(1, 3, 64, 128)).tokens
    assert tokens[0].shape == (1, 1 + 4 * 8, 192)
    same = model.encoder._pos_embed(24, 24)
    torch.testing.assert_close(same, model.encoder.pos_embed)


def test_input_validation():
    model = dpt.dpt_hybrid_small()
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.randn(1, 3, 48, 64))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.randn(1, 4, 64, 64))
    with pytest.raises(ValueError, match="depth_mode"):
        dpt.dpt_hybrid_small(depth_mode="log")
    with pytest.raises(ValueError, match="hooks"):
        dpt.ViTHybrid(hooks=(8, 10))
    with pytest.raises(ValueError, match="depht_mode"):
        create_model("dpt_hybrid_small", depht_mode="raw")


def test_dpt_on_mit():
    model = create_model("dpt_mit_b0", in_chans=10, features=32)
    out = model.forward_all(torch.randn(1, 10, 64, 96))
    assert [t.shape[1] for t in out.layers] == [32, 64, 160, 256]
    assert out.depth.shape == (1, 1, 64, 96)
    assert model.feature_strides == (4, 8, 16, 32)
