"""ESS: losses against float64 NumPy references, the gradient routing against a literal
re-enactment of uzh-rpg/ess's train_step, the recurrent event encoder, weight loading, the
stages on the tiny world, and the configs."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from evtransfer.bench import TransferBenchConfig, method_config
from evtransfer.config import load_config
from evtransfer.data.transfer import TransferDataConfig, load_transfer_data, target_train_labels
from evtransfer.engine.fit import FitConfig
from evtransfer.methods import METHODS, TARGET_LABELED
from evtransfer.methods._stages import StageConfig
from evtransfer.methods.ess import (
    EssConfig,
    SourceTargetPairs,
    ess_losses,
    event_latents,
    feature_l1,
    latent_l1,
    load_image_encoder_weights,
    symmetric_kl,
    task_loss,
    train_ess,
    train_ess_supervised,
)
from evtransfer.models import create_model
from evtransfer.models.recurrent import e2vid_input_norm
from evtransfer.models.segmenters import E2vidSegmenter

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "ess"
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_symmetric_kl_matches_a_float64_reference():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 4, 3, 5, generator=gen), torch.randn(2, 4, 3, 5, generator=gen) * 3
    a[0, 0, 0, 0] = -40.0  # a probability below the 1e-10 clamp
    p = np.clip(_softmax(a.double().numpy()), 1e-10, None)
    q = np.clip(_softmax(b.double().numpy()), 1e-10, None)
    want = 0.5 * np.mean(q * np.log(q / p)) + 0.5 * np.mean(p * np.log(p / q))
    assert float(symmetric_kl(a, b)) == pytest.approx(want, rel=1e-5)
    assert float(symmetric_kl(b, a)) == pytest.approx(want, rel=1e-5)
    assert float(symmetric_kl(a, a)) == pytest.approx(0.0, abs=1e-7)


def test_task_loss_is_dice_plus_cross_entropy():
    """Hand reference: ESS's TaskLoss (Dice with smooth 1 summed over the batch, class-mean,
    ignored pixels masked; CE ignoring 255)."""
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 4, 4, generator=gen)
    label = torch.randint(0, 3, (2, 4, 4), generator=gen)
    label[0, 0, :2] = 255
    z, y = logits.double().numpy(), label.numpy()
    p = _softmax(z)
    valid = y != 255
    ce = -np.mean(np.log(np.moveaxis(p, 1, -1)[valid][np.arange(valid.sum()), y[valid]]))
    dice = []
    for c in range(3):
        pc, gc = p[:, c] * valid, (y == c) * valid
        dice.append(1 - (2 * (pc * gc).sum() + 1) / ((pc**2).sum() + (gc**2).sum() + 1))
    assert float(task_loss(logits, label)) == pytest.approx(ce + np.mean(dice), rel=1e-5)


def test_latent_and_feature_l1_sum_per_scale_means():
    a = [torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 2, 2), torch.zeros(1, 8, 1, 1)]
    b = [torch.full((1, 2, 4, 4), 1.0), torch.full((1, 4, 2, 2), -2.0),
         torch.full((1, 8, 1, 1), 0.5)]
    assert float(latent_l1(a, b)) == pytest.approx(3.5)
    assert float(feature_l1({2: a[0], 4: a[1]}, {2: b[0], 4: b[1]})) == pytest.approx(3.0)


@pytest.mark.parametrize("device", DEVICES)
def test_event_latents_run_the_windows_recurrently(device):
    enc = create_model("e2vid", in_chans=3, base_channels=4).to(device).eval()
    x = torch.randn(2, 6, 16, 24, generator=torch.Generator().manual_seed(2)).to(device)
    with torch.no_grad():
        image, latents = event_latents(enc, x, with_image=True)
        _, state = enc.encode(x[:, :3])
        want = enc.forward_all(x[:, 3:], state)
        _, single = event_latents(enc, x[:, 3:])
    assert image.shape == (2, 1, 16, 24) and bool(((image >= 0) & (image <= 1)).all())
    torch.testing.assert_close(image, want.image)
    for got, ref, fresh in zip(latents, want.features, single, strict=True):
        torch.testing.assert_close(got, ref)
        assert not torch.allclose(got, fresh)  # the first window's state matters
    with pytest.raises(ValueError, match="K windows"):
        event_latents(enc, x[:, :4])


def test_each_window_is_normalised_as_e2vid_before_the_encoder():
    """ESS's update_reconstruction runs E2VID's EventPreprocessor on every window (stats
    pooled over the batch) before the network; the segmenter at inference does the same."""
    enc = create_model("e2vid", in_chans=3, base_channels=4).eval()
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 6, 16, 24, generator=gen) * 3 + 1
    x = x * (torch.rand(x.shape, generator=gen) < 0.3)
    windows = {mode: torch.cat([e2vid_input_norm(w, per_sample=mode == "sample")
                                for w in x.split(3, dim=1)], 1) for mode in ("batch", "sample")}
    decoder = create_model("latent_seg_decoder", num_classes=3, in_channels=(8, 16, 32),
                           num_res_blocks=1).eval()
    with torch.no_grad():
        for mode, normed in windows.items():
            image, latents = event_latents(enc, x, with_image=True, input_norm=mode)
            want_image, want = event_latents(enc, normed, with_image=True)
            torch.testing.assert_close(image, want_image)
            for got, ref in zip(latents, want, strict=True):
                torch.testing.assert_close(got, ref)
            torch.testing.assert_close(E2vidSegmenter(enc, decoder, mode)(x),
                                       E2vidSegmenter(enc, decoder, "none")(normed))
        _, raw = event_latents(enc, x)
        assert not torch.allclose(raw[0], latents[0])
    assert EssConfig().event_input_norm == "batch"
    with pytest.raises(ValueError, match="event_input_norm"):
        EssConfig(event_input_norm="window")


def _nets(base=4, classes=3):
    torch.manual_seed(0)
    events = create_model("e2vid", in_chans=2, base_channels=base).eval().requires_grad_(False)
    image_encoder = create_model("image_latent_encoder", base_channels=base, seed=1)
    decoder = create_model("latent_seg_decoder", num_classes=classes,
                           in_channels=image_encoder.feature_channels, num_res_blocks=1, seed=2)
    gen = torch.Generator().manual_seed(3)
    batch = {"img": torch.rand(2, 1, 16, 24, generator=gen),
             "y": torch.randint(0, classes, (2, 16, 24), generator=gen),
             "x": torch.randn(2, 4, 16, 24, generator=gen),
             "y_t": torch.randint(0, classes, (2, 16, 24), generator=gen)}
    return events, image_encoder, decoder, batch


def _ess_code_grads(image_encoder, decoder, events, batch, cfg):
    """uzh-rpg/ess ESSModel.train_step re-enacted: three backward passes into accumulated
    gradients, with requires_grad switched off on the image encoder (DSEC task pass) and on
    the decoder (alignment pass), and no-grad re-runs of the decoder as targets."""
    def dec(latents):
        return decoder(latents, batch["img"].shape[-2:])

    def l1(a, b):
        return (a - b).abs().mean()

    latents = image_encoder(batch["img"])
    pred = dec([t.detach() for t in latents] if cfg.detach_task_latent else latents)
    task = cfg.weight_task * task_loss(pred.logits, batch["y"])
    image_encoder.requires_grad_(not cfg.detach_task_latent)
    task.backward()
    image_encoder.requires_grad_(True)
    with torch.no_grad():  # update_reconstruction: EventPreprocessor, then E2VID
        recon, real = event_latents(events, batch["x"], with_image=True,
                                    input_norm=cfg.event_input_norm)
    fake = image_encoder(recon)
    align = cfg.weight_emb * sum(l1(f, r) for f, r in zip(fake, real, strict=True))
    pred_fake = dec(fake)
    with torch.no_grad():
        target = dec(real)
    if cfg.align_pred:
        align = align + symmetric_kl(pred_fake.logits, target.logits)
    align = align + cfg.weight_feat * sum(l1(pred_fake.features[s], target.features[s])
                                          for s in (2, 4))
    pred_real = dec(real)
    with torch.no_grad():
        target = dec(fake)
    dec_loss = cfg.weight_pred * symmetric_kl(pred_real.logits, target.logits)
    dec_loss = dec_loss + cfg.weight_feat * sum(l1(pred_real.features[s], target.features[s])
                                                for s in (2, 4))
    if cfg.train_on_event_labels:
        dec_loss = dec_loss + cfg.weight_task * task_loss(pred_real.logits, batch["y_t"])
    decoder.requires_grad_(False)
    align.backward()
    decoder.requires_grad_(True)
    dec_loss.backward()
    return [p.grad.clone() for m in (image_encoder, decoder) for p in m.parameters()]


DSEC = EssConfig()
DDD17 = replace(EssConfig(), weight_emb=0.01, weight_feat=0.01, align_pred=False,
                detach_task_latent=False)


@pytest.mark.parametrize("cfg", [DSEC, DDD17, replace(DSEC, train_on_event_labels=True)],
                         ids=["dsec", "ddd17", "supervised"])
def test_one_backward_gives_the_gradients_of_ess_three_passes(cfg):
    events, image_encoder, decoder, batch = _nets()
    want = _ess_code_grads(image_encoder, decoder, events, batch, cfg)
    image_encoder.zero_grad(set_to_none=True)
    decoder.zero_grad(set_to_none=True)
    losses = ess_losses(image_encoder, decoder, events, batch, cfg)
    losses["loss"].backward()
    got = [p.grad for m in (image_encoder, decoder) for p in m.parameters()]
    assert all(g is not None for g in got)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)
    assert ("l_event" in losses) == cfg.train_on_event_labels
    assert all(p.grad is None for p in events.parameters())


def test_source_target_pairs_cover_both_domains():
    img, label = torch.zeros(5, 1, 2, 2), torch.zeros(5, 2, 2, dtype=torch.long)
    x, y_t = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 4, 2, 2), torch.ones(3, 2, 2)
    pairs = SourceTargetPairs(img, label, x, seed=0, target_label=y_t)
    assert len(pairs) == 5
    assert {int(pairs[i]["x"][0, 0, 0]) for i in range(5)} == {0, 1, 2}
    assert set(pairs[0]) == {"img", "y", "x", "y_t"}
    assert set(SourceTargetPairs(img, label, x, seed=0)[0]) == {"img", "y", "x"}
    with pytest.raises(ValueError, match="target labels"):
        SourceTargetPairs(img, label, x, seed=0, target_label=y_t[:2])


def test_image_encoder_loads_torchvision_resnet18_but_its_first_conv(tmp_path):
    resnet = create_model("resnet18", num_classes=1000, seed=5)
    save_file(resnet.state_dict(), tmp_path / "r18.safetensors")
    enc = create_model("image_latent_encoder", in_chans=1, seed=6)
    stem = enc.stem[0].weight.clone()
    load_image_encoder_weights(enc, tmp_path / "r18.safetensors")
    torch.testing.assert_close(enc.layers[2][1].conv2.weight, resnet.layer3[1].conv2.weight)
    torch.testing.assert_close(enc.stem[1].running_var, resnet.bn1.running_var)
    assert torch.equal(enc.stem[0].weight, stem)
    narrow = create_model("image_latent_encoder", in_chans=1, base_channels=16)
    with pytest.raises(ValueError, match="r18.safetensors"):
        load_image_encoder_weights(narrow, tmp_path / "r18.safetensors")


@pytest.fixture(scope="module")
def tiny_data(tiny_world, tmp_path_factory):
    cache = tmp_path_factory.mktemp("ess_cache")
    data = load_transfer_data(tiny_world, TransferDataConfig(), cache_dir=cache, progress=False)
    return data, target_train_labels(tiny_world, TransferDataConfig(), cache_dir=cache)


def _tiny_cfg() -> EssConfig:
    fit = FitConfig(steps=3, batch=4, ckpt_every=0)
    return EssConfig(stages=StageConfig(recon=fit, recon_base_channels=8), init=fit,
                     uda=replace(EssConfig().uda, steps=3, batch=4))


def test_train_ess_shares_the_reconstruction_stage_and_resumes(tiny_data, tmp_path):
    data, labels = tiny_data
    cfg = _tiny_cfg()
    result = train_ess(data, cfg, tmp_path / "run", progress=False)
    assert set(result.minutes) == {"recon", "ESS_init", "ESS"}
    probs = result.predict(data.test_x[:2])
    assert probs.shape == (2, data.num_classes, *data.test_x.shape[-2:])
    torch.testing.assert_close(probs.sum(1), torch.ones(2, *data.test_x.shape[-2:]))
    # inference runs the E2VID head and recurrent encoders and the decoder, nothing else
    e2vid = create_model("e2vid", in_chans=5, base_channels=8)
    decoder = create_model("latent_seg_decoder", num_classes=data.num_classes,
                           in_channels=(16, 32, 64))
    used = [e2vid.head, e2vid.encoders, decoder]
    assert result.params == sum(p.numel() for m in used for p in m.parameters())
    again = train_ess(data, cfg, tmp_path / "run", progress=False)
    assert again.minutes == result.minutes
    torch.testing.assert_close(again.predict(data.test_x[:2]), probs)
    with pytest.raises(ValueError, match="target train labels"):
        train_ess_supervised(data, cfg, tmp_path / "run", progress=False)
    sup = train_ess_supervised(data, cfg, tmp_path / "run", progress=False, labels=labels)
    assert sup.minutes["recon"] == result.minutes["recon"]
    assert sup.minutes["ESS_init"] == result.minutes["ESS_init"]
    for shared in ("recon-*", "ESS_init-*"):
        assert len(list((tmp_path / "run").glob(shared))) == 1
    assert len(list((tmp_path / "run").glob("ESS-*"))) == 2


def test_ess_over_consecutive_windows_trains_a_recurrent_reconstruction_stage(tiny_world,
                                                                               tmp_path):
    """K = 2 windows of 5 bins per sample: 100 ms cut in two, the reconstruction network (5
    input channels) learns through both windows and ESS runs it recurrently at inference."""
    syn = replace(TransferDataConfig().synthetic, window_us=100_000, frames=9)
    data_cfg = replace(TransferDataConfig(), window_us=100_000, synthetic=syn,
                       events=replace(TransferDataConfig().events, bins=10))
    data = load_transfer_data(tiny_world, data_cfg, cache_dir=tmp_path / "c", progress=False)
    assert data.synth_x.shape[1] == data.test_x.shape[1] == 10
    cfg = _tiny_cfg()
    cfg = replace(cfg, stages=replace(cfg.stages, recon_windows=2))
    result = train_ess(data, cfg, tmp_path / "run", progress=False)
    events = result.network[0]
    assert events.conv2d.in_channels == 5
    assert result.predict(data.test_x[:2]).shape == (2, data.num_classes, *data.test_x.shape[-2:])
    with pytest.raises(ValueError, match="recon_windows must divide"):
        train_ess(data, replace(cfg, stages=replace(cfg.stages, recon_windows=3)),
                  tmp_path / "run", progress=False)


def test_user_e2vid_weights_replace_the_reconstruction_stage(tiny_data, tmp_path):
    data, _ = tiny_data
    e2vid = create_model("e2vid", in_chans=5, base_channels=8, seed=7)
    save_file({f"unetrecurrent.{k}": v for k, v in e2vid.state_dict().items()},
              tmp_path / "e2vid.safetensors")
    cfg = replace(_tiny_cfg(), event_encoder_weights=str(tmp_path / "e2vid.safetensors"),
                  init=FitConfig(steps=0))
    result = train_ess(data, cfg, tmp_path / "run", progress=False)
    assert set(result.minutes) == {"ESS"}  # no reconstruction stage, no initialisation
    torch.testing.assert_close(result.network[0].conv2d.weight, e2vid.head.conv2d.weight)
    bad = replace(cfg, stages=replace(cfg.stages, recon_base_channels=4))
    with pytest.raises(ValueError, match="e2vid.safetensors"):
        train_ess(data, bad, tmp_path / "run", progress=False)


def test_registry_and_bench_wiring():
    assert {"ess", "ess_supervised"} <= METHODS.keys()
    assert "ess_supervised" in TARGET_LABELED and "ess" not in TARGET_LABELED
    bench = TransferBenchConfig(stages=StageConfig(recon_base_channels=12))
    assert method_config(bench, "ess").stages.recon_base_channels == 12


def test_every_ess_yaml_loads():
    world = load_config(TransferBenchConfig, CONFIGS / "world.yaml")
    assert world.ess.align_pred and world.ess.uda.lr == world.ess.lr_front == 5e-4
    assert world.ess.init.steps == 400
    for name in ("dsec", "ddd17"):
        cfg = load_config(TransferBenchConfig, CONFIGS / f"{name}.yaml")
        windows = cfg.real.dsec.num_windows if name == "dsec" else cfg.real.ddd17.num_windows
        assert windows == 20 and cfg.stages.recon_base_channels == 32
        assert cfg.ess.init.steps == 0 and cfg.ess.event_encoder_weights
        assert not cfg.data.events.normalize
    ddd17 = load_config(TransferBenchConfig, CONFIGS / "ddd17.yaml").ess
    assert (ddd17.lr_front, ddd17.uda.lr) == (1e-5, 1e-4) and not ddd17.detach_task_latent


def test_the_image_domain_stage_is_shared_by_every_target_world(tiny_data, tmp_path):
    data, _ = tiny_data
    cfg = _tiny_cfg()
    shared = replace(cfg, stages=replace(cfg.stages, source_cache=str(tmp_path / "source")))
    one = train_ess(data, shared, tmp_path / "world_a", progress=False)
    two = train_ess(data, shared, tmp_path / "world_b", progress=False)
    assert two.minutes["ESS_init"] == one.minutes["ESS_init"]  # trained once, then reused
    assert len(list((tmp_path / "source").glob("ESS_init-*"))) == 1
    assert not list(tmp_path.glob("world_*/ESS_init-*"))
    assert len(list(tmp_path.glob("world_*/ESS-*"))) == 2  # the UDA stage sees the target

