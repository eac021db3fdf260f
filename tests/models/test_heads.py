"""Heads, shared decoder pieces, seeded initialisation and registry entries."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from evtransfer.models import heads, recurrent, resnet
from evtransfer.models.registry import create_model, list_models

from .netref import DEVICES, n_params, randomize_


def test_classifier_head_matches_numpy_float64():
    head = randomize_(heads.ClassifierHead(6, 4)).double().eval()
    x = torch.randn(3, 6, 5, 7, dtype=torch.float64)
    w = head.fc.weight.detach().numpy()
    b = head.fc.bias.detach().numpy()
    want = x.numpy().mean(axis=(2, 3)) @ w.T + b
    np.testing.assert_allclose(head(x).detach().numpy(), want, rtol=1e-12)
    np.testing.assert_allclose(head(x.mean(dim=(2, 3))).detach().numpy(), want, rtol=1e-12)
    with pytest.raises(ValueError, match="num_classes"):
        heads.ClassifierHead(6, 0)


@pytest.mark.parametrize("device", DEVICES)
def test_encoder_classifier(device):
    encoder = resnet.MODELS["resnet18"](in_chans=10, num_classes=0)
    model = heads.EncoderClassifier(encoder, 101, dropout=0.2).to(device)
    x = torch.randn(2, 10, 64, 64, device=device)
    assert model(x).shape == (2, 101)
    assert model.feature_channels == encoder.feature_channels
    assert len(model.forward_features(x)) == 4
    with pytest.raises(ValueError, match="forward_features"):
        heads.EncoderClassifier(nn.Linear(2, 2), 3)


def test_fcn_head_count_and_shape():
    head = heads.fcn_head(384, 11, channels=256)
    assert n_params(head) == 384 * 256 * 9 + 2 * 256 + 256 * 11 + 11
    concat = heads.fcn_head(16, 3, channels=8, num_convs=2, concat_input=True)
    assert n_params(concat) == (16 * 8 * 9 + 16 + 8 * 8 * 9 + 16 + 24 * 8 * 9 + 16 + 8 * 3 + 3)
    assert concat(torch.randn(2, 16, 9, 11)).shape == (2, 3, 9, 11)


def test_latent_seg_decoder_ess_layout():
    """ESS's skip decoder on (64, 128, 256) latents: 5 IN residual blocks at 256, then
    256→128, [256→128→64], [128→64→64], 64→32, 1×1 to K (independent count)."""
    dec = create_model("latent_seg_decoder", num_classes=11)

    def conv(a, b):
        return a * b * 9 + b

    want = 5 * 2 * conv(256, 256) + conv(256, 128) + conv(256, 128) + conv(128, 64)
    want += conv(128, 64) + conv(64, 64) + conv(64, 32) + 32 * 11 + 11
    assert n_params(dec) == want
    enc = recurrent.image_latent_encoder(in_chans=1)
    out = dec(enc(torch.randn(2, 1, 40, 56)))
    assert out.logits.shape == (2, 11, 40, 56)
    assert out.features[2].shape == (2, 64, 20, 28)
    assert out.features[4].shape == (2, 64, 10, 14)
    with pytest.raises(ValueError, match="channels"):
        dec([torch.randn(1, 64, 8, 8), torch.randn(1, 64, 4, 4), torch.randn(1, 256, 2, 2)])


def test_latent_seg_decoder_odd_sizes():
    dec = heads.latent_seg_decoder(5, in_channels=(8, 16, 32), num_res_blocks=1)
    lat = [torch.randn(1, 8, 19, 25), torch.randn(1, 16, 10, 13), torch.randn(1, 32, 5, 7)]
    assert dec(lat, out_size=(37, 50)).logits.shape == (1, 5, 37, 50)


def test_init_weights_is_seeded_and_independent_of_global_rng():
    def build():
        return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Linear(8, 4))

    torch.manual_seed(1)
    a = heads.init_weights(build(), seed=5)
    torch.manual_seed(2)
    b = heads.init_weights(build(), seed=5)
    c = heads.init_weights(build(), seed=6)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert not torch.equal(a[0].weight, c[0].weight)
    assert torch.all(a[1].weight == 1) and torch.all(a[1].bias == 0)
    assert torch.all(a[0].bias == 0) and torch.all(a[2].bias == 0)
    big = heads.init_weights(nn.Sequential(nn.Conv2d(64, 128, 3), nn.Linear(256, 256)))
    assert abs(big[0].weight.std().item() / (2 / (128 * 9)) ** 0.5 - 1) < 0.02  # fan_out
    assert abs(big[1].weight.std().item() / 0.02 - 1) < 0.02


def test_init_weights_uniform_and_skip():
    conv = nn.Conv2d(16, 8, 3)
    heads.init_weights(conv, seed=0, conv="uniform")
    bound = 1 / (16 * 9) ** 0.5
    assert conv.weight.abs().max() <= bound and conv.bias.abs().max() <= bound
    assert conv.weight.abs().max() > 0.9 * bound
    inner = nn.Conv2d(2, 2, 1)
    before = inner.weight.clone()
    heads.init_weights(nn.Sequential(inner, nn.Conv2d(2, 2, 1)), seed=0, skip=[inner])
    assert torch.equal(inner.weight, before)
    with torch.device("meta"):
        heads.init_weights(nn.Conv2d(2, 2, 1))


def test_activation_and_checks():
    assert isinstance(heads.make_activation("softplus"), nn.Softplus)
    with pytest.raises(ValueError, match="activation"):
        heads.make_activation("gelu")
    with pytest.raises(ValueError, match="torch.Tensor"):
        heads.check_image(np.zeros((1, 3, 4, 4)), 3)
    with pytest.raises(ValueError, match="H, W > 0"):
        heads.check_image(torch.zeros(1, 3, 0, 4), 3)
    with pytest.raises(ValueError, match="multiples of 8"):
        heads.check_multiple(torch.zeros(1, 3, 12, 16), 8, "net")
    with pytest.raises(ValueError, match="norm"):
        heads.ConvNormAct(3, 4, norm="ln")
    block = heads.ConvNormAct(3, 4, 3, dilation=2, norm="gn")
    assert block[0].bias is None and block[0].padding == (2, 2)
    assert heads.ConvNormAct(3, 4, norm="none", act=False)[0].bias is not None


def test_registry_lists_this_area():
    names = set(list_models())
    for module in ("heads", "resnet", "swin", "dpt", "recurrent"):
        mod = __import__(f"evtransfer.models.{module}", fromlist=["MODELS"])
        assert set(mod.MODELS) <= names
    assert isinstance(create_model("classifier_head", in_channels=8, num_classes=3),
                      heads.ClassifierHead)
