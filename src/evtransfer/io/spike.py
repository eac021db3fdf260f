"""Spike-camera streams: PKU Vidar `.dat` bitstreams and spike arrays in `.npy` / `.npz`.

`.dat` layout (formats.md §7; Spike-Zoo `load_vidar_dat` / `save_vidar_dat`, SpikeCV
`load_dat`): no header; frame after frame of ceil(H·W / 8) bytes; bit b of byte k is pixel
8k + b of the frame in row-major order (LSB-first), stored upside down, so rows are flipped
(`flipud`) after reshaping to (H, W). Options cover the known variants: `bitorder="big"`
for MSB-first files, `flipud=False`, and `remove_head=True` to strip the 16 extra columns on
the right of raw sps10 frames (W = 416 -> 400). recVidarReal2019 and Spike-Zoo data are
250×400 at 20 kHz, the defaults here. The format has no header, so `write_spike_dat(...,
sidecar=True)` also writes `NAME.dat.json` (width, height, rate, first time, bit order, flip),
which the reader takes its defaults from: a file we write reads back at its own size.

Streaming: frames are fixed-size records, so a frame range is one seek and one read; the
result is bit-packed `Spikes` (T, H, ceil(W/8)) LSB-first, 8× smaller than unpacked.
Arrays (`.npy`, memory-mapped; `.npz`, e.g. UHSR with keys `spk` (T, H, W) and `label`) hold
spikes as (T, H, W) {0, 1}; they are already upright unless `flipud` says otherwise, and
`bitorder="big"` mirrors every 8-column block back (BiCross' Respike arrays were unpacked
MSB-first).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evtransfer.events import EventsError, Spikes
from evtransfer.io._chunked import read_bytes
from evtransfer.io.base import FormatError

DAT_DEFAULT_SIZE = (250, 400)  # (height, width): recVidarReal2019, Spike-Zoo
DEFAULT_RATE_HZ = 20000.0
DAT_DEFAULTS = {"height": DAT_DEFAULT_SIZE[0], "width": DAT_DEFAULT_SIZE[1], "bitorder": "little",
                "flipud": True, "rate_hz": DEFAULT_RATE_HZ, "t0_us": 0}
HEAD_COLUMNS = 16
_WRITE_BLOCK = 256  # frames per write, to bound memory
_REVERSE = np.array([int(f"{i:08b}"[::-1], 2) for i in range(256)], dtype=np.uint8)


@dataclass(frozen=True)
class SpikeInfo:
    """Summary of a spike recording: size (pixels), frame count, rate and first/last t (µs)."""

    format: str
    width: int
    height: int
    frames: int
    rate_hz: float
    t_start_us: int
    t_end_us: int


def _check_bitorder(bitorder: str) -> None:
    if bitorder not in ("little", "big"):
        raise ValueError(f"bitorder must be 'little' or 'big', got {bitorder!r}")


def _frame_range(path: Path, frames: tuple[int, int] | None, total: int) -> tuple[int, int]:
    k0, k1 = (0, total) if frames is None else (int(frames[0]), int(frames[1]))
    if not 0 <= k0 <= k1 <= total:
        raise FormatError(path, f"frame range [{k0}, {k1}) outside the {total} frames")
    return k0, k1


def _info(fmt: str, width: int, height: int, frames: int, rate_hz: float, t0_us: int):
    last = t0_us + round((frames - 1) * 1e6 / rate_hz) if frames else t0_us
    return SpikeInfo(fmt, width, height, frames, rate_hz, t0_us, last)


class SpikeDatReader:
    """A spike-camera `.dat` file opened for reading frame ranges (see the module doc)."""

    format_name = "spike-dat"

    def __init__(self, path: str | Path, height: int | None = None, width: int | None = None,
                 *, bitorder: str | None = None, flipud: bool | None = None,
                 remove_head: bool = False, rate_hz: float | None = None,
                 t0_us: int | None = None):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        given = {"height": height, "width": width, "bitorder": bitorder, "flipud": flipud,
                 "rate_hz": rate_hz, "t0_us": t0_us}
        found = {**DAT_DEFAULTS, **read_sidecar(path)}
        height, width, bitorder, flipud, rate_hz, t0_us = (
            found[k] if v is None else v for k, v in given.items())
        _check_bitorder(bitorder)
        if height <= 0 or width <= 0:
            raise FormatError(path, f"frame size must be positive, got {height}x{width}")
        if remove_head and width <= HEAD_COLUMNS:
            raise FormatError(path, f"remove_head needs width > {HEAD_COLUMNS}, got {width}")
        if not np.isfinite(rate_hz) or rate_hz <= 0:
            raise FormatError(path, f"rate_hz must be positive, got {rate_hz}")
        self.frame_bytes = (height * width + 7) // 8
        size = path.stat().st_size
        if size % self.frame_bytes:
            raise FormatError(path, f"size {size} B is not a whole number of {height}x{width} "
                              f"frames ({self.frame_bytes} B each): {size % self.frame_bytes} "
                              "bytes left over (wrong size or truncated file)")
        self.path, self.height, self.width = path, int(height), int(width)
        self.bitorder, self.flipud, self.remove_head = bitorder, flipud, remove_head
        self.rate_hz, self.t0_us = float(rate_hz), int(t0_us)
        self.frames = size // self.frame_bytes

    def __len__(self) -> int:
        return self.frames

    def info(self) -> SpikeInfo:
        """Output size (after head removal), frame count, rate and first/last frame time."""
        width = self.width - HEAD_COLUMNS * self.remove_head
        return _info(self.format_name, width, self.height, self.frames, self.rate_hz, self.t0_us)

    def read_frames(self, k0: int, k1: int) -> Spikes:
        """Frames k0 <= k < k1 as bit-packed `Spikes` (T, H, ceil(W/8)) uint8."""
        k0, k1 = _frame_range(self.path, (k0, k1), self.frames)
        raw = read_bytes(self.path, k0 * self.frame_bytes, (k1 - k0) * self.frame_bytes)
        raw = raw.reshape(k1 - k0, self.frame_bytes)
        if self.bitorder == "big":
            raw = _REVERSE[raw]
        h, w = self.height, self.width
        if w % 8 == 0:
            packed = raw.reshape(-1, h, w // 8)
            if self.flipud:
                packed = packed[:, ::-1]
            if self.remove_head:
                packed = packed[:, :, : -HEAD_COLUMNS // 8]
            data, out_w = np.ascontiguousarray(packed), w - HEAD_COLUMNS * self.remove_head
        else:
            bits = np.unpackbits(raw, axis=1, bitorder="little")[:, : h * w].reshape(-1, h, w)
            if self.flipud:
                bits = bits[:, ::-1]
            if self.remove_head:
                bits = bits[:, :, :-HEAD_COLUMNS]
            out_w = bits.shape[2]
            data = np.packbits(bits, axis=-1, bitorder="little")
        t0 = self.t0_us + round(k0 * 1e6 / self.rate_hz)
        return Spikes(data, self.rate_hz, width=out_w, packed=True, t0_us=t0)

    def read_window(self, t0_us: int, t1_us: int) -> Spikes:
        """Frames read out at t0_us <= t < t1_us."""
        if t1_us < t0_us:
            raise FormatError(self.path, f"time window end {t1_us} µs < start {t0_us} µs")
        times = self.t0_us + np.rint(np.arange(self.frames) * 1e6 / self.rate_hz)
        k0, k1 = np.searchsorted(times, [t0_us, t1_us], side="left")
        return self.read_frames(int(k0), int(k1))


def sidecar_path(path: str | Path) -> Path:
    """`NAME.dat.json` beside `NAME.dat`."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def read_sidecar(path: str | Path) -> dict:
    """The facts `write_spike_dat(sidecar=True)` stored beside a `.dat` ({} if none)."""
    side = sidecar_path(path)
    if not side.is_file():
        return {}
    try:
        facts = json.loads(side.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise FormatError(side, f"not a readable spike sidecar: {exc}") from None
    if not isinstance(facts, dict) or set(facts) - set(DAT_DEFAULTS):
        raise FormatError(side, f"expected a mapping with keys among {sorted(DAT_DEFAULTS)}")
    return facts


def read_spike_dat(path: str | Path, height: int, width: int, *, bitorder: str = "little",
                   flipud: bool = True, remove_head: bool = False,
                   rate_hz: float = DEFAULT_RATE_HZ,
                   frames: tuple[int, int] | None = None) -> Spikes:
    """Frames [k0, k1) (`frames`; default all) of a `.dat` spike stream as packed `Spikes`.

    Reads only the requested frames; see the module doc for the layout and options.
    """
    reader = SpikeDatReader(path, height, width, bitorder=bitorder, flipud=flipud,
                            remove_head=remove_head, rate_hz=rate_hz)
    return reader.read_frames(*_frame_range(reader.path, frames, len(reader)))


class SpikeDatWriter:
    """Append `Spikes` to a `.dat` bitstream (the layout `read_spike_dat` reads), block after
    block; `close` writes the `NAME.dat.json` sidecar when `sidecar` (size, rate, first time,
    layout).

    Each frame is flipped upside down (`flipud`), flattened row-major and packed 8 pixels a
    byte LSB-first (`bitorder="little"`), padded with zero bits to a whole byte.
    """

    def __init__(self, path: str | Path, *, bitorder: str = "little", flipud: bool = True,
                 sidecar: bool = False):
        _check_bitorder(bitorder)
        self.path, self.bitorder, self.flipud, self.sidecar = Path(path), bitorder, flipud, sidecar
        self._facts: dict | None = None
        self._file = open(self.path, "wb")  # closed by close() / abort()

    def write(self, spikes: Spikes) -> None:
        """Append every frame of `spikes` (packed or not; the first call fixes the size)."""
        if not isinstance(spikes, Spikes):
            raise TypeError(f"spikes must be a Spikes stream, got {type(spikes).__name__}")
        facts = {"height": spikes.height, "width": spikes.width, "rate_hz": spikes.rate_hz}
        if self._facts is None:
            self._facts = {**facts, "bitorder": self.bitorder, "flipud": self.flipud,
                           "t0_us": spikes.t0_us}
        elif any(self._facts[k] != v for k, v in facts.items()):
            raise ValueError(f"{self.path}: frames of {facts} after {self._facts}")
        for k0 in range(0, len(spikes), _WRITE_BLOCK):
            block = spikes.frames(k0, min(k0 + _WRITE_BLOCK, len(spikes)))
            if block.packed and block.width % 8 == 0:
                raw = block.data[:, ::-1] if self.flipud else block.data
                raw = raw.reshape(len(block), -1)
                raw = _REVERSE[raw] if self.bitorder == "big" else raw
            else:
                bits = block.unpack()[:, ::-1] if self.flipud else block.unpack()
                raw = np.packbits(bits.reshape(len(block), -1), axis=1, bitorder=self.bitorder)
            self._file.write(np.ascontiguousarray(raw).tobytes())

    def close(self) -> Path:
        """Finish the file (and its sidecar); returns its path."""
        self._file.close()
        if self.sidecar and self._facts is not None:
            sidecar_path(self.path).write_text(json.dumps(self._facts) + "\n", encoding="utf-8")
        return self.path

    def abort(self) -> None:
        """Close and delete a partly written file."""
        self._file.close()
        self.path.unlink(missing_ok=True)


def write_spike_dat(path: str | Path, spikes: Spikes, *, bitorder: str = "little",
                    flipud: bool = True, sidecar: bool = False) -> Path:
    """Write `spikes` as a `.dat` bitstream in one call (`SpikeDatWriter`'s layout and
    sidecar)."""
    if not isinstance(spikes, Spikes):
        raise TypeError(f"spikes must be a Spikes stream, got {type(spikes).__name__}")
    writer = SpikeDatWriter(path, bitorder=bitorder, flipud=flipud, sidecar=sidecar)
    try:
        writer.write(spikes)
    except BaseException:
        writer.abort()
        raise
    return writer.close()


# --- arrays ----------------------------------------------------------------------------
def _load_array(path: Path, key: str | None) -> np.ndarray:
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                names = list(archive.files)
                name = key or ("spk" if "spk" in names else (names[0] if len(names) == 1 else ""))
                array = archive[name] if name in names else None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise FormatError(path, f"unreadable .npz: {exc}") from None
        if array is None:
            raise FormatError(path, f"pick the spike array with key=; arrays: {names}")
        return array
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise FormatError(path, f"unreadable .npy: {exc}") from None


class SpikeNpyReader:
    """Spikes stored as a (T, H, W) {0, 1} array in `.npy` (memory-mapped) or `.npz`."""

    format_name = "spike-npy"

    def __init__(self, path: str | Path, *, key: str | None = None, flipud: bool = False,
                 bitorder: str = "little", rate_hz: float = DEFAULT_RATE_HZ, t0_us: int = 0):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        _check_bitorder(bitorder)
        array = _load_array(path, key)
        if array.ndim != 3 or array.dtype not in (np.uint8, np.bool_):
            raise FormatError(path, f"spikes must be a (T, H, W) uint8 or bool array, got "
                              f"{array.dtype} {array.shape}")
        if bitorder == "big" and array.shape[2] % 8:
            raise FormatError(path, f"bitorder='big' mirrors 8-column blocks; width "
                              f"{array.shape[2]} is not a multiple of 8")
        if not np.isfinite(rate_hz) or rate_hz <= 0:
            raise FormatError(path, f"rate_hz must be positive, got {rate_hz}")
        self.path, self.key, self._array = path, key, array
        self.shape = tuple(int(n) for n in array.shape)
        self.flipud, self.bitorder = flipud, bitorder
        self.rate_hz, self.t0_us = float(rate_hz), int(t0_us)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_array"] = None  # re-opened on use: a memory map must not be pickled whole
        return state

    def _data(self) -> np.ndarray:
        if self._array is None:
            self._array = _load_array(self.path, self.key)
        return self._array

    def __len__(self) -> int:
        return self.shape[0]

    def info(self) -> SpikeInfo:
        """Size, frame count, rate and first/last frame time."""
        _, h, w = self.shape
        return _info(self.format_name, w, h, len(self), self.rate_hz, self.t0_us)

    def read_frames(self, k0: int, k1: int) -> Spikes:
        """Frames k0 <= k < k1 as unpacked `Spikes` (T, H, W) uint8."""
        k0, k1 = _frame_range(self.path, (k0, k1), len(self))
        data = np.asarray(self._data()[k0:k1]).view(np.uint8)
        if self.flipud:
            data = data[:, ::-1]
        if self.bitorder == "big":
            t, h, w = data.shape
            data = data.reshape(t, h, w // 8, 8)[..., ::-1].reshape(t, h, w)
        t0 = self.t0_us + round(k0 * 1e6 / self.rate_hz)
        try:
            return Spikes(np.ascontiguousarray(data), self.rate_hz, t0_us=t0)
        except EventsError as exc:
            raise FormatError(self.path, f"frames [{k0}, {k1}): {exc}") from None


def read_spike_npy(path: str | Path, *, key: str | None = None, flipud: bool = False,
                   bitorder: str = "little", rate_hz: float = DEFAULT_RATE_HZ,
                   frames: tuple[int, int] | None = None) -> Spikes:
    """Frames [k0, k1) (default all) of a spike array in `.npy` / `.npz` as `Spikes`."""
    reader = SpikeNpyReader(path, key=key, flipud=flipud, bitorder=bitorder, rate_hz=rate_hz)
    return reader.read_frames(*_frame_range(reader.path, frames, len(reader)))


def read_npz_label(path: str | Path) -> tuple[int, str | None]:
    """(label, label_name or None) stored beside the spikes in a UHSR-style `.npz`."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in ("label", "label_name") if k in archive.files}
            names = list(archive.files)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise FormatError(path, f"unreadable .npz: {exc}") from None
    if "label" not in arrays:
        raise FormatError(path, f"no 'label' array; arrays: {names}")
    name = str(arrays["label_name"]) if "label_name" in arrays else None
    return int(arrays["label"]), name
