"""EvDistill: events to end-task learning by reconstruction-guided cross-modal distillation.

Wang, Chae, Yoon, Kim, Yoon, "EvDistill: Asynchronous Events to End-task Learning via
Bidirectional Reconstruction-guided Cross-modal Knowledge Distillation", CVPR 2021. The public
code (addisonwang2013/evdistill) holds the networks and the evaluation only: no training, no
loss, no BMR training. The stages follow the paper; every value it does not give is a config
field marked `unpublished: our choice` (docs/methods/evdistill.md discusses each).

1. Teacher: DeepLabV3+ trained on the labeled source images (grayscale by default, as the
   APS frames of DDD17), then frozen.
2. Student + BMR, trained jointly. Data: labeled source images I, unlabeled real event
   windows E (never of the same scene as I), and paired (frame, window) data P — the
   simulator's (frame, window, label) triples on the world (their labels are the source
   frames'), the unlabeled (APS, event image) pairs of one sensor on DDD17/MVSEC, the
   recordings and the images they were recorded from on N-Caltech101 (no labels: target
   labels never reach training; `data.event_aps`, `data.caltech`).
   Bidirectional modality reconstruction crafts the missing halves: the image → event
   translator G gives Ê = G(I), and the student's second decoder (EvDistill's `DeepLab_Dual`)
   reconstructs Î from E. The frozen teacher T teaches the student S on P, on (I, Ê) and
   on (Î, E):
   - task: cross-entropy of S on Ê with the source labels, and on P's windows where P
     carries (simulator) labels;
   - prediction KD: T² · KL(softmax(T(·)/τ) ‖ softmax(S(·)/τ)) on the three pairs;
   - affinity-graph KD: the cosine-affinity graph between the cells of the student's map
     regresses onto the teacher's (pairwise KD), on the three pairs;
   - distribution matching: feature moments (mean, covariance) of S on P's windows and on Ê
     match those of S on E, those of T on Î match those of T on I, and Ê's channel moments
     match E's;
   - reconstruction: the anchors G(frame) ≈ window and Î(window) ≈ frame on P, and the
     cycles I → Ê → Î(Ê) ≈ I and E → Î → G(Î) ≈ E on the unpaired data.
   Teacher outputs are detached in the KD terms. `translator_grad` scales the student's
   gradients through Ê into G (the paper: end to end) and `recon_kd_weight` the (Î, E)
   pair's KD and affinity terms; both are 0 by default, for the reasons measured in
   docs/methods/evdistill.md.
3. Inference: the student's segmentation path alone (the reconstruction decoder is dropped).

Ablations: `bmr=False` keeps P only (the paper's "KD with events and APS frames" baseline);
`affinity_weight=0`; `dm_weight=0`. Object recognition runs the same losses on classifiers
over object crops (`data.crops`) or N-Caltech101, with a separate E2VID-style network as the
event → image direction.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from evtransfer.data._common import TensorDict
from evtransfer.data.augment import hflip
from evtransfer.data.caltech import (
    CaltechConfig,
    CaltechTrain,
    caltech_event_labels,
    load_caltech_recognition,
)
from evtransfer.data.crops import CropConfig, RecognitionData, load_recognition_data
from evtransfer.data.event_aps import EventApsConfig, EventApsTrain, load_event_aps
from evtransfer.data.firewall import EVALUATION
from evtransfer.data.transfer import TransferData, TransferDataConfig
from evtransfer.engine.fit import FitConfig, fit, stage_dir
from evtransfer.engine.loop import TrainState
from evtransfer.engine.predict import predict, reconstruct, segment
from evtransfer.losses import kd_loss, segmentation_loss
from evtransfer.methods._stages import StageConfig, source_input, train_source_model
from evtransfer.methods.result import MethodResult, segmentation_spec
from evtransfer.metrics import evaluate_segmentation, topk_accuracy
from evtransfer.models import create_model
from evtransfer.models.weights import load_adapted


@dataclass
class DistillLosses:
    """Stage 2's losses (shared by segmentation and recognition) and the ablation switches."""

    bmr: bool = True  # paper; False: the "without BMR" ablation (the pairs P only)
    temperature: float = 2.0  # unpublished: our choice (Hinton's τ; the paper's is not public)
    task_weight: float = 1.0  # unpublished: our choice
    kd_weight: float = 1.0  # unpublished: our choice
    affinity_weight: float = 1.0  # unpublished: our choice (0: the "without affinity" ablation)
    affinity_node: int = 8  # unpublished: our choice (pixels per graph node side, segmentation)
    dm_weight: float = 0.1  # unpublished: our choice (0: "without distribution matching")
    cycle_weight: float = 1.0  # unpublished: our choice (both reconstruction cycles)
    anchor_weight: float = 1.0  # unpublished: our choice (both directions on the pairs P)
    # unpublished: our choice: the (Î, E) pair's KD and affinity terms relative to the others
    recon_kd_weight: float = 0.0
    # unpublished: our choice. Scale of the student's gradients that reach the translator
    # through Ê (the paper trains BMR end to end: 1). At 1, G can hand the student image
    # appearance instead of events (docs/methods/evdistill.md).
    translator_grad: float = 0.0

    def __post_init__(self) -> None:
        if not self.temperature > 0 or self.affinity_node < 1:
            raise ValueError(f"losses.temperature must be > 0 and losses.affinity_node >= 1, "
                             f"got {self.temperature} and {self.affinity_node}")
        weights = {k: v for k, v in vars(self).items() if k.endswith(("_weight", "_grad"))}
        negative = {k: v for k, v in weights.items() if v < 0}
        if negative:
            raise ValueError(f"loss weights must be >= 0, got {negative}")


