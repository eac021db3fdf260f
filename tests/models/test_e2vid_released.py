"""rpg_e2vid's E2VIDRecurrent vs ours: parity through the released-checkpoint loader, its
refusals, E2VID's input normalisation, and the config fields that take E2VID weights."""

from __future__ import annotations

import contextlib
import os
import pickle
from dataclasses import replace

import pytest
import torch
from torch import nn

from evtransfer.methods._stages import StageConfig, recon_key, reconstruction_network
from evtransfer.models.recurrent import e2vid_input_norm
from evtransfer.models.released.e2vid import e2vid_kwargs, load_e2vid
from evtransfer.models.weights import read_torch_file
from tests.refs import import_ref, ref_attr, stub_module

E2VID = "uzh-rpg+rpg_e2vid"
# code: uzh-rpg/rpg_e2vid, the "model" dict of E2VID_lightweight.pth.tar (README, model.py)
LIGHTWEIGHT = {"name": "E2VIDRecurrent", "num_bins": 5, "skip_type": "sum",
               "recurrent_block_type": "convlstm", "num_encoders": 3, "base_num_channels": 32,
               "num_residual_blocks": 2, "use_upsample_conv": False, "norm": "BN"}
# the older E2VID.pth.tar: upsample-and-convolve decoders, no norm
UPSAMPLE = {**LIGHTWEIGHT, "use_upsample_conv": True, "norm": None}


def _reference(config: dict, seed: int) -> nn.Module:
    """rpg_e2vid's E2VIDRecurrent with its own conv initialisation (seeded) and random
    BatchNorm affine parameters and running statistics, in eval mode."""
    model_py = import_ref(E2VID, "model.model")
    cls = ref_attr(model_py, "E2VIDRecurrent")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = cls(dict(config))
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
                m.num_batches_tracked.fill_(7)
    return net.eval()


def _save_official(net: nn.Module, config: dict, path) -> None:
    torch.save({"arch": "E2VIDRecurrent", "model": dict(config),
                "state_dict": net.state_dict()}, path)


