"""EvDistill's DDD17 / MVSEC segmentation layout: event images and APS frames side by side.

Layout (addisonwang2013/evdistill : event_aps_dataset_v2.py, README): `root/images/<split>/
<name>.png` is one RGB PNG whose left half is the event image (events already embedded as
three channels) and whose right half is the APS frame; `root/labels/<split>/<name>.png` is
its 8-bit label map (DDD17: 6 classes, 255 ignore). Each half is resized **bicubically** to
`size` (256 × 512) and scaled to [0, 1] as torchvision's ToTensor does (the config's ImageNet
mean/std are not applied on the released test path); labels are resized by nearest
neighbour. Resizing goes through PIL, as the reference.

`load_event_aps_transfer` turns a train and a test split into the method-side tensors of
`data.transfer.TransferData`: the APS frames with their labels are the labeled image source,
the train event images the unlabeled target, and the train split's own (event image, APS
frame) pairs serve where the world uses the simulator's pairs (they are real pairs of one
sensor; the methods never read their labels as target labels). Everything is held in memory:
about N · 10 · H · W · 4 bytes for N train frames, so `every` keeps one train frame in k.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from evtransfer.data._common import require_dir
from evtransfer.data.transfer import TransferData
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

    def __getitem__(self, index: int) -> dict:
        name = self.names[index]
        pair = read_rgb(self.images[name])
        h, w = self.size
        if pair.shape[1] < 2:
            raise FormatError(self.images[name], f"width {pair.shape[1]} cannot hold two halves")
        half = pair.shape[1] // 2  # left: [0, half), right: [half, width), as PIL's crop

        def resized(part: np.ndarray) -> torch.Tensor:
            img = Image.fromarray(np.ascontiguousarray(part)).resize((w, h), Image.BICUBIC)
            return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)

        label = Image.fromarray(read_label_png(self.labels[name])).resize((w, h), Image.NEAREST)
        return {"events": resized(pair[:, :half]), "aps": resized(pair[:, half:]),
                "label": torch.from_numpy(np.asarray(label, dtype=np.int64)), "name": name}


def _stack(dataset: EventApsPairs, every: int) -> dict[str, torch.Tensor]:
    items = [dataset[i] for i in range(0, len(dataset), every)]
    return {k: torch.stack([it[k] for it in items]) for k in ("events", "aps", "label")}


def load_event_aps_transfer(cfg: EventApsConfig) -> TransferData:
    """The transfer tensors of an EvDistill-layout dataset (see the module docstring)."""
    if cfg.every < 1:
        raise ValueError(f"every must be >= 1, got {cfg.every}")
    if not cfg.root:
        raise ValueError("data.root is empty: set it to the folder holding images/ and labels/")
    train = _stack(EventApsPairs(cfg.root, cfg.train_split, cfg.size), cfg.every)
    test = _stack(EventApsPairs(cfg.root, cfg.test_split, cfg.size), 1)
    return TransferData(cfg.num_classes, train["aps"], train["label"], train["events"],
                        train["label"], to_gray(train["aps"]), train["events"], test["events"],
                        test["label"], test["aps"])
