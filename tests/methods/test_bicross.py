import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from evtransfer.data.depth_transfer import (
    DepthProtocol,
    DepthTransferConfig,
    load_depth_transfer_data,
    target_train_depth,
)
from evtransfer.engine.checkpoint import load_module_weights
from evtransfer.engine.fit import FitConfig
from evtransfer.methods.bicross import (
    ENTRIES,
    BicrossConfig,
    alignment_loss,
    build_depth_model,
    ckd_loss,
    domain_loss,
    fkd_loss,
    fkd_mask,
    grad_reverse,
    init_from_rgb,
    projection_head,
    pseudo_mask,
    sig_loss,
    train_bicross,
    uncertainty_loss,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("device", DEVICES)
def test_sig_loss_matches_a_float64_reference(device):
    pred = torch.rand(50, generator=_gen()) * 30 + 1
    gt = torch.rand(50, generator=_gen(1)) * 30 + 1
    g = np.log(pred.double().numpy() + 0.1) - np.log(gt.double().numpy() + 0.1)
    expected = np.sqrt(g.var(ddof=1) + 0.15 * g.mean() ** 2)
    got = sig_loss(pred.to(device), gt.to(device))
    assert float(got) == pytest.approx(expected, rel=1e-5)
    assert float(sig_loss(pred[:1], gt[:1])) == 0.0  # too few values for a variance
    same = pred.clone().requires_grad_(True)
    sig_loss(same, pred).backward()  # a perfect fit: zero loss and a finite gradient
    assert torch.isfinite(same.grad).all()


@pytest.mark.parametrize("device", DEVICES)
def test_uncertainty_loss_targets_the_clamped_relative_error(device):
    gt = torch.tensor([10.0, 10.0, 4.0], device=device)
    pred = torch.tensor([12.0, 30.0, 4.0], device=device)  # relative errors 0.2, 2 -> 1, 0
    unc = torch.tensor([0.0, 0.5, 0.1], device=device)
    assert float(uncertainty_loss(unc, pred, gt)) == pytest.approx((0.2 + 0.5 + 0.1) / 3)
    assert float(uncertainty_loss(unc[:0], pred[:0], gt[:0])) == 0.0


def test_ckd_loss_is_one_directional_infonce():
    r = torch.randn(4, 6, generator=_gen())
    s = torch.randn(4, 6, generator=_gen(1))
    logits = r.double().numpy() @ s.double().numpy().T
    logsm = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    assert float(ckd_loss(r, s)) == pytest.approx(-np.diag(logsm).mean(), rel=1e-5)
    assert float(ckd_loss(r, s)) != pytest.approx(float(ckd_loss(s, r)), rel=1e-3)


def test_fkd_mask_keeps_reliable_rgb_and_uncertain_spike_pixels():
    u_rgb = torch.tensor([[0.1, 0.1], [0.9, 0.9]]).view(1, 1, 2, 2)  # mean 0.5: top row low
    u_spk = torch.tensor([[0.8, 0.0], [0.8, 0.0]]).view(1, 1, 2, 2)  # mean 0.4: left high
    mask = fkd_mask(u_rgb, u_spk, (2, 2))
    assert mask.tolist() == [[[[True, False], [False, False]]]]
    # area pooling to a coarser map first
    big = fkd_mask(u_rgb.repeat_interleave(2, 2).repeat_interleave(2, 3),
                   u_spk.repeat_interleave(2, 2).repeat_interleave(2, 3), (2, 2))
    assert torch.equal(big, mask)


def test_fkd_loss_averages_over_kept_pixels_and_channels():
    rgb = torch.zeros(1, 3, 2, 2)
    spike = torch.arange(12.0).view(1, 3, 2, 2)
    assert float(fkd_loss(rgb, spike)) == pytest.approx((spike**2).mean().item())
    mask = torch.tensor([[True, False], [False, True]]).view(1, 1, 2, 2)
    kept = spike[..., [0, 1], [0, 1]]
    assert float(fkd_loss(rgb, spike, mask)) == pytest.approx((kept**2).mean().item())
    assert float(fkd_loss(rgb, spike, torch.zeros_like(mask))) == 0.0


@pytest.mark.parametrize("device", DEVICES)
def test_pseudo_labels_keep_the_certain_half_of_valid_pixels(device):
    depth = torch.tensor([5.0, 6, 7, 8, 9, 10, 90, 0]).view(1, 1, 2, 4).to(device)
    unc = torch.tensor([0.7, 0.1, 0.5, 0.3, 0.9, 0.2, 0.0, 0.0]).view(1, 1, 2, 4).to(device)
    protocol = DepthProtocol()
    valid = pseudo_mask(depth, unc, protocol, None)
    assert valid.flatten().tolist() == [True] * 6 + [False, False]  # 90 m and 0 are invalid
    # k = 3: the valid uncertainties sorted are .1 .2 .3 .5 .7 .9, so u <= 0.5 is kept
    kept = pseudo_mask(depth, unc, protocol, 0.5)
    assert kept.flatten().tolist() == [False, True, True, True, False, True, False, False]
    assert pseudo_mask(depth, unc, protocol, 0.2).flatten().tolist()[:6] == [
        False, True, False, False, False, True]  # k = 1: u <= 0.2


def test_alignment_loss_matches_normalised_moments():
    a = torch.randn(6, 4, generator=_gen())
    b = torch.randn(6, 4, generator=_gen(1)) * 2 + 1
    assert float(alignment_loss(a, a)) == pytest.approx(0.0, abs=1e-7)
    an, bn = a.double().numpy(), b.double().numpy()
    sa, sb = an.std(0, ddof=1) + 1e-3, bn.std(0, ddof=1) + 1e-3
    expected = (((an.mean(0) - bn.mean(0)) / sb) ** 2 + (np.log(sa) - np.log(sb)) ** 2).mean()
    assert float(alignment_loss(a, b)) == pytest.approx(expected, rel=1e-5)
    # scale-free: scaling both feature sets leaves it unchanged (up to eps)
    assert float(alignment_loss(100 * a, 100 * b)) == pytest.approx(expected, rel=1e-2)


def test_gradient_reversal_and_the_domain_classifier():
    x = torch.randn(3, 2, requires_grad=True)
    grad_reverse(x, 0.5).sum().backward()
    torch.testing.assert_close(x.grad, torch.full((3, 2), -0.5))
    head = projection_head(5, 8, 2)
    src = torch.randn(4, 5, 2, 2, generator=_gen(), requires_grad=True)
    tgt = torch.randn(4, 5, 2, 2, generator=_gen(1)) + 3
    loss = domain_loss(head, src, tgt, beta=1.0)
    loss.backward()
    # the features get the opposite of the classifier's own gradient: a descent step on the
    # features raises the domain loss
    with torch.no_grad():
        moved = src - 0.1 * src.grad
        assert float(domain_loss(head, moved, tgt, 1.0)) > float(loss)


def test_student_takes_the_rgb_weights_except_its_stem():
    cfg = BicrossConfig()
    rgb = build_depth_model(cfg, 3, seed=0)
    student = build_depth_model(cfg, 8, seed=1)
    fresh = init_from_rgb(student, rgb, "new")
    assert fresh == ["encoder.stem_conv.weight"]
    for key, value in rgb.state_dict().items():
        if key not in fresh:
            assert torch.equal(student.state_dict()[key], value), key
    assert student.state_dict()[fresh[0]].shape[1] == 8
    adapted = build_depth_model(cfg, 8, seed=1)
    init_from_rgb(adapted, rgb, "adapted")
    stem = rgb.state_dict()[fresh[0]]
    torch.testing.assert_close(adapted.state_dict()[fresh[0]][:, 3], stem[:, 0] * 3 / 8)


def test_an_untrained_model_starts_near_init_depth():
    cfg = BicrossConfig(init_depth=10.0)
    model = build_depth_model(cfg, 3, seed=0).eval()
    with torch.no_grad():
        depth = model(torch.randn(1, 3, 64, 64, generator=_gen()) * 0.5)
    assert 7.0 < float(depth.median()) < 14.0


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="stem"):
        BicrossConfig(stem="other")
    with pytest.raises(ValueError, match="adaptation"):
        BicrossConfig(adaptation="dann")
    with pytest.raises(ValueError, match="multiples of 32"):
        BicrossConfig(input_size=(100, 64))
    with pytest.raises(ValueError, match="multiples of 32"):
        BicrossConfig(input_size=(0, 64))
    with pytest.raises(ValueError, match="batch"):
        BicrossConfig(cfkd=FitConfig(batch=1))