@dataclass
class EvdistillConfig:
    """Segmentation: the networks, the two stages' budgets and the losses. `stages` are the
    benchmark's shared settings: the teacher uses their `source` budget, `source_gray` and
    `dice_weight`."""

    stages: StageConfig = field(default_factory=StageConfig)
    teacher: str = "deeplabv3plus_resnet18"  # paper: DeepLabV3+ R101 (CPU preset: R18)
    student: str = "deeplabv3plus_resnet18"  # paper: the teacher's architecture
    translator: str = "img2event"  # unpublished: our choice (the paper's I2E net is not public)
    translator_channels: int = 16  # unpublished: our choice (E2VID-topology width, CPU budget)
    init_from_teacher: bool = True  # unpublished: our choice (stem adapted to the events)
    joint: FitConfig = field(default_factory=lambda: FitConfig(lr=5e-4))  # unpublished
    losses: DistillLosses = field(default_factory=DistillLosses)
    # the worlds whose target labels chose the unpublished defaults: recon_kd_weight 0 was
    # measured on the small world (docs/methods/evdistill.md); `bench_suite` refuses to
    # report on these worlds
    defaults_chosen_on: list[str] = field(default_factory=lambda: ["small"])


# --- losses ---------------------------------------------------------------------------------
def affinity_graph(x: Tensor, node: int = 1) -> Tensor:
    """(B, N, N) cosine affinities between the N cells of x (B, C, H, W) average-pooled by
    `node` × `node` (ceil mode): a_ij = f_i·f_j / (|f_i| |f_j|)."""
    if node > 1:
        x = F.avg_pool2d(x, node, node, ceil_mode=True)
    f = F.normalize(x.float().flatten(2), dim=1, eps=1e-8)
    return f.transpose(1, 2) @ f


def affinity_loss(student: Tensor, teacher: Tensor, node: int = 1) -> Tensor:
    """Pairwise KD: mean squared difference of the affinity graphs of the student's and the
    (detached) teacher's maps (B, C, H, W); channel counts may differ, sizes may not."""
    return (affinity_graph(student, node) - affinity_graph(teacher.detach(), node)).square().mean()


