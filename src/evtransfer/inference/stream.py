"""Predict over whole recordings: stream windows, batch them, write per-window outputs.

`predict_recording(model, path, out)` opens any supported recording (`io.open_recording`),
plans the prediction times (every `window_us` µs, `window_events` events or `frames` spike
readouts by default, or `every`), reads the model's window before each, predicts in batches
and writes into `out`:

- segmentation: `labels/NNNNNN.png`, palette PNGs whose pixel values are the class ids and
  whose palette is the label space's colours (rows below the model's crop: 255, black);
- depth: `depth/NNNNNN.png` (16-bit, metres × 256, 0 = no prediction, KITTI's encoding) and
  `depth_color/NNNNNN.png`;
- `legend.png` (segmentation): each class's colour and name;
- `overlay.gif`: the prediction blended over the event image (spikes: the mean firing image)
  for at most `gif_frames` evenly spaced windows, and `overlay/NNNNNN.png` for every window
  with `overlays=True`;
- `windows.json`: per window its span, event count and status ("predicted", "empty": no
  events, "partial": fewer events or frames than a full window, skipped unless `partial`),
  the sensor-size warning if any, and the seconds spent reading, representing, running the
  model and writing.
Outputs of an earlier run into the same `out` (these names only) are removed first, so the
folder holds one run. `predict_path` does the same for every recording in a folder (one output
folder each); a recording that fails is reported in its summary and the others still run.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from evtransfer.inference.model import Model
from evtransfer.io import SPIKE_FORMATS, FormatError, detect_format, open_recording
from evtransfer.io.images import write_png16
from evtransfer.represent import histogram
from evtransfer.viz import colorize_depth, colorize_events, save_panel

_UNITS = {"us": 1, "µs": 1, "ms": 1_000, "s": 1_000_000}
OUTPUT_DIRS = ("labels", "depth", "depth_color", "overlay")  # of NNNNNN.png files


@dataclass(frozen=True)
class Every:
    """A prediction stride: `value` µs ("us"), events ("ev") or spike frames ("fr")."""

    value: int
    unit: str


def parse_every(text: str) -> Every:
    """'50ms', '20000us', '0.1s', '100000ev' or '32fr' as an `Every`."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(us|µs|ms|s|ev|fr)\s*", str(text))
    if m is None:
        raise ValueError(f"--every {text!r}: expected a number with a unit, e.g. 50ms, "
                         "20000us, 100000ev or 32fr")
    number, unit = float(m.group(1)), m.group(2)
    value = round(number * _UNITS[unit]) if unit in _UNITS else round(number)
    if value <= 0:
        raise ValueError(f"--every {text!r} must be positive")
    return Every(value, "us" if unit in _UNITS else unit)


@dataclass(frozen=True)
class PredictOptions:
    """How `predict_recording` streams and what it writes (see the module docstring)."""

    every: Every | None = None  # default: the model's own window
    batch: int = 8
    resize: bool = False  # allow a sensor size other than the training one
    partial: bool = False  # also predict windows shorter than the model's
    t0_us: int | None = None  # time strides: first window end no earlier (µs)
    t1_us: int | None = None  # time strides: last window end no later (µs)
    limit: int = 0  # at most this many windows (0: all)
    gif_frames: int = 100
    overlays: bool = False
    progress: bool = True
    reader_options: dict = field(default_factory=dict)  # format, width, height


@dataclass
class Window:
    """One planned window: its end (µs, event index or frame index, per `kind`), then what
    was read."""

    index: int
    kind: str
    end: int
    data: object = None
    t_start_us: int = 0
    t_end_us: int = 0
    count: int = 0
    partial: bool = False


