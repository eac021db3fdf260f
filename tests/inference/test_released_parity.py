"""The whole path of a released checkpoint, against its authors' own inference code.

A randomly initialised ESS checkpoint is written in the official `Epoch_N.pt` layout
(uzh-rpg/ess utils/saver.py) from the reference networks themselves; ESS's own dataset code
(DSEC/dataset/provider.py, datasets/ddd17_events_loader.py), its E2VID reconstructor
(e2vid/image_reconstructor.py `update_reconstruction`, one call per window as
training/ess_trainer.py `val_step`), its task decoder and its metrics (evaluation/metrics.py)
score it on tiny recordings in the official layouts; `evtransfer weights convert` and
`evtransfer evaluate` score the converted package on the same folders. Per-pixel predictions
must be identical except at float near-ties of the reference's logits (top-2 margin below
1e-4 of their scale: after 20 recurrent windows the float rounding of another thread split
reaches that; under one pixel in a hundred), and the confusion matrix must be ESS's metric
code applied to them (ESS's own matrix when nothing flipped).

The same for EvDistill's released teacher and student: MscEval (evaluate.py) with its
EventAPS_Dataset on a test split in its released layout, against `evtransfer evaluate` on the
converted packages.

Stubbed for ESS because they do not import in this environment: torchvision (the image
encoder's `torchvision.models.resnet18`, stood in for by a torchvision-layout ResNet-18;
`transforms` is used only for augmentation), albumentations (augmentation pipelines the DDD17
loader builds but never applies at evaluation), and e2vid/utils/timers.py's `CudaTimer` (it
creates CUDA events, which a CPU-only torch refuses; a no-op timer takes its place). The DDD17
loader calls `np.int`, removed in NumPy 1.24: the test restores it as `int`. EvDistill's
stubs are listed at `_evdistill_stubs`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from evtransfer.cli import main
from evtransfer.events import Events
from evtransfer.inference import evaluate as evaluate_module
from evtransfer.io.images import write_label_png
from evtransfer.metrics import ConfusionMatrix
from tests.data._layouts import ddd17_recording, dsec_sequence
from tests.models.netref import randomize_
from tests.refs import import_ref, ref_attr, stub_module

REPO = "uzh-rpg+ess"
LIGHTWEIGHT = {"num_bins": 5, "skip_type": "sum", "recurrent_block_type": "convlstm",
               "num_encoders": 3, "base_num_channels": 32, "num_residual_blocks": 2,
               "norm": "BN", "use_upsample_conv": False}  # E2VID_lightweight's config


class _TvResNet18(nn.Module):
    """The children of torchvision's resnet18 in order (conv1, bn1, relu, maxpool, layer1-4),
    as ESS's StyleEncoderE2VID slices them; blocks in torchvision's names."""

    def __init__(self, pretrained: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1, self.relu, self.maxpool = nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
        cin = 64
        for k, (planes, stride) in enumerate(((64, 1), (128, 2), (256, 2), (512, 2)), 1):
            setattr(self, f"layer{k}", nn.Sequential(_TvBlock(cin, planes, stride),
                                                     _TvBlock(planes, planes, 1)))
            cin = planes


class _TvBlock(nn.Module):
    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1, self.relu = nn.BatchNorm2d(planes), nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False),
                                         nn.BatchNorm2d(planes))
                           if stride != 1 or cin != planes else None)


class _NoTimer:
    def __init__(self, *args, **kwargs) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *args) -> None:
        return None


def _noop(*args, **kwargs) -> None:
    return None


def _stubs() -> dict:
    models = stub_module("torchvision.models", resnet18=_TvResNet18)
    transforms, utils = stub_module("torchvision.transforms"), stub_module("torchvision.utils")
    return {"torchvision": stub_module("torchvision", models=models, transforms=transforms,
                                       utils=utils),
            "torchvision.models": models, "torchvision.transforms": transforms,
            "torchvision.utils": utils,
            "albumentations": stub_module("albumentations", ReplayCompose=_noop,
                                          CenterCrop=_noop, HorizontalFlip=_noop,
                                          RandomCrop=_noop),
            "e2vid.utils.timers": stub_module("e2vid.utils.timers", CudaTimer=_NoTimer,
                                              Timer=_NoTimer, cuda_timers={}, timers={})}


def _ref(module: str):
    return import_ref(REPO, module, stubs=_stubs())


def _random_bn_statistics(net: nn.Module, seed: int) -> nn.Module:
    """BatchNorm running means and variances drawn at random (mean ~ N(0, 0.1²), variance
    ~ 1 + |N(0, 0.1²)|), so that loading them is exercised; the weights keep their init."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(1 + (torch.randn(m.num_features, generator=gen) * 0.1).abs())
    return net