def moment_loss(a: Tensor, b: Tensor) -> Tensor:
    """Distribution matching of two feature maps (B, C, h, w) (or (B, C)), each cell a sample
    of C features: mean over channels of (μ_a − μ_b)² plus mean over entries of
    (Σ_a − Σ_b)², Σ the biased covariance of the samples."""
    def stats(x: Tensor) -> tuple[Tensor, Tensor]:
        s = x.float().transpose(0, 1).reshape(x.shape[1], -1)  # (C, samples)
        mu = s.mean(1, keepdim=True)
        centred = s - mu
        return mu.squeeze(1), centred @ centred.T / s.shape[1]

    (mu_a, cov_a), (mu_b, cov_b) = stats(a), stats(b)
    return (mu_a - mu_b).square().mean() + (cov_a - cov_b).square().mean()


def task_loss(logits: Tensor, target: Tensor, dice_weight: float = 0.0) -> Tensor:
    """Cross-entropy (ignore 255) of segmentation logits (B, K, h, w) against (B, H, W), or of
    class logits (B, K) against (B,)."""
    if logits.ndim == 2:
        return F.cross_entropy(logits.float(), target, ignore_index=255)
    return segmentation_loss(logits, target, dice_weight=dice_weight)


class Outputs(NamedTuple):
    """One network pass: `logits`, the `feature` map whose moments are matched, the `graph`
    map of the affinity KD, and the reconstructed image (student only; None otherwise)."""

    logits: Tensor
    feature: Tensor
    graph: Tensor
    recon: Tensor | None


Net = Callable[[Tensor], Outputs]


def _chunks(out: Outputs, sizes: list[int]) -> list[Outputs]:
    """Split one batched pass back into its groups."""
    parts = [v.split(sizes) if v is not None else [None] * len(sizes) for v in out]
    return [Outputs(*group) for group in zip(*parts, strict=True)]


def _l1(a: Tensor, b: Tensor) -> Tensor:
    return (a - b).abs().mean()


def evdistill_losses(teacher: Net, student: Net, translator: nn.Module | None, batch: dict,
                     cfg: DistillLosses, dice_weight: float = 0.0) -> dict[str, Tensor]:
    """The weighted stage-2 loss of one batch and its terms (see the module docstring).

    `batch`: `s_image`/`s_event` (the paired frames and windows, P) with `s_label` where P
    is labeled (the simulator's pairs; real pairs carry none), `event` (real target windows
    E) and, with BMR, `image`/`label` (source images I). The student sees P's
    windows, E and (BMR) Ê = G(I) in one pass, so its normalisation statistics cover all."""
    tau, node = cfg.temperature, cfg.affinity_node
    inputs = [batch["s_event"], batch["event"]]
    if cfg.bmr:
        translated = translator(batch["image"])
        # the student's losses reach G scaled by translator_grad (0: not at all)
        inputs.append(translated.detach()
                      + cfg.translator_grad * (translated - translated.detach()))
    s_p, s_e, *rest = _chunks(student(torch.cat(inputs)), [len(x) for x in inputs])
    with torch.no_grad():
        t_p = teacher(batch["s_image"])
    terms = {}  # the world's order (task first): its sums stay bit-identical
    if "s_label" in batch:
        terms["task"] = task_loss(s_p.logits, batch["s_label"], dice_weight)
    terms.update(kd=kd_loss(s_p.logits, t_p.logits, tau),
                 affinity=affinity_loss(s_p.graph, t_p.graph, node),
                 dm=moment_loss(s_p.feature, s_e.feature))
    if cfg.bmr:
        (s_a,), image, event = rest, batch["image"], batch["event"]
        with torch.no_grad():
            t_a = teacher(image)
        t_b = teacher(s_e.recon)  # frozen weights; gradients reach Î through the DM term only
        w_b = cfg.recon_kd_weight
        terms["task"] = (terms.get("task", 0.0)
                         + task_loss(s_a.logits, batch["label"], dice_weight))
        terms["kd"] = (terms["kd"] + kd_loss(s_a.logits, t_a.logits, tau)
                       + w_b * kd_loss(s_e.logits, t_b.logits, tau))
        terms["affinity"] = (terms["affinity"] + affinity_loss(s_a.graph, t_a.graph, node)
                             + w_b * affinity_loss(s_e.graph, t_b.graph, node))
        terms["dm"] = (terms["dm"] + moment_loss(s_a.feature, s_e.feature)
                       + moment_loss(t_b.feature, t_a.feature) + moment_loss(translated, event))
        terms["cycle"] = _l1(s_a.recon, image) + _l1(translator(s_e.recon), event)
        terms["anchor"] = (_l1(s_p.recon, batch["s_image"])
                           + _l1(translator(batch["s_image"]), batch["s_event"]))
    weights = {"task": cfg.task_weight, "kd": cfg.kd_weight, "affinity": cfg.affinity_weight,
               "dm": cfg.dm_weight, "cycle": cfg.cycle_weight, "anchor": cfg.anchor_weight}
    loss = sum(weights[k] * v for k, v in terms.items())
    return {"loss": loss, **{k: v.detach() for k, v in terms.items()}}


