"""EvDistill: losses against float64 NumPy references, the unpaired batches, the joint step on
toy networks, and the stages on the tiny world (a few steps)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from evtransfer.config import load_config
from evtransfer.data.crops import CropConfig, load_recognition_data
from evtransfer.data.firewall import EVALUATION, LabelAccessError
from evtransfer.data.transfer import TransferDataConfig, load_transfer_data
from evtransfer.engine.fit import FitConfig
from evtransfer.losses import kd_loss
from evtransfer.methods.evdistill import (
    DistillLosses,
    EvdistillConfig,
    Outputs,
    Pairs,
    RealSegmentationRun,
    RecognitionConfig,
    RecognitionRun,
    UnpairedSet,
    affinity_graph,
    affinity_loss,
    evdistill_losses,
    moment_loss,
    task_loss,
    train_evdistill,
    train_evdistill_recognition,
    train_source_only_recognizer,
)
from evtransfer.models import create_model

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "evdistill"
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# --- losses ---------------------------------------------------------------------------------
def _affinity_ref(x: np.ndarray, node: int) -> np.ndarray:
    b, c, h, w = x.shape
    hh, ww = -(-h // node), -(-w // node)
    pooled = np.zeros((b, c, hh, ww))
    for i in range(hh):  # ceil-mode average pooling: partial cells average what they hold
        for j in range(ww):
            pooled[:, :, i, j] = x[:, :, i * node:(i + 1) * node, j * node:(j + 1) * node].mean(
                axis=(2, 3))
    f = pooled.reshape(b, c, -1)
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    return np.einsum("bci,bcj->bij", f, f)


@pytest.mark.parametrize("node", [1, 2, 3])
def test_affinity_graph_matches_numpy(node):
    x = torch.randn(2, 4, 5, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = affinity_graph(x, node).double().numpy()
    np.testing.assert_allclose(got, _affinity_ref(x.numpy(), node), rtol=1e-5, atol=1e-6)


def test_affinity_loss_properties():
    gen = torch.Generator().manual_seed(1)
    s = torch.randn(2, 3, 4, 4, generator=gen, requires_grad=True)
    t = torch.randn(2, 6, 4, 4, generator=gen, requires_grad=True)
    ref = ((_affinity_ref(s.detach().double().numpy(), 2)
            - _affinity_ref(t.detach().double().numpy(), 2)) ** 2).mean()
    loss = affinity_loss(s, t, 2)
    assert loss.item() == pytest.approx(ref, rel=1e-5)
    # cosine affinities: positive per-cell scaling changes nothing; the teacher gets no gradient
    scale = torch.rand(2, 1, 4, 4, generator=gen) + 0.5
    assert affinity_loss(s * scale, s, 1).item() == pytest.approx(0.0, abs=1e-10)
    loss.backward()
    assert s.grad is not None and t.grad is None


def test_moment_loss_matches_numpy():
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(3, 4, 2, 5, generator=gen, dtype=torch.float64)
    b = 2 * torch.randn(2, 4, 3, 3, generator=gen, dtype=torch.float64) + 1

    def stats(x):
        s = x.numpy().transpose(1, 0, 2, 3).reshape(4, -1)
        return s.mean(1), np.cov(s, bias=True)

    (ma, ca), (mb, cb) = stats(a), stats(b)
    ref = ((ma - mb) ** 2).mean() + ((ca - cb) ** 2).mean()
    assert moment_loss(a, b).item() == pytest.approx(ref, rel=1e-5)
    assert moment_loss(a, a).item() == pytest.approx(0.0, abs=1e-6)
    flat = torch.randn(6, 4, generator=gen)  # (B, C) features: each row one sample
    assert moment_loss(flat, flat + 1).item() == pytest.approx(1.0, rel=1e-5)


def test_task_loss_classification_and_segmentation():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    y = torch.tensor([0, 2])
    lse = np.log(np.exp([2.0, 0.0, -1.0]).sum()), np.log(np.exp([0.0, 1.0, 0.0]).sum())
    ref = ((lse[0] - 2.0) + (lse[1] - 0.0)) / 2
    assert task_loss(logits, y).item() == pytest.approx(ref, rel=1e-6)
    seg = logits.T.reshape(1, 3, 1, 2)  # the same two predictions as pixels; one ignored
    assert task_loss(seg, torch.tensor([[[0, 255]]])).item() == pytest.approx(lse[0] - 2.0,
                                                                            rel=1e-6)


# --- joint step on toy networks ------------------------------------------------------------
class _Toy(nn.Module):
    """1×1 convs: logits, a feature map and (student) a reconstruction."""

    def __init__(self, cin: int, recon: int = 0):
        super().__init__()
        self.head = nn.Conv2d(cin, 3, 1)
        self.feat = nn.Conv2d(cin, 4, 1)
        self.recon = nn.Conv2d(cin, recon, 1) if recon else None

    def outputs(self, x):
        r = torch.sigmoid(self.recon(x)) if self.recon is not None else None
        return Outputs(self.head(x), self.feat(x), self.head(x), r)


def _toy_batch(gen):
    return {"image": torch.rand(2, 1, 4, 4, generator=gen),
            "label": torch.randint(0, 3, (2, 4, 4), generator=gen),
            "event": torch.randn(2, 2, 4, 4, generator=gen),
            "s_event": torch.randn(2, 2, 4, 4, generator=gen),
            "s_image": torch.rand(2, 1, 4, 4, generator=gen),
            "s_label": torch.randint(0, 3, (2, 4, 4), generator=gen)}


def test_joint_losses_with_bmr_train_everything_but_the_teacher():
    torch.manual_seed(0)
    teacher, student, translator = _Toy(1), _Toy(2, recon=1), nn.Conv2d(1, 2, 1)
    for p in teacher.parameters():
        p.requires_grad_(False)
    cfg = DistillLosses(affinity_node=2, recon_kd_weight=0.5)
    out = evdistill_losses(teacher.outputs, student.outputs, translator,
                           _toy_batch(torch.Generator().manual_seed(0)), cfg)
    assert set(out) == {"loss", "task", "kd", "affinity", "dm", "cycle", "anchor"}
    total = sum(getattr(cfg, f"{k}_weight") * out[k] for k in out if k != "loss")
    assert out["loss"].item() == pytest.approx(total.item(), rel=1e-6)
    out["loss"].backward()
    assert all(p.grad is not None for p in [*student.parameters(), *translator.parameters()])


@pytest.mark.parametrize("scale", [0.0, 1.0])
def test_translator_grad_gates_the_students_losses(scale):
    torch.manual_seed(0)
    teacher, student, translator = _Toy(1), _Toy(2, recon=1), nn.Conv2d(1, 2, 1)
    task_only = DistillLosses(kd_weight=0, affinity_weight=0, dm_weight=0, cycle_weight=0,
                              anchor_weight=0, translator_grad=scale)
    evdistill_losses(teacher.outputs, student.outputs, translator,
                     _toy_batch(torch.Generator().manual_seed(0)), task_only)["loss"].backward()
    grad = translator.weight.grad
    assert (grad is None or grad.abs().sum() == 0) == (scale == 0.0)


def test_recon_kd_weight_scales_the_reconstructed_pair_only():
    torch.manual_seed(0)
    teacher, student, translator = _Toy(1), _Toy(2, recon=1), nn.Conv2d(1, 2, 1)
    batch = _toy_batch(torch.Generator().manual_seed(4))
    kd = [evdistill_losses(teacher.outputs, student.outputs, translator, batch,
                           DistillLosses(recon_kd_weight=w))["kd"] for w in (0.0, 1.0)]
    recon = student.outputs(batch["event"]).recon
    expected = kd_loss(student.head(batch["event"]), teacher.head(recon), 2.0)
    assert (kd[1] - kd[0]).item() == pytest.approx(expected.item(), rel=1e-5)


def test_joint_losses_without_bmr_use_the_pairs_only():
    teacher, student = _Toy(1), _Toy(2)
    batch = _toy_batch(torch.Generator().manual_seed(3))
    cfg = DistillLosses(bmr=False, affinity_node=1)
    out = evdistill_losses(teacher.outputs, student.outputs, None, batch, cfg)
    assert set(out) == {"loss", "task", "kd", "affinity", "dm"}
    logits = student.head(batch["s_event"])
    assert out["task"].item() == pytest.approx(task_loss(logits, batch["s_label"]).item())
    assert out["kd"].item() == pytest.approx(
        kd_loss(logits, teacher.head(batch["s_image"]), 2.0).item(), rel=1e-6)
    # the source images and labels are not read without BMR
    del batch["image"], batch["label"]
    evdistill_losses(teacher.outputs, student.outputs, None, batch, cfg)


def test_unlabeled_pairs_have_no_task_term_on_the_pairs():
    """Real pairs (DDD17 APS | events, N-Caltech101) carry no labels: the pairs' terms are
    the teacher's alone, and the task term is the source images' (through Ê) only."""
    teacher, student, translator = _Toy(1), _Toy(2, recon=1), nn.Conv2d(1, 2, 1)
    batch = _toy_batch(torch.Generator().manual_seed(5))
    unlabeled = {k: v for k, v in batch.items() if k != "s_label"}
    plain = DistillLosses(bmr=False, affinity_node=1)
    assert set(evdistill_losses(teacher.outputs, student.outputs, None, unlabeled, plain)) == {
        "loss", "kd", "affinity", "dm"}
    out = evdistill_losses(teacher.outputs, student.outputs, translator, unlabeled,
                           DistillLosses())
    expected = task_loss(student.head(translator(batch["image"])), batch["label"])
    assert out["task"].item() == pytest.approx(expected.item(), rel=1e-6)
    labeled = evdistill_losses(teacher.outputs, student.outputs, translator, batch,
                               DistillLosses())
    pairs_task = task_loss(student.head(batch["s_event"]), batch["s_label"])
    assert (labeled["task"] - out["task"]).item() == pytest.approx(pairs_task.item(), rel=1e-5)


def test_unpaired_set_without_pair_labels():
    image, label = torch.zeros(2, 1, 1, 1), torch.zeros(2, 1, 1, dtype=torch.long)
    ds = UnpairedSet(image, label, torch.ones(3, 1, 1, 1),
                     Pairs(torch.ones(3, 1, 1, 1), torch.ones(3, 1, 1, 1), None), seed=0)
    assert set(ds[0]) == {"image", "label", "event", "s_event", "s_image"}


@pytest.mark.parametrize("field, value", [("temperature", 0.0), ("affinity_node", 0),
                                          ("dm_weight", -1.0), ("translator_grad", -0.5)])
def test_distill_losses_validation(field, value):
    with pytest.raises(ValueError, match=field):
        DistillLosses(**{field: value})


def test_unpaired_set_covers_every_item():
    image, label = torch.arange(5.0).view(5, 1, 1, 1), torch.arange(5).view(5, 1, 1)
    event = torch.arange(3.0).view(3, 1, 1, 1) + 10
    s = torch.arange(4.0).view(4, 1, 1, 1) + 20
    ds = UnpairedSet(image, label, event, Pairs(s, s, torch.arange(4).view(4, 1, 1)), seed=0)
    items = [ds[i] for i in range(len(ds))]
    assert len(ds) == 5
    assert sorted(int(it["image"]) for it in items) == list(range(5))
    assert {int(it["event"]) for it in items} == {10, 11, 12}
    assert {int(it["s_event"]) for it in items} == {20, 21, 22, 23}
    assert all(int(it["label"]) == int(it["image"]) for it in items)
    assert all(int(it["s_label"]) + 20 == int(it["s_event"]) for it in items)


# --- stages on the tiny world ------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_data(tiny_world):
    return load_transfer_data(tiny_world, TransferDataConfig(), progress=False)


def _tiny_cfg(bmr: bool = True) -> EvdistillConfig:
    fit = FitConfig(steps=2, batch=2, warmup_steps=1, ckpt_every=0, log_every=1)
    cfg = EvdistillConfig(joint=fit, losses=DistillLosses(bmr=bmr), translator_channels=4)
    cfg.stages = replace(cfg.stages, source=fit)
    return cfg


@pytest.mark.parametrize("device", DEVICES)
def test_train_evdistill_predicts_with_the_student_alone_and_resumes(tiny_data, tmp_path, device):
    data = tiny_data
    result = train_evdistill(data, _tiny_cfg(), tmp_path, seed=0, device=device, progress=False)
    probs = result.predict(data.test_x[:3])
    assert probs.shape == (3, data.num_classes, *data.test_x.shape[-2:])
    torch.testing.assert_close(probs.sum(1), torch.ones(3, *probs.shape[-2:]))
    assert not any(k.startswith("recon.") for k in result.network.state_dict())
    assert set(result.minutes) == {"teacher", "student+BMR"}
    rebuilt = create_model(result.spec["model"], **result.spec["kwargs"])
    rebuilt.load_state_dict(result.network.state_dict())  # the spec rebuilds the network
    again = train_evdistill(data, _tiny_cfg(), tmp_path, seed=0, device=device, progress=False)
    torch.testing.assert_close(again.predict(data.test_x[:3]), probs)


def test_train_evdistill_without_bmr_and_a_mismatched_init(tiny_data, tmp_path):
    result = train_evdistill(tiny_data, _tiny_cfg(bmr=False), tmp_path, seed=1, progress=False)
    assert result.predict(tiny_data.test_x[:1]).shape[1] == tiny_data.num_classes
    bad = replace(_tiny_cfg(), student="deeplabv3plus_resnet34")
    with pytest.raises(ValueError, match="teacher's architecture"):
        train_evdistill(tiny_data, bad, tmp_path, seed=1, progress=False)


def test_recognition_on_tiny_world_crops(tiny_world, tmp_path):
    crops = CropConfig(size=16, stride=8, max_per_class=12)
    data = load_recognition_data(tiny_world, TransferDataConfig(), crops, progress=False)
    with pytest.raises(LabelAccessError, match="RecognitionData.test_y"):
        len(data.test_y)  # the test classes ride along withheld, as segmentation's labels
    test_y = data.test_y.read(EVALUATION)
    assert test_y.shape == (len(data.test_x),) and 0 <= int(test_y.min())
    assert int(test_y.max()) < data.num_classes
    fit = FitConfig(steps=2, batch=4, warmup_steps=1, ckpt_every=0, log_every=1)
    cfg = RecognitionConfig(teacher=fit, source_only=fit, joint=fit, translator_channels=4)
    for train in (train_evdistill_recognition, train_source_only_recognizer):
        result = train(data, cfg, tmp_path, seed=0, progress=False)
        probs = result.predict(data.test_x)
        assert probs.shape == (len(data.test_x), data.num_classes)
        torch.testing.assert_close(probs.sum(1), torch.ones(len(probs)))


# --- configs ----------------------------------------------------------------------------
def test_configs_load():
    from evtransfer.bench import TransferBenchConfig, method_config

    root = CONFIGS
    bench = load_config(TransferBenchConfig, root / "world.yaml")
    section = method_config(bench, "evdistill")
    assert isinstance(section, EvdistillConfig) and section.stages == bench.stages
    ddd17 = load_config(RealSegmentationRun, root / "ddd17.yaml")
    assert ddd17.data.size == (256, 512) and ddd17.miou == "nanmean"
    assert ddd17.method.teacher == "deeplabv3plus_resnet101"
    assert load_config(RealSegmentationRun, root / "mvsec.yaml").data.num_classes > 0
    assert load_config(RecognitionRun, root / "ncaltech101.yaml").dataset == "ncaltech101"
    assert load_config(RecognitionRun, root / "world_recognition.yaml").dataset == "world"


# --- runs through the CLI ---------------------------------------------------------------
def _tiny_fit_overrides(prefix: str, names: tuple[str, ...]) -> list[str]:
    fit = "{steps: 1, batch: 2, warmup_steps: 1, ckpt_every: 0, log_every: 1}"
    return [f"{prefix}{name}={fit}" for name in names]


def test_cli_recognize_on_the_tiny_world(tiny_world, tmp_path, capsys):
    import json

    from evtransfer.cli import main

    sets = ["dataset=world", f"world={tiny_world}", "seeds=[0]", "crops.size=16",
            "crops.stride=8", "crops.max_per_class=6", "method.translator_channels=4",
            *_tiny_fit_overrides("method.", ("teacher", "source_only", "joint"))]
    argv = ["evdistill", "recognize", "--config", str(CONFIGS / "world_recognition.yaml"),
            "--out", str(tmp_path)]
    assert main(argv + [a for s in sets for a in ("--set", s)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(summary["top1"]) == {"evdistill", "source_only"}
    assert all(0 <= v <= 100 for v in summary["top1_mean"].values())
    assert json.loads((tmp_path / "results.json").read_text()) == summary


def test_cli_segment_on_an_event_aps_layout(tmp_path, capsys):
    import json

    from PIL import Image

    from evtransfer.cli import main
    from evtransfer.io.images import write_label_png

    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("test", 2)):  # 2 source frames, 2 target frames
        (tmp_path / "images" / split).mkdir(parents=True)
        (tmp_path / "labels" / split).mkdir(parents=True)
        for k in range(n):
            Image.fromarray(rng.integers(0, 256, (16, 32, 3), dtype=np.uint8)).save(
                tmp_path / "images" / split / f"{k}.png")
            write_label_png(tmp_path / "labels" / split / f"{k}.png",
                            rng.integers(0, 6, (16, 16), dtype=np.uint8))
    sets = [f"data.root={tmp_path}", "data.size=[32, 32]", "method.teacher=deeplabv3plus_resnet18",
            "method.student=deeplabv3plus_resnet18", "method.translator_channels=4",
            *_tiny_fit_overrides("method.", ("joint",)),
            *_tiny_fit_overrides("method.stages.", ("source",))]
    argv = ["evdistill", "segment", "--config", str(CONFIGS / "ddd17.yaml"), "--out",
            str(tmp_path / "out")]
    assert main(argv + [a for s in sets for a in ("--set", s)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    run = summary["runs"][0]
    assert summary["miou_mode"] == "nanmean" and run["nanmean"]["miou_mode"] == "nanmean"
    assert 0 <= run["nanmean"]["miou"] <= 100 and run["ess"]["miou"] <= run["nanmean"]["miou"]
