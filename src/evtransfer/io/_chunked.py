"""Streaming machinery shared by the binary event readers.

A file is cut into chunks of whole records (or words). On open, each format scans the file
once, chunk by chunk and vectorised, and keeps only a sparse table: per chunk its byte range,
its event count, the first and last timestamp, and whatever decoder state the chunk needs
to start (EVT 2.0 / 3.0 carry their time base in earlier words). The same pass validates
what the format allows (time order, word types), so a corrupt file fails on open. A read
then decodes only the chunks it touches: a time window is two binary searches over the
table plus one inside each boundary chunk, and memory stays proportional to the window.
"""

from __future__ import annotations

import mmap
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evtransfer.events import Events
from evtransfer.io.base import FormatError, RecordingInfo

Columns = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
RELEASE_ABOVE = 1 << 28  # bytes: files larger than this are unmapped chunk by chunk


@dataclass(frozen=True)
class ChunkTable:
    """Per-chunk index: byte ranges [start, stop), event counts, first/last t (int64 µs)."""

    start: np.ndarray
    stop: np.ndarray
    count: np.ndarray
    t_first: np.ndarray
    t_last: np.ndarray

    @staticmethod
    def build(rows: list[tuple[int, int, int, int, int]]) -> ChunkTable:
        """Table from (start, stop, count, t_first, t_last) rows in file order."""
        arr = np.array(rows, dtype=np.int64).reshape(-1, 5)
        return ChunkTable(*(np.ascontiguousarray(arr[:, i]) for i in range(5)))


def split_ranges(begin: int, end: int, step: int) -> list[tuple[int, int]]:
    """[begin, end) cut into consecutive [a, b) ranges of at most `step` units."""
    return [(a, min(a + step, end)) for a in range(begin, end, step)]


def read_bytes(path: Path, offset: int, size: int) -> np.ndarray:
    """`size` bytes of `path` from `offset` as an aligned uint8 array (a fresh copy)."""
    with open(path, "rb") as f:
        f.seek(offset)
        data = np.fromfile(f, dtype=np.uint8, count=size)
    if data.size != size:
        raise FormatError(path, f"file ended after {offset + data.size} bytes (expected more)")
    return data


def first_decrease(t: np.ndarray, last_t: int) -> tuple[int, int, int] | None:
    """(index, previous t, t) of the first time `t` (preceded by `last_t`) decreases, or None."""
    if not t.size:
        return None
    prev = np.empty_like(t)
    prev[0] = last_t
    prev[1:] = t[:-1]
    bad = np.flatnonzero(t < prev)
    if not bad.size:
        return None
    i = int(bad[0])
    return i, int(prev[i]), int(t[i])


def resolve_sensor(path: Path, width: int | None, height: int | None,
                   found: tuple[int, int]) -> tuple[int, int]:
    """The sensor size given by the caller, else `found` (from the header or the default)."""
    if (width is None) != (height is None):
        raise FormatError(path, "give both width and height, or neither")
    w, h = found if width is None else (width, height)
    if int(w) != w or int(h) != h or w <= 0 or h <= 0:
        raise FormatError(path, f"sensor size must be positive integers, got {w}x{h}")
    return int(w), int(h)


