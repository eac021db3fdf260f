"""AEDAT4 recordings (iniVation DV), read through the `aedat` package, streamed by packet.

Layout (formats.md §6): magic `#!AER-DAT4.0\\r\\n`, a flatbuffer header naming the streams
(events, frames, IMU, triggers) and their sizes, then compressed packets of one stream each.
An events packet holds t (µs, the camera's clock: usually Unix time), x, y and an ON flag
(ON -> +1, OFF -> -1). `aedat` (MIT, a Rust decoder) is imported only when a file is opened.

Streaming: the packets of the chosen events stream are the chunks of the index built on
open (count, first/last t; timestamps must not decrease). `aedat` cannot seek, so a read
walks the file from the start, or from where the previous read stopped when it lies ahead:
reading consecutive windows costs one pass in total, and memory stays bounded by a window.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from evtransfer.events import Events
from evtransfer.io._chunked import (
    ChunkedEventReader,
    ChunkTable,
    Columns,
    first_decrease,
    resolve_sensor,
)
from evtransfer.io.base import FormatError

MAGIC = b"#!AER-DAT4.0\r\n"


def _panic(exc: BaseException) -> bool:
    """True for pyo3's PanicException (a BaseException): `aedat` panics on some corrupt
    flatbuffers instead of raising an error."""
    return type(exc).__name__ == "PanicException"


def _aedat():
    try:
        import aedat
    except ImportError:
        raise ModuleNotFoundError("reading AEDAT4 needs the `aedat` package (a default "
                                  "dependency where its wheels exist): pip install aedat",
                                  name="aedat") from None
    return aedat


def _check_header(path: Path) -> None:
    """Check the magic and the header flatbuffer up to its XML description (IOHeader table:
    0 compression, 1 data table position, 2 description string) before `aedat` sees it:
    `aedat` 2.3 aborts the whole process on a description that is not UTF-8."""
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise FormatError(path, "no AEDAT 4.0 magic '#!AER-DAT4.0' at the start")
        size = f.read(4)
        buf = f.read(struct.unpack("<I", size)[0]) if len(size) == 4 else b""
    if len(size) < 4 or len(buf) < struct.unpack("<I", size)[0]:
        raise FormatError(path, "file ends inside the AEDAT4 header")

    def read(fmt: str, pos: int) -> int:
        if not 0 <= pos <= len(buf) - struct.calcsize(fmt):
            raise FormatError(path, f"corrupt AEDAT4 header: offset {pos} outside its {len(buf)} B")
        return struct.unpack_from(fmt, buf, pos)[0]

    table = read("<I", 0)
    vtable = table - read("<i", table)
    if read("<H", vtable) < 10 or not read("<H", vtable + 8):
        raise FormatError(path, "AEDAT4 header has no stream description")
    field = table + read("<H", vtable + 8)
    text = field + read("<I", field)
    n = read("<I", text)
    if text + 4 + n > len(buf):
        raise FormatError(path, "corrupt AEDAT4 header: description runs past its end")
    try:
        buf[text + 4 : text + 4 + n].decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError(path, "corrupt AEDAT4 header: description is not UTF-8") from None


class Aedat4Reader(ChunkedEventReader):
    """The polarity events of one stream of an AEDAT4 file, opened for streaming reads.

    `stream_id` picks the events stream (default: the lowest-numbered one); `width` and
    `height` override the size the file declares.
    """

    format_name = "aedat4"

    def __init__(self, path: str | Path, *, stream_id: int | None = None,
                 width: int | None = None, height: int | None = None):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        _check_header(path)
        streams = self._streams(path)
        if stream_id is None:
            if not streams:
                raise FormatError(path, "the file declares no events stream")
            stream_id = min(streams)
        if stream_id not in streams:
            raise FormatError(path, f"no events stream {stream_id}; events streams: "
                              f"{sorted(streams)}")
        self.stream_id = int(stream_id)
        declared = streams[stream_id]
        rows, last = [], np.iinfo(np.int64).min
        for ordinal, packet in self._packets(path):
            t = packet["t"].astype(np.int64)
            bad = first_decrease(t, last)
            if bad is not None:
                raise FormatError(path, f"timestamps decrease in packet {ordinal}, event "
                                  f"{bad[0]}: {bad[1]} -> {bad[2]} µs")
            if t.size:
                last = int(t[-1])
                rows.append((ordinal, ordinal + 1, t.size, int(t[0]), last))
        size = resolve_sensor(path, width, height, declared)
        self._cursor: tuple[int, Iterator] | None = None
        super().__init__(path, *size, ChunkTable.build(rows))

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_cursor"] = None
        return state

    @staticmethod
    def _streams(path: Path) -> dict[int, tuple[int, int]]:
        try:
            described = _aedat().Decoder(str(path)).id_to_stream()
        except (OSError, RuntimeError, ValueError) as exc:
            raise FormatError(path, f"unreadable AEDAT4 header: {exc}") from None
        except BaseException as exc:
            if not _panic(exc):
                raise
            raise FormatError(path, f"corrupt AEDAT4 header (decoder panic: {exc})") from None
        return {
            int(sid): (int(s["width"]), int(s["height"]))
            for sid, s in described.items()
            if s.get("type") == "events"
        }

    def _packets(self, path: Path, start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """(ordinal, events) for each packet of the stream; ordinals count every packet."""
        try:
            decoder = _aedat().Decoder(str(path))
            for ordinal, packet in enumerate(decoder):
                if ordinal >= start and packet["stream_id"] == self.stream_id:
                    if "events" in packet:
                        yield ordinal, packet["events"]
        except (OSError, RuntimeError, ValueError) as exc:
            raise FormatError(path, f"corrupt AEDAT4 packet: {exc}") from None
        except BaseException as exc:
            if not _panic(exc):
                raise
            raise FormatError(path, f"corrupt AEDAT4 packet (decoder panic: {exc})") from None

    def _decode_chunk(self, k: int) -> Columns:
        ordinal = int(self._table.start[k])
        if self._cursor is None or self._cursor[0] > ordinal:
            self._cursor = (ordinal, self._packets(self.path, ordinal))
        for got, events in self._cursor[1]:
            self._cursor = (got + 1, self._cursor[1])
            if got == ordinal:
                pol = (events["on"].astype(np.int8) << 1) - 1
                return events["x"], events["y"], events["t"].astype(np.int64), pol
        raise FormatError(self.path, f"packet {ordinal} vanished since the file was indexed")


def read_aedat4(path: str | Path, **options) -> Events:
    """Every polarity event of an AEDAT4 file (options as `Aedat4Reader`)."""
    return Aedat4Reader(path, **options).read_all()
