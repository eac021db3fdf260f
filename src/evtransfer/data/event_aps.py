"""EvDistill's DDD17 / MVSEC segmentation layout: event images and APS frames side by side.

Layout (addisonwang2013/evdistill : event_aps_dataset_v2.py, README): `root/images/<split>/
<name>.png` is one RGB PNG whose left half is the event image (events already embedded as
three channels) and whose right half is the APS frame; `root/labels/<split>/<name>.png` is
its 8-bit label map (DDD17: 6 classes, 255 ignore). Each half is resized **bicubically** to
`size` (256 × 512) and scaled to [0, 1] as torchvision's ToTensor does (the config's ImageNet
mean/std are not applied on the released test path); labels are resized by nearest
neighbour. Resizing goes through PIL, as the reference.

`load_event_aps` splits the data the way a transfer method may see it. The train split's
frames (sorted by name, after `every`) are cut in two: the first `source_fraction` are the
labeled **source** (APS frames with their labels: the teacher's data), the rest the
**target** (their event images, with the APS frame of the same sensor beside each as a real
pair, and **no labels**: the labels of those frames are never read). The test split gives
the event images and their labels, for evaluation only. A label map here labels the APS frame
and the event image of one frame alike, so sharing frames between source and target would
hand the student its target labels pixel for pixel: hence the cut. Everything is held in
memory (about N · 10 · H · W · 4 bytes for N train frames); `every` keeps one frame in k.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from evtransfer.data._common import require_dir
from evtransfer.io.base import FormatError
from evtransfer.io.images import read_label_png, read_rgb
from evtransfer.simulate import luminance as to_gray


@dataclass(frozen=True)
class EventApsConfig:
    """Where the pairs are and the EvDistill geometry."""

    root: str = ""  # folder holding images/ and labels/
    train_split: str = "train"
    test_split: str = "test"  # code: evdistill test_evdistill.py (mode='test')
    size: tuple[int, int] = (256, 512)  # code: evdistill event_aps_dataset_v2.py (H, W)
    num_classes: int = 6  # code: evdistill configs/configurations.py (DDD17)
    every: int = 1  # keep one train frame in `every` (memory; 1 keeps all)
    # unpublished: our choice (the paper does not say which frames taught the teacher); the
    # first share of the sorted train frames is the labeled source, the rest the target
    source_fraction: float = 0.5


def _stems(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.glob("*.png"))}


class EventApsPairs(Dataset):
    """Samples of one split: `events` (3, H, W) and `aps` (3, H, W) float32 in [0, 1], `label`
    (H, W) int64, `name`; sorted by file name."""

    def __init__(self, root: str | Path, split: str, size: tuple[int, int] = (256, 512)):
        root = Path(root)
        images = _stems(require_dir(root / "images" / split, "EvDistill side-by-side images"))
        labels = _stems(require_dir(root / "labels" / split, "EvDistill label PNGs"))
        if not images:
            raise FileNotFoundError(f"{root / 'images' / split}: no .png files")
        if images.keys() != labels.keys():
            odd = sorted(images.keys() ^ labels.keys())[:3]
            raise ValueError(f"{root}: images/{split} and labels/{split} hold different names, "
                             f"e.g. {odd}")
        self.names = sorted(images)
        self.images, self.labels, self.size = images, labels, size

    def __len__(self) -> int:
        return len(self.names)

    def unlabeled(self, index: int) -> dict:
        """Sample `index` without its label (the label file is not opened)."""
        name = self.names[index]
        pair = read_rgb(self.images[name])
        h, w = self.size
        if pair.shape[1] < 2:
            raise FormatError(self.images[name], f"width {pair.shape[1]} cannot hold two halves")
        half = pair.shape[1] // 2  # left: [0, half), right: [half, width), as PIL's crop

        def resized(part: np.ndarray) -> torch.Tensor:
            img = Image.fromarray(np.ascontiguousarray(part)).resize((w, h), Image.BICUBIC)
            return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)

        return {"events": resized(pair[:, :half]), "aps": resized(pair[:, half:]), "name": name}

    def __getitem__(self, index: int) -> dict:
        h, w = self.size
        path = self.labels[self.names[index]]
        label = Image.fromarray(read_label_png(path)).resize((w, h), Image.NEAREST)
        return {**self.unlabeled(index),
                "label": torch.from_numpy(np.asarray(label, dtype=np.int64))}


@dataclass
class EventApsTrain:
    """What training may read: the labeled source — APS frames `source_rgb` (N, 3, H, W) in
    [0, 1] and `source_label` (N, H, W) int64 — and the unlabeled target — event images
    `target_x` (K, 3, H, W) with the luminance `pair_gray` (K, H, W) of the APS frame of the
    same sensor and moment. No target labels."""

    num_classes: int
    source_rgb: torch.Tensor
    source_label: torch.Tensor
    target_x: torch.Tensor
    pair_gray: torch.Tensor


@dataclass
class EventApsTest:
    """The test split, for evaluation only: event images `x` (T, 3, H, W), `label` (T, H, W),
    and the APS frames `aps` (T, 3, H, W) (the teacher's input in EvDistill's evaluate.py)."""

    x: torch.Tensor
    label: torch.Tensor
    aps: torch.Tensor


def _stack(items: list[dict], keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([it[k] for it in items]) for k in keys}


def load_event_aps(cfg: EventApsConfig) -> tuple[EventApsTrain, EventApsTest]:
    """The training and the test tensors of an EvDistill-layout dataset (see the module
    docstring)."""
    if cfg.every < 1:
        raise ValueError(f"every must be >= 1, got {cfg.every}")
    if not 0 < cfg.source_fraction < 1:
        raise ValueError(f"source_fraction must be in (0, 1), got {cfg.source_fraction}")
    if not cfg.root:
        raise ValueError("data.root is empty: set it to the folder holding images/ and labels/")
    train = EventApsPairs(cfg.root, cfg.train_split, cfg.size)
    frames = list(range(0, len(train), cfg.every))
    cut = round(cfg.source_fraction * len(frames))
    if not 0 < cut < len(frames):
        raise ValueError(f"{cfg.root}: {len(frames)} train frames cannot be cut into a source "
                         f"and a target part at source_fraction {cfg.source_fraction}")
    source = _stack([train[i] for i in frames[:cut]], ("aps", "label"))
    target = _stack([train.unlabeled(i) for i in frames[cut:]], ("events", "aps"))
    test_pairs = EventApsPairs(cfg.root, cfg.test_split, cfg.size)
    test = _stack([test_pairs[i] for i in range(len(test_pairs))], ("events", "label", "aps"))
    return (EventApsTrain(cfg.num_classes, source["aps"], source["label"], target["events"],
                          to_gray(target["aps"])),
            EventApsTest(test["events"], test["label"], test["aps"]))
