"""DDD17 segmentation with the ESS protocol (uzh-rpg/ess : datasets/ddd17_events_loader.py).

Layout: `root/dir*/` recording folders in the ESS format (see `evtransfer.io.ddd17`), sorted
by name; split over that sorted list: train = [0, 2, 3, 5, 6], valid = [1], test = [4]. ESS
reports on **valid** (dir[1] is Ev-SegNet's test recording, uzh-rpg/ess issue #11).

Each label `segmentation_masks/segmentation_%08d.png` belongs to image index = number − 1;
its events are the `num_windows × events_per_window` events before that image's
`event_idx` in `index/index_50ms.npy`, cut into `num_windows` ESS chunks. Geometry (ESS):
each chunk's representation is computed at 260 × 346, resized bilinearly (align_corners=True)
to 260 × 352, and the bottom 60 rows are cut → **200 × 352**; labels are resized to 200 × 352
by nearest neighbour (OpenCV INTER_NEAREST). Training-time crops and flips are left to the
`transform`.

A sample is a dict: `events` (list of `num_windows` `Events` on the 346 × 260 sensor) or
`representation` ((num_windows · C, 200, 352) float32), plus `label` ((200, 352) int64),
`recording` (folder name), `image_index` and `t_us` (image time, ⌊t_ns / 1000⌋).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from evtransfer.data._common import (
    Representation,
    Sample,
    Transform,
    ess_chunks,
    finish,
    represent_chunks,
    require_dir,
    resize_bilinear,
    resize_nearest,
)
from evtransfer.io.base import FormatError
from evtransfer.io.ddd17 import (
    Ddd17EventsReader,
    read_frame_index,
    segmentation_masks,
)
from evtransfer.io.images import read_label_png

# code: uzh-rpg/ess datasets/ddd17_events_loader.py (get_split over sorted(glob("dir*")))
DDD17_SPLITS: dict[str, tuple[int, ...]] = {"train": (0, 2, 3, 5, 6), "valid": (1,), "test": (4,)}


@dataclass(frozen=True)
class Ddd17Config:
    """Protocol choices; the defaults reproduce ESS."""

    num_windows: int = 20  # code: uzh-rpg/ess config/settings_DDD17.yaml (nr_events_data)
    events_per_window: int = 32_000  # code: uzh-rpg/ess config/settings_DDD17.yaml
    # code: uzh-rpg/ess datasets/extract_data_tools/example_loader_ddd17.py (t_interval -1 → 50 ms)
    index_interval_ms: int = 50
    # code: uzh-rpg/ess datasets/ddd17_events_loader.py (shape_resize, :-60 crop, cv2.resize)
    resize_to: tuple[int, int] = (260, 352)
    crop_bottom: int = 60
    label_size: tuple[int, int] = (200, 352)


@dataclass(frozen=True)
class _Item:
    recording: int
    image_index: int
    label: Path


def recording_dirs(root: str | Path) -> list[Path]:
    """The sorted `root/dir*` recording folders."""
    root = require_dir(Path(root), "DDD17 root with dir* recordings")
    return sorted(p for p in root.glob("dir*") if p.is_dir())


class Ddd17Segmentation(Dataset):
    """DDD17 event segmentation samples under the ESS protocol (see the module docstring)."""

    def __init__(
        self,
        root: str | Path,
        split: str = "valid",
        config: Ddd17Config | None = None,
        *,
        representation: Representation | None = None,
        transform: Transform | None = None,
    ):
        config = config or Ddd17Config()
        if split not in DDD17_SPLITS:
            raise ValueError(f"split must be one of {sorted(DDD17_SPLITS)}, got {split!r}")
        if min(config.num_windows, config.events_per_window) <= 0:
            raise ValueError(f"num_windows and events_per_window must be positive: {config}")
        dirs = recording_dirs(root)
        need = max(max(v) for v in DDD17_SPLITS.values()) + 1
        if len(dirs) < need:
            raise FileNotFoundError(f"{root}: found {len(dirs)} dir* recordings, ESS needs {need}")
        self.root, self.split, self.config = Path(root), split, config
        self.representation, self.transform = representation, transform
        self.recordings = [dirs[i] for i in DDD17_SPLITS[split]]
        self.indices = [read_frame_index(d, config.index_interval_ms) for d in self.recordings]
        self.items: list[_Item] = []
        for r, d in enumerate(self.recordings):
            for image_index, label in segmentation_masks(d):
                if not 0 <= image_index < len(self.indices[r]):
                    raise FormatError(
                        label,
                        f"image index {image_index} outside the index file's "
                        f"{len(self.indices[r])} rows",
                    )
                self.items.append(_Item(r, image_index, label))
        self._readers: dict[int, Ddd17EventsReader] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.items)

    def _reader(self, r: int) -> Ddd17EventsReader:
        if self._pid != os.getpid():
            self._readers, self._pid = {}, os.getpid()
        if r not in self._readers:
            self._readers[r] = Ddd17EventsReader(self.recordings[r])
        return self._readers[r]

    def __getitem__(self, index: int) -> Sample:
        item, cfg = self.items[index], self.config
        t_ns, event_idx, _ = (int(v) for v in self.indices[item.recording][item.image_index])
        window = self._reader(item.recording).read_before_index(
            event_idx, cfg.num_windows * cfg.events_per_window
        )
        chunks = ess_chunks(window, cfg.num_windows)
        label = resize_nearest(read_label_png(item.label), cfg.label_size)
        sample: Sample = {
            "label": torch.from_numpy(label.astype(np.int64)),
            "recording": self.recordings[item.recording].name,
            "image_index": item.image_index,
            "t_us": t_ns // 1000,
        }
        if self.representation is None:
            sample["events"] = chunks
        else:
            sample["representation"] = self.geometry(represent_chunks(chunks, self.representation))
        return finish(sample, self.transform)

    def geometry(self, tensor: torch.Tensor) -> torch.Tensor:
        """ESS geometry of a (C, 260, 346) representation: resize to 260 × 352, cut 60 rows."""
        out = resize_bilinear(tensor, self.config.resize_to)
        return out[:, : out.shape[1] - self.config.crop_bottom, :]