def _tiny(tiny_world, tmp_path):
    data_cfg = DepthTransferConfig(frames=8)
    data = load_depth_transfer_data(tiny_world, data_cfg, cache_dir=tmp_path / "cache",
                                    progress=False)
    fit = FitConfig(steps=4, batch=4, ckpt_every=0)
    cfg = BicrossConfig(rgb=fit, cfkd=fit, scts=replace(fit, steps=5), supervised=fit,
                        warmup_steps=1)
    return data, data_cfg, cfg


def test_bicross_runs_its_stages_resumes_and_predicts_depth(tiny_world, tmp_path):
    data, _, cfg = _tiny(tiny_world, tmp_path)
    result = train_bicross(data, cfg, tmp_path / "run", progress=False)
    assert set(result.minutes) == {"rgb", "cfkd", "scts"}
    spikes = data.test.tensors["spikes"][:3]
    depth = result.predict(spikes)
    assert depth.shape == (3, data.test[0]["spikes"].shape[-2], data.width)  # 48 x 64
    assert torch.isfinite(depth).all() and bool((depth > 0).all())
    runs = {p.name.split("-")[0] for p in (tmp_path / "run").iterdir()}
    assert runs == {"bicross_rgb", "bicross_cfkd", "bicross_scts"}
    scts = next((tmp_path / "run").glob("bicross_scts-*"))
    logged = [json.loads(line) for line in (scts / "metrics.jsonl").read_text().splitlines()]
    assert any("scp" in r and "sca" in r for r in logged)  # past the warm-up: SCP + SCA
    # a finished run is reused, not retrained
    again = train_bicross(data, cfg, tmp_path / "run", progress=False)
    assert again.minutes == result.minutes
    torch.testing.assert_close(again.predict(spikes), depth)
    # the teacher is an EMA (0.999) of the student: it lags behind, close to the stage-1 model
    def weights(stage, name):
        model = build_depth_model(cfg, data.frames, seed=0)
        ckpt = next((tmp_path / "run").glob(f"{stage}-*")) / "checkpoints" / "last"
        load_module_weights(ckpt, name, model)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    teacher, start = weights("bicross_scts", "teacher"), weights("bicross_cfkd", "student")
    final = torch.cat([p.detach().flatten() for p in result.network.parameters()])
    assert float((teacher - final).abs().max()) > 0
    assert float((teacher - start).norm()) < 0.01 * float((final - start).norm())


