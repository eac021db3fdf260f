"""ResNet encoders and DeepLabV3+ (with EvDistill's reconstruction decoder)."""

from __future__ import annotations

import pytest
import torch

from evtransfer.models import resnet
from evtransfer.models.registry import create_model

from .netref import DEVICES, n_params

# torchvision's published parameter counts (3 input channels, 1000-class fc)
PUBLISHED = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
             "resnet101": 44_549_160}


def resnet_formula(arch: str, in_chans: int = 3, num_classes: int = 1000) -> int:
    """Parameter count of a torchvision-layout ResNet from its configuration."""
    basic = arch in ("resnet18", "resnet34")
    depths = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3), "resnet50": (3, 4, 6, 3),
              "resnet101": (3, 4, 23, 3)}[arch]
    exp = 1 if basic else 4
    total = in_chans * 64 * 49 + 2 * 64
    cin = 64
    for planes, d in zip((64, 128, 256, 512), depths, strict=True):
        for b in range(d):
            if basic:
                total += cin * planes * 9 + planes * planes * 9 + 4 * planes
            else:
                total += cin * planes + planes * planes * 9 + planes * planes * 4 + 2 * 6 * planes
            stride = 1 if planes == 64 else 2
            if b == 0 and (stride != 1 or cin != planes * exp):
                total += cin * planes * exp + 2 * planes * exp
            cin = planes * exp
    return total + (cin * num_classes + num_classes if num_classes else 0)


@pytest.mark.parametrize("arch", list(PUBLISHED))
def test_resnet_counts_match_torchvision(arch):
    with torch.device("meta"):
        model = create_model(arch)
    assert n_params(model) == PUBLISHED[arch] == resnet_formula(arch)


@pytest.mark.parametrize("in_chans", [2, 20, 128])
def test_resnet_any_input_channels(in_chans):
    with torch.device("meta"):
        model = resnet.MODELS["resnet50"](in_chans=in_chans, num_classes=0)
    assert n_params(model) == resnet_formula("resnet50", in_chans, 0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("output_stride", "strides"),
                         [(32, (4, 8, 16, 32)), (16, (4, 8, 16, 16)), (8, (4, 8, 8, 8))])
