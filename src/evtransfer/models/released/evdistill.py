"""EvDistill's released DDD17 / MVSEC segmentation checkpoints (addisonwang2013/evdistill).

The authors publish, per dataset, an APS teacher and an event student (README: a Google Drive
folder; configs/configurations.py and the README name `ddd17_aps_ckpt.pth`,
`ddd17_event_ckpt.pth` and `eventdual_2ch_iter_28000_event_0.58_best.pth`). Both are plain
`state_dict`s of the code's `modeling.deeplab.DeepLab(backbone='resnet', num_classes=6)`:
test_evdistill.py loads each with `net.load_state_dict(torch.load(path))` into a bare
(not DataParallel) network, so the keys are `backbone.` (ResNet-101, multi-grid [1, 2, 4],
output stride 16), `aspp.` and `decoder.`, and the student reads 3 channels (the event image
PNG decoded as RGB, despite the "2ch" in its name). A training-time `DeepLab_Dual` student adds
`sr_decoder.`, `up_sr_*`, `up_edsr_*`, `up_conv_last` and `pointwise.`; these map onto our
reconstruction decoder and affinity projection.

Input protocol (event_aps_dataset_v2.py, evaluate.py): the side-by-side PNG's halves resized
bicubically to 256 × 512, scaled to [0, 1] (ToTensor; no ImageNet normalisation), one scale,
no flip; mIoU over a dataset-wide confusion matrix with `np.nanmean` (ignore 255).

`evdistill_to_evtransfer` renames the keys (a pure rename: every tensor keeps its values);
`load_evdistill` builds our `deeplabv3plus_resnet101` to the file and loads it strictly,
reading with `torch.load(weights_only=True)` only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from evtransfer.models import create_model
from evtransfer.models.resnet import DeepLabV3Plus
from evtransfer.models.weights import StateDict, read_state_dict


@dataclass(frozen=True)
class EvdistillCheckpoint:
    """One released file: where it comes from and what it expects."""

    name: str  # our catalogue name
    file: str  # the published file name
    dataset: str
    role: str  # "teacher" (APS frames) or "student" (event images)
    paper_miou: float | None  # the paper's DDD17 test mIoU for the student (nanmean)


CHECKPOINTS = (
    EvdistillCheckpoint("evdistill-ddd17-teacher", "ddd17_aps_ckpt.pth", "DDD17", "teacher",
                        None),
    EvdistillCheckpoint("evdistill-ddd17-student", "ddd17_event_ckpt.pth", "DDD17", "student",
                        58.02),
    # code: configs/configurations.py names the DDD17 student file this way
    EvdistillCheckpoint("evdistill-ddd17-student-28k",
                        "eventdual_2ch_iter_28000_event_0.58_best.pth", "DDD17", "student",
                        58.02),
    # unverified: the README gives the MVSEC folder but no file names; by analogy with DDD17
    EvdistillCheckpoint("evdistill-mvsec-teacher", "mvsec_aps_ckpt.pth", "MVSEC", "teacher",
                        None),
    EvdistillCheckpoint("evdistill-mvsec-student", "mvsec_event_ckpt.pth", "MVSEC", "student",
                        None),
)

NUM_CLASSES = 6  # code: configs/configurations.py (n_classes)
IN_CHANS = 3  # code: modeling/backbone/resnet.py (conv1 reads 3 channels, teacher and student)

_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_RULES: tuple[tuple[str, str], ...] = (
    (r"^backbone\.", "encoder."),
    (r"^aspp\.aspp(\d)\.atrous_conv\.weight$",
     lambda m: f"aspp.branches.{int(m[1]) - 1}.0.weight"),
    (rf"^aspp\.aspp(\d)\.bn\.{_BN}$", lambda m: f"aspp.branches.{int(m[1]) - 1}.1.{m[2]}"),
    (r"^aspp\.global_avg_pool\.1\.weight$", "aspp.pool.1.0.weight"),
    (rf"^aspp\.global_avg_pool\.2\.{_BN}$", r"aspp.pool.1.1.\1"),
    (r"^aspp\.conv1\.weight$", "aspp.project.0.weight"),
    (rf"^aspp\.bn1\.{_BN}$", r"aspp.project.1.\1"),
    (r"^(decoder|sr_decoder)\.conv1\.weight$", r"\1.low.0.weight"),
    (rf"^(decoder|sr_decoder)\.bn1\.{_BN}$", r"\1.low.1.\2"),
    (r"^(decoder|sr_decoder)\.last_conv\.0\.weight$", r"\1.body.0.0.weight"),
    (rf"^(decoder|sr_decoder)\.last_conv\.1\.{_BN}$", r"\1.body.0.1.\2"),
    (r"^(decoder|sr_decoder)\.last_conv\.4\.weight$", r"\1.body.2.0.weight"),
    (rf"^(decoder|sr_decoder)\.last_conv\.5\.{_BN}$", r"\1.body.2.1.\2"),
    (r"^(decoder|sr_decoder)\.last_conv\.8\.(weight|bias)$", r"\1.body.4.\2"),
    (r"^sr_decoder\.", "recon.decoder."),
    (r"^up_sr_1\.", "recon.up.0."),
    (r"^up_sr_2\.", "recon.up.2."),
    (r"^up_edsr_(\d)\.conv\.(0|2)\.", lambda m: f"recon.up.{2 * int(m[1]) - 1}.body.{m[2]}."),
    (r"^up_edsr_(\d)\.residual_upsampler\.0\.",
     lambda m: f"recon.up.{2 * int(m[1]) - 1}.shortcut."),
    (r"^up_conv_last\.", "recon.up.4."),
    (r"^pointwise\.", "affinity."),
)


def _rename(key: str) -> str | None:
    """Our name for one of EvDistill's keys, or None when no rule knows it."""
    out, hit = key, False
    for pattern, repl in _RULES:
        new, n = re.subn(pattern, repl, out)
        if n:
            out, hit = new, True
    return out if hit else None