def _plan(info, model: Model, every: Every, opts: PredictOptions) -> list[Window]:
    """The windows of a recording, in order (ends only; nothing is read)."""
    spec = model.input
    spikes = spec.modality == "spikes"
    if (every.unit == "fr") != spikes and every.unit != "us":
        raise ValueError(f"--every in '{every.unit}' does not apply to "
                         f"{'spike' if spikes else 'event'} recordings")
    if spikes:
        stride = every.value if every.unit == "fr" else max(1, round(every.value * info.rate_hz
                                                                     / 1e6))
        first = stride if opts.partial else spec.frames
        ends = _partial_end(range(first, info.frames + 1, stride), info.frames, opts)
        return [Window(i, "frame", e) for i, e in enumerate(ends)]
    total = spec.num_windows * spec.window_events
    if every.unit == "ev":
        first = every.value if opts.partial or spec.window_us else total
        ends = _partial_end(range(first, info.events + 1, every.value), info.events, opts)
        return [Window(i, "index", e) for i, e in enumerate(ends)]
    t0 = info.t_start_us if opts.t0_us is None else opts.t0_us
    t1 = info.t_end_us + 1 if opts.t1_us is None else opts.t1_us
    first = spec.window_us if spec.window_us and not opts.partial else every.value
    ends = _partial_end(range(t0 + first, t1 + 1, every.value), t1, opts, t0)
    return [Window(i, "time", e) for i, e in enumerate(ends)]


def _partial_end(ends: range, last: int, opts: PredictOptions, first: int = 0) -> range:
    """`ends`, or with `partial` one window ending at `last` when the recording is shorter than
    the stride (a partial window is asked for, so a short recording still gets one)."""
    if len(ends) or not opts.partial or last <= first:
        return ends
    return range(last, last + 1)


def _read(reader, info, model: Model, w: Window) -> None:
    """Fill `w` with the model's window ending at `w.end`."""
    spec = model.input
    if spec.modality == "spikes":
        k0 = max(0, w.end - spec.frames)
        clip = reader.read_frames(k0, w.end)
        times = clip.timestamps_us()
        w.data, w.count, w.partial = clip, int(w.end - k0), w.end - k0 < spec.frames
        w.t_start_us, w.t_end_us = int(times[0]), int(times[-1]) + 1
        return
    if spec.window_us:
        end = w.end
        if w.kind == "index":
            end = int(reader.read_index(w.end - 1, w.end).t[0]) + 1
        start = end - spec.window_us
        events = reader.read_window(start, end)
        w.partial = start < info.t_start_us
    else:
        total = spec.num_windows * spec.window_events
        if w.kind == "index":
            events = reader.read_index(max(0, w.end - total), w.end)
        else:
            events = reader.read_last(w.end, total)
        w.partial = len(events) < total
        start = int(events.t[0]) if len(events) else w.end
        end = int(events.t[-1]) + 1 if len(events) else w.end
    w.data, w.count, w.t_start_us, w.t_end_us = events, len(events), int(start), int(end)