def _checkpoint(path: Path, classes: int, seed: int) -> tuple[nn.Module, nn.Module]:
    """ESS's three networks, saved as utils/saver.py saves them; returns the reference E2VID
    and task decoder (eval mode). E2VID keeps rpg_e2vid's own initialisation (seeded) with
    random BatchNorm statistics: fully random weights make its 20 recurrent steps amplify
    float rounding (1e-7) into near-tied logits; the decoder is random throughout."""
    torch.manual_seed(seed)
    e2vid = ref_attr(_ref("e2vid.model.model"), "E2VIDRecurrent")(dict(LIGHTWEIGHT))
    _random_bn_statistics(e2vid, seed)
    nets = _ref("models.style_networks")
    encoder = randomize_(ref_attr(nets, "StyleEncoderE2VID")(1, skip_connect=True), seed + 1)
    decoder = randomize_(ref_attr(nets, "SemSegE2VID")(input_c=256, output_c=classes,
                                                       skip_connect=True, skip_type="concat"),
                         seed + 2)
    optimizers = {"optimizer_front_sensor_a": torch.optim.RAdam(encoder.parameters()),
                  "optimizer_back": torch.optim.RAdam(decoder.parameters())}
    torch.save({"front_sensor_a": encoder.state_dict(), "front_sensor_b": e2vid.state_dict(),
                "back_end": decoder.state_dict(),
                **{k: o.state_dict() for k, o in optimizers.items()},
                "epoch": 3, "step_count": 120, "batch_size_a": 8, "batch_size_b": 8}, path)
    return e2vid.eval(), decoder.eval()


class Reference(NamedTuple):
    """ESS's own evaluation, per sample: label maps predicted, near-tie masks (top-2 logit
    margin < 1e-4 × the largest |logit|, where float rounding may flip the argmax), labels;
    and MetricsSemseg's dataset-wide confusion matrix."""

    preds: list[torch.Tensor]
    ties: list[torch.Tensor]
    labels: list[torch.Tensor]
    confusion: torch.Tensor


def _reference(e2vid: nn.Module, decoder: nn.Module, loader, size: tuple[int, int],
               classes: int, windows: int = 20, bins: int = 5) -> Reference:
    """ESS's validation of the event branch (training/ess_trainer.py `val_step`,
    `valTaskStep`): per batch a fresh recurrent state, one `update_reconstruction` per
    window, the task decoder on the last window's latents, nearest resize, argmax, and
    MetricsSemseg's confusion."""
    parser = argparse.ArgumentParser()
    ref_attr(_ref("e2vid.options.inference_options"), "set_inference_options")(parser)
    recon = ref_attr(_ref("e2vid.image_reconstructor"), "ImageReconstructor")(
        e2vid, size[0], size[1], bins, "cpu", parser.parse_args([]))
    metrics = ref_attr(_ref("evaluation.metrics"), "MetricsSemseg")(
        classes, 255, [str(c) for c in range(classes)])
    out = Reference([], [], [], torch.zeros(0))
    with torch.no_grad():
        for batch in loader:
            data, labels = batch[0], batch[-1]
            recon.last_states_for_each_channel = {"grayscale": None}
            for i in range(windows):
                _, _, content = recon.update_reconstruction(data[:, i * bins:(i + 1) * bins])
            logits = F.interpolate(decoder(content)[1], size=size, mode="nearest")
            metrics.update_batch(logits.argmax(dim=1), labels)
            top2 = logits.topk(2, dim=1).values
            out.preds.extend(logits.argmax(dim=1))
            out.ties.extend(top2[:, 0] - top2[:, 1] < 1e-4 * logits.abs().max())
            out.labels.extend(labels)
    return out._replace(confusion=metrics.metrics_acc)


