"""Encoder checkpoints: save, load into matching / other architectures, the init scope."""

import pytest
import torch
from safetensors.torch import save_file

from evtransfer.models import create_model
from evtransfer.models.mit import build_mit
from evtransfer.models.swin import SwinTransformer, UPerNet
from evtransfer.models.weights import encoder_init, load_encoder_init, save_encoder


def _swin(in_chans, seed):
    torch.manual_seed(seed)
    return SwinTransformer(in_chans, 0, 8, (1, 1, 1, 1), (1, 1, 2, 2), 2, mask_token=True)


def test_swin_checkpoint_into_upernet_with_other_input_channels(tmp_path):
    src = _swin(6, 0)
    path = save_encoder(tmp_path / "enc.safetensors", src, {"method": "test"})
    net = UPerNet(SwinTransformer(20, 0, 8, (1, 1, 1, 1), (1, 1, 2, 2), 2), 3, 8, 4)
    report = load_encoder_init(net, path)
    assert [k for k, _, _ in report.mismatched] == ["patch_embed.proj.weight"]
    assert report.unexpected == ("mask_token",)
    torch.testing.assert_close(net.encoder.layers[1].blocks[0].attn.qkv.weight,
                               src.layers[1].blocks[0].attn.qkv.weight)
    dropped = load_encoder_init(net, path, drop=("patch_embed.",))
    assert {"patch_embed.proj.bias", "patch_embed.norm.weight"} <= set(dropped.missing)
    adapted = load_encoder_init(net, path, adapt_input_conv=True)
    assert [k for k, _, _ in adapted.adapted] == ["patch_embed.proj.weight"]


def test_prefixed_torch_checkpoint_and_cross_architecture(tmp_path):
    src = _swin(6, 1)
    state = {f"student.backbone.{k}": v for k, v in src.state_dict().items()}
    state["student.dino_head.mlp.0.weight"] = torch.zeros(2, 2)
    torch.save({"model": state}, tmp_path / "ecddp.pth")
    target = _swin(6, 2)
    report = load_encoder_init(target, tmp_path / "ecddp.pth")
    assert not report.mismatched and not report.missing
    key = "norm3.weight"
    torch.testing.assert_close(target.state_dict()[key], src.state_dict()[key])
    mit = build_mit("b0", in_chans=6)
    before = {k: v.clone() for k, v in mit.state_dict().items()}
    cross = load_encoder_init(mit, tmp_path / "ecddp.pth")
    assert cross.loaded == ()  # a Swin encoder gives a MiT nothing
    assert all(torch.equal(before[k], v) for k, v in mit.state_dict().items())


def test_encoder_init_scope_reaches_models_built_by_any_method(tmp_path):
    src = build_mit("b0", in_chans=2, seed=5)
    path = save_encoder(tmp_path / "mit.safetensors", src, {"method": "test"})
    with encoder_init(path) as scope:
        seg = create_model("segformer_b0", in_chans=1, num_classes=3)
        head = create_model("classifier_head", in_channels=4, num_classes=2)
    outside = create_model("segformer_b0", in_chans=1, num_classes=3)
    assert [name for name, _ in scope.reports] == ["segformer_b0"]  # the head has no encoder
    w = "stages.1.blocks.0.attn.q.weight"
    torch.testing.assert_close(seg.encoder.state_dict()[w], src.state_dict()[w])
    assert not torch.equal(outside.encoder.state_dict()[w], src.state_dict()[w])
    assert head is not None
    with pytest.raises(FileNotFoundError), encoder_init(tmp_path / "missing.safetensors"):
        pass


def test_an_incompatible_init_fails_before_training(tmp_path):
    """A checkpoint matching no tensor of the scope's first model is an error (issue 21, 7);
    a later model without a match (a method's other network) is only reported."""
    mit = save_encoder(tmp_path / "mit.safetensors", build_mit("b0", in_chans=2, seed=5), {})
    save_file({"something.else": torch.zeros(3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="matches no tensor of segformer_b0"), \
            encoder_init(tmp_path / "other.safetensors"):
        create_model("segformer_b0", in_chans=1, num_classes=3)
    with encoder_init(mit) as scope:
        create_model("segformer_b0", in_chans=1, num_classes=3)
        create_model("resnet18", in_chans=2)
    assert [len(r.loaded) > 0 for _, r in scope.reports] == [True, False]
