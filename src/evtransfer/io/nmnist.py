"""N-MNIST / N-Caltech101 `.bin` recordings (40-bit events), streamed.

Layout (formats.md §4, after Orchard et al.'s loader as in tonic `read_mnist_file`): 5 bytes
per event, b0 = x, b1 = y, p = bit 7 of b2 (1: ON -> +1, 0: OFF -> -1),
t = ((b2 & 0x7F) << 16) | (b3 << 8) | b4 in µs. A record with y == 240 marks a timestamp
overflow: 2^13 µs is added to every later t and the marker itself is dropped.

Sensor size: the caller's `width`/`height`; otherwise 34×34 (N-MNIST) when every event fits
in it, else the bounding size max(x) + 1 × max(y) + 1 (N-Caltech101 recordings differ in
size per file). Opening scans the file once in chunks (count, first/last t, overflow markers
before each chunk, largest x and y) and rejects decreasing timestamps; reads decode only the
chunks they touch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evtransfer.events import Events
from evtransfer.io._chunked import (
    ChunkedEventReader,
    ChunkTable,
    Columns,
    first_decrease,
    resolve_sensor,
    split_ranges,
)
from evtransfer.io.base import FormatError

NMNIST_SIZE = (34, 34)
OVERFLOW_Y = 240
OVERFLOW_US = 1 << 13


def _decode(raw: np.ndarray, markers_before: int) -> tuple[Columns, int]:
    """Events of (N, 5) uint8 records after `markers_before` overflow markers."""
    y = raw[:, 1]
    marker = y == OVERFLOW_Y
    t = (
        ((raw[:, 2].astype(np.int64) & 0x7F) << 16)
        | (raw[:, 3].astype(np.int64) << 8)
        | raw[:, 4].astype(np.int64)
    )
    t += OVERFLOW_US * (markers_before + np.cumsum(marker, dtype=np.int64))
    keep = ~marker
    p = ((raw[keep, 2] >> 7).astype(np.int8) << 1) - 1
    cols = (raw[keep, 0].astype(np.int16), y[keep].astype(np.int16), t[keep], p)
    return cols, markers_before + int(np.count_nonzero(marker))


class NmnistReader(ChunkedEventReader):
    """An N-MNIST / N-Caltech101 `.bin` file opened for streaming reads."""

    format_name = "nmnist-bin"

    def __init__(self, path: str | Path, *, width: int | None = None,
                 height: int | None = None, chunk_events: int = 1 << 20):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        end = path.stat().st_size
        if end % 5:
            raise FormatError(path, f"size {end} B is not a multiple of the 5-byte event "
                              f"record ({end % 5} bytes left over): truncated or not a .bin")
        rows, markers = [], [0]
        last, max_x, max_y = np.iinfo(np.int64).min, -1, -1
        for a, b in split_ranges(0, end, 5 * int(chunk_events)):
            (x, y, t, _), n_markers = _decode(self._records(path, a, b), markers[-1])
            self._release(a, b - a)
            bad = first_decrease(t, last)
            if bad is not None:
                raise FormatError(path, f"timestamps decrease at event {bad[0]} of the chunk "
                                  f"at byte {a}: {bad[1]} -> {bad[2]} µs")
            if t.size:
                last = int(t[-1])
                max_x, max_y = max(max_x, int(x.max())), max(max_y, int(y.max()))
            rows.append((a, b, t.size, int(t[0]) if t.size else 0, last if t.size else 0))
            markers.append(n_markers)
        fits = max_x < NMNIST_SIZE[0] and max_y < NMNIST_SIZE[1]
        found = NMNIST_SIZE if fits else (max_x + 1, max_y + 1)
        size = resolve_sensor(path, width, height, found)
        if max_x >= size[0] or max_y >= size[1]:
            raise FormatError(path, f"events reach x={max_x}, y={max_y}, outside the "
                              f"{size[0]}x{size[1]} sensor")
        self._markers = np.array(markers[:-1], dtype=np.int64)
        super().__init__(path, *size, ChunkTable.build(rows))

    def _records(self, path: Path, a: int, b: int) -> np.ndarray:
        return self._read(path, a, b - a).reshape(-1, 5)

    def _decode_chunk(self, k: int) -> Columns:
        raw = self._records(self.path, int(self._table.start[k]), int(self._table.stop[k]))
        return _decode(raw, int(self._markers[k]))[0]


def read_nmnist(path: str | Path, **options) -> Events:
    """Every event of a `.bin` file (options as `NmnistReader`)."""
    return NmnistReader(path, **options).read_all()