def test_baselines_ablations_and_the_adversarial_option(tiny_world, tmp_path):
    data, data_cfg, cfg = _tiny(tiny_world, tmp_path)
    labeled = target_train_depth(tiny_world, data_cfg, cache_dir=tmp_path / "cache")
    assert set(ENTRIES) == {"pre_src", "bicross", "bicross_no_filter", "bicross_no_scp",
                            "bicross_no_sca", "spike_supervised"}
    pre = ENTRIES["pre_src"](data, cfg, tmp_path / "run", progress=False)
    assert set(pre.minutes) == {"rgb", "cfkd"}
    sup = ENTRIES["spike_supervised"](data, cfg, tmp_path / "run", progress=False,
                                      labeled=labeled)
    assert set(sup.minutes) == {"rgb", "supervised"}
    with pytest.raises(ValueError, match="labeled"):
        ENTRIES["spike_supervised"](data, cfg, tmp_path / "run", progress=False)
    ENTRIES["bicross_no_filter"](data, cfg, tmp_path / "run", progress=False)
    assert len(list((tmp_path / "run").glob("bicross_cfkd-*"))) == 2  # filtered and not
    assert len(list((tmp_path / "run").glob("bicross_rgb-*"))) == 1  # stage 0 is shared
    adv = train_bicross(data, replace(cfg, adaptation="adversarial"), tmp_path / "run",
                        progress=False)
    scts = [p for p in (tmp_path / "run").glob("bicross_scts-*")]
    logged = "".join((p / "metrics.jsonl").read_text() for p in scts)
    assert '"adv"' in logged
    assert adv.predict(data.test.tensors["spikes"][:1]).shape[0] == 1


def test_rgb_init_loads_a_local_state_dict(tiny_world, tmp_path):
    from evtransfer.methods.bicross import train_rgb

    data, _, cfg = _tiny(tiny_world, tmp_path)
    ref = build_depth_model(cfg, 3, seed=5)
    torch.save(ref.state_dict(), tmp_path / "rgb.pt")
    frozen = replace(cfg, rgb_init=str(tmp_path / "rgb.pt"),
                     rgb=replace(cfg.rgb, steps=1, lr=1e-12, min_lr=1e-12))
    model, _ = train_rgb(data, frozen, tmp_path / "run", 0, torch.device("cpu"), False)
    for key, value in ref.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, atol=1e-6, rtol=0)
    torch.save({"other.weight": torch.zeros(2)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="nothing fits"):
        train_rgb(data, replace(frozen, rgb_init=str(tmp_path / "bad.pt")), tmp_path / "run2",
                  0, torch.device("cpu"), False)


CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "bicross"
WORLD = {"world_syn2real": "target", "world_fog": "fog", "world_rain": "rain",
         "world_city2": "city2"}
REAL = {"vkitti2_kitti": ("vkitti2", "kitti"), "cloudy_foggy": ("stereoweather",) * 2,
        "kitti_drivingstereo": ("kitti", "drivingstereo"), "nyu_respike": ("nyu", "respike")}


@pytest.mark.parametrize("name", [*WORLD, *REAL])
def test_the_eight_scenario_configs_load(name):
    from evtransfer.bench import TransferBenchConfig
    from evtransfer.config import load_config

    cfg = load_config(TransferBenchConfig, CONFIGS / f"{name}.yaml")
    # the code's optimisation: no clipping (a YAML stage would otherwise get FitConfig's 1.0),
    # the backbone in both Adams
    stages = (cfg.bicross.rgb, cfg.bicross.cfkd, cfg.bicross.scts, cfg.bicross.supervised)
    assert all(s.clip_grad == 0.0 for s in stages) and cfg.bicross.backbone_in_both
    if name in WORLD:
        assert cfg.depth.domain == WORLD[name] and not cfg.depth_real.source
        assert cfg.bicross.model == "dpt_hybrid_small"
    else:
        real = cfg.depth_real
        assert (real.source, real.target) == REAL[name] and real.frames == 128
        assert real.protocol.garg_crop and cfg.bicross.model == "dpt_hybrid"
        assert cfg.bicross.input_size == ((224, 224) if name == "nyu_respike" else (384, 384))
        assert min(cfg.bicross.rgb.steps, cfg.bicross.scts.steps) > 0
