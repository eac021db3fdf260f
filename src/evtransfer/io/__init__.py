"""File formats, one module per format, and a dispatcher that opens any of them.

`detect_format(path)` names the format from the file's magic bytes, text header or
extension; `open_recording(path)` returns a reader that loads nothing until asked: an
`EventReader` (`info`, `read_window`, `read_last`, `read_index`) for event streams, or a
spike reader (`info`, `read_frames`, `read_window`) for spike streams. Reader modules are
imported only when their format is opened, so `import evtransfer.io` stays light.
"""

from __future__ import annotations

import inspect
from importlib import import_module
from pathlib import Path

from evtransfer.io.base import EventReader, FormatError, RecordingInfo

__all__ = [
    "EVENT_FORMATS",
    "SPIKE_FORMATS",
    "EventReader",
    "FormatError",
    "RecordingInfo",
    "detect_format",
    "open_recording",
]

# format -> (module, reader class); every reader takes the path first.
_READERS = {
    "nmnist-bin": ("evtransfer.io.nmnist", "NmnistReader"),
    "dat": ("evtransfer.io.prophesee", "DatReader"),
    "evt2": ("evtransfer.io.prophesee", "Evt2Reader"),
    "evt3": ("evtransfer.io.prophesee", "Evt3Reader"),
    "aedat4": ("evtransfer.io.aedat4", "Aedat4Reader"),
    "dsec-h5": ("evtransfer.io.dsec", "DsecEventsReader"),
    "mvsec-h5": ("evtransfer.io.mvsec", "MvsecEventsReader"),
    "ddd17-ess": ("evtransfer.io.ddd17", "Ddd17EventsReader"),
    "spike-dat": ("evtransfer.io.spike", "SpikeDatReader"),
    "spike-npy": ("evtransfer.io.spike", "SpikeNpyReader"),
}
SPIKE_FORMATS = ("spike-dat", "spike-npy")
EVENT_FORMATS = tuple(f for f in _READERS if f not in SPIKE_FORMATS)
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_AEDAT4_MAGIC = b"#!AER-DAT4.0"


def _detect_h5(path: Path) -> str:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "events" in f and "ms_to_idx" in f:
                return "dsec-h5"
            if "davis" in f:
                return "mvsec-h5"
            keys = sorted(f.keys())
    except OSError as exc:
        raise FormatError(path, f"unreadable HDF5 file: {exc}") from None
    raise FormatError(path, f"HDF5 file of no known layout (top-level keys {keys[:8]})")


def _text_header_encoding(path: Path) -> tuple[bool, str | None]:
    """(has a `%` text header, the encoding it names)."""
    from evtransfer.io.prophesee import read_header

    try:
        header = read_header(path)
    except FormatError:
        return False, None
    return header.size > 0, header.encoding


def detect_format(path: str | Path) -> str:
    """The format of `path`: one of `EVENT_FORMATS` or `SPIKE_FORMATS`.

    By magic bytes (HDF5 then its layout, AEDAT4), by the Prophesee `%` header (EVT 2.0 /
    3.0, or DAT for a `.dat` file), then by extension (`.bin` N-MNIST / N-Caltech101,
    headerless `.dat` spike stream, `.npy` / `.npz` spike arrays); a directory holding
    `events.dat.t` is a DDD17 (ESS) recording. Raises FormatError when none fits.
    """
    path = Path(path)
    if path.is_dir():
        if (path / "events.dat.t").is_file():
            return "ddd17-ess"
        raise FormatError(path, "a directory without events.dat.t (not a DDD17 ESS recording)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise FormatError(path, "empty file (0 bytes)")
    suffix = path.suffix.lower()
    if head.startswith(_HDF5_MAGIC):
        return _detect_h5(path)
    if head.startswith(_AEDAT4_MAGIC):
        return "aedat4"
    if suffix in (".npy", ".npz"):
        return "spike-npy"
    has_header, encoding = _text_header_encoding(path) if head[:1] == b"%" else (False, None)
    if has_header and encoding in ("evt2", "evt3"):
        return encoding
    if has_header and encoding is not None:
        raise FormatError(path, f"unsupported Prophesee encoding {encoding!r}")
    if suffix == ".dat" and not has_header and head[:2] == b"% ":
        raise FormatError(path, "starts like a Prophesee DAT header ('% ') that cannot be read "
                          "(damaged?); if it is a spike-camera stream, give --format spike-dat")
    if suffix == ".dat":
        return "dat" if has_header else "spike-dat"
    if suffix == ".bin":
        return "nmnist-bin"
    if suffix == ".raw":
        raise FormatError(path, "no '% evt' / '% format' header line: cannot tell EVT 2.0 from "
                          "3.0; open it with prophesee.Evt2Reader or Evt3Reader")
    raise FormatError(path, "unknown format (no known magic bytes, header or extension)")


def open_recording(path: str | Path, *, format: str | None = None, **options):
    """A reader for `path` (format detected unless given); `options` go to the reader.

    `width` / `height` override the sensor size for every event format (DSEC's reader takes
    them as `sensor_size`); spike `.dat` files take `height` / `width` as their frame size.
    """
    fmt = format or detect_format(path)
    if fmt not in _READERS:
        raise ValueError(f"unknown format {fmt!r}; known: {sorted(_READERS)}")
    if fmt == "dsec-h5" and ("width" in options or "height" in options):
        options["sensor_size"] = (options.pop("width"), options.pop("height"))
    module, name = _READERS[fmt]
    reader = getattr(import_module(module), name)
    accepted = inspect.signature(reader).parameters
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"{path}: the {fmt} reader takes no option {', '.join(unknown)}")
    return reader(path, **options)
