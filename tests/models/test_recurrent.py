"""E2VID recurrent U-Net, image → event translator and ESS's image encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evtransfer.models import recurrent
from evtransfer.models.registry import create_model

from .netref import DEVICES, n_params, randomize_


def unet_formula(in_chans, out_chans, base=32, encoders=3, res_blocks=2, k=5, lstm=True):
    """Parameters of an E2VID-topology U-Net without normalisation (independent formula)."""
    total = in_chans * base * k * k + base
    chans = [base * 2**i for i in range(encoders + 1)]
    for cin, cout in zip(chans[:-1], chans[1:], strict=True):
        total += cin * cout * k * k + cout
        if lstm:
            total += 2 * cout * 4 * cout * 9 + 4 * cout
    top = chans[-1]
    total += res_blocks * 2 * (top * top * 9 + top)
    for c in reversed(chans[1:]):
        total += c * (c // 2) * k * k + c // 2
    return total + base * out_chans + out_chans


def test_e2vid_count():
    """E2VID (5 bins, base 32, 3 encoders, 2 residual blocks): 10.71M parameters."""
    model = create_model("e2vid")
    assert n_params(model) == unet_formula(5, 1) == 10_710_401
    assert round(n_params(model) / 1e4) / 100 == 10.71


@pytest.mark.parametrize("in_chans", [2, 10, 128])
def test_unet_counts_any_channels(in_chans):
    assert n_params(recurrent.img2event(in_chans=1, out_chans=in_chans)) == unet_formula(
        1, in_chans, lstm=False)
    assert n_params(recurrent.e2vid(in_chans=in_chans)) == unet_formula(in_chans, 1)


def test_conv_lstm_matches_numpy_float64():
    """One ConvLSTM step with 1×1 gates against the LSTM equations in NumPy."""
    torch.manual_seed(0)
    cell = randomize_(recurrent.ConvLSTM(3, 4, kernel_size=1), scale=0.5).double()
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    h0 = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    c0 = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    h1, c1 = cell(x, (h0, c0))
    w = cell.Gates.weight.detach().numpy()[:, :, 0, 0]
    b = cell.Gates.bias.detach().numpy()
    z = np.einsum("oc,bchw->bohw", w, np.concatenate([x.numpy(), h0.numpy()], axis=1))
    z += b[None, :, None, None]
    i, f, o, g = np.split(z, 4, axis=1)

    def sig(v):
        return 1.0 / (1.0 + np.exp(-v))

    c_want = sig(f) * c0.numpy() + sig(i) * np.tanh(g)
    np.testing.assert_allclose(c1.detach().numpy(), c_want, rtol=1e-12)
    np.testing.assert_allclose(h1.detach().numpy(), sig(o) * np.tanh(c_want), rtol=1e-12)
    zeros = torch.zeros_like(h0)
    torch.testing.assert_close(cell(x, None), cell(x, (zeros, zeros)))


@pytest.mark.parametrize("device", DEVICES)
def test_e2vid_state_carry(device):
    model = recurrent.e2vid(in_chans=5).to(device).eval()
    x1 = torch.randn(2, 5, 37, 50, device=device)
    x2 = torch.randn(2, 5, 37, 50, device=device)
    with torch.no_grad():
        img1, state = model(x1)
        img2, state2 = model(x2, state)
        fresh, _ = model(x2)
    assert img1.shape == (2, 1, 37, 50)
    assert ((img1 > 0) & (img1 < 1)).all()
    assert [tuple(h.shape) for h, _ in state] == [(2, 64, 19, 25), (2, 128, 10, 13),
                                                  (2, 256, 5, 7)]
    assert not torch.allclose(img2, fresh)
    assert all(not torch.equal(a[0], b[0]) for a, b in zip(state, state2, strict=True))


def test_e2vid_forward_all_and_features():
    model = recurrent.e2vid(in_chans=5).eval()
    x = torch.randn(1, 5, 32, 48)
    with torch.no_grad():
        out = model.forward_all(x)
        feats, state = model.encode(x)
        fresh = model.forward_features(x)
        later = model.forward_features(x), model.encode(x, state)[0]
    assert [f.shape[1:] for f in out.features] == [(64, 16, 24), (128, 8, 12), (256, 4, 6)]
    assert model.feature_strides == (2, 4, 8) and model.feature_channels == (64, 128, 256)
    for a, b, c in zip(feats, out.features, fresh, strict=True):
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(c, b)  # forward_features: one window from a fresh state
    for a, b in zip(state, out.state, strict=True):
        torch.testing.assert_close(a, b)
    # forward_features keeps no state between calls; encode carries the one it is given
    assert all(torch.equal(a, b) for a, b in zip(later[0], fresh, strict=True))
    assert not torch.allclose(later[1][0], fresh[0])
    torch.testing.assert_close(out.features[0], out.state[0][0])


def test_e2vid_batch_items_are_independent():
    model = recurrent.e2vid(in_chans=3).eval()
    x = torch.randn(3, 3, 24, 40)
    with torch.no_grad():
        joint, _ = model(x)
        single, _ = model(x[1:2])
    torch.testing.assert_close(joint[1:2], single, rtol=1e-5, atol=1e-6)


def test_bptt_gradients_and_detach():
    model = recurrent.e2vid(in_chans=2, base_channels=8)
    x1, x2 = torch.randn(1, 2, 16, 16), torch.randn(1, 2, 16, 16, requires_grad=True)
    x1.requires_grad_(True)
    _, state = model(x1)
    img, _ = model(x2, state)
    img.sum().backward()
    assert x1.grad is not None and x1.grad.abs().sum() > 0
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    cut = recurrent.detach_state(state)
    assert all(not h.requires_grad and not c.requires_grad for h, c in cut)
    assert recurrent.detach_state(None) is None


def test_state_validation():
    model = recurrent.e2vid(in_chans=5, base_channels=8)
    _, state = model(torch.randn(1, 5, 32, 32))
    with pytest.raises(ValueError, match="state=None"):
        model(torch.randn(1, 5, 40, 32), state)
    with pytest.raises(ValueError, match="pairs"):
        model(torch.randn(1, 5, 32, 32), state[:2])
    with pytest.raises(ValueError, match=r"\(B, 5, H, W\)"):
        model(torch.randn(1, 4, 32, 32))


def test_img2event_is_signed_and_sized():
    model = recurrent.img2event(in_chans=3, out_chans=10)
    with torch.no_grad():
        y = model(torch.randn(2, 3, 45, 61))
    assert y.shape == (2, 10, 45, 61)
    assert (y < 0).any() and (y > 0).any()
    assert [f.shape[-2:] for f in model.forward_features(torch.randn(1, 3, 45, 61))] == [
        (23, 31), (12, 16), (6, 8)]


def test_image_latent_encoder_matches_e2vid_latents():
    """ESS's image encoder yields latents with E2VID's channels and strides; its parameters
    are ResNet-18's conv1/bn1/layer1-3 (independent count)."""
    enc = create_model("image_latent_encoder", in_chans=1).eval()
    e2vid = recurrent.e2vid(in_chans=5).eval()
    x = torch.randn(1, 1, 64, 96)
    with torch.no_grad():
        latents = enc(x)
        ev = e2vid.forward_features(torch.randn(1, 5, 64, 96))
    assert [t.shape for t in latents] == [t.shape for t in ev]

    def layer(cin, c, down):
        return (cin * c * 9 + c * c * 9 + 4 * c + c * c * 9 * 2 + 4 * c
                + (cin * c + 2 * c if down else 0))

    want = 1 * 64 * 49 + 128 + layer(64, 64, False) + layer(64, 128, True) + layer(128, 256, True)
    assert n_params(enc) == want


