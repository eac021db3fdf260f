"""MVSEC HDF5: events, APS frames and ground-truth depth (daniilidis-group/mvsec data format).

Data file (`<seq>_data.hdf5`): `davis/{left,right}/events` is (N, 4) float64 rows
[x, y, t, p] with t in seconds (ROS epoch) and p already in {-1, +1}; `image_raw` (M, 260, 346)
uint8, `image_raw_ts` float64 s, `image_raw_event_inds` int64 (index of the last event before
each image). GT file (`<seq>_gt.hdf5`): `davis/{left,right}/depth_image_{rect,raw}` float32
metres with NaN = invalid, plus `_ts` float64 s. Sensor 346 × 260.

**Time precision.** Timestamps are converted to int64 µs as rint(t_s · 10^6). A float64 near
1.5·10^9 s has a spacing of 2.4·10^-7 s (0.24 µs), so the conversion recovers the µs value of
the recorded time; anything below 1 µs is lost, and two events < 0.5 µs apart can share a µs.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from evtransfer.events import Events
from evtransfer.io import _h5
from evtransfer.io.base import FormatError, RecordingInfo

MVSEC_WIDTH = 346
MVSEC_HEIGHT = 260
CAMERAS = ("left", "right")


def seconds_to_us(t_s: np.ndarray) -> np.ndarray:
    """float64 seconds → int64 µs, rounded to nearest (see the module note on precision)."""
    return np.rint(np.asarray(t_s, dtype=np.float64) * 1e6).astype(np.int64)


def _check_camera(camera: str) -> str:
    if camera not in CAMERAS:
        raise ValueError(f"camera must be one of {CAMERAS}, got {camera!r}")
    return camera


class _H5Handle:
    """An HDF5 file opened lazily once per process (so readers survive DataLoader workers)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file: h5py.File | None = None
        self._pid = -1
        self.h5()

    def h5(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = _h5.open_h5(self.path), os.getpid()
        return self._file

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class MvsecEventsReader(_H5Handle):
    """Events and APS frames of one DAVIS camera in an MVSEC data file, streamed by slices.

    Windows are found by bisection on the t column (O(log N) small reads, never the whole
    dataset); every slice read is checked (integral x, y inside 346 × 260, p in {-1, +1},
    non-decreasing t). Timestamps are int64 µs on the ROS-epoch clock.
    """

    format = "mvsec-h5"

    def __init__(self, path: str | Path, camera: str = "left"):
        self.camera = _check_camera(camera)
        self.width, self.height = MVSEC_WIDTH, MVSEC_HEIGHT
        super().__init__(path)
        ds = self._events()
        if ds.shape[1] != 4 or ds.dtype.kind != "f":
            raise FormatError(
                self.path, f"davis/{camera}/events must be (N, 4) float, got {ds.dtype} {ds.shape}"
            )
        _h5.check_filters(ds, self.path)
        self._n = int(ds.shape[0])

    def __getstate__(self) -> dict:
        return {"path": self.path, "camera": self.camera}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["camera"])

    def _events(self) -> h5py.Dataset:
        return _h5.require(self.h5(), f"davis/{self.camera}/events", self.path, ndim=2)

    def __len__(self) -> int:
        return self._n

    def _t_values(self, i0: int, i1: int) -> np.ndarray:
        return seconds_to_us(_h5.read(self._events(), (slice(i0, i1), 2), self.path))

    def info(self) -> RecordingInfo:
        """Sensor size, event count and first/last timestamp in µs."""
        t0 = int(self._t_values(0, 1)[0]) if self._n else 0
        t1 = int(self._t_values(self._n - 1, self._n)[0]) if self._n else 0
        return RecordingInfo(self.format, self.width, self.height, self._n, t0, t1)

    def first_index(self, t_us: int) -> int:
        """First event index with t >= t_us (len(self) if none)."""
        return _h5.first_at_least(self._t_values, int(t_us), 0, self._n)

    def read_index(self, i0: int, i1: int) -> Events:
        """Events i0 <= i < i1 in file order."""
        i0, i1 = int(i0), int(i1)
        if not 0 <= i0 <= i1 <= self._n:
            raise FormatError(self.path, f"index range [{i0}, {i1}) outside [0, {self._n}]")
        rows = _h5.read(self._events(), slice(i0, i1), self.path)
        x, y, p = (self._integral(k, rows[:, c], i0) for k, c in (("x", 0), ("y", 1), ("p", 3)))
        _h5.check_range("x", x, self.width, i0, self.path)
        _h5.check_range("y", y, self.height, i0, self.path)
        bad = (p != 1) & (p != -1)
        if bad.any():
            k = int(np.argmax(bad))
            raise FormatError(self.path, f"p = {p[k]} at event {i0 + k}; MVSEC stores p as ±1")
        t = seconds_to_us(rows[:, 2])
        _h5.check_sorted(t, i0, self.path)
        return Events._trusted(
            x.astype(np.int16), y.astype(np.int16), t, p.astype(np.int8), self.width, self.height
        )

    def _integral(self, name: str, values: np.ndarray, offset: int) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            ints = np.where(np.isfinite(values), values, 0.5).astype(np.int64)
        bad = ints != values
        if bad.any():
            k = int(np.argmax(bad))
            raise FormatError(
                self.path, f"{name} = {values[k]} at event {offset + k} is not an integer"
            )
        return ints

    def read_window(self, t0_us: int, t1_us: int) -> Events:
        """Events with t0_us <= t < t1_us."""
        if t1_us < t0_us:
            raise FormatError(self.path, f"time window end {t1_us} < start {t0_us} µs")
        return self.read_index(self.first_index(t0_us), self.first_index(t1_us))

    def read_last(self, t_us: int, n: int) -> Events:
        """The last `n` events with t < t_us."""
        if n < 0:
            raise FormatError(self.path, f"event count must be >= 0, got {n}")
        i1 = self.first_index(t_us)
        return self.read_index(max(0, i1 - int(n)), i1)

    # --- APS frames -----------------------------------------------------------------------
    def _frames(self, name: str, ndim: int) -> h5py.Dataset:
        return _h5.require(self.h5(), f"davis/{self.camera}/{name}", self.path, ndim=ndim)

    def num_frames(self) -> int:
        """Number of APS frames of this camera (0 where the file has none, e.g. right outdoor)."""
        if f"davis/{self.camera}/image_raw" not in self.h5():
            return 0
        return int(self._frames("image_raw", 3).shape[0])

    def frame_timestamps_us(self) -> np.ndarray:
        """(M,) int64 APS frame timestamps in µs."""
        return seconds_to_us(_h5.read(self._frames("image_raw_ts", 1), (), self.path))

    def frame_event_indices(self) -> np.ndarray:
        """(M,) int64 `image_raw_event_inds`: index of the last event before each frame."""
        return _h5.read(self._frames("image_raw_event_inds", 1), (), self.path).astype(np.int64)

    def read_frame(self, i: int) -> np.ndarray:
        """APS frame `i` as (260, 346) uint8."""
        ds = self._frames("image_raw", 3)
        if not 0 <= i < ds.shape[0]:
            raise IndexError(f"{self.path}: frame {i} outside [0, {ds.shape[0]})")
        return _h5.read(ds, i, self.path).astype(np.uint8)