def _check(got: list[torch.Tensor], result: dict, want: Reference, classes: int) -> None:
    """Our evaluator's label maps equal ESS's at every pixel that is not a float near-tie
    (which are few), and its confusion matrix is ESS's metric code on those label maps with
    ESS's labels (equal to ESS's own confusion when no tie flipped)."""
    confusion = ref_attr(_ref("evaluation.metrics"), "semseg_compute_confusion")
    assert len(got) == len(want.preds) == result["samples"]
    total = torch.zeros(classes, classes, dtype=torch.int64)
    for pred, ref_pred, tie, label in zip(got, want.preds, want.ties, want.labels, strict=True):
        assert not ((pred != ref_pred) & ~tie).any(), "predictions differ beyond float ties"
        assert tie.float().mean() < 1e-2  # ties are rare: the check above is not vacuous
        total += confusion(pred[None], label[None], classes, 255)
    assert result["confusion"] == total.tolist()
    flips = sum(int((p != r).sum()) for p, r in zip(got, want.preds, strict=True))
    assert flips > 0 or result["confusion"] == want.confusion.tolist()
    assert len({int(v) for p in got for v in p.unique()}) > 2  # not a constant prediction


class _Recording(ConfusionMatrix):
    """The evaluator's confusion matrix, keeping every predicted label map it is given."""

    seen: list[torch.Tensor] = []

    def update(self, pred, target) -> None:
        _Recording.seen.extend(torch.as_tensor(pred).clone())
        super().update(pred, target)


def _ours(monkeypatch, tmp_path: Path, ckpt: Path, name: str, dataset: str, root: Path,
          batch: int) -> tuple[list[torch.Tensor], dict]:
    package = tmp_path / f"{name}.safetensors"
    assert main(["weights", "convert", str(ckpt), "--as", name, "-o", str(package)]) == 0
    _Recording.seen = []
    monkeypatch.setattr(evaluate_module, "ConfusionMatrix", _Recording)
    out = tmp_path / "result.json"
    assert main(["evaluate", "--checkpoint", str(package), "--dataset", dataset, "--root",
                 str(root), "--batch", str(batch), "-o", str(out)]) == 0
    return list(_Recording.seen), json.loads(out.read_text())


# --- DSEC-Semantic ------------------------------------------------------------------------
T_OFFSET = 5_000_000


def _dsec_root(root: Path) -> None:
    """test/zurich_city_13_a: 20 000 events over 400 ms, 7 labels (6 dropped: one sample, at
    label 6) of random classes with ignored pixels, a sub-pixel rectify map; 14_c and 15_a
    hold 6 labels each (no sample), as the evaluator needs the three test sequences."""
    gen = np.random.default_rng(0)
    for name, n, labels in (("zurich_city_13_a", 20_000, 7), ("zurich_city_14_c", 2000, 6),
                            ("zurich_city_15_a", 2000, 6)):
        t = T_OFFSET + np.sort(gen.integers(0, 400_000, n)).astype(np.int64)
        events = Events(gen.integers(0, 640, n).astype(np.int16),
                        gen.integers(0, 480, n).astype(np.int16), t,
                        np.where(gen.random(n) < 0.5, -1, 1).astype(np.int8), 640, 480)
        grid = np.stack(np.meshgrid(np.arange(640), np.arange(480)), axis=-1).astype(np.float32)
        rmap = np.minimum(grid + gen.random(grid.shape).astype(np.float32) * 0.9, [639, 479])
        times = T_OFFSET + 10_123 + 30_000 * np.arange(labels)
        seq = dsec_sequence(root / "test" / name, events, times, t_offset=T_OFFSET,
                            rectify_map=rmap.astype(np.float32))
        # the reference slicer reads t_offset as a 0-d dataset (int(h5f["t_offset"][()]))
        with h5py.File(seq / "events" / "left" / "events.h5", "r+") as f:
            del f["t_offset"]
            f.create_dataset("t_offset", data=np.int64(T_OFFSET))
        for png in sorted((seq / "semantic" / "11classes" / "data").glob("*.png")):
            label = gen.integers(0, 11, (440, 640)).astype(np.uint8)
            label[gen.random((440, 640)) < 0.1] = 255
            write_label_png(png, label)
    (root / "train").mkdir()  # the reference provider asserts both split folders