def evdistill_to_evtransfer(state: Mapping[str, Tensor]) -> StateDict:
    """EvDistill's `DeepLab` / `DeepLab_Dual` keys (optionally under DataParallel's `module.`)
    → ours; the tensors are the same objects. Raises ValueError naming the first keys that no
    rule maps (another architecture)."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    renamed = {k: _rename(k) for k in state}
    unmapped = [k for k, v in renamed.items() if v is None]
    if unmapped:
        raise ValueError(f"not an EvDistill DeepLabV3+ state dict: {len(unmapped)} of "
                         f"{len(state)} tensors do not map, first {unmapped[:5]}")
    return {renamed[k]: v for k, v in state.items()}


def evdistill_network(state: Mapping[str, Tensor], num_classes: int | None = None
                      ) -> DeepLabV3Plus:
    """Our DeepLabV3+ R101 built to an EvDistill state dict (input channels and classes read
    from the stem and the classifier; the reconstruction decoder and the affinity projection
    when the file holds them), with its weights loaded strictly."""
    ours = evdistill_to_evtransfer(state)
    for key in ("encoder.conv1.weight", "decoder.body.4.weight"):
        if key not in ours:
            raise ValueError(f"not an EvDistill DeepLabV3+ state dict: no {key} "
                             f"(keys start {list(state)[:5]})")
    classes = ours["decoder.body.4.weight"].shape[0]
    if num_classes is not None and classes != num_classes:
        raise ValueError(f"the checkpoint predicts {classes} classes, expected {num_classes}")
    recon = ours.get("recon.up.4.weight")
    affinity = ours.get("affinity.0.weight")
    net = create_model("deeplabv3plus_resnet101", in_chans=ours["encoder.conv1.weight"].shape[1],
                       num_classes=classes, output_stride=16,
                       recon_channels=None if recon is None else recon.shape[0],
                       affinity_channels=None if affinity is None else affinity.shape[0])
    own = net.state_dict()
    foreign = [k for k in ours if k not in own]
    if foreign:
        raise ValueError(f"the checkpoint's tensors do not fit DeepLabV3+ R101 (multi-grid "
                         f"[1, 2, 4], output stride 16): first {foreign[:5]}")
    bad = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in ours.items()
           if v.shape != own[k].shape]
    if bad:
        raise ValueError(f"shapes differ from DeepLabV3+ R101: first {bad[:3]}")
    net.load_state_dict(ours, strict=True)
    return net.eval()


def load_evdistill(path: str | Path, num_classes: int | None = NUM_CLASSES) -> DeepLabV3Plus:
    """A released EvDistill teacher or student `.pth` (or a state dict under `state_dict` /
    `model` / `module`) as our DeepLabV3+ R101 in eval mode; the file is read with
    `torch.load(weights_only=True)`. Input: (B, 3, 256, 512) float32 in [0, 1]; output:
    logits (B, num_classes, 256, 512)."""
    state = read_state_dict(path)
    try:
        return evdistill_network(state, num_classes)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