# --- data: unpaired batches -------------------------------------------------------------------
class Pairs(NamedTuple):
    """P: event windows `x` (M, C, H, W), the frame of each `image` (M, 1 or 3, H, W), and
    labels (M, H, W) or (M,) for the simulator's pairs; None for real (target) pairs."""

    x: Tensor
    image: Tensor
    label: Tensor | None


class UnpairedSet(Dataset):
    """Item i: source image i mod N (with its label), real target window perm_t[i] mod K,
    pair perm_s[i] mod M (frame, window, and label where P has them); length max(N, K, M).
    The permutations are seeded and independent, so nothing pairs a source image with a
    target window of the same scene."""

    def __init__(self, image: Tensor, label: Tensor, event: Tensor, pairs: Pairs, seed: int):
        self.source = TensorDict(image=image, label=label)
        self.target = TensorDict(event=event)
        labels = {} if pairs.label is None else {"s_label": pairs.label}
        self.synth = TensorDict(s_event=pairs.x, s_image=pairs.image, **labels)
        n = max(len(self.source), len(self.target), len(self.synth))
        gen = torch.Generator().manual_seed(seed)
        self.perm_t = torch.randperm(n, generator=gen)
        self.perm_s = torch.randperm(n, generator=gen)

    def __len__(self) -> int:
        return len(self.perm_t)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {**self.source[i % len(self.source)],
                **self.target[int(self.perm_t[i]) % len(self.target)],
                **self.synth[int(self.perm_s[i]) % len(self.synth)]}


def _joint(modules: dict[str, nn.Module], teacher: Net, student: Net, dataset: Dataset,
           losses: DistillLosses, fit_cfg: FitConfig, dice_weight: float, run_dir: Path,
           seed: int, device, progress: bool) -> float:
    """Stage 2 through `fit` (checkpointed, resumable); returns its minutes."""
    translator = modules.get("translator")

    def step(batch: dict, state: TrainState) -> dict:
        # one flip choice per item flips its image, label and windows alike; they are
        # unpaired, so that couples nothing
        batch = hflip(batch, state.generators["aug"])
        return evdistill_losses(teacher, student, translator, batch, losses, dice_weight)

    return fit(modules, dataset, step, fit_cfg, run_dir=run_dir, seed=seed, device=device,
               progress=progress)


def gray_input(gray: Tensor, as_gray: bool) -> Tensor:
    """The teacher's input for grayscale frames (N, H, W): (N, 1, H, W), or the gray copied to
    three channels when the teacher reads RGB."""
    image = gray.unsqueeze(1)
    return image if as_gray else image.expand(-1, 3, -1, -1)


