"""Convert a recording between formats, streamed window by window (bounded memory).

Every format `open_recording` reads converts to the formats written here: events to a
DSEC-layout `.h5` (`dsec-h5`, keeps the full clock through `t_offset`) or an EVT 2.0 `.raw`
(`evt2`, t < 2^34 µs: `relative` shifts a Unix-time clock such as AEDAT4's to start at 0);
spike streams to a `.dat` bitstream with its `.dat.json` sidecar (`spike-dat`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evtransfer.io import SPIKE_FORMATS, detect_format, open_recording
from evtransfer.io.base import iter_time_windows

WRITERS = {".h5": "dsec-h5", ".raw": "evt2", ".dat": "spike-dat"}
EVENT_WRITERS, SPIKE_WRITERS = ("dsec-h5", "evt2"), ("spike-dat",)


def output_format(path: str | Path, to: str | None = None) -> str:
    """The format written to `path`: `to`, else the one its suffix names (`WRITERS`)."""
    fmt = to or WRITERS.get(Path(path).suffix.lower())
    if fmt not in (*EVENT_WRITERS, *SPIKE_WRITERS):
        raise ValueError(f"{path}: cannot tell the output format; name it .h5 (DSEC events), "
                         f".raw (EVT 2.0 events) or .dat (spike stream), or give it")
    return fmt


def convert(src: str | Path, dst: str | Path, *, to: str | None = None,
            window_us: int = 100_000, frames_per_block: int = 1024, relative: bool = False,
            reader_options: dict | None = None) -> dict:
    """Copy recording `src` into `dst` in format `to` (default: from `dst`'s suffix), reading
    `window_us` µs of events (or `frames_per_block` spike frames) at a time. `relative`
    subtracts the first timestamp. Returns {"format", "to", "events" or "frames", ...}; a
    partly written `dst` is deleted on error."""
    options = dict(reader_options or {})
    fmt_in = options.pop("format", None) or detect_format(src)
    fmt_out = output_format(dst, to)
    reader = open_recording(src, format=fmt_in, **options)
    spikes = fmt_in in SPIKE_FORMATS
    if spikes != (fmt_out in SPIKE_WRITERS):
        kind = "a spike" if spikes else "an event"
        raise ValueError(f"{src}: {kind} recording cannot be written as {fmt_out}; "
                         f"use {'.dat' if spikes else '.h5 or .raw'}")
    if Path(src).resolve() == Path(dst).resolve():
        raise ValueError(f"{dst}: is the input file")
    info = reader.info()
    shift = info.t_start_us if relative else 0
    if spikes:
        count = _copy_spikes(reader, info, dst, frames_per_block, shift)
        return {"format": fmt_in, "to": fmt_out, "frames": count, "path": str(dst)}
    count = _copy_events(reader, info, dst, fmt_out, window_us, shift)
    return {"format": fmt_in, "to": fmt_out, "events": count, "path": str(dst)}


def _event_writer(dst, fmt: str, info, shift: int):
    if fmt == "evt2":
        from evtransfer.io.prophesee import Evt2Writer

        return Evt2Writer(dst, info.width, info.height)
    from evtransfer.io.dsec import DsecEventsWriter

    return DsecEventsWriter(dst, width=info.width, height=info.height,
                            t_offset_us=info.t_start_us - shift)


def _copy_events(reader, info, dst, fmt: str, window_us: int, shift: int) -> int:
    from evtransfer.events import Events

    if window_us < 1:
        raise ValueError(f"window_us must be >= 1, got {window_us}")
    writer = _event_writer(dst, fmt, info, shift)
    total = 0
    try:
        for ev in iter_time_windows(reader, window_us):
            if shift:
                ev = Events(ev.x, ev.y, ev.t - np.int64(shift), ev.p, ev.width, ev.height)
            writer.write(ev)
            total += len(ev)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return total


def _copy_spikes(reader, info, dst, block: int, shift: int) -> int:
    from evtransfer.events import Spikes
    from evtransfer.io.spike import SpikeDatWriter

    if block < 1:
        raise ValueError(f"frames_per_block must be >= 1, got {block}")
    writer = SpikeDatWriter(dst, sidecar=True)
    try:
        for k0 in range(0, info.frames, block):
            part = reader.read_frames(k0, min(k0 + block, info.frames))
            if shift:
                part = Spikes(part.data, part.rate_hz, width=part.width, packed=part.packed,
                              t0_us=part.t0_us - shift)
            writer.write(part)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return info.frames