class ChunkedEventReader(ABC):
    """An `EventReader` over a chunk table; subclasses implement `_decode_chunk(k)`.

    `_decode_chunk(k)` returns the x, y, t, p columns of every event of chunk k, in file
    order (t int64 µs, p int8 ±1); `_decode_into` may write them straight into a larger
    output. x, y are checked against the sensor here unless the decoder already did. A
    reader keeps a read buffer and the last decoded chunk, so it is not thread-safe: give
    each thread its own (pickling, e.g. into DataLoader workers, drops both).
    """

    format_name = "events"

    def __init__(self, path: Path, width: int, height: int, table: ChunkTable):
        self.path = path
        self.width = int(width)
        self.height = int(height)
        self._table = table
        self._offsets = np.concatenate(([0], np.cumsum(table.count))).astype(np.int64)
        nonempty = np.flatnonzero(table.count > 0)
        self._nonempty = nonempty
        self._first_of_nonempty = table.t_first[nonempty]
        self._last_of_nonempty = table.t_last[nonempty]
        self._cache: tuple[int, Columns] | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_cache"] = None
        state.pop("_mapping", None)
        return state

    def _read(self, path: Path, offset: int, size: int) -> np.ndarray:
        """`size` bytes of `path` from `offset` as a read-only uint8 view of a memory map of
        the file (no copy; decoders copy what they keep). Call `_release` when done with it."""
        mapping = self.__dict__.get("_mapping")
        if mapping is None:
            if not size:
                return np.zeros(0, dtype=np.uint8)
            with open(path, "rb") as f:
                mapping = self._mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        if offset + size > len(mapping):
            raise FormatError(path, f"file ended after {len(mapping)} bytes (expected more)")
        return np.frombuffer(mapping, dtype=np.uint8, count=size, offset=offset)

    def _release_chunk(self, k: int) -> None:
        self._release(int(self._table.start[k]), int(self._table.stop[k] - self._table.start[k]))

    def _release(self, offset: int, size: int) -> None:
        """Drop the mapped pages of a processed byte range from this process's resident
        memory (the data stay in the page cache), so a pass over a file larger than
        `RELEASE_ABOVE` never holds it all; smaller files stay mapped for the next pass."""
        mapping = self.__dict__.get("_mapping")
        if mapping is None or len(mapping) <= RELEASE_ABOVE or not size:
            return
        if hasattr(mmap, "MADV_DONTNEED"):
            start = offset - offset % mmap.PAGESIZE
            mapping.madvise(mmap.MADV_DONTNEED, start, min(offset + size, len(mapping)) - start)

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def info(self) -> RecordingInfo:
        """Format, sensor size, event count and first/last timestamp (µs)."""
        if self._nonempty.size:
            t0 = int(self._table.t_first[self._nonempty[0]])
            t1 = int(self._table.t_last[self._nonempty[-1]])
        else:
            t0 = t1 = 0
        return RecordingInfo(self.format_name, self.width, self.height, len(self), t0, t1)

    # --- decoding -----------------------------------------------------------------------
    @abstractmethod
    def _decode_chunk(self, k: int) -> Columns:
        """x, y, t, p of every event of chunk k in file order (p int8 in {-1, +1})."""

    def _chunk(self, k: int) -> Columns:
        if self._cache is not None and self._cache[0] == k:
            return self._cache[1]
        cols = self._decode_chunk(k)
        self._release_chunk(k)
        n = int(self._table.count[k])
        if len(cols[2]) != n:
            raise FormatError(
                self.path, f"chunk {k} decoded to {len(cols[2])} events, the index says {n}"
            )
        self._cache = (k, cols)
        return cols

    def _check_coords(self, x: np.ndarray, y: np.ndarray) -> None:
        for name, v, size in (("x", x, self.width), ("y", y, self.height)):
            if v.size and (int(v.max()) >= size or int(v.min()) < 0):
                i = int(np.flatnonzero((v < 0) | (v >= size))[0])
                raise FormatError(
                    self.path, f"event {i} of the read has {name} = {int(v[i])}, outside "
                    f"the {self.width}x{self.height} sensor"
                )

    def _decoder_checks_coords(self) -> bool:
        """True when every decoded column already had x, y checked against the sensor."""
        return False

    def _make_events(self, cols: Columns) -> Events:
        """Events from decoded columns: coordinates are checked here unless the decoder did;
        time order and polarity were guaranteed by the decoders and the index pass."""
        x, y, t, p = cols
        if not self._decoder_checks_coords():
            self._check_coords(x, y)
        return Events._trusted(
            x.astype(np.int16, copy=False), y.astype(np.int16, copy=False),
            t.astype(np.int64, copy=False), p.astype(np.int8, copy=False),
            self.width, self.height,
        )

    # --- reads --------------------------------------------------------------------------
    def _decode_into(self, k: int, out: Columns) -> None:
        """Write chunk k's columns into `out` (views of exactly its event count)."""
        cols = self._chunk(k)
        if not self._decoder_checks_coords():
            self._check_coords(cols[0], cols[1])  # before any narrowing to int16
        for dst, src in zip(out, cols, strict=True):
            dst[...] = src

    def _gather(self, k0: int, k1: int) -> Columns:
        """Columns of chunks k0 <= k < k1 in file order, decoded straight into one output."""
        ks = [k for k in range(k0, k1) if self._table.count[k]]
        if len(ks) == 1:
            return self._chunk(ks[0])
        total = int(self._table.count[ks].sum()) if ks else 0
        out = tuple(np.empty(total, d) for d in (np.int16, np.int16, np.int64, np.int8))
        pos = 0
        for k in ks:
            n = int(self._table.count[k])
            self._decode_into(k, tuple(o[pos : pos + n] for o in out))
            self._release_chunk(k)
            pos += n
        return out

    def _slice(self, cols: Columns, a: int, b: int) -> Events:
        return self._make_events(tuple(c[a:b] for c in cols))

    def _chunk_of(self, i: int) -> int:
        """The chunk holding event i (the first chunk whose range ends after i)."""
        return int(np.searchsorted(self._offsets, i, side="right")) - 1

    def read_index(self, i0: int, i1: int) -> Events:
        """Events i0 <= i < i1 in file order (which is time order)."""
        n = len(self)
        if not 0 <= i0 <= i1 <= n:
            raise FormatError(self.path, f"event range [{i0}, {i1}) outside [0, {n}]")
        if i0 == i1:
            return Events.empty(self.width, self.height)
        k0 = self._chunk_of(i0)
        k1 = int(np.searchsorted(self._offsets, i1, side="left"))
        base = int(self._offsets[k0])
        return self._slice(self._gather(k0, k1), i0 - base, i1 - base)

    def first_index(self, t_us: int) -> int:
        """Index of the first event with t >= t_us (len(self) if none)."""
        j = int(np.searchsorted(self._last_of_nonempty, t_us, side="left"))
        if j == self._nonempty.size:
            return len(self)
        k = int(self._nonempty[j])
        inside = int(np.searchsorted(self._chunk(k)[2], t_us, side="left"))
        return int(self._offsets[k]) + inside

    def read_window(self, t0_us: int, t1_us: int) -> Events:
        """Events with t0_us <= t < t1_us; decodes only the chunks that overlap the window."""
        if t1_us < t0_us:
            raise FormatError(self.path, f"time window end {t1_us} µs < start {t0_us} µs")
        j0 = int(np.searchsorted(self._last_of_nonempty, t0_us, side="left"))
        j1 = int(np.searchsorted(self._first_of_nonempty, t1_us, side="left"))
        if j1 <= j0:
            return Events.empty(self.width, self.height)
        cols = self._gather(int(self._nonempty[j0]), int(self._nonempty[j1 - 1]) + 1)
        a, b = np.searchsorted(cols[2], [t0_us, t1_us], side="left")
        return self._slice(cols, int(a), int(b))

    def read_last(self, t_us: int, n: int) -> Events:
        """The last n events with t < t_us (fewer if the recording has fewer)."""
        if n < 0:
            raise FormatError(self.path, f"n must be >= 0, got {n}")
        j = int(np.searchsorted(self._last_of_nonempty, t_us, side="left"))
        if j == self._nonempty.size:
            return self.read_index(max(0, len(self) - n), len(self))
        k_end = int(self._nonempty[j])
        k_start = self._chunk_of(max(0, int(self._offsets[k_end]) - n))
        cols = self._gather(k_start, k_end + 1)
        b = int(np.searchsorted(cols[2], t_us, side="left"))
        return self._slice(cols, max(0, b - n), b)

    def read_all(self) -> Events:
        """Every event of the recording (loads it whole: prefer windows for long files)."""
        return self.read_index(0, len(self))
