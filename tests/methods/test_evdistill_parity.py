"""EvDistill against its public code (../shared/refs/addisonwang2013+evdistill): the DeepLabV3+
R101 teacher and student on the same random weights, the released-checkpoint loader, and the
reference's own evaluation (dataset, inputs, mIoU) beside ours on one fixture.

Stubs, because the reference imports modules that do not load here: `modeling/backbone/
__init__.py` imports `xception_new` (absent from the repository); evaluate.py imports `logger`
(absent) and `models.deeplabv3plus` (needs torchvision and InPlaceABNSync; MscEval does not
use it); event_aps_dataset_v2.py imports torchvision.transforms (stubbed by a ToTensor that
does what torchvision's does to an 8-bit RGB PIL image: (3, H, W) float32 / 255) and
`transform_event` (absent, unused at test time). `models` is pinned to the reference's
folder (see `_models_package`). The reference's ResNet101 downloads ImageNet
weights when built; that method is replaced by a no-op in these tests.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from evtransfer.config import load_config
from evtransfer.data.event_aps import EventApsPairs
from evtransfer.engine.predict import segment
from evtransfer.io.images import write_label_png
from evtransfer.methods.evdistill import RealSegmentationRun, create_student, inference_student
from evtransfer.metrics import evaluate_segmentation
from evtransfer.models import create_model
from evtransfer.models.released.evdistill import (
    evdistill_to_evtransfer,
    load_evdistill,
)
from tests.refs import import_ref, ref_attr, ref_root, stub_module

REPO = "addisonwang2013+evdistill"


def _models_package() -> dict:
    """The reference's `models/` has no __init__.py; a regular package named `models` further
    down sys.path (tests/models) would shadow that namespace package, so it is pinned."""
    return {"models": stub_module("models", __path__=[str(ref_root(REPO) / "models")])}
DDD17 = load_config(RealSegmentationRun,
                    Path(__file__).resolve().parents[2] / "configs/evdistill/ddd17.yaml")


def _no_download(deeplab_module) -> None:
    resnet = deeplab_module.build_backbone.__globals__["resnet"]
    ref_attr(resnet, "ResNet")._load_pretrained_model = lambda self: None


@pytest.fixture(scope="module")
def ref_deeplab():
    module = import_ref(REPO, "modeling.deeplab", stubs={
        **_models_package(),
        "modeling.backbone.xception_new": stub_module("modeling.backbone.xception_new")})
    _no_download(module)
    return module


def _randomise(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random BatchNorm statistics and affines (the code's init leaves BN an identity, which
    would hide normalisation bugs); the convs keep the reference's own random init."""
    gen = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
            m.weight.data.copy_(0.5 + torch.rand(n, generator=gen))
            m.bias.data.copy_(0.1 * torch.randn(n, generator=gen))
    return net.eval()


@pytest.fixture(scope="module")
def ref_teacher(ref_deeplab):
    torch.manual_seed(0)
    return _randomise(ref_attr(ref_deeplab, "DeepLab")(backbone="resnet", num_classes=6), 1)


@pytest.fixture(scope="module")
def ref_dual(ref_deeplab):
    torch.manual_seed(1)
    return _randomise(ref_attr(ref_deeplab, "DeepLab_Dual")(backbone="resnet", num_classes=6),
                      2)


def _close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    scale = ref.abs().max().clamp(min=1e-12)
    assert (ours - ref).abs().max() <= 1e-5 * scale, float((ours - ref).abs().max() / scale)


X = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(3))


def test_teacher_matches_the_reference_deeplab(ref_teacher):
    """The teacher as EvDistill builds it (ddd17.yaml: R101, 3-channel APS input)."""
    ours = create_model(DDD17.method.teacher, in_chans=3, num_classes=6)
    ours.load_state_dict(evdistill_to_evtransfer(ref_teacher.state_dict()), strict=True)
    ours.eval()
    with torch.no_grad():
        ref, _ = ref_teacher(X)
        out = ours(X)
    _close(out, ref)
    assert torch.equal(out.argmax(1), ref.argmax(1))