def _windows(n: int, bins: int, h: int, w: int, seed: int) -> list[torch.Tensor]:
    """Sparse signed voxel-grid-like windows (B=2), E2VID-normalised."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randn(2, bins, h, w, generator=gen)
        x = x * (torch.rand(2, bins, h, w, generator=gen) < 0.3)
        out.append(e2vid_input_norm(x))
    return out


@pytest.mark.parametrize("config", [LIGHTWEIGHT, UPSAMPLE,
                                    {**LIGHTWEIGHT, "skip_type": "concat", "base_num_channels": 8,
                                     "num_encoders": 2, "norm": "IN"}],
                         ids=["lightweight", "upsample", "concat_in"])
def test_released_checkpoint_reproduces_rpg_e2vid_over_a_sequence(config, tmp_path):
    """Reference E2VIDRecurrent on random weights, saved in the official layout, loaded by
    ours strictly: images and recurrent states equal over 3 windows with the state carried."""
    ref = _reference(config, seed=3)
    _save_official(ref, config, tmp_path / "E2VID.pth.tar")
    ours = load_e2vid(tmp_path / "E2VID.pth.tar")
    assert not ours.training
    ref_state, our_state = None, None
    with torch.no_grad():
        for x in _windows(3, config["num_bins"], 48, 64, seed=5):
            want, ref_state = ref(x, ref_state)
            got, our_state = ours(x, our_state)
            assert 0.02 < want.std()  # the sigmoid is not saturated: the comparison bites
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
            for (h, c), (h_ref, c_ref) in zip(our_state, ref_state, strict=True):
                torch.testing.assert_close(h, h_ref, rtol=1e-5, atol=1e-6)
                torch.testing.assert_close(c, c_ref, rtol=1e-5, atol=1e-6)


def test_released_lightweight_gradients_match(tmp_path):
    """Gradients of a loss on the last window's image and latents, through the state carried
    over 3 windows, reach the same parameters and input with the same values."""
    ref = _reference(LIGHTWEIGHT, seed=4)
    _save_official(ref, LIGHTWEIGHT, tmp_path / "E2VID_lightweight.pth.tar")
    ours = load_e2vid(tmp_path / "E2VID_lightweight.pth.tar")
    windows = _windows(3, 5, 32, 48, seed=6)
    grads = []
    for net in (ref, ours):
        net.zero_grad()
        first = windows[0].clone().requires_grad_(True)
        state = None
        for x in (first, *windows[1:]):
            img, state = net(x, state)
        loss = img.square().sum() + sum(h.square().sum() for h, _ in state)
        loss.backward()
        params = {n.removeprefix("unetrecurrent."): p.grad for n, p in net.named_parameters()}
        grads.append((first.grad, params))
    (gx_ref, g_ref), (gx, g) = grads
    assert gx.abs().sum() > 0
    torch.testing.assert_close(gx, gx_ref, rtol=1e-5, atol=1e-7)
    assert g.keys() == g_ref.keys()
    for name, value in g.items():
        torch.testing.assert_close(value, g_ref[name], rtol=1e-5, atol=1e-6, msg=name)


class _NoTimer(contextlib.nullcontext):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__()


def test_input_norm_matches_rpg_e2vid_event_preprocessor():
    """Our E2VID input normalisation vs the reference's EventPreprocessor (no_normalize
    False, its default) on the same (B, bins, H, W) window: statistics pooled over the tensor;
    per sample equals the reference applied item by item. Its `utils.timers` is stubbed
    (CudaTimer builds torch.cuda.Event, which a CPU-only torch refuses; it only times)."""
    timers = stub_module("utils.timers", CudaTimer=_NoTimer, Timer=_NoTimer, cuda_timers={},
                         timers={})
    inference = import_ref(E2VID, "utils.inference_utils", stubs={"utils.timers": timers})
    options = type("Options", (), {"no_normalize": False, "hot_pixels_file": None,
                                   "flip": False})()
    preprocess = ref_attr(inference, "EventPreprocessor")(options)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 20, 30, generator=gen) * 2 + 0.5
    x = x * (torch.rand(x.shape, generator=gen) < 0.2)
    x[2] = 0  # an empty sample: zero in the pooled statistics, unchanged per sample
    torch.testing.assert_close(e2vid_input_norm(x), preprocess(x.clone()), rtol=1e-5, atol=1e-6)
    per = torch.cat([preprocess(x[i:i + 1].clone()) for i in range(3)])
    torch.testing.assert_close(e2vid_input_norm(x, per_sample=True), per, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(e2vid_input_norm(x), e2vid_input_norm(x, per_sample=True))
    assert torch.equal(e2vid_input_norm(torch.zeros(1, 5, 4, 4)), torch.zeros(1, 5, 4, 4))
    with pytest.raises(ValueError, match="bins"):
        e2vid_input_norm(torch.ones(5, 4, 4))


def test_config_keys_follow_base_e2vid_defaults():
    """Absent keys take rpg_e2vid's BaseE2VID defaults (4 encoders, upsampling, no norm)."""
    assert e2vid_kwargs({"num_bins": 5}) == {
        "in_chans": 5, "skip": "sum", "num_encoders": 4, "base_channels": 32,
        "num_residual_blocks": 2, "norm": "none", "decoder": "upsample"}
    assert e2vid_kwargs(LIGHTWEIGHT)["norm"] == "bn"
    with pytest.raises(ValueError, match="convgru"):
        e2vid_kwargs({**LIGHTWEIGHT, "recurrent_block_type": "convgru"}, "f.pth.tar")


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this would run",))


def test_unreadable_files_give_one_line_errors(tmp_path):
    evil = tmp_path / "evil.pth.tar"
    torch.save({"arch": "E2VIDRecurrent", "model": _RunsCode()}, evil)
    legacy = tmp_path / "legacy.pth.tar"  # torch's pre-1.6 format, as the 2019 release
    torch.save({"arch": _RunsCode()}, legacy, _use_new_zipfile_serialization=False)
    bare = tmp_path / "bare.pth.tar"
    bare.write_bytes(pickle.dumps(_RunsCode(), protocol=2))
    good = tmp_path / "ok.pth.tar"
    torch.save({"a": torch.ones(2)}, good)
    truncated = tmp_path / "truncated.pth.tar"
    truncated.write_bytes(good.read_bytes()[:200])
    text = tmp_path / "notes.pth.tar"
    text.write_text("not a checkpoint\n")
    for path, what in ((evil, "refused.*run code"), (legacy, "refused.*run code"),
                       (bare, "refused.*run code"),
                       (truncated, "not a readable torch checkpoint"),
                       (text, "not a"), (tmp_path / "absent.pth.tar", "not found")):
        with pytest.raises(ValueError, match=what) as err:
            load_e2vid(path)
        assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"not an rpg_e2vid checkpoint.*\['a'\]"):
        load_e2vid(good)
    assert read_torch_file(good)["a"].shape == (2,)


