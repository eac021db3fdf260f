"""Prophesee recordings: DAT (N-CARS, Gen1 ATIS), EVT 2.0 and EVT 3.0 `.raw`, streamed.

Layouts (formats.md §5):
- all three start with `%` text lines (`% evt 3.0`, `% format EVT3;height=720;width=1280`,
  `% geometry 640x480`, `% plugin_name hal_plugin_gen3_fx3`, DAT: `% Width 304` ...), ended by
  `% end` or by the first line that does not start with `%`; a `%` followed by non-text
  bytes is data (a first word whose low byte is 0x25), not a header line;
- DAT: then one byte event type (0 or 12: CD) and one byte event size (8), then 8-byte records
  u32 t (µs) + u32 w with x = w & 0x3FFF, y = (w >> 14) & 0x3FFF, p = w >> 28 in {0, 1};
- EVT 2.0: little-endian u32 words, type = w >> 28 (`_evt_numpy` has the decoding rules);
- EVT 3.0: little-endian u16 words, type = w >> 12, decoded strictly per the Prophesee spec.

Sensor size: the caller's `width`/`height`, else the header's geometry (`% geometry`, the
`% format` options, DAT `% Width`/`% Height`), else the sensor generation named by
`% sensor_generation` / `% plugin_name` (Gen3: 640×480, Gen4 / IMX636: 1280×720, GenX320:
320×320), else 1280×720 for `.raw` (the default of Prophesee's reference decoder) and 304×240
(ATIS Gen1) for DAT.

Streaming: opening scans the file once in chunks (`_chunked`) to index event counts, first /
last timestamps and, for EVT, the decoder state at each chunk start; reads decode only the
chunks they touch. Timestamps must not decrease (a FormatError names the byte); events
before the first TIME_HIGH word are dropped, as the reference decoders do. `engine` picks the
decoder: "numpy" (vectorised), "numba" (compiled kernels, needs numba) or "auto" (numba when
installed). Both give identical events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np

from evtransfer.events import Events
from evtransfer.io import _evt_numpy as evtnp
from evtransfer.io._chunked import (
    ChunkedEventReader,
    ChunkTable,
    Columns,
    first_decrease,
    read_bytes,
    resolve_sensor,
    split_ranges,
)
from evtransfer.io.base import FormatError

ENGINES = ("auto", "numpy", "numba")
RAW_DEFAULT_SIZE = (1280, 720)
DAT_DEFAULT_SIZE = (304, 240)
_MAX_HEADER_BYTES = 1 << 20
_TEXT = frozenset(range(32, 127)) | {9, 13}  # printable ASCII, tab, carriage return
# Longest name first: "gen31" must win over "gen3".
_SENSOR_NAMES = (
    ("genx320", (320, 320)),
    ("imx636", (1280, 720)),
    ("imx646", (1280, 720)),
    ("gen41", (1280, 720)),
    ("gen4", (1280, 720)),
    ("gen31", (640, 480)),
    ("gen3", (640, 480)),
)
_GENERATIONS = {"3": (640, 480), "4": (1280, 720)}


# --- header ----------------------------------------------------------------------------
@dataclass(frozen=True)
class PropheseeHeader:
    """The `%` text header: its size in bytes and its `key value` lines (keys lowercased)."""

    path: Path
    size: int
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def encoding(self) -> str | None:
        """"evt2", "evt3", "evt21" (unsupported) or another name as written; None if absent."""
        if "format" in self.fields:
            name = self.fields["format"].split(";")[0].strip().lower()
            return {"evt2": "evt2", "evt3": "evt3", "evt21": "evt21"}.get(name, name)
        if "evt" in self.fields:
            version = self.fields["evt"].strip()
            return {"2.0": "evt2", "3.0": "evt3", "2.1": "evt21"}.get(version, f"evt {version}")
        return None

    def _int(self, key: str, text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise FormatError(self.path, f"header {key} {text!r} is not an integer") from None
        if value <= 0:
            raise FormatError(self.path, f"header {key} must be positive, got {value}")
        return value

    def geometry(self) -> tuple[int, int] | None:
        """(width, height) written in the header or implied by the sensor it names."""
        f = self.fields
        if "geometry" in f:
            w, sep, h = f["geometry"].lower().partition("x")
            if not sep:
                raise FormatError(self.path, f"header geometry {f['geometry']!r} is not WxH")
            return self._int("geometry width", w), self._int("geometry height", h)
        if "format" in f:
            opts = dict(o.partition("=")[::2] for o in f["format"].split(";")[1:])
            if "width" in opts and "height" in opts:
                return self._int("width", opts["width"]), self._int("height", opts["height"])
        if "width" in f and "height" in f:
            return self._int("Width", f["width"]), self._int("Height", f["height"])
        generation = f.get("sensor_generation", "").split(".")[0].strip()
        if generation in _GENERATIONS:
            return _GENERATIONS[generation]
        names = " ".join(f.get(k, "") for k in ("plugin_name", "sensor_name")).lower()
        return next((size for key, size in _SENSOR_NAMES if key in names), None)


def read_header(path: str | Path) -> PropheseeHeader:
    """Parse the `%` header lines at the start of a Prophesee file (none is fine)."""
    path = Path(path)
    fields: dict[str, str] = {}
    size = 0
    with open(path, "rb") as f:
        while f.read(1) == b"%":
            line = f.readline(_MAX_HEADER_BYTES)
            if not _TEXT.issuperset(line.rstrip(b"\n")):
                break  # binary bytes: this '%' is the first data byte, not a header line
            if not line.endswith(b"\n"):
                raise FormatError(path, f"header line at byte {size} is not terminated")
            size += 1 + len(line)
            if size > _MAX_HEADER_BYTES:
                raise FormatError(path, "text header longer than 1 MiB")
            text = line.decode("latin-1").strip()
            if text == "end":
                break
            key, _, value = text.partition(" ")
            fields[key.lower()] = value.strip()
    return PropheseeHeader(path, size, fields)


def _kernels(engine: str) -> ModuleType | None:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "numpy":
        return None
    try:
        from evtransfer.io import _evt_numba
    except ImportError:
        if engine == "numba":
            raise ValueError("engine='numba' needs the numba package") from None
        return None
    return _evt_numba


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    return path


# --- DAT -------------------------------------------------------------------------------
class DatReader(ChunkedEventReader):
    """A Prophesee DAT file (N-CARS, Gen1) opened for streaming reads.

    `width`/`height` override the sensor size (module doc); `engine` is "auto", "numpy" or
    "numba"; `chunk_events` records make one index chunk. Reads (`read_window`, `read_last`,
    `read_index`, `read_all`) return `Events`: x, y int16, t int64 µs, p int8 ±1.
    """

    format_name = "dat"

    def __init__(self, path: str | Path, *, width: int | None = None,
                 height: int | None = None, engine: str = "auto", chunk_events: int = 1 << 20):
        path = _existing(path)
        self.engine = engine
        kernels = _kernels(engine)
        header = read_header(path)
        begin = header.size + 2
        end = path.stat().st_size
        if end < begin:
            raise FormatError(path, "file ends before the event type and size bytes")
        ev_type, ev_size = (int(b) for b in read_bytes(path, header.size, 2))
        if ev_size != 8:
            raise FormatError(path, f"event size byte is {ev_size}; DAT CD records have 8 bytes")
        if ev_type not in (0, 12):
            raise FormatError(path, f"event type byte is {ev_type}, not a CD event type (0, 12)")
        if (end - begin) % 8:
            raise FormatError(
                path, f"truncated: {(end - begin) % 8} bytes after the last whole 8-byte record"
            )
        size = resolve_sensor(path, width, height, header.geometry() or DAT_DEFAULT_SIZE)
        rows, last = [], np.iinfo(np.int64).min
        for a, b in split_ranges(begin, end, 8 * int(chunk_events)):
            rec = self._records(path, a, b)
            bad = self._first_decrease(kernels, rec, last)
            self._release(a, b - a)
            if bad is not None:
                raise FormatError(
                    path, f"timestamps decrease at byte {a + 8 * bad[0]}: {bad[1]} -> {bad[2]} µs"
                )
            last = int(rec[-1, 0])
            rows.append((a, b, len(rec), int(rec[0, 0]), last))
        super().__init__(path, *size, ChunkTable.build(rows))

    def _records(self, path: Path, a: int, b: int) -> np.ndarray:
        return self._read(path, a, b - a).view("<u4").astype(np.uint32, copy=False).reshape(-1, 2)

    def _decoder_checks_coords(self) -> bool:
        return _kernels(self.engine) is not None

    @staticmethod
    def _first_decrease(kernels: ModuleType | None, rec: np.ndarray, last: int):
        if kernels is not None and kernels.dat_scan(rec, last):
            return None
        return first_decrease(rec[:, 0].astype(np.int64), last)

    def _decode_chunk(self, k: int) -> Columns:
        n = int(self._table.count[k])
        out = tuple(np.empty(n, d) for d in (np.int16, np.int16, np.int64, np.int8))
        self._decode_into(k, out)
        return out

    def _decode_into(self, k: int, out: Columns) -> None:
        a = int(self._table.start[k])
        rec = self._records(self.path, a, int(self._table.stop[k]))
        kernels = _kernels(self.engine)
        if kernels is not None:
            _, code, i = kernels.dat_decode(rec, *out, self.width, self.height)
            if code:
                raise FormatError(self.path, f"record at byte {a + 8 * i}: {_ERRORS[code]}")
            return
        w = rec[:, 1]
        pol = w >> 28
        bad = np.flatnonzero(pol > 1)
        if bad.size:
            i = int(bad[0])
            raise FormatError(self.path, f"record at byte {a + 8 * i}: {_ERRORS[5]} "
                              f"(field = {int(pol[i])})")
        p = (pol.astype(np.int8) << 1) - 1
        for dst, src in zip(out, (w & 0x3FFF, (w >> 14) & 0x3FFF, rec[:, 0], p), strict=True):
            dst[...] = src


# --- EVT 2.0 / 3.0 ---------------------------------------------------------------------
class _EvtReader(ChunkedEventReader):
    """Shared by EVT 2.0 and 3.0: header checks, the index pass and chunk decoding.

    `width`/`height` override the sensor size (module doc); `engine` is "auto", "numpy" or
    "numba"; `chunk_words` words make one index chunk (default 2^20 for EVT 2.0, 2^19 for
    EVT 3.0, whose words carry up to 12 events). Reads return `Events`: x, y int16,
    t int64 µs, p int8 ±1.
    """

    word = np.dtype("<u4")
    kernel_name = ""
    chunk_words = 1 << 20

    def __init__(self, path: str | Path, *, width: int | None = None,
                 height: int | None = None, engine: str = "auto",
                 chunk_words: int | None = None):
        path = _existing(path)
        self.engine = engine
        kernels = _kernels(engine)
        header = read_header(path)
        if header.encoding not in (None, self.format_name):
            raise FormatError(path, f"header says encoding {header.encoding!r}, "
                              f"not {self.format_name!r}")
        end = path.stat().st_size
        spare = (end - header.size) % self.word.itemsize
        if spare:
            raise FormatError(path, f"truncated: {spare} bytes after the last whole "
                              f"{8 * self.word.itemsize}-bit word")
        size = resolve_sensor(path, width, height, header.geometry() or RAW_DEFAULT_SIZE)
        step = self.word.itemsize * int(chunk_words or self.chunk_words)
        rows, states = [], []
        state = evtnp.new_state()
        for a, b in split_ranges(header.size, end, step):
            states.append(state)
            words = self._words(path, a, b)
            count, t_first, t_last, state, error = self._scan(kernels, words, state)
            self._release(a, b - a)
            if error is not None:
                raise FormatError(path, f"byte {a + self.word.itemsize * error[0]}: {error[1]}")
            rows.append((a, b, count, t_first, t_last))
        self._states = np.array(states, dtype=np.int64).reshape(-1, evtnp.STATE_SIZE)
        super().__init__(path, *size, ChunkTable.build(rows))

    def _decoder_checks_coords(self) -> bool:
        return _kernels(self.engine) is not None

    def _words(self, path: Path, a: int, b: int) -> np.ndarray:
        native = self.word.newbyteorder("=")
        return self._read(path, a, b - a).view(self.word).astype(native, copy=False)

    def _scan(self, kernels: ModuleType | None, words: np.ndarray,
              state: np.ndarray) -> evtnp.Scan:
        if kernels is not None:
            after = state.copy()
            n, t_first, t_last, ok = getattr(kernels, self.kernel_name + "_scan")(words, after)
            if ok:
                return evtnp.Scan(n, t_first, t_last, after, None)
        return self.numpy_scan(words, state)  # also names the problem a kernel flagged

    def _decode_chunk(self, k: int) -> Columns:
        a = int(self._table.start[k])
        words = self._words(self.path, a, int(self._table.stop[k]))
        if _kernels(self.engine) is None:
            return self.numpy_decode(words, self._states[k])
        n = int(self._table.count[k])
        out = tuple(np.empty(n, d) for d in (np.int16, np.int16, np.int64, np.int8))
        self._kernel_decode(words, k, out)
        return out

    def _decode_into(self, k: int, out: Columns) -> None:
        if _kernels(self.engine) is None:
            return super()._decode_into(k, out)
        self._kernel_decode(self._words(self.path, int(self._table.start[k]),
                                        int(self._table.stop[k])), k, out)

    def _kernel_decode(self, words: np.ndarray, k: int, out: Columns) -> None:
        kernel = getattr(_kernels(self.engine), self.kernel_name + "_decode")
        got, code, offset = kernel(words, self._states[k], *out, self.width, self.height)
        if code:
            at = int(self._table.start[k]) + self.word.itemsize * int(offset)
            raise FormatError(self.path, f"byte {at}: {_ERRORS[int(code)]}")
        if got != len(out[0]):
            raise FormatError(self.path, f"chunk {k} decoded to {got} events, the index says "
                              f"{len(out[0])}")


_ERRORS = {  # decode kernel error codes
    3: "x outside the sensor",
    4: "y outside the sensor",
    5: "polarity field not 0 or 1",
}


class Evt2Reader(_EvtReader):
    """A Prophesee EVT 2.0 `.raw` recording opened for streaming reads."""

    format_name = "evt2"
    word = np.dtype("<u4")
    kernel_name = "evt2"
    chunk_words = 1 << 20
    numpy_scan = staticmethod(evtnp.scan_evt2)
    numpy_decode = staticmethod(evtnp.decode_evt2)


class Evt3Reader(_EvtReader):
    """A Prophesee EVT 3.0 `.raw` recording opened for streaming reads."""

    format_name = "evt3"
    word = np.dtype("<u2")
    kernel_name = "evt3"
    chunk_words = 1 << 19
    numpy_scan = staticmethod(evtnp.scan_evt3)
    numpy_decode = staticmethod(evtnp.decode_evt3)


def read_dat(path: str | Path, **options) -> Events:
    """Every event of a DAT file (options as `DatReader`)."""
    return DatReader(path, **options).read_all()


def read_evt2(path: str | Path, **options) -> Events:
    """Every event of an EVT 2.0 `.raw` file (options as `Evt2Reader`)."""
    return Evt2Reader(path, **options).read_all()


def read_evt3(path: str | Path, **options) -> Events:
    """Every event of an EVT 3.0 `.raw` file (options as `Evt3Reader`)."""
    return Evt3Reader(path, **options).read_all()


EVT2_MAX_T_US = (1 << 34) - 1  # TIME_HIGH holds t >> 6 in 28 bits


class Evt2Writer:
    """Write time-sorted `Events` as an EVT 2.0 `.raw` file, batch after batch (streamed).

    Header `% evt 2.0`, `% format EVT2;height=H;width=W`, `% geometry WxH`, `% end`; then a
    TIME_HIGH word (type 0x8, t >> 6) whenever t >> 6 changes and one CD word per event (type
    0x1 ON / 0x0 OFF, t & 63 in bits 22-27, x in 11-21, y in 0-10). x, y < 2048 and t <
    2^34 µs (about 4.8 hours) fit the format; anything else is a ValueError."""

    def __init__(self, path: str | Path, width: int, height: int):
        if not (0 < width <= 2048 and 0 < height <= 2048):
            raise ValueError(f"{path}: EVT 2.0 holds sensors up to 2048x2048, got "
                             f"{width}x{height}")
        self.path, self.width, self.height = Path(path), int(width), int(height)
        self._high, self._last_t = -1, -1
        self._file = open(self.path, "wb")  # closed by close() / abort()
        self._file.write("".join(f"% {line}\n" for line in (
            "evt 2.0", f"format EVT2;height={height};width={width}", f"geometry {width}x{height}",
            "end")).encode())

    def write(self, events: Events) -> None:
        """Append `events` (on this writer's sensor, t not before the last written t)."""
        if not len(events):
            return
        if events.sensor_size != (self.width, self.height):
            raise ValueError(f"{self.path}: events of a {events.sensor_size} sensor, writer "
                             f"is {self.width}x{self.height}")
        t = events.t.astype(np.int64)
        if t[0] < max(self._last_t, 0) or t[-1] > EVT2_MAX_T_US or np.any(np.diff(t) < 0):
            raise ValueError(f"{self.path}: EVT 2.0 needs non-decreasing t in [0, 2^34) µs; "
                             f"got [{t.min()}, {t.max()}] after {self._last_t}")
        high = t >> 6
        new_high = np.diff(high, prepend=self._high) != 0
        cd = ((events.p > 0).astype(np.uint32) << 28) | ((t & 0x3F).astype(np.uint32) << 22) \
            | (events.x.astype(np.uint32) << 11) | events.y.astype(np.uint32)
        words = np.empty(len(t) + int(new_high.sum()), np.uint32)
        at = np.arange(len(t)) + np.cumsum(new_high)  # each CD word after its TIME_HIGH
        words[at] = cd
        words[at[new_high] - 1] = (0x8 << 28) | high[new_high].astype(np.uint32)
        self._file.write(words.astype("<u4").tobytes())
        self._high, self._last_t = int(high[-1]), int(t[-1])

    def close(self) -> Path:
        """Finish the file; returns its path."""
        self._file.close()
        return self.path

    def abort(self) -> None:
        """Close and delete a partly written file."""
        self._file.close()
        self.path.unlink(missing_ok=True)