def test_student_matches_the_reference_deeplab_dual(ref_dual):
    """The student as EvDistill builds it (segmentation + image decoder) on DeepLab_Dual's
    weights (its `pointwise` projection, unused by our losses, left out), then the inference
    network EvDistill keeps. Ours ends the image decoder with a sigmoid where DeepLab_Dual has
    none (a documented deviation), so the reconstruction is compared through it."""
    student = create_student(DDD17.method, 3, 6, 3)
    state = evdistill_to_evtransfer(ref_dual.state_dict())
    student.load_state_dict({k: v for k, v in state.items() if not k.startswith("affinity.")},
                            strict=True)
    student.eval()
    with torch.no_grad():
        seg, recon, _, _ = ref_dual(X)
        out = student.forward_all(X)
        plain = inference_student(student, DDD17.method.student, 3, 6)(X)
    for a, b in ((out.logits, seg), (out.recon, recon.sigmoid()), (plain, seg)):
        _close(a, b)
    assert torch.equal(plain.argmax(1), seg.argmax(1))


# --- released checkpoints ---------------------------------------------------------------
def test_released_layout_loads_strictly_and_predicts_as_the_reference(ref_teacher, tmp_path):
    """test_evdistill.py: `DeepLab(...).load_state_dict(torch.load(path))`: a bare state dict
    (also accepted inside a `state_dict` entry, under DataParallel's `module.` prefix)."""
    plain, wrapped = tmp_path / "ddd17_aps_ckpt.pth", tmp_path / "module.pth"
    torch.save(ref_teacher.state_dict(), plain)
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref_teacher.state_dict().items()},
                "epoch": torch.tensor(3)}, wrapped)
    with torch.no_grad():
        ref, _ = ref_teacher(X)
        for path in (plain, wrapped):
            net = load_evdistill(path)
            assert not net.training and net.recon is None
            _close(net(X), ref)


def test_released_dual_student_builds_its_decoders(ref_dual, tmp_path):
    path = tmp_path / "eventdual.pth"
    torch.save(ref_dual.state_dict(), path)
    net = load_evdistill(path)
    with torch.no_grad():
        seg, recon, pointwise, _ = ref_dual(X)
        out = net.forward_all(X)
    for a, b in ((out.logits, seg), (out.recon, recon), (out.affinity, pointwise)):
        _close(a, b)


def test_other_architectures_and_pickles_are_refused(tmp_path):
    other = tmp_path / "resnet18.pth"
    torch.save(create_model("deeplabv3plus_resnet18", num_classes=6).state_dict(), other)
    with pytest.raises(ValueError, match=r"resnet18.pth: .* first \['encoder\.conv1\.weight'"):
        load_evdistill(other)  # our own names: no EvDistill rule maps them
    deeper = tmp_path / "fc.pth"
    torch.save({"backbone.conv1.weight": torch.zeros(64, 3, 7, 7),
                "backbone.fc.weight": torch.zeros(10, 2048),
                "decoder.last_conv.8.weight": torch.zeros(6, 256, 1, 1)}, deeper)
    with pytest.raises(ValueError, match=r"do not fit DeepLabV3\+ R101 .*: first \[.encoder.fc"):
        load_evdistill(deeper)
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps(SimpleNamespace(x=1)))  # a class: not a weights-only pickle
    with pytest.raises(ValueError, match="evil.pth: (refused|not a torch checkpoint)"):
        load_evdistill(evil)


# --- the reference's evaluation on a fixture in the released layout -------------------------
def _ref_eval_stubs() -> dict:
    def to_tensor(img):
        return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)

    transforms = stub_module("torchvision.transforms", ToTensor=lambda: to_tensor,
                             Compose=lambda fs: fs[0])
    return {"torchvision": stub_module("torchvision", transforms=transforms),
            "torchvision.transforms": transforms, "logger": stub_module("logger"),
            "transform_event": stub_module("transform_event"), **_models_package(),
            "models.deeplabv3plus": stub_module("models.deeplabv3plus", Deeplab_v3plus=None)}


