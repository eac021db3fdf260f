"""DSEC `events.h5` and `rectify_map.h5`: streaming reader, rectification and writer.

Layout (uzh-rpg/DSEC : README.md, scripts/utils/eventslicer.py): `/events/{x,y,p,t}` 1-D
(x, y `<u2`, p `u1` in {0, 1}, t `<u4` µs relative to `t_offset`), `/ms_to_idx` (`u8`,
`ms_to_idx[ms]` = first index i with t[i] >= ms·1000) and `/t_offset` (`i8`, shape (1,) or a
scalar; the clock shared with images and labels is t + t_offset). The official files are
compressed with the Blosc HDF5 filter (zstd inside), which h5py reads only once hdf5plugin is
imported — the reader imports it itself.

The reader never loads a whole dataset: a time window is bracketed through two `ms_to_idx`
look-ups (read lazily, one small block at a time), refined exactly on t inside that bracket,
and only the events [i0, i1) are read. Windows are start-inclusive, end-exclusive.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np

from evtransfer.events import Events
from evtransfer.io import _h5
from evtransfer.io.base import FormatError, RecordingInfo

DSEC_WIDTH = 640
DSEC_HEIGHT = 480
_MS_BLOCK = 4096  # ms_to_idx entries read (and cached) per look-up
_T_MAX = np.iinfo(np.uint32).max


class DsecEventsReader:
    """A DSEC `events.h5` opened for streaming; timestamps are int64 µs on the t + t_offset clock.

    `sensor_size` (width, height) overrides the size stored by `DsecEventsWriter` in the
    `events` group attributes; official files carry none and default to 640 × 480. Coordinates,
    polarities and time order are validated on every slice read. The HDF5 handle is opened per
    process, so a reader can be pickled into DataLoader workers.
    """

    format = "dsec-h5"

    def __init__(self, path: str | Path, *, sensor_size: tuple[int, int] | None = None):
        self.path = Path(path)
        self._sensor_size = sensor_size
        self._file: h5py.File | None = None
        self._pid = -1
        self._open()

    # --- file handling ------------------------------------------------------------------
    def _open(self) -> None:
        f = _h5.open_h5(self.path)
        try:
            self._bind(f)
        except Exception:
            f.close()
            raise
        self._file, self._pid = f, os.getpid()
        self._ms_cache: dict[int, np.ndarray] = {}

    def _bind(self, f: h5py.File) -> None:
        group = f.get("events")
        if not isinstance(group, h5py.Group):
            raise FormatError(self.path, f"missing group 'events' (top-level keys: {sorted(f)})")
        ds = {k: _h5.require(group, k, self.path, ndim=1) for k in ("x", "y", "t", "p")}
        lengths = {k: v.shape[0] for k, v in ds.items()}
        if len(set(lengths.values())) != 1:
            raise FormatError(self.path, f"events/x, y, t, p have different lengths {lengths}")
        for k, v in ds.items():
            if v.dtype.kind not in "ui":
                raise FormatError(self.path, f"events/{k} must be integer, got {v.dtype}")
        ms = _h5.require(f, "ms_to_idx", self.path, ndim=1)
        if ms.dtype.kind not in "ui":
            raise FormatError(self.path, f"ms_to_idx must be integer, got {ms.dtype}")
        for dataset in (*ds.values(), ms):
            _h5.check_filters(dataset, self.path)
        self._ds, self._ms, self._n, self._n_ms = ds, ms, lengths["t"], ms.shape[0]
        self._t_offset = self._read_t_offset(f)
        self.width, self.height = self._sensor_from(group)

    def _read_t_offset(self, f: h5py.File) -> int:
        if "t_offset" not in f:
            return 0
        value = _h5.read(_h5.require(f, "t_offset", self.path), (), self.path)
        if value.size != 1 or value.dtype.kind not in "ui":
            raise FormatError(
                self.path, f"t_offset must be one integer, got {value.dtype} {value.shape}"
            )
        return int(value.reshape(-1)[0])

    def _sensor_from(self, group: h5py.Group) -> tuple[int, int]:
        if self._sensor_size is not None:
            w, h = (int(v) for v in self._sensor_size)
        elif "width" in group.attrs and "height" in group.attrs:
            w, h = int(group.attrs["width"]), int(group.attrs["height"])
        else:
            w, h = DSEC_WIDTH, DSEC_HEIGHT
        if w <= 0 or h <= 0:
            raise FormatError(self.path, f"invalid sensor size {w}x{h}")
        return w, h

    def _handle(self) -> None:
        if self._file is None or self._pid != os.getpid():
            self._open()

    def close(self) -> None:
        """Close the HDF5 file (reopened automatically on the next read)."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def __enter__(self) -> DsecEventsReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        return {"path": self.path, "sensor_size": self._sensor_size}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], sensor_size=state["sensor_size"])

    # --- metadata -----------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    @property
    def t_offset_us(self) -> int:
        """The file's t_offset in µs (0 when the dataset is absent, as in the ESS slicer)."""
        return self._t_offset

    def info(self) -> RecordingInfo:
        """Sensor size, event count and first/last timestamp (µs, t + t_offset clock)."""
        self._handle()
        if self._n == 0:
            t0 = t1 = self._t_offset
        else:
            t0 = int(self._t_values(0, 1)[0]) + self._t_offset
            t1 = int(self._t_values(self._n - 1, self._n)[0]) + self._t_offset
        return RecordingInfo(self.format, self.width, self.height, self._n, t0, t1)

    # --- index look-ups -----------------------------------------------------------------
    def _t_values(self, i0: int, i1: int) -> np.ndarray:
        return _h5.read(self._ds["t"], slice(i0, i1), self.path).astype(np.int64)

    def _ms_lookup(self, ms: int) -> int:
        block = ms // _MS_BLOCK
        cached = self._ms_cache.get(block)
        if cached is None:
            sel = slice(block * _MS_BLOCK, min((block + 1) * _MS_BLOCK, self._n_ms))
            cached = _h5.read(self._ms, sel, self.path).astype(np.int64)
            if len(self._ms_cache) >= 8:
                self._ms_cache.clear()
            self._ms_cache[block] = cached
        return int(cached[ms - block * _MS_BLOCK])

    def first_index(self, t_rel_us: int) -> int:
        """First event index with stored (relative) t >= t_rel_us; len(self) if none."""
        self._handle()
        if self._n == 0:
            return 0
        ms_lo, ms_hi = t_rel_us // 1000, -(-t_rel_us // 1000)
        lo = 0 if ms_lo < 0 or self._n_ms == 0 else self._ms_lookup(min(ms_lo, self._n_ms - 1))
        hi = self._n if ms_hi >= self._n_ms else self._ms_lookup(max(ms_hi, 0))
        if not 0 <= lo <= hi <= self._n:
            raise FormatError(
                self.path, f"ms_to_idx brackets [{lo}, {hi}] outside [0, {self._n}] at ms {ms_lo}"
            )
        i = _h5.first_at_least(self._t_values, t_rel_us, lo, hi)
        if (i == lo > 0 and self._t_values(i - 1, i)[0] >= t_rel_us) or (
            i == hi < self._n and self._t_values(i, i + 1)[0] < t_rel_us
        ):
            raise FormatError(
                self.path, f"ms_to_idx is inconsistent with events/t near t = {t_rel_us} µs"
            )
        return i

    # --- reads --------------------------------------------------------------------------
    def read_index(self, i0: int, i1: int) -> Events:
        """Events i0 <= i < i1 in file order (t on the t + t_offset clock)."""
        self._handle()
        i0, i1 = int(i0), int(i1)
        if not 0 <= i0 <= i1 <= self._n:
            raise FormatError(self.path, f"index range [{i0}, {i1}) outside [0, {self._n}]")
        sel = slice(i0, i1)
        x = _h5.read(self._ds["x"], sel, self.path)
        y = _h5.read(self._ds["y"], sel, self.path)
        p = _h5.read(self._ds["p"], sel, self.path)
        t = _h5.read(self._ds["t"], sel, self.path).astype(np.int64)
        _h5.check_range("x", x, self.width, i0, self.path)
        _h5.check_range("y", y, self.height, i0, self.path)
        _h5.check_range("p", p, 2, i0, self.path)
        _h5.check_sorted(t, i0, self.path)
        t += self._t_offset
        pol = p.astype(np.int8) * np.int8(2) - np.int8(1)
        return Events._trusted(
            x.astype(np.int16), y.astype(np.int16), t, pol, self.width, self.height
        )

    def read_window(self, t0_us: int, t1_us: int) -> Events:
        """Events with t0_us <= t < t1_us (µs on the t + t_offset clock)."""
        if t1_us < t0_us:
            raise FormatError(self.path, f"time window end {t1_us} < start {t0_us} µs")
        i0 = self.first_index(int(t0_us) - self._t_offset)
        i1 = self.first_index(int(t1_us) - self._t_offset)
        return self.read_index(i0, i1)

    def read_last(self, t_us: int, n: int) -> Events:
        """The last `n` events with t < t_us (fewer at the start of the file), as ESS slices."""
        if n < 0:
            raise FormatError(self.path, f"event count must be >= 0, got {n}")
        i1 = self.first_index(int(t_us) - self._t_offset)
        return self.read_index(max(0, i1 - int(n)), i1)


