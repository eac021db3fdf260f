"""N-Caltech101 events with the Caltech101 images they were recorded from, for image → event
recognition transfer (EvDistill's recognition benchmark).

Events: `data.recognition.NCaltech101` (`events_root/<class>/image_<n>.bin`, its seeded
stratified split). Images: Caltech101's `images_root/<class>/image_<n>.jpg`, the picture each
recording was made of (matched by class folder and file stem). Every recording becomes one
`EventInput` tensor at the sensor size, resized bilinearly to `size`; every image is scaled to
[0, 1] and resized the same way. The train split gives the labeled source images, the
unlabeled target windows, and (event, image) pairs where the world uses the simulator's (the
recordings *are* of those images); the test split gives the labeled event crops. The whole
split is held in memory (N · (C + 4) · H · W · 4 bytes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from evtransfer.data._common import require_dir
from evtransfer.data.crops import RecognitionData
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


def _image(images_root: Path, recording: Path, size: tuple[int, int]) -> torch.Tensor:
    path = images_root / recording.parent.name / f"{recording.stem}.jpg"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no Caltech101 image for {recording}")
    rgb = torch.from_numpy(read_rgb(path)).permute(2, 0, 1).float()[None] / 255.0
    return _resize(rgb, size)


def _split(cfg: CaltechConfig, split: str, with_images: bool
           ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, list[str]]:
    events = NCaltech101(cfg.events_root, split, cfg.split)
    images_root = require_dir(Path(cfg.images_root), "Caltech101 class folders")
    xs, images, labels = [], [], []
    for i in range(len(events)):
        sample = events[i]
        xs.append(_resize(cfg.events(sample["events"]), cfg.size))
        if with_images:
            images.append(_image(images_root, Path(sample["path"]), cfg.size))
        labels.append(sample["label"])
    return (torch.cat(xs), torch.cat(images) if images else None, torch.tensor(labels),
            events.classes)


def load_caltech_recognition(cfg: CaltechConfig) -> RecognitionData:
    """Recognition tensors of N-Caltech101 + Caltech101 (see the module docstring)."""
    if not cfg.events_root or not cfg.images_root:
        raise ValueError("ncaltech.events_root and ncaltech.images_root must both be set")
    train_x, train_rgb, train_y, classes = _split(cfg, "train", with_images=True)
    test_x, _, test_y, _ = _split(cfg, "test", with_images=False)
    return RecognitionData(tuple(classes), train_rgb, train_y, train_x, to_gray(train_rgb),
                           train_y, train_x, test_x, test_y)
