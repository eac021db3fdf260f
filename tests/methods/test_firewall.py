"""The label firewall, proven by poisoning: every target label a method must not see (target
train AND test) is replaced with random values, the method is trained twice (clean and
poisoned) with the same seed, and its trained weights must be bit-identical. The rows meant to
read target labels (oracle, ess_supervised, spike_supervised, ECDDP's fine-tuning) must change,
which shows the comparison can fail. Budgets are two steps on the tiny world.

The clean runs are reused to check each method's model package: `load_model(package)` must
predict exactly what the method's own result predicts (a package holding another stage's
weights fails)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from evtransfer.bench import (
    TransferBenchConfig,
    depth_input_spec,
    input_spec,
    save_method_package,
    train_method,
)
from evtransfer.data._common import TensorDict
from evtransfer.data.depth_transfer import (
    DepthTransferConfig,
    load_depth_transfer_data,
    target_train_depth,
    unpack_spikes,
)
from evtransfer.data.firewall import EVALUATION, TARGET_SUPERVISED
from evtransfer.data.transfer import (
    TransferDataConfig,
    load_real_transfer_data,
    load_transfer_data,
)
from evtransfer.engine.fit import FitConfig
from evtransfer.inference import load_model
from evtransfer.methods import DEPTH_METHODS
from evtransfer.methods._stages import StageConfig
from evtransfer.methods.bicross import BicrossConfig
from evtransfer.methods.ecddp import EcddpConfig, FinetuneConfig
from evtransfer.methods.evdistill import DistillLosses
from tests.methods.test_ecddp import tiny_pretrain

FIT = FitConfig(steps=2, batch=2, ckpt_every=0, warmup_steps=1)


def _random_labels(labels: torch.Tensor, num_classes: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, num_classes, labels.shape, generator=gen).to(labels.dtype)


@pytest.fixture(scope="module")
def worlds(tiny_world, tmp_path_factory):
    """(clean, poisoned) TransferData: the poisoned target train and test labels are random."""
    cache = tmp_path_factory.mktemp("firewall_cache")
    clean = load_transfer_data(tiny_world, TransferDataConfig(), cache_dir=cache, progress=False)
    train = clean.target_label.read(TARGET_SUPERVISED)
    test = clean.test_label.read(EVALUATION)
    poisoned = replace(
        clean,
        target_label=clean.target_label.replace(_random_labels(train, clean.num_classes, 1)),
        test_label=clean.test_label.replace(_random_labels(test, clean.num_classes, 2)))
    assert not torch.equal(poisoned.target_label.read(TARGET_SUPERVISED), train)
    return clean, poisoned


def _bench_config() -> TransferBenchConfig:
    cfg = TransferBenchConfig(stages=StageConfig(source=FIT, synthetic=FIT, recon=FIT,
                                                 recon_base_channels=8))
    cfg.cmess.cml = FIT
    cfg.baselines.oracle = FIT
    cfg.ess = replace(cfg.ess, init=FIT, uda=replace(cfg.ess.uda, steps=2, batch=2))
    cfg.evdistill = replace(cfg.evdistill, joint=FIT, losses=DistillLosses(bmr=True),
                            translator_channels=4)
    cfg.ecddp = EcddpConfig(pretrain=tiny_pretrain(max_steps=1), finetune=FinetuneConfig(
        uper_channels=8, aux_channels=4, segmentation=FIT, label_fraction=1.0,
        tta_scales=(1.0,)))
    return cfg


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def _identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


RESULTS: dict = {}  # (name, root) -> MethodResult, so the package test reuses the runs


def _trained(name: str, data, root, cfg: TransferBenchConfig) -> dict[str, torch.Tensor]:
    if (name, root) not in RESULTS:
        RESULTS[name, root] = train_method(name, data, cfg, 0, root, "cpu", False)
    return _weights(RESULTS[name, root].network)


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """(clean, poisoned) run folders shared by the rows, so the stages they share (M_S, M_T',
    the reconstruction) are trained once per folder."""
    return tmp_path_factory.mktemp("clean"), tmp_path_factory.mktemp("poisoned")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["source_only", "recon_source", "cmess", "ess", "evdistill",
                                  "oracle", "ess_supervised"])
def test_segmentation_methods_never_see_target_labels(name, worlds, roots):
    cfg = _bench_config()
    a, b = (_trained(name, data, root, cfg) for data, root in zip(worlds, roots, strict=True))
    if name in ("oracle", "ess_supervised"):
        assert not _identical(a, b), f"{name} must train on the target labels"
    else:
        assert _identical(a, b), f"{name}: trained weights depend on target labels"


@pytest.mark.slow
def test_real_data_fixtures_keep_the_labels_out_too(tmp_path):
    """Cityscapes -> DSEC-Semantic fixtures in the official layouts (labels: uint8 memory
    maps): CMESS is blind to the poisoned target labels, the oracle is not."""
    from tests.data.test_transfer_real import dsec_real_roots, dsec_scenario

    real, data_cfg = dsec_scenario(*dsec_real_roots(tmp_path))
    clean = load_real_transfer_data(real, data_cfg, tmp_path / "cache", progress=False)
    poisoned = replace(clean, **{
        key: getattr(clean, key).replace(_random_labels(
            getattr(clean, key).read(reader), clean.num_classes, seed))
        for key, reader, seed in (("target_label", TARGET_SUPERVISED, 4),
                                  ("test_label", EVALUATION, 5))})
    cfg = replace(_bench_config(), data=data_cfg)
    for name, blind in (("cmess", True), ("oracle", False)):
        a, b = (_weights(train_method(name, data, cfg, 0, tmp_path / tag, "cpu", False).network)
                for data, tag in ((clean, "clean"), (poisoned, "poisoned")))
        assert _identical(a, b) is blind, name


@pytest.mark.slow
@pytest.mark.parametrize("name", ["source_only", "cmess", "oracle", "evdistill"])
def test_the_package_predicts_what_the_method_predicts(name, worlds, roots, tmp_path):
    data, cfg = worlds[0], _bench_config()
    _trained(name, data, roots[0], cfg)
    result = RESULTS[name, roots[0]]
    path = save_method_package(tmp_path, name, 0, result, input_spec(cfg, data),
                               label_space=cfg.data.label_space)
    x = data.test_x[:3]
    expected = result.predict(x)
    got = load_model(path)(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(got.argmax(1), expected.argmax(1))


@pytest.mark.slow
def test_ecddp_pretraining_never_sees_labels(worlds, tmp_path):
    from safetensors.torch import load_file

    clean, poisoned = worlds
    cfg = _bench_config()
    tuned = {}
    encoders = {}
    for tag, data in (("clean", clean), ("poisoned", poisoned)):
        tuned[tag] = _trained("ecddp", data, tmp_path / tag, cfg)
        (path,) = (tmp_path / tag).rglob("encoder.safetensors")
        encoders[tag] = load_file(path)
    assert _identical(encoders["clean"], encoders["poisoned"])
    # fine-tuning reads the target train labels by protocol: poisoned, it must differ
    assert not _identical(tuned["clean"], tuned["poisoned"])


@pytest.mark.slow
def test_bicross_never_sees_target_depth(tiny_world, tmp_path):
    data_cfg = DepthTransferConfig(frames=8)
    clean = load_depth_transfer_data(tiny_world, data_cfg, cache_dir=tmp_path / "cache",
                                     progress=False)
    labeled = target_train_depth(tiny_world, data_cfg, cache_dir=tmp_path / "cache")
    gen = torch.Generator().manual_seed(3)
    test = clean.test_labeled.read(EVALUATION)
    poisoned = replace(clean, test_labeled=clean.test_labeled.replace(TensorDict(
        spikes=test.tensors["spikes"],
        depth=torch.rand(test.tensors["depth"].shape, generator=gen) * 80)))
    bad = TensorDict(spikes=labeled.tensors["spikes"],
                     depth=torch.rand(labeled.tensors["depth"].shape, generator=gen) * 80)
    fit = FitConfig(steps=2, batch=4, ckpt_every=0)
    cfg = BicrossConfig(rgb=fit, cfkd=fit, scts=fit, supervised=fit, warmup_steps=1)
    for name in ("pre_src", "bicross", "spike_supervised"):
        _, train = DEPTH_METHODS[name]
        extra = ({"labeled": labeled}, {"labeled": bad}) if name == "spike_supervised" else ({}, {})
        weights = []
        for data, tag, kw in ((clean, "clean", extra[0]), (poisoned, "poisoned", extra[1])):
            torch.manual_seed(0)
            result = train(data, cfg, tmp_path / tag, seed=0, progress=False, **kw)
            weights.append(_weights(result.network))
        _check_depth_package(result, clean, tmp_path / f"{name}.safetensors")
        if name == "spike_supervised":
            assert not _identical(*weights), "spike_supervised must train on target depth"
        else:
            assert _identical(*weights), f"{name}: trained weights depend on target depth"


def _check_depth_package(result, data, path) -> None:
    """`load_model` of the result's package predicts the result's depth on test clips."""
    from evtransfer.engine.package import method_spec, save_package

    spec = method_spec(result.spec, method="test", inputs=depth_input_spec(data),
                       depth_range=(data.protocol.min_depth, data.protocol.max_depth))
    model = load_model(save_package(path, result.network, spec))
    packed = data.test.tensors["spikes"][:2]
    x = unpack_spikes(packed, data.width)
    got = model.forward(model.fit_input(x, raw=False), tuple(x.shape[-2:]))
    torch.testing.assert_close(got, result.predict(packed), rtol=1e-5, atol=1e-6)
