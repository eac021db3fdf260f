"""The model contract over the whole registry (timm's test_models in spirit): every encoder's
`forward_features(x)` returns maps matching its `feature_channels` / `feature_strides`, and
every segmenter's `forward(x)` returns logits of the right shape. Each model is built small on
the CPU; a registered name missing from `TABLE` fails, so a new model cannot escape."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from evtransfer.models import create_model, list_models

B, H, W = 2, 64, 96  # divisible by every stride (up to 32), non-square to catch H/W swaps
CLASSES = 3
SMALL = {"base_channels": 4}  # the U-Nets' widths

# name: (role, builder kwargs, input channels, logits stride). Roles: "encoder" (the
# forward_features contract), "segmenter" (logits; also the encoder contract when it has
# forward_features), "head" (takes feature maps, not images: outside the contract).
TABLE: dict[str, tuple[str, dict, int, int]] = {
    "classifier_head": ("head", {}, 0, 0),
    "fcn_head": ("head", {}, 0, 0),
    "latent_seg_decoder": ("head", {}, 0, 0),
    "dense_token_fusion": ("head", {}, 0, 0),
    **{f"resnet{d}": ("encoder", {"in_chans": 2, "num_classes": 0}, 2, 0)
       for d in (18, 34, 50, 101)},
    **{f"deeplabv3plus_resnet{d}": ("segmenter", {"in_chans": 2, "num_classes": CLASSES}, 2, 1)
       for d in (18, 34, 50, 101)},
    "swin_t": ("encoder", {"in_chans": 2, "num_classes": 0}, 2, 0),
    "upernet_swin_t": ("segmenter", {"in_chans": 2, "num_classes": CLASSES, "channels": 16,
                                     "aux_channels": 8}, 2, 1),
    "dpt_hybrid": ("encoder", {"in_chans": 2, "features": 16}, 2, 0),
    "dpt_hybrid_small": ("encoder", {"in_chans": 2, "features": 16}, 2, 0),
    **{f"dpt_mit_b{i}": ("encoder", {"in_chans": 2, "features": 16}, 2, 0) for i in range(6)},
    "e2vid": ("encoder", {"in_chans": 5, **SMALL}, 5, 0),
    "img2event": ("encoder", {"in_chans": 1, **SMALL}, 1, 0),
    "image_latent_encoder": ("encoder", {"in_chans": 1, **SMALL}, 1, 0),
    **{f"mit_b{i}": ("encoder", {"in_chans": 2}, 2, 0) for i in range(6)},
    **{f"segformer_b{i}": ("segmenter", {"in_chans": 2, "num_classes": CLASSES}, 2, 4)
       for i in range(6)},
    "e2vid_segmenter": ("segmenter", {"in_chans": 10, "bins": 5, "num_classes": CLASSES,
                                      "decoder_res_blocks": 1, **SMALL}, 10, 1),
}


def contract_problems(model: nn.Module, x: torch.Tensor, role: str, logits_stride: int
                      ) -> list[str]:
    """What `model` breaks of the contract on input x (B, C, H, W); empty when it honours it."""
    problems = []
    b, _, h, w = x.shape
    encoder = hasattr(model, "forward_features")
    if role == "encoder" and not encoder:
        return ["has no forward_features"]
    if encoder:
        params = list(inspect.signature(model.forward_features).parameters.values())
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if len(positional) != 1 or any(p.default is p.empty for p in params[1:]):
            problems.append("forward_features must take x alone (extra arguments as optional "
                            f"keywords), got {inspect.signature(model.forward_features)}")
        channels = tuple(getattr(model, "feature_channels", ()))
        strides = tuple(getattr(model, "feature_strides", ()))
        feats = model.forward_features(x)
        if not isinstance(feats, list | tuple) or not all(
                isinstance(f, torch.Tensor) for f in feats):
            return [f"forward_features(x) must return a list of tensors, got "
                    f"{type(feats).__name__}"]
        if not channels or len(channels) != len(strides):
            problems.append(f"feature_channels {channels} / feature_strides {strides}")
        if len(feats) != len(channels):
            problems.append(f"{len(feats)} maps for feature_channels {channels}")
        for i, (f, c, s) in enumerate(zip(feats, channels, strides, strict=False)):
            want = (b, c, -(-h // s), -(-w // s))
            if tuple(f.shape) != want:
                problems.append(f"map {i} is {tuple(f.shape)}, want {want} (channels {c}, "
                                f"stride {s})")
        if list(strides) != sorted(strides):
            problems.append(f"feature_strides {strides} not shallow to deep")
    if role == "segmenter":
        logits = model(x)
        want = (b, CLASSES, h // logits_stride, w // logits_stride)
        if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != want:
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
            problems.append(f"logits {got}, want {want}")
    return problems


def check_contract(name: str, model: nn.Module, x: torch.Tensor, role: str,
                   logits_stride: int = 1) -> None:
    """Fail naming `name` when the model breaks the contract."""
    problems = contract_problems(model, x, role, logits_stride)
    if problems:
        pytest.fail(f"model {name!r} breaks the contract: " + "; ".join(problems))


def test_every_registered_model_has_a_row():
    assert sorted(TABLE) == list_models(), (
        f"add a row to TABLE for {sorted(set(list_models()) - set(TABLE))}; "
        f"stale rows {sorted(set(TABLE) - set(list_models()))}")


@pytest.mark.parametrize("name", [n for n, row in TABLE.items() if row[0] != "head"])
def test_model_honours_the_contract(name):
    role, kwargs, chans, logits_stride = TABLE[name]
    model = create_model(name, **kwargs).eval()
    x = torch.randn(B, chans, H, W, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        check_contract(name, model, x, role, logits_stride)


class _StatefulEncoder(nn.Module):
    """Breaks the contract the way the recurrent U-Net used to: (maps, state)."""

    feature_channels, feature_strides = (4,), (2,)

    def forward_features(self, x):
        return [x.new_zeros(x.shape[0], 4, x.shape[2] // 2, x.shape[3] // 2)], None


class _WrongStride(_StatefulEncoder):
    def forward_features(self, x):
        return [x.new_zeros(x.shape[0], 4, x.shape[2] // 4, x.shape[3] // 4)]


class _PositionalExtra(_WrongStride):
    def forward_features(self, x, state=None):
        return [x.new_zeros(x.shape[0], 4, x.shape[2] // 2, x.shape[3] // 2)]


@pytest.mark.parametrize(("model", "match"), [
    (_StatefulEncoder(), "must return a list of tensors"),
    (_PositionalExtra(), r"must take x alone .*\(x, state=None\)"),
    (_WrongStride(), r"map 0 is \(2, 4, 16, 24\), want \(2, 4, 32, 48\)"),
    (nn.Identity(), "has no forward_features"),
])
def test_a_broken_model_fails_with_its_name(model, match):
    with pytest.raises(pytest.fail.Exception, match=rf"model 'broken' .*{match}"):
        check_contract("broken", model, torch.zeros(B, 1, H, W), "encoder")


def test_a_segmenter_with_wrong_logits_fails_with_its_name():
    with pytest.raises(pytest.fail.Exception, match=r"'seg'.*logits \(2, 1, 64, 96\)"):
        check_contract("seg", nn.Identity(), torch.zeros(B, 1, H, W), "segmenter")