@pytest.mark.slow  # one sample is 20 E2VID passes at 440 × 640: about 25 s a side on a core
def test_ess_dsec_checkpoint_evaluates_as_ess_code(tmp_path, monkeypatch):
    """One sample of 20 windows × 5 bins at 440 × 640 (rectified events, 40 rows cut)."""
    ckpt, root = tmp_path / "Epoch_3.pt", tmp_path / "dsec"
    e2vid, decoder = _checkpoint(ckpt, 11, seed=0)
    _dsec_root(root)
    provider = ref_attr(_ref("DSEC.dataset.provider"), "DatasetProvider")(
        root, mode="val", event_representation="voxel_grid", nr_events_data=20,
        delta_t_per_data=50, nr_events_window=100_000, nr_bins_per_data=5,
        normalize_event=False, semseg_num_classes=11)
    loader = torch.utils.data.DataLoader(provider.get_val_dataset(), batch_size=8,
                                         shuffle=False)
    want = _reference(e2vid, decoder, loader, (440, 640), 11)
    got, result = _ours(monkeypatch, tmp_path, ckpt, "ess-dsec", "dsec-semantic", root, 8)
    _check(got, result, want, 11)


# --- DDD17 ----------------------------------------------------------------------------------
def _ddd17_root(root: Path) -> None:
    """Seven dir* recordings (ESS's split needs seven); dir1 (valid) holds 6000 events on the
    346 × 260 sensor and two labelled images with random classes."""
    gen = np.random.default_rng(1)
    for k in range(7):
        folder = root / f"dir{k}"
        if k != 1:
            folder.mkdir(parents=True)
            continue
        n = 6000
        t_ns = 1_000_000_000 + np.cumsum(gen.integers(0, 40, n)) * 1000  # whole µs
        idx = np.array([4000, 5999])
        rows = np.stack([t_ns[idx], idx, np.maximum(idx - 1000, 0)], axis=1)
        ddd17_recording(folder, t_ns, gen.integers(0, 346, n), gen.integers(0, 260, n),
                        gen.integers(0, 2, n), rows, [1, 2])
        for png in sorted((folder / "segmentation_masks").glob("*.png")):
            write_label_png(png, gen.integers(0, 6, (200, 346)).astype(np.uint8))


@pytest.mark.slow  # two samples of 20 E2VID passes at 200 × 352 a side: about 35 s on a core
def test_ess_ddd17_checkpoint_evaluates_as_ess_code(tmp_path, monkeypatch):
    """Two samples of 20 windows at 200 × 352 in one batch (E2VID's input normalisation
    pooled over it, as ESS's validation; ESS lists the masks in glob order, so predictions
    are matched by image)."""
    ckpt, root = tmp_path / "Epoch_3.pt", tmp_path / "ddd17"
    e2vid, decoder = _checkpoint(ckpt, 6, seed=10)
    _ddd17_root(root)
    monkeypatch.setattr(np, "int", int, raising=False)
    dataset = ref_attr(_ref("datasets.ddd17_events_loader"), "DDD17Events")(
        str(root), split="valid", nr_events_data=20, nr_bins_per_data=5,
        nr_events_per_data=32_000)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, shuffle=False)
    want = _reference(e2vid, decoder, loader, (200, 352), 6)
    got, result = _ours(monkeypatch, tmp_path, ckpt, "ess-ddd17", "ddd17", root, 2)
    numbers = [int(Path(f).stem.split("_")[-1]) for f in dataset.files]  # ESS's glob order
    order = sorted(range(len(numbers)), key=numbers.__getitem__)  # ours: by image number
    _check(got, result, Reference(*([getattr(want, f)[i] for i in order]
                                    for f in ("preds", "ties", "labels")), want.confusion), 6)


# --- EvDistill on its released DDD17 test layout ----------------------------------------------
EVDISTILL = "addisonwang2013+evdistill"


def _evdistill_stubs() -> dict:
    """evaluate.py imports `logger` and `transform_event` (absent from the repository) and
    `models.deeplabv3plus` (needs torchvision and InPlaceABNSync; MscEval does not use it);
    event_aps_dataset_v2.py takes torchvision's ToTensor (stood in for by what it does to an
    8-bit RGB PIL image); modeling/backbone imports the absent `xception_new`. The
    reference's `models/` folder has no __init__.py, so its name is pinned to the folder."""
    def to_tensor(img):
        return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)

    transforms = stub_module("torchvision.transforms", ToTensor=lambda: to_tensor,
                             Compose=lambda fs: fs[0])
    folder = Path(__file__).resolve().parents[2] / ".." / "shared" / "refs" / EVDISTILL
    return {"torchvision": stub_module("torchvision", transforms=transforms),
            "torchvision.transforms": transforms, "logger": stub_module("logger"),
            "transform_event": stub_module("transform_event"),
            "models": stub_module("models", __path__=[str(folder.resolve() / "models")]),
            "models.deeplabv3plus": stub_module("models.deeplabv3plus", Deeplab_v3plus=None),
            "modeling.backbone.xception_new": stub_module("modeling.backbone.xception_new")}