def _frozen(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


# --- segmentation -----------------------------------------------------------------------------
def deeplab_outputs(model: nn.Module) -> Net:
    """A DeepLabV3+ as `Outputs`: the ASPP features are matched, the logits give the graph."""
    def run(x: Tensor) -> Outputs:
        out = model.forward_all(x)
        return Outputs(out.logits, out.aspp, out.logits, out.recon)

    return run


def init_student(student: nn.Module, teacher: nn.Module, name: str, in_chans: int,
                 num_classes: int) -> None:
    """Load the teacher's weights into the student (stem adapted to the event channels); the
    student's reconstruction decoder keeps its initialisation."""
    plain = create_model(name, in_chans=in_chans, num_classes=num_classes)
    try:
        load_adapted(plain, teacher.state_dict())
    except RuntimeError as err:
        raise ValueError(f"init_from_teacher: the student {name} does not have the teacher's "
                         f"architecture ({str(err).splitlines()[0]})") from None
    student.load_state_dict(plain.state_dict(), strict=False)  # its recon decoder stays new


def inference_student(student: nn.Module, name: str, in_chans: int,
                      num_classes: int) -> nn.Module:
    """The student without its reconstruction decoder: the network that runs at test time."""
    plain = create_model(name, in_chans=in_chans, num_classes=num_classes)
    plain.load_state_dict({k: v for k, v in student.state_dict().items()
                           if not k.startswith("recon.")})
    return plain.to(next(student.parameters()).device).eval()


def create_student(cfg: EvdistillConfig, in_chans: int, num_classes: int, image_chans: int,
                   seed: int = 0) -> nn.Module:
    """The student DeepLabV3+ (with BMR: EvDistill's image decoder, sigmoid output since the
    frames it reconstructs are in [0, 1]; code: modeling/deeplab.py DeepLab_Dual has no output
    activation, DeepLab_Dual_V2 a tanh)."""
    return create_model(cfg.student, in_chans=in_chans, num_classes=num_classes,
                        recon_channels=image_chans if cfg.losses.bmr else None,
                        recon_activation="sigmoid", seed=seed)


def segmentation_pairs(data: TransferData | EventApsTrain, as_gray: bool) -> Pairs:
    """P of a world (the simulator's windows, frames and labels) or of EvDistill-layout data
    (the event images and their APS frames, unlabeled)."""
    if isinstance(data, EventApsTrain):
        return Pairs(data.target_x, gray_input(data.pair_gray, as_gray), None)
    return Pairs(data.synth_x, gray_input(data.synth_gray, as_gray), data.synth_label)


def train_evdistill(data: TransferData | EventApsTrain, cfg: EvdistillConfig,
                    root: str | Path, *, seed: int = 0, device: str | torch.device = "cpu",
                    progress: bool = True) -> MethodResult:
    """Teacher, then student + BMR, in `root` (finished stages are reused, a killed run
    resumes). The result predicts with the student's segmentation path alone. `data` is a
    world's `TransferData` or EvDistill-layout data (`EventApsTrain`, no target labels)."""
    root, device = Path(root), torch.device(device)
    stages = replace(cfg.stages, segmenter=cfg.teacher)
    teacher, t_teacher = train_source_model(data, stages, root, seed, device, progress)
    _frozen(teacher)
    image = source_input(data.source_rgb, stages.source_gray)
    channels, k = data.target_x.shape[1], data.num_classes
    student = create_student(cfg, channels, k, image.shape[1], seed).to(device)
    if cfg.init_from_teacher:
        init_student(student, teacher, cfg.student, channels, k)
    modules = {"student": student}
    if cfg.losses.bmr:
        modules["translator"] = create_model(cfg.translator, in_chans=image.shape[1],
                                             out_chans=channels,
                                             base_channels=cfg.translator_channels,
                                             seed=seed).to(device)
    pairs = UnpairedSet(image, data.source_label, data.target_x,
                        segmentation_pairs(data, stages.source_gray), seed)
    run = stage_dir(root, "EvDistill", cfg, seed)
    minutes = _joint(modules, deeplab_outputs(teacher), deeplab_outputs(student), pairs,
                     cfg.losses, cfg.joint, cfg.stages.dice_weight, run, seed, device, progress)
    model = inference_student(student, cfg.student, channels, k)
    return MethodResult(lambda x: segment(model, x, device=device), model,
                        {"teacher": t_teacher, "student+BMR": minutes},
                        segmentation_spec(cfg.student, channels, k))


# --- object recognition -----------------------------------------------------------------------
@dataclass
class RecognitionConfig:
    """Recognition on object crops: the classifiers, the reconstruction nets, the budgets."""

    classifier: str = "resnet18"  # unpublished: our choice (the recognition net is not public)
    output_stride: int = 8  # unpublished: our choice (4 × 4 maps on 32-pixel crops)
    source_gray: bool = True  # unpublished: our choice (as the segmentation teacher)
    reconstructor: str = "e2vid"  # unpublished: our choice (classifiers have no second decoder)
    translator: str = "img2event"  # unpublished: our choice
    translator_channels: int = 16  # unpublished: our choice
    init_from_teacher: bool = True  # unpublished: our choice
    teacher: FitConfig = field(default_factory=lambda: FitConfig(steps=300, batch=32))
    source_only: FitConfig = field(default_factory=lambda: FitConfig(steps=300, batch=32,
                                                                     lr=5e-4))
    joint: FitConfig = field(default_factory=lambda: FitConfig(steps=300, batch=32, lr=5e-4))
    losses: DistillLosses = field(default_factory=lambda: DistillLosses(affinity_node=1))


def classifier_outputs(model: nn.Module, recon: nn.Module | None = None) -> Net:
    """A ResNet classifier as `Outputs`: its last feature map is matched and gives the graph;
    `recon` (events → image) supplies the reconstruction."""
    def run(x: Tensor) -> Outputs:
        feature = model.forward_features(x)[-1]
        logits = model.fc(feature.mean((2, 3)))
        return Outputs(logits, feature, feature, None if recon is None else reconstruct(recon, x))

    return run


def _classifier(cfg: RecognitionConfig, in_chans: int, num_classes: int, seed: int, device):
    return create_model(cfg.classifier, in_chans=in_chans, num_classes=num_classes,
                        output_stride=cfg.output_stride, seed=seed).to(device)


def _supervised(model: nn.Module, x: Tensor, y: Tensor, fit_cfg: FitConfig, run_dir: Path,
                seed: int, device, progress: bool) -> float:
    """Cross-entropy training of a classifier on crops x (N, C, s, s), classes y (N,)."""
    def step(batch: dict, state: TrainState) -> dict:
        batch = hflip(batch, state.generators["aug"])
        return {"loss": F.cross_entropy(state.modules["model"](batch["x"]), batch["y"])}

    return fit({"model": model}, TensorDict(x=x, y=y), step, fit_cfg, run_dir=run_dir,
               seed=seed, device=device, progress=progress)


def classify(model: nn.Module, x: Tensor, device) -> Tensor:
    """Class probabilities (N, K) of a classifier on crops x (N, C, s, s)."""
    model.eval()
    return predict(lambda b: model(b).softmax(1), x, device=device)


RecognitionTrain = RecognitionData | CaltechTrain


def recognition_teacher(data: RecognitionTrain, cfg: RecognitionConfig, root: Path, seed: int,
                        device, progress: bool) -> tuple[nn.Module, float]:
    """The image classifier on the labeled source crops (then frozen by its users)."""
    image = source_input(data.source_rgb, cfg.source_gray)
    model = _classifier(cfg, image.shape[1], data.num_classes, seed, device)
    run = stage_dir(root, "rec_teacher", cfg.classifier, cfg.output_stride, cfg.source_gray,
                    cfg.teacher, seed)
    return model, _supervised(model, image, data.source_y, cfg.teacher, run, seed, device,
                              progress)


def _event_classifier(teacher: nn.Module, data: RecognitionTrain, cfg: RecognitionConfig,
                      seed: int, device) -> nn.Module:
    model = _classifier(cfg, data.target_x.shape[1], data.num_classes, seed, device)
    if cfg.init_from_teacher:
        load_adapted(model, teacher.state_dict())
    return model


def train_supervised_recognizer(data: RecognitionTrain, x: Tensor, y: Tensor,
                                cfg: RecognitionConfig, root: str | Path, name: str, *,
                                seed: int = 0, device: str | torch.device = "cpu",
                                progress: bool = True) -> MethodResult:
    """The event classifier (initialised from the teacher) supervised on event crops x
    (N, C, s, s) with classes y (N,); its stage is `name` (the minutes' key too)."""
    root, device = Path(root), torch.device(device)
    teacher, t_teacher = recognition_teacher(data, cfg, root, seed, device, progress)
    model = _event_classifier(teacher, data, cfg, seed, device)
    run = stage_dir(root, f"rec_{name}", cfg.classifier, cfg.output_stride, cfg.source_gray,
                    cfg.teacher, cfg.init_from_teacher, cfg.source_only, seed)
    minutes = _supervised(model, x, y, cfg.source_only, run, seed, device, progress)
    return MethodResult(lambda x: classify(model, x, device), model,
                        {"teacher": t_teacher, name: minutes})


def train_source_only_recognizer(data: RecognitionData, cfg: RecognitionConfig,
                                 root: str | Path, *, seed: int = 0,
                                 device: str | torch.device = "cpu",
                                 progress: bool = True) -> MethodResult:
    """The baseline: the event classifier supervised on the simulator's crops with their
    (source) classes, applied to real target crops."""
    return train_supervised_recognizer(data, data.synth_x, data.synth_y, cfg, root,
                                       "source_only", seed=seed, device=device,
                                       progress=progress)


def recognition_pairs(data: RecognitionTrain, as_gray: bool) -> Pairs:
    """P of world crops (the simulator's crops, frames and classes) or of N-Caltech101 (the
    recordings and the images they were recorded from, unlabeled)."""
    if isinstance(data, CaltechTrain):
        return Pairs(data.target_x, gray_input(data.pair_gray, as_gray), None)
    return Pairs(data.synth_x, gray_input(data.synth_gray, as_gray), data.synth_y)


def train_evdistill_recognition(data: RecognitionTrain, cfg: RecognitionConfig,
                                root: str | Path, *, seed: int = 0,
                                device: str | torch.device = "cpu",
                                progress: bool = True) -> MethodResult:
    """Teacher, then student + BMR on unpaired crops; predicts (N, K) with the student."""
    root, device = Path(root), torch.device(device)
    teacher, t_teacher = recognition_teacher(data, cfg, root, seed, device, progress)
    _frozen(teacher)
    image = source_input(data.source_rgb, cfg.source_gray)
    channels = data.target_x.shape[1]
    student = _event_classifier(teacher, data, cfg, seed, device)
    modules: dict[str, nn.Module] = {"student": student}
    recon = None
    if cfg.losses.bmr:
        width = cfg.translator_channels
        recon = create_model(cfg.reconstructor, in_chans=channels, out_chans=image.shape[1],
                             base_channels=width, seed=seed).to(device)
        modules["reconstructor"] = recon
        modules["translator"] = create_model(cfg.translator, in_chans=image.shape[1],
                                             out_chans=channels, base_channels=width,
                                             seed=seed).to(device)
    pairs = UnpairedSet(image, data.source_y, data.target_x,
                        recognition_pairs(data, cfg.source_gray), seed)
    run = stage_dir(root, "rec_evdistill", cfg, seed)
    minutes = _joint(modules, classifier_outputs(teacher), classifier_outputs(student, recon),
                     pairs, cfg.losses, cfg.joint, 0.0, run, seed, device, progress)
    student.eval()
    return MethodResult(lambda x: classify(student, x, device), student,
                        {"teacher": t_teacher, "student+BMR": minutes})


# --- runs: real-data segmentation, recognition ------------------------------------------------
@dataclass
class RealSegmentationRun:
    """EvDistill segmentation on a dataset in EvDistill's layout (DDD17, MVSEC)."""

    data: EventApsConfig = field(default_factory=EventApsConfig)
    method: EvdistillConfig = field(default_factory=EvdistillConfig)
    miou: str = "nanmean"  # code: evdistill evaluate.py (np.nanmean: absent classes skipped)
    seeds: list[int] = field(default_factory=lambda: [0])


def run_real_segmentation(cfg: RealSegmentationRun, out: str | Path, *,
                          device: str | torch.device = "cpu", progress: bool = True) -> dict:
    """Train EvDistill for each seed (on the labeled APS source and the unlabeled event
    target: `data.event_aps.load_event_aps`) and score its student on the test split with
    the run's mIoU (and the ESS form alongside); writes `out/results.json`, returns it."""
    out = Path(out)
    train, test = load_event_aps(cfg.data)
    runs = []
    for seed in cfg.seeds:
        result = train_evdistill(train, cfg.method, out / "work" / f"seed_{seed}", seed=seed,
                                 device=device, progress=progress)
        pred = result.predict(test.x).argmax(1)
        k = train.num_classes
        runs.append({"seed": seed, "minutes": result.minutes,
                     cfg.miou: evaluate_segmentation(pred, test.label, k, cfg.miou),
                     "ess": evaluate_segmentation(pred, test.label, k)})
    summary = {"task": "segmentation", "miou_mode": cfg.miou, "runs": runs,
               "miou_mean": statistics.fmean(r[cfg.miou]["miou"] for r in runs)}
    _write(out, summary)
    return summary


@dataclass
class RecognitionRun:
    """EvDistill recognition against its baseline, on world crops or on N-Caltech101."""

    dataset: str = "world"  # world | ncaltech101
    world: str = ""  # a built world folder (dataset: world)
    data: TransferDataConfig = field(default_factory=TransferDataConfig)  # world
    crops: CropConfig = field(default_factory=CropConfig)  # world
    ncaltech: CaltechConfig = field(default_factory=CaltechConfig)  # ncaltech101
    method: RecognitionConfig = field(default_factory=RecognitionConfig)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])