class MvsecDepthReader(_H5Handle):
    """Ground-truth depth of one camera in an MVSEC GT file: float32 metres, NaN = invalid."""

    def __init__(self, path: str | Path, camera: str = "left", *, rectified: bool = True):
        self.camera = _check_camera(camera)
        self.key = f"davis/{camera}/depth_image_{'rect' if rectified else 'raw'}"
        super().__init__(path)
        ds, ts = self._depth(), self._ts()
        if ds.shape[1:] != (MVSEC_HEIGHT, MVSEC_WIDTH) or ds.dtype.kind != "f":
            raise FormatError(
                self.path, f"{self.key} must be (M, 260, 346) float, got {ds.dtype} {ds.shape}"
            )
        if ts.shape[0] != ds.shape[0]:
            raise FormatError(
                self.path, f"{self.key}_ts has {ts.shape[0]} entries for {ds.shape[0]} depth maps"
            )
        _h5.check_filters(ds, self.path)
        self._n = int(ds.shape[0])

    def __getstate__(self) -> dict:
        return {"path": self.path, "camera": self.camera, "rect": self.key.endswith("rect")}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["camera"], rectified=state["rect"])

    def _depth(self) -> h5py.Dataset:
        return _h5.require(self.h5(), self.key, self.path, ndim=3)

    def _ts(self) -> h5py.Dataset:
        return _h5.require(self.h5(), f"{self.key}_ts", self.path, ndim=1)

    def __len__(self) -> int:
        return self._n

    def timestamps_us(self) -> np.ndarray:
        """(M,) int64 depth timestamps in µs."""
        return seconds_to_us(_h5.read(self._ts(), (), self.path))

    def read(self, i: int) -> np.ndarray:
        """Depth map `i` as (260, 346) float32 metres; NaN marks invalid pixels."""
        if not 0 <= i < self._n:
            raise IndexError(f"{self.path}: depth map {i} outside [0, {self._n})")
        return _h5.read(self._depth(), i, self.path).astype(np.float32)
