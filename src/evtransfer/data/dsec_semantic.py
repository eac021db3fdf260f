"""DSEC-Semantic with the ESS protocol (uzh-rpg/ess : DSEC/dataset/provider.py, sequence.py).

Layout: `root/{train,test}/<sequence>/events/left/{events.h5, rectify_map.h5}`,
`semantic/timestamps.txt` (µs, t + t_offset clock, one line per label) and the label PNGs in
`semantic/11classes/data/` (ESS code) or `semantic/left/11classes/data/` (README tree); both
are accepted. Per sequence the first `(remove_time_window // 100 + 1) · 2` labels are dropped
(6 with the default 250 ms: not enough events before them), then every 2nd label is used.
For a label at time t the last `num_windows × events_per_window` events with timestamp < t are
read, cut into `num_windows` consecutive chunks (ESS chunking, see `ess_chunks`) and each
chunk is rectified with the sequence's forward map. Labels are 440 × 640: the event tensor's
bottom 40 rows are cut (480 → 440). Val = test (ESS issue #12).

A sample is a dict: `events` (a list of `num_windows` rectified `Events`, rounded to the
nearest pixel, on the full 640 × 480 sensor) or, with a `representation`, `representation`
((num_windows · C, 440, 640) float32, cropped, optionally resized; computed from sub-pixel
`EventBatch`es when `subpixel`, as ESS does), plus `label` ((440, 640) int64, 255 = ignore),
`t_us`, `sequence`, `label_index` (position in the sequence's label list) and `dropped`
(events rectified outside the image). The optional `transform` receives and returns the dict.
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
from evtransfer.events import Events
from evtransfer.io.base import FormatError
from evtransfer.io.dsec import (
    DSEC_HEIGHT,
    DSEC_WIDTH,
    DsecEventsReader,
    read_rectify_map,
    rectify_coordinates,
    rectify_events,
)
from evtransfer.io.images import read_label_png
from evtransfer.represent.batch import EventBatch

# code: uzh-rpg/ess DSEC/dataset/provider.py (train_sequences_namelist / val_sequences_namelist)
DSEC_SEMANTIC_SEQUENCES: dict[str, tuple[str, ...]] = {
    "train": (
        "zurich_city_00_a",
        "zurich_city_01_a",
        "zurich_city_02_a",
        "zurich_city_04_a",
        "zurich_city_05_a",
        "zurich_city_06_a",
        "zurich_city_07_a",
        "zurich_city_08_a",
    ),
    "test": ("zurich_city_13_a", "zurich_city_14_c", "zurich_city_15_a"),
}


@dataclass(frozen=True)
class DsecSemanticConfig:
    """Protocol choices; the defaults reproduce ESS (ECDDP: 10 × 50 000 events, (448, 640))."""

    num_classes: int = 11  # code: uzh-rpg/ess config/settings_DSEC.yaml (semseg_num_classes)
    num_windows: int = 20  # code: uzh-rpg/ess config/settings_DSEC.yaml (nr_events_data)
    # code: uzh-rpg/ess config/settings_DSEC.yaml (nr_events_window)
    events_per_window: int = 100_000
    # code: uzh-rpg/ess DSEC/dataset/sequence.py (remove_time_window)
    remove_time_window_ms: int = 250
    label_stride: int = 2  # code: uzh-rpg/ess DSEC/dataset/sequence.py (label index * 2)
    crop_bottom: int = 40  # code: uzh-rpg/ess DSEC/dataset/sequence.py (event_tensor[:, :-40])
    rectify: bool = True  # code: uzh-rpg/ess DSEC/dataset/sequence.py (rectify_events)
    # code: uzh-rpg/ess DSEC/dataset/representations.py splats the sub-pixel rectified x, y
    # bilinearly; True hands the representation an EventBatch with float x, y (e.g.
    # partial(voxel_grid, bins=5)); False hands it Events rounded to the nearest pixel.
    subpixel: bool = True
    # None = no resize (ESS); ECDDP resizes to (448, 640):
    # code: Yan98/Event-Camera-Data-Dense-Pre-training data/DESC_dataset.py
    resize_to: tuple[int, int] | None = None
    sequences: tuple[str, ...] | None = None  # None: the split's ESS list above

    def labels_dropped(self) -> int:
        """Labels skipped at the start of every sequence: (remove_time_window // 100 + 1) · 2."""
        return (self.remove_time_window_ms // 100 + 1) * 2


@dataclass(frozen=True)
class _Sequence:
    name: str
    events: Path
    rectify_map: Path | None
    labels: tuple[Path, ...]
    timestamps: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def find_label_dir(seq_dir: Path, num_classes: int) -> Path:
    """Label folder of a sequence: `semantic/<C>classes/data` or `semantic/left/<C>classes/data`."""
    candidates = [
        seq_dir / "semantic" / f"{num_classes}classes" / "data",
        seq_dir / "semantic" / "left" / f"{num_classes}classes" / "data",
    ]
    for c in candidates:
        if c.is_dir():
            return c
    looked = " and ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"{seq_dir}: no label folder; looked for {looked}")


def read_timestamps(seq_dir: Path) -> np.ndarray:
    """`semantic/timestamps.txt` (or `semantic/left/timestamps.txt`) as (N,) int64 µs."""
    for path in (seq_dir / "semantic" / "timestamps.txt", seq_dir / "semantic/left/timestamps.txt"):
        if path.is_file():
            try:
                ts = np.loadtxt(path, dtype=np.int64, ndmin=1)
            except ValueError as err:
                raise FormatError(path, f"expected one integer µs per line: {err}") from err
            if ts.ndim != 1:
                raise FormatError(path, f"expected one timestamp per line, got shape {ts.shape}")
            if ts.size > 1 and np.diff(ts).min() < 0:
                raise FormatError(path, "label timestamps decrease")
            return ts
    raise FileNotFoundError(f"{seq_dir}: missing semantic/timestamps.txt")


def scan_sequence(seq_dir: Path, config: DsecSemanticConfig) -> _Sequence:
    """Paths, label list and timestamps of one sequence, checked for consistency."""
    require_dir(seq_dir, "DSEC-Semantic sequence")
    ev_dir = seq_dir / "events" / "left"
    events = ev_dir / "events.h5"
    if not events.is_file():
        raise FileNotFoundError(f"{events}: no such file")
    rect = ev_dir / "rectify_map.h5" if config.rectify else None
    if rect is not None and not rect.is_file():
        raise FileNotFoundError(f"{rect}: no such file (needed with rectify=True)")
    labels = tuple(sorted(find_label_dir(seq_dir, config.num_classes).glob("*.png")))
    timestamps = read_timestamps(seq_dir)
    if len(labels) != timestamps.size:
        raise FormatError(seq_dir, f"{len(labels)} label PNGs but {timestamps.size} timestamps")
    return _Sequence(seq_dir.name, events, rect, labels, timestamps)


def items_per_sequence(num_labels: int, config: DsecSemanticConfig) -> int:
    """ESS sample count of a sequence with `num_labels` labels: ⌈(N − dropped) / stride⌉."""
    usable = max(0, num_labels - config.labels_dropped())
    return -(-usable // config.label_stride)


def subpixel_batch(events: Events, rectify_map: np.ndarray) -> tuple[EventBatch, int]:
    """Rectified events with float32 sub-pixel x, y as a one-stream `EventBatch`, and the
    number dropped because their position is not inside (-1, W) × (-1, H) (a bilinear splat
    of such an event reaches no pixel) or not finite."""
    xr, yr = rectify_coordinates(events, rectify_map)
    w, h = events.sensor_size
    with np.errstate(invalid="ignore"):
        keep = (xr > -1) & (xr < w) & (yr > -1) & (yr < h)
    batch = EventBatch(
        *(torch.from_numpy(np.ascontiguousarray(a[keep])) for a in (xr, yr, events.t, events.p)),
        None,
        1,
        w,
        h,
    )
    return batch, int(len(events) - keep.sum())


class DsecSemantic(Dataset):
    """DSEC-Semantic samples under the ESS protocol (see the module docstring for the layout)."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        config: DsecSemanticConfig | None = None,
        *,
        representation: Representation | None = None,
        transform: Transform | None = None,
    ):
        config = config or DsecSemanticConfig()
        if split not in DSEC_SEMANTIC_SEQUENCES:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if min(config.num_windows, config.events_per_window, config.label_stride) <= 0:
            raise ValueError(f"window counts and label_stride must be positive: {config}")
        self.root, self.split, self.config = Path(root), split, config
        self.representation, self.transform = representation, transform
        split_dir = require_dir(self.root / split, "DSEC-Semantic split folder")
        names = config.sequences or DSEC_SEMANTIC_SEQUENCES[split]
        self.sequences = [scan_sequence(split_dir / name, config) for name in names]
        counts = [items_per_sequence(len(s), config) for s in self.sequences]
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._readers: dict[str, DsecEventsReader] = {}
        self._maps: dict[str, np.ndarray] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return int(self._starts[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """(sequence number, label index in that sequence) of dataset item `index`."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} outside a dataset of {len(self)} samples")
        index %= len(self)
        seq = int(np.searchsorted(self._starts, index, side="right")) - 1
        offset = (index - int(self._starts[seq])) * self.config.label_stride
        return seq, self.config.labels_dropped() + offset

    def _reader(self, seq: _Sequence) -> DsecEventsReader:
        if self._pid != os.getpid():
            self._readers, self._pid = {}, os.getpid()
        if seq.name not in self._readers:
            self._readers[seq.name] = DsecEventsReader(
                seq.events, sensor_size=(DSEC_WIDTH, DSEC_HEIGHT)
            )
        return self._readers[seq.name]

    def _rectify_map(self, seq: _Sequence) -> np.ndarray:
        if seq.name not in self._maps:
            self._maps[seq.name] = read_rectify_map(seq.rectify_map)
        return self._maps[seq.name]

    def _label(self, path: Path) -> torch.Tensor:
        label = read_label_png(path)
        expected = (DSEC_HEIGHT - self.config.crop_bottom, DSEC_WIDTH)
        if label.shape != expected:
            raise FormatError(path, f"label is {label.shape}, expected {expected} (H, W)")
        if self.config.resize_to is not None:
            label = resize_nearest(label, self.config.resize_to)
        return torch.from_numpy(label.astype(np.int64))

    def __getitem__(self, index: int) -> Sample:
        s, k = self.locate(index)
        seq, cfg = self.sequences[s], self.config
        t_us = int(seq.timestamps[k])
        window = self._reader(seq).read_last(t_us, cfg.num_windows * cfg.events_per_window)
        chunks, dropped = self._rectify(seq, ess_chunks(window, cfg.num_windows))
        sample: Sample = {
            "label": self._label(seq.labels[k]),
            "t_us": t_us,
            "sequence": seq.name,
            "label_index": k,
            "dropped": dropped,
        }
        if self.representation is None:
            sample["events"] = chunks
        else:
            sample["representation"] = self.geometry(represent_chunks(chunks, self.representation))
        return finish(sample, self.transform)

    def _rectify(self, seq: _Sequence, chunks: list[Events]) -> tuple[list, int]:
        """Chunks rectified as configured (Events, or sub-pixel EventBatches), and drops."""
        if not self.config.rectify:
            return chunks, 0
        rmap = self._rectify_map(seq)
        if self.config.subpixel and self.representation is not None:
            batches = [subpixel_batch(c, rmap) for c in chunks]
            return [b for b, _ in batches], sum(d for _, d in batches)
        rectified = [rectify_events(c, rmap) for c in chunks]
        return [r.events for r in rectified], sum(r.dropped for r in rectified)

    def geometry(self, tensor: torch.Tensor) -> torch.Tensor:
        """The protocol's crop (and optional resize) of a (C, 480, 640) representation."""
        out = tensor[:, : tensor.shape[1] - self.config.crop_bottom, :]
        if self.config.resize_to is not None:
            out = resize_bilinear(out, self.config.resize_to)
        return out