# --- rectification ------------------------------------------------------------------------
class Rectified(NamedTuple):
    """Rectified events (nearest pixel), the count dropped outside the image, and the kept
    events' sub-pixel rectified coordinates x, y ((N,) float32, pixels)."""

    events: Events
    dropped: int
    x: np.ndarray
    y: np.ndarray


def read_rectify_map(
    path: str | Path, *, sensor_size: tuple[int, int] = (DSEC_WIDTH, DSEC_HEIGHT)
) -> np.ndarray:
    """DSEC `rectify_map.h5` as a (H, W, 2) float32 forward map: map[y, x] = (x_rect, y_rect)."""
    with _h5.open_h5(path) as f:
        ds = _h5.require(f, "rectify_map", path, ndim=3)
        w, h = sensor_size
        if ds.shape != (h, w, 2):
            raise FormatError(path, f"rectify_map must have shape ({h}, {w}, 2), got {ds.shape}")
        if ds.dtype.kind != "f":
            raise FormatError(path, f"rectify_map must be floating point, got {ds.dtype}")
        return _h5.read(ds, (), path).astype(np.float32)


def write_rectify_map(path: str | Path, rectify_map: np.ndarray) -> Path:
    """Write a (H, W, 2) forward map as DSEC's `rectify_map.h5` (float32, atomically)."""
    arr = np.asarray(rectify_map)
    if arr.ndim != 3 or arr.shape[2] != 2 or arr.dtype.kind != "f":
        raise ValueError(f"rectify_map must be (H, W, 2) float, got {arr.dtype} {arr.shape}")
    path = Path(path)
    tmp = _temp_path(path)
    try:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("rectify_map", data=arr.astype(np.float32))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def rectify_coordinates(events: Events, rectify_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel rectified (x, y) of every event ((N,) float32 each, NaN where the map is).

    `rectify_map` is DSEC's (H, W, 2) forward map, map[y, x] = (x_rect, y_rect), and must
    match the events' sensor size. Nothing is dropped; positions may lie outside the image.
    """
    rmap = np.asarray(rectify_map)
    w, h = events.sensor_size
    if rmap.shape != (h, w, 2):
        raise ValueError(f"rectify_map shape {rmap.shape} does not match sensor ({h}, {w}, 2)")
    xy = rmap[events.y, events.x].astype(np.float32)
    return xy[:, 0], xy[:, 1]


def rectify_events(events: Events, rectify_map: np.ndarray) -> Rectified:
    """Move raw events through a DSEC forward map and round to the nearest rectified pixel.

    `rectify_map` is (H, W, 2) with map[y, x] = (x_rect, y_rect) in pixels and must match the
    events' sensor size. Events whose rounded position falls outside the W × H image (or whose
    map entry is not finite) are dropped and counted in `Rectified.dropped`; the sub-pixel
    coordinates of the kept events are returned too, for bilinear splatting as in ESS.
    """
    w, h = events.sensor_size
    xr, yr = rectify_coordinates(events, rectify_map)
    with np.errstate(invalid="ignore"):
        xi, yi = np.floor(xr + 0.5), np.floor(yr + 0.5)
        keep = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    out = Events._trusted(
        xi[keep].astype(np.int16), yi[keep].astype(np.int16), events.t[keep], events.p[keep], w, h
    )
    return Rectified(out, int(len(events) - keep.sum()), xr[keep], yr[keep])


# --- writer ---------------------------------------------------------------------------------
def _temp_path(path: Path) -> Path:
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: folder {path.parent} does not exist")
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _filter_kwargs(compression: str | None) -> dict:
    if compression in (None, "none"):
        return {}
    if compression == "blosc-zstd":
        if not _h5.load_filters():
            raise ValueError("compression 'blosc-zstd' needs hdf5plugin: pip install hdf5plugin")
        import hdf5plugin

        return dict(hdf5plugin.Blosc(cname="zstd", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE))
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": 4}
    if compression == "lzf":
        return {"compression": "lzf"}
    raise ValueError(
        f"compression must be 'blosc-zstd', 'gzip', 'lzf' or None, got {compression!r}"
    )


class DsecEventsWriter:
    """Stream events into a new DSEC-layout `events.h5`, chunk by chunk, atomically.

    Each `write(events)` appends a time-sorted `Events` on the writer's sensor; t - t_offset_us
    must lie in [0, 2^32) µs (t is stored as `<u4`). Datasets: events/x, y `<u2`, p `u1` in
    {0, 1}, t `<u4`, ms_to_idx `<u8` (entries for ms = 0 … ⌊t_last/1000⌋ + 1, so the last is N)
    and t_offset `<i8` (1,). The sensor size is stored as `width`/`height` attributes of the
    `events` group. Data go to a temporary file renamed onto `path` by `close()`; on error
    (or `abort()`) the temporary file is deleted and `path` is untouched. Use as a context
    manager.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        width: int = DSEC_WIDTH,
        height: int = DSEC_HEIGHT,
        t_offset_us: int = 0,
        chunk_events: int = 1 << 16,
        compression: str | None = "blosc-zstd",
    ):
        if chunk_events <= 0:
            raise ValueError(f"chunk_events must be positive, got {chunk_events}")
        self.path = Path(path)
        self.width, self.height = int(width), int(height)
        self.t_offset_us = int(t_offset_us)
        self._chunk = int(chunk_events)
        filters = _filter_kwargs(compression)
        self._tmp = _temp_path(self.path)
        self._f = h5py.File(self._tmp, "w")
        try:
            self._create_datasets(filters)
        except BaseException:  # Ctrl-C included: leave no temporary file behind
            self.abort()
            raise
        self._pending: list[dict[str, np.ndarray]] = []
        self._n_pending = 0
        self._n_written = 0
        self._next_ms = 0
        self._last_t = -1

    def _create_datasets(self, filters: dict) -> None:
        group = self._f.create_group("events")
        group.attrs["width"], group.attrs["height"] = self.width, self.height
        self._ds = {
            k: group.create_dataset(
                k, shape=(0,), maxshape=(None,), dtype=dt, chunks=(self._chunk,), **filters
            )
            for k, dt in (("x", "<u2"), ("y", "<u2"), ("p", "u1"), ("t", "<u4"))
        }
        self._ms = self._f.create_dataset(
            "ms_to_idx", shape=(0,), maxshape=(None,), dtype="<u8", chunks=(_MS_BLOCK,), **filters
        )
        self._f.create_dataset("t_offset", data=np.array([self.t_offset_us], dtype="<i8"))

    def __enter__(self) -> DsecEventsWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __len__(self) -> int:
        """Events accepted so far."""
        return self._n_written + self._n_pending

    def write(self, events: Events) -> None:
        """Append `events` (time-sorted, starting no earlier than the last event written)."""
        if self._f is None:
            raise ValueError(f"{self.path}: writer is closed")
        if not isinstance(events, Events):
            raise TypeError(f"write expects Events, got {type(events).__name__}")
        if events.sensor_size != (self.width, self.height):
            raise ValueError(
                f"{self.path}: events are {events.width}x{events.height}, "
                f"writer is {self.width}x{self.height}"
            )
        if not len(events):
            return
        t_rel = events.t - np.int64(self.t_offset_us)
        if t_rel[0] < 0 or t_rel[-1] > _T_MAX:
            raise ValueError(
                f"{self.path}: t - t_offset spans [{t_rel[0]}, {t_rel[-1]}] µs, outside the "
                f"<u4 range [0, {_T_MAX}]; choose t_offset_us closer to the first event"
            )
        if t_rel[0] < self._last_t:
            raise ValueError(
                f"{self.path}: events start at t = {events.t[0]} µs, before the last event "
                f"written ({self._last_t + self.t_offset_us} µs)"
            )
        self._index_ms(t_rel)
        self._last_t = int(t_rel[-1])
        part = {
            "x": events.x.astype("<u2"),
            "y": events.y.astype("<u2"),
            "p": (events.p > 0).astype("u1"),
            "t": t_rel.astype("<u4"),
        }
        self._pending.append(part)
        self._n_pending += len(events)
        if self._n_pending >= self._chunk:
            self._flush(whole_chunks=True)

    def _index_ms(self, t_rel: np.ndarray) -> None:
        """Fill ms_to_idx for every ms whose first event index this batch determines."""
        last_ms = int(t_rel[-1]) // 1000
        if last_ms < self._next_ms:
            return
        ms = np.arange(self._next_ms, last_ms + 1, dtype=np.int64)
        idx = np.searchsorted(t_rel, ms * 1000, side="left") + len(self)
        self._append(self._ms, idx.astype("<u8"))
        self._next_ms = last_ms + 1

    @staticmethod
    def _append(ds: h5py.Dataset, values: np.ndarray) -> None:
        n = ds.shape[0]
        ds.resize((n + len(values),))
        ds[n:] = values

    def _flush(self, whole_chunks: bool) -> None:
        merged = {k: np.concatenate([part[k] for part in self._pending]) for k in self._ds}
        n = len(merged["t"])
        cut = (n // self._chunk) * self._chunk if whole_chunks else n
        for k, ds in self._ds.items():
            self._append(ds, merged[k][:cut])
        self._pending = [{k: v[cut:] for k, v in merged.items()}] if cut < n else []
        self._n_pending = n - cut
        self._n_written += cut

    def close(self) -> Path:
        """Flush, finish ms_to_idx and move the file onto `path`; returns `path`."""
        if self._f is None:
            return self.path
        try:
            if self._pending:
                self._flush(whole_chunks=False)
            self._append(self._ms, np.array([self._n_written], dtype="<u8"))
            self._f.close()
            self._f = None
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Discard everything written; `path` is left as it was."""
        if self._f is not None:
            self._f.close()
            self._f = None
        self._tmp.unlink(missing_ok=True)


def write_events_h5(
    path: str | Path,
    events: Events,
    *,
    t_offset_us: int = 0,
    chunk_events: int = 1 << 16,
    compression: str | None = "blosc-zstd",
) -> Path:
    """Write `events` as a DSEC-layout `events.h5` (see `DsecEventsWriter`); returns `path`.

    Timestamps are stored as t - t_offset_us (`<u4` µs), so t_offset_us must be at most the
    first timestamp and within 2^32 µs (≈ 71.6 min) of the last one.
    """
    with DsecEventsWriter(
        path,
        width=events.width,
        height=events.height,
        t_offset_us=t_offset_us,
        chunk_events=chunk_events,
        compression=compression,
    ) as writer:
        block = max(chunk_events, 1 << 22)
        for i in range(0, len(events), block):
            writer.write(events[i : i + block])
    return Path(path)