def recognition_data(cfg: RecognitionRun, progress: bool = True
                     ) -> tuple[RecognitionTrain, Tensor, Tensor]:
    """The training data and the test crops (N, C, s, s) with their classes (N,): the crops
    of a world, or N-Caltech101 with its Caltech101 images."""
    if cfg.dataset == "world":
        if not cfg.world:
            raise ValueError("world is empty: give a built world folder")
        data = load_recognition_data(cfg.world, cfg.data, cfg.crops, progress=progress)
        return data, data.test_x, data.test_y.read(EVALUATION)
    if cfg.dataset == "ncaltech101":
        train, test = load_caltech_recognition(cfg.ncaltech)
        return train, test.x, test.y
    raise ValueError(f"dataset must be 'world' or 'ncaltech101', got {cfg.dataset!r}")


def _baseline(cfg: RecognitionRun, data: RecognitionTrain, root: Path, **kw) -> MethodResult:
    """The world's source-only classifier, or on N-Caltech101 the classifier supervised on
    the train recordings with their labels (a target-supervised reference row: the only one
    that reads them)."""
    if isinstance(data, CaltechTrain):
        labels = caltech_event_labels(cfg.ncaltech, "train")
        return train_supervised_recognizer(data, data.target_x, labels, cfg.method, root,
                                           "supervised_events", **kw)
    return train_source_only_recognizer(data, cfg.method, root, **kw)