@pytest.mark.slow  # R101 at the code's 256 × 512, four networks passes per side
@pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning")
def test_reference_evaluation_equals_ours(ref_teacher, ref_dual, tmp_path, monkeypatch):
    """MscEval (evaluate.py) with its EventAPS_Dataset on a test split in the released layout,
    the two networks as test_evdistill.py runs them, against our loader, our released-weights
    path and our nanmean mIoU: the same mIoU for events and APS. Its file names come from the
    text between the first two dots of each path, so the code needs a './'-relative folder."""
    rng = np.random.default_rng(0)
    root = tmp_path / "ddd17"
    for sub in ("images", "labels"):
        (root / sub / "test").mkdir(parents=True)
    for k in range(2):  # full-size halves are resized to 256 × 512 by both loaders
        Image.fromarray(rng.integers(0, 256, (40, 120, 3), dtype=np.uint8)).save(
            root / "images" / "test" / f"f{k}.png")
        label = rng.integers(0, 5, (40, 60), dtype=np.uint8)  # class 5 absent from the labels
        label[:4] = 255
        write_label_png(root / "labels" / "test" / f"f{k}.png", label)
    evaluate = import_ref(REPO, "evaluate", stubs=_ref_eval_stubs())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    cfg = SimpleNamespace(data_path_test="./ddd17/", eval_batchsize=1, eval_n_workers=0,
                          n_classes=6, ignore_label=255, eval_scales=[1], eval_flip=False)
    with torch.no_grad():
        miou, miou_aps = ref_attr(evaluate, "MscEval")(cfg)(ref_dual, ref_teacher)
    for name, net in (("student", ref_dual), ("teacher", ref_teacher)):
        state = {k: v for k, v in net.state_dict().items()
                 if k.startswith(("backbone.", "aspp.", "decoder."))}  # what DeepLab holds
        torch.save(state, tmp_path / f"{name}.pth")
    test = [EventApsPairs(root, "test")[i] for i in range(2)]  # 256 × 512, as the code's
    label = torch.stack([t["label"] for t in test])
    for name, key, expected in (("student", "events", miou), ("teacher", "aps", miou_aps)):
        x = torch.stack([t[key] for t in test])
        net = load_evdistill(tmp_path / f"{name}.pth")
        pred = segment(net, x).argmax(1)
        ours = evaluate_segmentation(pred, label, 6, "nanmean")["miou"]
        assert ours == pytest.approx(100 * expected, abs=1e-6)


def test_reference_dataset_equals_ours(tmp_path, monkeypatch):
    """EventAPS_Dataset vs EventApsPairs on odd-width pairs: the same halves (left events,
    right APS), bicubic to 256 × 512, [0, 1] without ImageNet normalisation, nearest labels."""
    rng = np.random.default_rng(1)
    root = tmp_path / "mvsec"
    for sub in ("images", "labels"):
        (root / sub / "test").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (37, 121, 3), dtype=np.uint8)).save(
        root / "images" / "test" / "a.png")
    write_label_png(root / "labels" / "test" / "a.png",
                    rng.integers(0, 6, (37, 60), dtype=np.uint8))
    dataset = import_ref(REPO, "event_aps_dataset_v2", stubs=_ref_eval_stubs())
    monkeypatch.chdir(tmp_path)
    cfg = SimpleNamespace(data_path_test="./mvsec/")
    event, aps, label, name = ref_attr(dataset, "EventAPS_Dataset")(cfg, mode="test")[0]
    ours = EventApsPairs(root, "test")[0]
    assert name == ours["name"] == "a"
    assert torch.equal(ours["events"], event) and torch.equal(ours["aps"], aps)
    assert torch.equal(ours["label"], torch.from_numpy(label[0]))
