"""DDD17 in the two public segmentation layouts: ESS memmaps and Ev-SegNet arrays.

**ESS layout** (uzh-rpg/ess : datasets/extract_data_tools/example_loader_ddd17.py), one folder
per recording (`root/dir*`):
- `events.dat.t`: raw int64 timestamps in **ns**, N = file size / 8;
- `events.dat.xyp`: raw int16 (N, 3) rows of x, y, p with p in {0, 1};
- `index/index_{10,50,250}ms.npy`: (M, 3) int64 rows (t_ns, event_idx, event_idx_before) for
  image j (the 3rd column exists although the ESS comment lists two); event_idx is the number
  of events before the image, so its events are [event_idx - n, event_idx);
- `segmentation_masks/segmentation_%08d.png`: labels; image index = number - 1.

**Ev-SegNet layout** (Shathe/Ev-SegNet : README.md, utils/Loader.py):
`{images,labels,events}/{train,test}/rec<id>_export_<frame>.{png,png,npy}`, events being a
(200, 346, 6) array and labels 6 classes + 255 over the top 200 rows.

Sensor: DAVIS346, 346 × 260. Timestamps are returned in µs as ⌊t_ns / 1000⌋.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evtransfer.events import Events
from evtransfer.io import _h5
from evtransfer.io.base import FormatError, RecordingInfo

DDD17_WIDTH = 346
DDD17_HEIGHT = 260
INDEX_INTERVALS_MS = (10, 50, 250)
EVSEGNET_SHAPE = (200, 346, 6)
_MASK_NAME = re.compile(r"^segmentation_(\d+)\.png$")


class Ddd17EventsReader:
    """A DDD17 recording folder in the ESS layout, read through memory maps (nothing loaded).

    Time windows are two binary searches on the ns memmap; only the requested slice is read,
    validated (coordinates inside 346 × 260, p in {0, 1}, time non-decreasing) and converted to
    `Events` (t in µs = ⌊t_ns / 1000⌋, p → ±1).
    """

    format = "ddd17-ess"

    def __init__(self, directory: str | Path):
        self.path = Path(directory)
        if not self.path.is_dir():
            raise FileNotFoundError(f"{self.path}: no such folder")
        t_file, xyp_file = self.path / "events.dat.t", self.path / "events.dat.xyp"
        for f in (t_file, xyp_file):
            if not f.is_file():
                raise FormatError(self.path, f"missing {f.name} (ESS DDD17 layout)")
        t_bytes, xyp_bytes = t_file.stat().st_size, xyp_file.stat().st_size
        if t_bytes % 8:
            raise FormatError(t_file, f"size {t_bytes} B is not a multiple of 8 (truncated?)")
        n = t_bytes // 8
        if xyp_bytes != 6 * n:
            raise FormatError(
                xyp_file, f"size {xyp_bytes} B does not match {n} events × 6 B (truncated?)"
            )
        self._n = n
        if n:
            self._t = np.memmap(t_file, dtype="<i8", mode="r", shape=(n,))
            self._xyp = np.memmap(xyp_file, dtype="<i2", mode="r", shape=(n, 3))
        else:  # numpy cannot map an empty file
            self._t, self._xyp = np.zeros(0, "<i8"), np.zeros((0, 3), "<i2")
        self.width, self.height = DDD17_WIDTH, DDD17_HEIGHT

    def __len__(self) -> int:
        return self._n

    def info(self) -> RecordingInfo:
        """Sensor size, event count and first/last timestamp in µs."""
        t0 = int(self._t[0]) // 1000 if self._n else 0
        t1 = int(self._t[-1]) // 1000 if self._n else 0
        return RecordingInfo(self.format, self.width, self.height, self._n, t0, t1)

    def first_index(self, t_us: int) -> int:
        """First event index with t >= t_us (len(self) if none)."""
        # t_us <= ⌊t_ns/1000⌋  ⟺  t_ns >= 1000 · t_us, so the search runs on the raw ns values.
        return int(np.searchsorted(self._t, np.int64(t_us) * np.int64(1000), side="left"))

    def read_index(self, i0: int, i1: int) -> Events:
        """Events i0 <= i < i1 in file order."""
        i0, i1 = int(i0), int(i1)
        if not 0 <= i0 <= i1 <= self._n:
            raise FormatError(self.path, f"index range [{i0}, {i1}) outside [0, {self._n}]")
        t_ns = np.asarray(self._t[i0:i1], dtype=np.int64)
        xyp = np.asarray(self._xyp[i0:i1])
        _h5.check_sorted(t_ns, i0, self.path)
        _h5.check_range("x", xyp[:, 0], self.width, i0, self.path)
        _h5.check_range("y", xyp[:, 1], self.height, i0, self.path)
        _h5.check_range("p", xyp[:, 2], 2, i0, self.path)
        pol = xyp[:, 2].astype(np.int8) * np.int8(2) - np.int8(1)
        return Events._trusted(
            xyp[:, 0].copy(), xyp[:, 1].copy(), t_ns // 1000, pol, self.width, self.height
        )

    def read_window(self, t0_us: int, t1_us: int) -> Events:
        """Events with t0_us <= t < t1_us."""
        if t1_us < t0_us:
            raise FormatError(self.path, f"time window end {t1_us} < start {t0_us} µs")
        return self.read_index(self.first_index(t0_us), self.first_index(t1_us))

    def read_last(self, t_us: int, n: int) -> Events:
        """The last `n` events with t < t_us (fewer at the start of the recording)."""
        if n < 0:
            raise FormatError(self.path, f"event count must be >= 0, got {n}")
        i1 = self.first_index(t_us)
        return self.read_index(max(0, i1 - int(n)), i1)

    def read_before_index(self, event_idx: int, n: int) -> Events:
        """The `n` events before index `event_idx` (an index-file entry), as ESS slices them."""
        if n < 0:
            raise FormatError(self.path, f"event count must be >= 0, got {n}")
        return self.read_index(max(0, int(event_idx) - int(n)), int(event_idx))


def read_frame_index(directory: str | Path, interval_ms: int = 50) -> np.ndarray:
    """`index/index_<interval_ms>ms.npy`: (M, 3) int64 rows (t_ns, event_idx, event_idx_before)."""
    if interval_ms not in INDEX_INTERVALS_MS:
        raise ValueError(f"interval_ms must be one of {INDEX_INTERVALS_MS}, got {interval_ms}")
    path = Path(directory) / "index" / f"index_{interval_ms}ms.npy"
    arr = _load_npy(path)
    if arr.ndim != 2 or arr.shape[1] != 3 or arr.dtype.kind not in "iu":
        raise FormatError(path, f"expected an (M, 3) integer array, got {arr.dtype} {arr.shape}")
    if arr.shape[0] > 1 and np.diff(arr[:, 1]).min() < 0:
        raise FormatError(path, "event indices (column 1) decrease")
    return arr.astype(np.int64)


def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise FormatError(path, f"not a readable .npy array (truncated?): {err}") from err


def segmentation_masks(directory: str | Path) -> list[tuple[int, Path]]:
    """(image index, path) of every `segmentation_masks/segmentation_%08d.png`, sorted by index.

    The image index is the number in the name minus one (ESS convention).
    """
    folder = Path(directory) / "segmentation_masks"
    if not folder.is_dir():
        raise FormatError(directory, "missing segmentation_masks/ (unzip segmentation_masks.zip)")
    out = []
    for f in folder.iterdir():
        m = _MASK_NAME.match(f.name)
        if m:
            out.append((int(m.group(1)) - 1, f))
    return sorted(out)


# --- Ev-SegNet layout ---------------------------------------------------------------------
@dataclass(frozen=True)
class EvSegNetSample:
    """One Ev-SegNet sample: its name and the event array, label and (optional) image paths."""

    name: str
    events: Path
    label: Path
    image: Path | None


def list_evsegnet(root: str | Path, split: str) -> list[EvSegNetSample]:
    """Samples of `root/{events,labels,images}/<split>/`, sorted by name; labels are required."""
    root = Path(root)
    ev_dir = root / "events" / split
    if not ev_dir.is_dir():
        raise FileNotFoundError(f"{ev_dir}: no such folder (Ev-SegNet layout)")
    out = []
    for f in sorted(ev_dir.glob("*.npy")):
        label = root / "labels" / split / f"{f.stem}.png"
        if not label.is_file():
            raise FormatError(f, f"has no label {label}")
        image = root / "images" / split / f"{f.stem}.png"
        out.append(EvSegNetSample(f.stem, f, label, image if image.is_file() else None))
    return out


def read_evsegnet_events(path: str | Path) -> np.ndarray:
    """An Ev-SegNet event array: (200, 346, 6) float32 (channel meaning is undocumented)."""
    path = Path(path)
    arr = _load_npy(path)
    if arr.shape != EVSEGNET_SHAPE:
        raise FormatError(path, f"expected shape {EVSEGNET_SHAPE}, got {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise FormatError(path, f"expected a numeric array, got {arr.dtype}")
    return arr.astype(np.float32)