def test_other_architectures_and_missing_tensors_are_refused(tmp_path):
    ref = _reference({**LIGHTWEIGHT, "base_num_channels": 8}, seed=0)
    state = ref.state_dict()
    path = tmp_path / "x.pth.tar"
    # the feed-forward E2VID: another arch, its tensors named
    unet = ref_attr(import_ref(E2VID, "model.model"), "E2VID")(dict(LIGHTWEIGHT))
    torch.save({"arch": "E2VID", "model": LIGHTWEIGHT, "state_dict": unet.state_dict()}, path)
    with pytest.raises(ValueError, match=r"arch 'E2VID'.*unet\.head"):
        load_e2vid(path)
    # a config that does not describe the tensors (no BN claimed, BN tensors present)
    torch.save({"arch": "E2VIDRecurrent", "config": {"model": {**LIGHTWEIGHT, "norm": None,
                                                               "base_num_channels": 8}},
                "state_dict": state}, path)
    with pytest.raises(ValueError, match=r"do not map.*norm_layer"):
        load_e2vid(path)
    # fewer tensors than the network needs, and zero tensors
    for keep in (list(state)[:-10], []):
        torch.save({"arch": "E2VIDRecurrent", "model": {**LIGHTWEIGHT, "base_num_channels": 8},
                    "state_dict": {k: state[k] for k in keep}}, path)
        with pytest.raises(ValueError, match=r"missing"):
            load_e2vid(path)
    # files saved before BatchNorm counted batches load (the counters are not weights)
    old = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save({"arch": "E2VIDRecurrent", "model": {**LIGHTWEIGHT, "base_num_channels": 8},
                "state_dict": old}, path)
    assert load_e2vid(path).encoders[0].conv.norm_layer.weight.shape == (16,)


def test_recon_weights_fields_load_the_released_file_or_fail(tmp_path):
    """`stages.recon_weights` (and ESS's `event_encoder_weights`, routed through it) build
    the network from the file's own config; a mismatch with the data or the stage's width,
    or a plain state dict that leaves tensors unloaded, is an error, never training from
    scratch."""
    config = {**LIGHTWEIGHT, "base_num_channels": 8}
    ref = _reference(config, seed=1)
    _save_official(ref, config, tmp_path / "E2VID_lightweight.pth.tar")
    cfg = StageConfig(recon_weights=str(tmp_path / "E2VID_lightweight.pth.tar"),
                      recon_base_channels=8)
    net = reconstruction_network(cfg, 5)
    torch.testing.assert_close(net.decoders[0].transposed_conv2d.weight,
                               ref.unetrecurrent.decoders[0].transposed_conv2d.weight)
    with pytest.raises(ValueError, match="5 bins.*3 per window"):
        reconstruction_network(cfg, 3)
    with pytest.raises(ValueError, match="recon_base_channels is 16"):
        reconstruction_network(replace(cfg, recon_base_channels=16), 5)
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in list(ref.state_dict().items())[:5]}, partial)
    plain = replace(cfg, recon_weights=str(partial), recon_weights_prefix="unetrecurrent.",
                    recon_norm="bn", recon_decoder="transposed")
    with pytest.raises(ValueError, match="partial.pth"):
        reconstruction_network(plain, 5)


def test_reconstruction_architecture_switches_and_stage_keys():
    """The world default (no norm, upsampling) keeps its stage key; E2VID_lightweight's
    architecture is reachable from the stage config and keys a different stage."""
    world = StageConfig()
    light = replace(world, recon_norm="bn", recon_decoder="transposed")
    assert recon_key(world) == ("e2vid", 16, world.recon)
    assert recon_key(light) != recon_key(world)
    net = reconstruction_network(light, 5)
    assert isinstance(net.decoders[0].transposed_conv2d, nn.ConvTranspose2d)
    assert isinstance(net.pred.norm_layer, nn.BatchNorm2d)
    with torch.no_grad():  # sides not divisible by 8: transposed outputs are cropped
        img, _ = net.eval()(torch.randn(1, 5, 37, 50))
    assert img.shape == (1, 1, 37, 50)