class _Numpy:
    """numpy for the reference's evaluate.py, recording what its `argmax` and `bincount`
    return (MscEval keeps its predictions and confusion matrix local)."""

    def __init__(self) -> None:
        self.recorded = {"argmax": [], "bincount": []}
        self.probs = []

    def __getattr__(self, name: str):
        fn = getattr(np, name)
        if name not in ("argmax", "bincount"):
            return fn

        def recorded(x, *args, **kwargs):
            out = fn(x, *args, **kwargs)
            if name == "argmax":
                self.probs.append(np.array(x))
            self.recorded[name].append(out)
            return out

        return recorded


def _bn_random(net: nn.Module, seed: int) -> nn.Module:
    """Random BatchNorm statistics and affines; the convs keep the reference's init."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(0.1 * torch.randn(n, generator=gen))
    return net.eval()


@pytest.mark.slow  # DeepLabV3+ R101 at 256 × 512: four passes (two networks, two sides)
@pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning")
def test_evdistill_checkpoints_evaluate_as_evdistill_code(tmp_path, monkeypatch):
    """The released teacher (APS) and student (events) layouts, randomly initialised, scored
    by MscEval (evaluate.py) with its EventAPS_Dataset and by `evtransfer evaluate` on the
    converted packages: the same label maps (but float near-ties) and confusion matrices.
    MscEval names files by the text between the first two dots of each path, so the data
    folder is given './'-relative."""
    deeplab = import_ref(EVDISTILL, "modeling.deeplab", stubs=_evdistill_stubs())
    resnet = deeplab.build_backbone.__globals__["resnet"]
    monkeypatch.setattr(ref_attr(resnet, "ResNet"), "_load_pretrained_model",
                        lambda self: None)  # the reference downloads ImageNet weights
    nets = {}
    for k, name in enumerate(("student", "teacher")):
        torch.manual_seed(k)
        nets[name] = _bn_random(ref_attr(deeplab, "DeepLab")(backbone="resnet", num_classes=6),
                                k + 1)
        torch.save(nets[name].state_dict(), tmp_path / f"ddd17_{name}.pth")
    rng = np.random.default_rng(0)
    root = tmp_path / "ddd17"
    for sub in ("images", "labels"):
        (root / sub / "test").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (260, 692, 3), dtype=np.uint8)).save(
        root / "images" / "test" / "f0.png")
    label = rng.integers(0, 6, (260, 346), dtype=np.uint8)
    label[:20] = 255
    write_label_png(root / "labels" / "test" / "f0.png", label)

    evaluate = import_ref(EVDISTILL, "evaluate", stubs=_evdistill_stubs())
    recorder = _Numpy()
    monkeypatch.setattr(evaluate, "np", recorder)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    cfg = argparse.Namespace(data_path_test="./ddd17/", eval_batchsize=1, eval_n_workers=0,
                             n_classes=6, ignore_label=255, eval_scales=[1], eval_flip=False)
    with torch.no_grad():
        ref_attr(evaluate, "MscEval")(cfg)(nets["student"], nets["teacher"])
    # per batch MscEval takes argmax and bincount of the student (events), then the teacher
    for k, name in enumerate(("student", "teacher")):
        probs = recorder.probs[k]
        top2 = -np.sort(-probs, axis=1)[:, :2]
        want = Reference([torch.from_numpy(recorder.recorded["argmax"][k][0])],
                         [torch.from_numpy(top2[0, 0] - top2[0, 1] < 1e-5)],
                         [torch.from_numpy(np.asarray(Image.fromarray(label).resize(
                             (512, 256), Image.NEAREST), dtype=np.int64))],
                         torch.from_numpy(recorder.recorded["bincount"][k].reshape(6, 6)))
        got, result = _ours(monkeypatch, tmp_path, tmp_path / f"ddd17_{name}.pth",
                            f"evdistill-ddd17-{name}", "ddd17", root, 1)
        assert result["split"] == "test" and result["protocol"]["miou"].startswith("nanmean")
        _check(got, result, want, 6)
