"""Cityscapes as the labeled RGB source of the image → event transfer benchmarks.

Layout: `root/leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png` with
`root/gtFine/<split>/<city>/<stem>_gtFine_labelIds.png` (`io.images.list_cityscapes`).
labelIds are mapped to the target's label space with the ESS tables (`io.images`):
'dsec11', 'ddd17' or 'cityscapes19' (trainIds). The geometry follows ESS
(uzh-rpg/ess : datasets/cityscapes_loader.py): for DSEC-Semantic the image is resized to
440 × 640; for DDD17 it is resized to 256 × 512, the top 200 rows are kept and a 200 × 352
crop is taken (ESS crops at random every epoch; a cached benchmark set takes the centre crop).
Images are resized bilinearly, labels by nearest neighbour (255 stays 255).

A sample is a dict: `rgb` ((3, H, W) float32 in [0, 1]), `label` ((H, W) int64, 255 =
ignore) and `path` (the image file).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from evtransfer.data._common import Sample, resize_bilinear, resize_nearest
from evtransfer.io.base import FormatError
from evtransfer.io.images import (
    CITYSCAPES_TO_DDD17,
    CITYSCAPES_TO_DSEC11,
    CITYSCAPES_TO_TRAINID,
    list_cityscapes,
    map_labels,
    read_label_png,
    read_rgb,
)

LABEL_MAPS = {"dsec11": CITYSCAPES_TO_DSEC11, "ddd17": CITYSCAPES_TO_DDD17,
              "cityscapes19": CITYSCAPES_TO_TRAINID}


@dataclass(frozen=True)
class CityscapesConfig:
    """Where the source is and its geometry; the defaults are ESS's DSEC setting."""

    root: str = ""
    split: str = "train"  # code: uzh-rpg/ess datasets/cityscapes_loader.py (train, fine)
    resize_to: tuple[int, int] = (440, 640)  # (H, W); code: settings_DSEC.yaml; DDD17: 256×512
    keep_top: int = 0  # rows kept after the resize (DDD17: 200); 0 keeps all
    crop_width: int = 0  # centre crop width (DDD17: 352); 0 keeps all

    def size(self) -> tuple[int, int]:
        """(H, W) of the samples."""
        h, w = self.resize_to
        return (self.keep_top or h, self.crop_width or w)


class CityscapesSegmentation(Dataset):
    """Cityscapes images with labels in `label_space`, in the geometry of `config`."""

    def __init__(self, config: CityscapesConfig, label_space: str = "dsec11"):
        if label_space not in LABEL_MAPS:
            raise ValueError(f"label_space must be one of {sorted(LABEL_MAPS)}, got "
                             f"{label_space!r}")
        h, w = config.resize_to
        if not (0 <= config.keep_top <= h and 0 <= config.crop_width <= w):
            raise ValueError(f"keep_top / crop_width must fit in resize_to {config.resize_to}: "
                             f"{config}")
        if not config.root:
            raise ValueError("CityscapesConfig.root is empty: point it at the Cityscapes folder")
        self.config, self.lut = config, LABEL_MAPS[label_space]
        self.pairs = list_cityscapes(config.root, config.split)

    def __len__(self) -> int:
        return len(self.pairs)

    def _geometry(self, array: torch.Tensor) -> torch.Tensor:
        """Keep the top rows and the centre columns of a (..., H, W) array."""
        cfg = self.config
        if cfg.keep_top:
            array = array[..., : cfg.keep_top, :]
        if cfg.crop_width:
            left = (array.shape[-1] - cfg.crop_width) // 2
            array = array[..., left: left + cfg.crop_width]
        return array

    def __getitem__(self, index: int) -> Sample:
        image_path, label_path = self.pairs[index]
        rgb = torch.from_numpy(read_rgb(image_path)).permute(2, 0, 1).float() / 255.0
        label = map_labels(read_label_png(label_path), self.lut)
        if label.shape != rgb.shape[1:]:
            raise FormatError(label_path, f"label is {label.shape}, its image is "
                              f"{tuple(rgb.shape[1:])}")
        rgb = resize_bilinear(rgb, self.config.resize_to).clamp_(0.0, 1.0)
        label = torch.from_numpy(resize_nearest(label, self.config.resize_to).astype(np.int64))
        return {"rgb": self._geometry(rgb).contiguous(),
                "label": self._geometry(label).contiguous(), "path": str(image_path)}

