"""N-Caltech101 events with the Caltech101 images they were recorded from, for image → event
recognition transfer (EvDistill's recognition benchmark).

Events: `data.recognition.NCaltech101` (`events_root/<class>/image_<n>.bin`, its seeded
stratified split). Images: Caltech101's `images_root/<class>/image_<n>.jpg`, the picture each
recording was made of (matched by class folder and file stem). Every recording becomes one
`EventInput` tensor at the sensor size, resized bilinearly to `size`; every image is scaled to
[0, 1] and resized the same way.

`load_caltech_recognition` splits the data as a transfer method may see it: training gets the
train split's images with **their** class (the Caltech101 folder each image sits in: the
labeled source), the train recordings (unlabeled target) and, beside each recording, the
luminance of the image it was recorded from (a real pair, no label). The recordings' own
class labels (N-Caltech101's folders) are read for the test split only, which is for
evaluation; `caltech_event_labels` reads those of a split for the rows meant to see them (the
supervised reference). The whole split is held in memory (N · (C + 4) · H · W · 4 bytes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from evtransfer.data._common import require_dir
from evtransfer.data.recognition import NCaltech101, NCaltech101Config
from evtransfer.data.transfer import EventInput
from evtransfer.io.images import read_rgb
from evtransfer.simulate import luminance as to_gray


@dataclass(frozen=True)
class CaltechConfig:
    """Where the two datasets are, the split, the event input and the network input size."""

    events_root: str = ""  # N-Caltech101 class folders
    images_root: str = ""  # Caltech101 101_ObjectCategories class folders
    split: NCaltech101Config = field(default_factory=NCaltech101Config)
    events: EventInput = field(default_factory=EventInput)
    size: tuple[int, int] = (128, 128)  # unpublished: our choice (the paper's size is not public)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _image_path(images_root: Path, recording: Path) -> Path:
    path = images_root / recording.parent.name / f"{recording.stem}.jpg"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no Caltech101 image for {recording}")
    return path


def _image(path: Path, size: tuple[int, int]) -> torch.Tensor:
    rgb = torch.from_numpy(read_rgb(path)).permute(2, 0, 1).float()[None] / 255.0
    return _resize(rgb, size)


@dataclass
class CaltechTrain:
    """What training may read: `source_rgb` (N, 3, H, W) in [0, 1] with `source_y` (N,) int64
    (the images' Caltech101 classes), the recordings `target_x` (N, C, H, W) and `pair_gray`
    (N, H, W), the luminance of the image each was recorded from. No event labels."""

    class_names: tuple[str, ...]
    source_rgb: torch.Tensor
    source_y: torch.Tensor
    target_x: torch.Tensor
    pair_gray: torch.Tensor

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass
class CaltechTest:
    """The test recordings `x` (T, C, H, W) and their classes `y` (T,), for evaluation."""

    x: torch.Tensor
    y: torch.Tensor


def _recordings(cfg: CaltechConfig, split: str) -> NCaltech101:
    if not cfg.events_root or not cfg.images_root:
        raise ValueError("ncaltech.events_root and ncaltech.images_root must both be set")
    return NCaltech101(cfg.events_root, split, cfg.split)


def caltech_event_labels(cfg: CaltechConfig, split: str) -> torch.Tensor:
    """The classes (N,) int64 of a split's recordings (N-Caltech101's folders): evaluation,
    and training rows that are meant to be supervised on the target."""
    return torch.tensor([label for _, label in _recordings(cfg, split).samples])


def load_caltech_recognition(cfg: CaltechConfig) -> tuple[CaltechTrain, CaltechTest]:
    """The training and the test tensors of N-Caltech101 + Caltech101 (see the module
    docstring)."""
    train = _recordings(cfg, "train")
    classes = tuple(train.classes)
    images_root = require_dir(Path(cfg.images_root), "Caltech101 class folders")
    xs, images, source_y, rep = [], [], [], cfg.events.representation()
    for i, (path, _) in enumerate(train.samples):  # the recording's label is not read
        xs.append(_resize(rep(train[i]["events"]), cfg.size))
        image = _image_path(images_root, Path(path))
        images.append(_image(image, cfg.size))
        source_y.append(classes.index(image.parent.name))
    rgb = torch.cat(images)
    test = _recordings(cfg, "test")
    test_x = torch.cat([_resize(rep(test[i]["events"]), cfg.size)
                        for i in range(len(test))])
    return (CaltechTrain(classes, rgb, torch.tensor(source_y), torch.cat(xs), to_gray(rgb)),
            CaltechTest(test_x, caltech_event_labels(cfg, "test")))