def test_feature_strides(device, output_stride, strides):
    model = resnet.MODELS["resnet18"](in_chans=4, num_classes=0,
                                      output_stride=output_stride).to(device).eval()
    assert model.feature_strides == strides
    feats = model.forward_features(torch.randn(1, 4, 64, 96, device=device))
    for f, c, s in zip(feats, model.feature_channels, strides, strict=True):
        assert f.shape == (1, c, 64 // s, 96 // s)


def test_dilation_rates_and_multi_grid():
    """Output stride 16: layer4 keeps stride 1 and its 3×3 convs use rate 2·grid; output
    stride 8: layer3 uses rate 2 and layer4 rate 4·grid (DeepLab's multi-grid)."""
    m16 = resnet.ResNet(resnet.Bottleneck, (3, 4, 6, 3), output_stride=16, multi_grid=(1, 2, 4))
    assert [b.conv2.dilation[0] for b in m16.layer4] == [2, 4, 8]
    assert [b.conv2.stride[0] for b in m16.layer4] == [1, 1, 1]
    assert m16.layer4[0].downsample[0].stride == (1, 1)
    m8 = resnet.ResNet(resnet.Bottleneck, (3, 4, 6, 3), output_stride=8, multi_grid=(1, 2, 4))
    assert [b.conv2.dilation[0] for b in m8.layer3] == [2] * 6
    assert [b.conv2.dilation[0] for b in m8.layer4] == [4, 8, 16]
    with pytest.raises(ValueError, match="multi_grid"):
        resnet.ResNet(resnet.Bottleneck, (3, 4, 6, 3), output_stride=16, multi_grid=(1, 2))
    with pytest.raises(ValueError, match="output_stride"):
        resnet.ResNet(resnet.BasicBlock, (2, 2, 2, 2), output_stride=4)


def deeplab_formula(backbone: int, low: int, high: int, k: int, recon: int | None = None,
                    affinity: int | None = None) -> int:
    """DeepLabV3+ parameters on top of a backbone count (independent formula)."""
    aspp = high * 256 + 3 * high * 256 * 9 + high * 256 + 5 * 256 * 256 + 6 * 2 * 256
    decoder = low * 48 + 96 + (256 + 48) * 256 * 9 + 512 + 256 * 256 * 9 + 512 + 256 * k + k
    total = backbone + aspp + decoder
    if recon:
        total += low * 48 + 96 + 304 * 256 * 9 + 512 + 256 * 128 * 9 + 256 + 128 * 64 + 64
        total += 64 * 64 * 4 + 64 + (2 * (64 * 64 * 9 + 64) + 64 * 64)
        total += 64 * 32 * 4 + 32 + (32 * 32 * 9 + 32 + 32 * 32 * 9 + 32 + 32 * 32)
        total += 32 * recon + recon
    if affinity:
        total += k * affinity + affinity + 2 * affinity
    return total


def test_deeplab_r101_count():
    """DeepLabV3+ ResNet-101 (21 classes): about 59M parameters as usually quoted; exact
    value from the independent formula."""
    with torch.device("meta"):
        model = create_model("deeplabv3plus_resnet101", num_classes=21)
    backbone = PUBLISHED["resnet101"] - (2048 * 1000 + 1000)
    assert n_params(model) == deeplab_formula(backbone, 256, 2048, 21)
    assert round(n_params(model) / 1e6) == 59


def test_deeplab_dual_count():
    with torch.device("meta"):
        model = create_model("deeplabv3plus_resnet18", in_chans=6, num_classes=6,
                             recon_channels=3, affinity_channels=3)
    backbone = resnet_formula("resnet18", 6, 0)
    assert n_params(model) == deeplab_formula(backbone, 64, 512, 6, recon=3, affinity=3)


@pytest.mark.parametrize("device", DEVICES)
def test_deeplab_outputs_and_gradients(device):
    model = create_model("deeplabv3plus_resnet18", in_chans=2, num_classes=6, recon_channels=3,
                         recon_activation="tanh", affinity_channels=3).to(device)
    x = torch.randn(2, 2, 64, 96, device=device)
    out = model.forward_all(x)
    assert out.logits.shape == (2, 6, 64, 96)
    assert out.recon.shape == (2, 3, 64, 96)
    assert out.affinity.shape == (2, 3, 64, 96)
    assert out.aspp.shape == (2, 256, 4, 6)
    assert out.low_level.shape == (2, 64, 16, 24)
    assert out.recon.abs().max() <= 1.0
    assert (out.affinity >= 0).all()
    (out.logits.mean() + out.recon.mean() + out.affinity.mean()).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_deeplab_plain_forward_and_odd_size():
    model = create_model("deeplabv3plus_resnet18", in_chans=3, num_classes=4).eval()
    with torch.no_grad():
        out = model.forward_all(torch.randn(1, 3, 50, 70))
        logits = model(torch.randn(1, 3, 50, 70))
    assert out.recon is None and out.affinity is None
    assert out.logits.shape == logits.shape == (1, 4, 50, 70)
    with pytest.raises(ValueError, match="output_stride"):
        create_model("deeplabv3plus_resnet50", output_stride=32)


def test_classifier_outputs_and_validation():
    model = create_model("resnet18", in_chans=20, num_classes=101).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 20, 48, 48)).shape == (2, 101)
    pooled = create_model("resnet18", in_chans=2, num_classes=0).eval()
    with torch.no_grad():
        assert pooled(torch.randn(2, 2, 48, 48)).shape == (2, 512)
    with pytest.raises(ValueError, match=r"\(B, 20, H, W\)"):
        model(torch.randn(2, 3, 48, 48))
    with pytest.raises(ValueError, match="in_chans"):
        create_model("resnet18", in_chans=0)


def test_seeded_builds_are_reproducible():
    a = create_model("resnet18", num_classes=10, seed=3)
    torch.manual_seed(99)
    b = create_model("resnet18", num_classes=10, seed=3)
    c = create_model("resnet18", num_classes=10, seed=4)
    for (_, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert not torch.equal(a.conv1.weight, c.conv1.weight)