def run_recognition(cfg: RecognitionRun, out: str | Path, *,
                    device: str | torch.device = "cpu", progress: bool = True) -> dict:
    """Top-1 on the target test crops of EvDistill and of the classifier supervised on the
    paired crops (the world: simulated crops, i.e. source-only; N-Caltech101: the real train
    recordings with their labels, i.e. the supervised reference); `out/results.json`."""
    out = Path(out)
    data, test_x, test_y = recognition_data(cfg, progress)
    baseline = "source_only" if cfg.dataset == "world" else "supervised_events"
    top1: dict[str, list[float]] = {"evdistill": [], baseline: []}
    for seed in cfg.seeds:
        work, kw = out / "work" / f"seed_{seed}", {"seed": seed, "device": device,
                                                   "progress": progress}
        for name, result in (
                ("evdistill", train_evdistill_recognition(data, cfg.method, work, **kw)),
                (baseline, _baseline(cfg, data, work, **kw))):
            top1[name].append(topk_accuracy(result.predict(test_x), test_y, ks=(1,))["top1"])
    summary = {"task": "recognition", "dataset": cfg.dataset, "classes": list(data.class_names),
               "test_crops": len(test_y), "seeds": list(cfg.seeds), "top1": top1,
               "top1_mean": {k: statistics.fmean(v) for k, v in top1.items()}}
    _write(out, summary)
    return summary


def _write(out: Path, summary: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(summary, indent=1))