class _Writer:
    """Writes the outputs of one recording (see the module docstring)."""

    def __init__(self, model: Model, out: Path, sensor: tuple[int, int], gif_every: int,
                 overlays: bool):
        self.model, self.out, self.sensor = model, out, sensor
        self.gif_every, self.overlays, self.frames = gif_every, overlays, []
        subdirs = ["labels"] if model.task == "segmentation" else ["depth", "depth_color"]
        _remove_earlier_outputs(out)
        for sub in subdirs + (["overlay"] if overlays else []):
            (out / sub).mkdir(parents=True, exist_ok=True)
        self.flat_palette = np.zeros(768, np.uint8)
        if model.task == "segmentation":
            self.flat_palette[: 3 * model.num_classes] = model.palette.reshape(-1)
            strip = np.repeat(model.palette[None], 12, 0)  # the classes side by side
            strip = np.repeat(strip, -(-288 // model.num_classes), 1)
            save_panel([strip], [""], out / "legend.png",
                       legend=(model.class_names, model.palette))

    def write(self, w: Window, pred: torch.Tensor) -> str:
        """Save one window's prediction ((K, h, w) probabilities or (h, w) metres); returns
        the file name written."""
        width, height = self.sensor
        name = f"{w.index:06d}.png"
        pred = pred.cpu()
        if self.model.task == "segmentation":
            canvas = np.full((height, width), 255, np.uint8)
            # max(0).indices: the same ids as argmax(0), several times faster on CPU
            canvas[: pred.shape[-2]] = pred.max(0).indices.numpy().astype(np.uint8)
            image = Image.fromarray(canvas, mode="P")
            image.putpalette(self.flat_palette.tolist())
            image.save(self.out / "labels" / name, compress_level=1)
            colour = np.array(image.convert("RGB"))
            valid = canvas != 255
        else:
            depth = np.zeros((height, width), np.float32)
            depth[: pred.shape[-2]] = pred.numpy()
            write_png16(self.out / "depth" / name,
                        np.clip(np.rint(depth * 256), 0, 65535).astype(np.uint16))
            lo, hi = self.model.spec.depth_range
            colour = colorize_depth(depth, vmin=max(lo, 1.0), vmax=max(hi, 1.0))
            Image.fromarray(colour).save(self.out / "depth_color" / name, compress_level=1)
            valid = depth > 0
        if self.overlays or w.index % self.gif_every == 0:
            blend = self._overlay(w, colour, valid)
            if self.overlays:
                Image.fromarray(blend).save(self.out / "overlay" / name, compress_level=1)
            if w.index % self.gif_every == 0:
                self.frames.append(Image.fromarray(blend))
        return name

    def _overlay(self, w: Window, colour: np.ndarray, valid: np.ndarray) -> np.ndarray:
        if self.model.input.modality == "spikes":
            mean = w.data.unpack().mean(0, dtype=np.float32)
            gray = np.rint(255 * mean / max(float(mean.max()), 1e-9)).astype(np.uint8)
            base = np.repeat(gray[..., None], 3, -1)
        else:
            base = colorize_events(histogram(w.data)[0])
        half = (base.astype(np.uint16) + colour + 1) // 2  # an even blend, rounded
        return np.where(valid[..., None], half, base).astype(np.uint8)

    def finish(self, duration_ms: int) -> Path | None:
        if not self.frames:
            return None
        path = self.out / "overlay.gif"
        self.frames[0].save(path, save_all=True, append_images=self.frames[1:],
                            duration=duration_ms, loop=0)
        return path


def _remove_earlier_outputs(out: Path) -> None:
    """Delete what an earlier prediction wrote into `out` (its file names only)."""
    for sub in OUTPUT_DIRS:
        for path in (out / sub).glob("[0-9][0-9][0-9][0-9][0-9][0-9].png"):
            path.unlink()
    for name in ("overlay.gif", "windows.json", "legend.png"):
        (out / name).unlink(missing_ok=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def predict_recording(model: Model, path: str | Path, out: str | Path,
                      opts: PredictOptions | None = None,
                      log: Callable[[str], None] | None = None) -> dict:
    """Predict every window of the recording `path` into folder `out` (see the module
    docstring); returns the `windows.json` summary. `log` receives warnings (default:
    stderr). Raises ValueError for a sensor-size mismatch without `resize`, a stride that
    does not fit the recording, or a recording where no window could be predicted."""
    opts = opts or PredictOptions()
    log = log or (lambda text: print(text, file=sys.stderr))
    if opts.batch < 1:
        raise ValueError(f"batch must be >= 1, got {opts.batch}")
    path, out = Path(path), Path(out)
    reader = open_recording(path, **opts.reader_options)
    info = reader.info()
    spikes = info.format in SPIKE_FORMATS
    if spikes != (model.input.modality == "spikes"):
        raise ValueError(f"{path}: a {'spike' if spikes else 'event'} recording, but the model "
                         f"takes {model.input.modality}")
    sensor = (info.width, info.height)
    warning = model.sensor_message(sensor, opts.resize, str(path))
    if warning:
        log(f"warning: {warning}")
    every = opts.every or _default_every(model)
    plan = _plan(info, model, every, opts)
    if opts.limit:
        plan = plan[: opts.limit]
    if not plan:
        raise ValueError(f"{path}: too short for one {model.input.window_text()} window "
                         f"(add --partial to predict shorter windows)")
    out.mkdir(parents=True, exist_ok=True)
    writer = _Writer(model, out, sensor, max(1, math.ceil(len(plan) / max(opts.gif_frames, 1))),
                     opts.overlays)
    timings = dict.fromkeys(("read", "represent", "model", "write"), 0.0)
    records, pending = [], []
    start = time.perf_counter()
    bar = tqdm(plan, unit="window", desc=path.name, disable=not opts.progress)
    for w in bar:
        t = time.perf_counter()
        _read(reader, info, model, w)
        timings["read"] += time.perf_counter() - t
        status = "empty" if w.count == 0 else "partial" if w.partial and not opts.partial \
            else "predicted"
        records.append({"index": w.index, "t_start_us": w.t_start_us, "t_end_us": w.t_end_us,
                        "count": w.count, "status": status, "file": None})
        if status == "predicted":
            pending.append(w)
        if len(pending) == opts.batch:
            _flush(model, pending, writer, records, timings, opts.resize)
    _flush(model, pending, writer, records, timings, opts.resize)
    bar.close()
    summary = _summary(path, info, model, records, timings, time.perf_counter() - start, warning)
    gif = writer.finish(_gif_ms(every, writer.gif_every))
    summary["overlay_gif"] = str(gif) if gif else None
    (out / "windows.json").write_text(json.dumps(summary, indent=1))
    if not summary["predicted"]:
        raise ValueError(f"{path}: no window could be predicted ({summary['empty']} empty, "
                         f"{summary['partial']} partial of {len(records)})")
    skipped = summary["empty"] + summary["partial"]
    if skipped:
        log(f"warning: {path.name}: {summary['empty']} empty and {summary['partial']} partial "
            f"windows of {len(records)} were not predicted (see windows.json)")
    return summary


def _gif_ms(every: Every, gif_every: int) -> int:
    """Frame duration of the overlay GIF: real time for time strides, else 100 ms."""
    if every.unit != "us":
        return 100
    return max(20, round(every.value * gif_every / 1000))


def _default_every(model: Model) -> Every:
    i = model.input
    if i.modality == "spikes":
        return Every(i.frames, "fr")
    return Every(i.window_us, "us") if i.window_us else Every(i.num_windows * i.window_events,
                                                               "ev")


def _flush(model: Model, pending: list[Window], writer: _Writer, records: list[dict],
           timings: dict, resize: bool) -> None:
    if not pending:
        return
    t = time.perf_counter()
    prepared = model.represent([w.data for w in pending], resize=resize, warn=False)
    timings["represent"] += time.perf_counter() - t
    t = time.perf_counter()
    preds = model.forward(prepared.x, prepared.out_size, logits=True)
    _sync(model.device)
    timings["model"] += time.perf_counter() - t
    t = time.perf_counter()
    for w, pred in zip(pending, preds, strict=True):
        records[w.index]["file"] = writer.write(w, pred)
        w.data = None
    timings["write"] += time.perf_counter() - t
    pending.clear()


def _summary(path: Path, info, model: Model, records: list[dict], timings: dict,
             wall: float, warning: str) -> dict:
    statuses = [r["status"] for r in records]
    return {"recording": str(path), "format": info.format, "sensor": [info.width, info.height],
            "model": str(model.path) if model.path else None, "method": model.spec.method,
            "task": model.task, "window": model.input.window_text(),
            "warning": warning or None, "windows": len(records),
            "predicted": statuses.count("predicted"), "empty": statuses.count("empty"),
            "partial": statuses.count("partial"), "seconds": {**timings, "total": wall},
            "records": records}


def recordings_in(folder: Path) -> tuple[list[Path], list[Path]]:
    """(recordings, other files) of a folder: every entry whose format is detected."""
    found, other = [], []
    for p in sorted(folder.iterdir()):
        try:
            detect_format(p)
            found.append(p)
        except (FormatError, FileNotFoundError):
            other.append(p)
    return found, other


def predict_path(model: Model, path: str | Path, out: str | Path,
                 opts: PredictOptions | None = None,
                 log: Callable[[str], None] | None = None) -> list[dict]:
    """`predict_recording` on a recording, or on every recording of a folder (outputs in
    `out/<name>/`); returns the summaries."""
    path, out = Path(path), Path(out)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_file():
        return [predict_recording(model, path, out, opts, log)]
    try:
        detect_format(path)
        return [predict_recording(model, path, out, opts, log)]
    except FormatError:
        pass
    found, other = recordings_in(path)
    if not found:
        raise FileNotFoundError(f"{path}: no supported recording in this folder")
    if other and log is not None:
        log(f"note: skipped {len(other)} entries of unknown format: "
            f"{', '.join(p.name for p in other[:5])}")
    return [_predict_or_report(model, p, out / p.name.replace(".", "_"), opts, log)
            for p in found]


def _predict_or_report(model: Model, path: Path, out: Path, opts: PredictOptions | None,
                       log: Callable[[str], None] | None) -> dict:
    """`predict_recording`, or `{"recording", "error"}` when the recording is bad (one bad
    file of a folder does not stop the others)."""
    try:
        return predict_recording(model, path, out, opts, log)
    except (ValueError, OSError) as exc:
        if log is not None:
            log(f"error: {exc}")
        return {"recording": str(path), "error": str(exc)}