@pytest.mark.parametrize("norm", ["bn", "in"])
def test_normalised_variants(norm):
    """As rpg_e2vid's UNetRecurrent: every conv but the head's and the LSTM gates' is
    normalised (and bias-free under BN); the head never is (model/unet.py builds it without
    `norm`); residual-block instance norms keep no running statistics."""
    model = recurrent.e2vid(in_chans=4, base_channels=8, norm=norm)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._NormBase)]
    assert len(norms) == 3 + 2 * 2 + 3 + 1  # encoders, residual convs, decoders, pred
    assert model.head.norm_layer is None and model.head.conv2d.bias is not None
    gates = {id(m.Gates) for m in model.modules() if isinstance(m, recurrent.ConvLSTM)}
    assert len(gates) == 3
    others = [m for m in convs if id(m) not in gates and m is not model.head.conv2d]
    assert all((m.bias is None) == (norm == "bn") for m in others)
    res = [m.bn1 for m in model.resblocks] + [m.bn2 for m in model.resblocks]
    assert all(m.track_running_stats == (norm == "bn") for m in res)
    assert model.encoders[0].conv.norm_layer.track_running_stats
    img, _ = model(torch.randn(2, 4, 16, 24))
    assert img.shape == (2, 1, 16, 24)
    with pytest.raises(ValueError, match="norm"):
        recurrent.e2vid(norm="ln")


@pytest.mark.parametrize("base", [8, 16])
def test_image_latent_encoder_width_follows_e2vid_base_channels(base):
    enc = create_model("image_latent_encoder", in_chans=1, base_channels=base).eval()
    e2vid = recurrent.e2vid(in_chans=5, base_channels=base).eval()
    with torch.no_grad():
        latents = enc(torch.randn(1, 1, 40, 56))
        ev = e2vid.forward_features(torch.randn(1, 5, 40, 56))
    assert [t.shape for t in latents] == [t.shape for t in ev]
    assert enc.feature_channels == e2vid.feature_channels == (2 * base, 4 * base, 8 * base)
