"""`evtransfer info`, `render` and `convert`: look at a recording, change its format."""

from __future__ import annotations

from evtransfer.cli._args import add_out, add_recording_args, open_reader, positive_int


def add(sub) -> None:
    """Register `info`, `render` and `convert`."""
    p = sub.add_parser("info", help="format, sensor size, event count, time span, ON/OFF "
                       "counts, x/y ranges and the rate over time of a recording")
    add_recording_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--bins", type=positive_int, default=10,
                   help="time bins of the rate over time (default 10)")
    p.add_argument("--header-only", action="store_true",
                   help="only what the header and index say (no pass over the events)")
    p.set_defaults(run=run_info)

    p = sub.add_parser("render", help="draw a recording: event image, or TFP for spikes")
    add_recording_args(p)
    add_out(p, "file", "output image (.png)")
    p.add_argument("--t0", type=int, default=None, help="window start, µs (default: first t)")
    p.add_argument("--t1", type=int, default=None,
                   help="window end, µs (events default: t0 + 50 ms; spikes: last frame)")
    p.add_argument("--relative", action="store_true",
                   help="--t0/--t1 count from the recording's first timestamp (for files on "
                        "a Unix-time clock, e.g. AEDAT4)")
    p.add_argument("--half-window", type=int, default=20,
                   help="spikes: TFP half window in frames around the centre (default 20)")
    p.add_argument("--no-stretch", action="store_true",
                   help="spikes: TFP firing rate 0..1 as black..white (default: stretched so "
                        "the 99.5th percentile is white)")
    p.add_argument("--scale", type=positive_int, default=1,
                   help="enlarge K times, nearest neighbour (default 1: the sensor's size)")
    p.set_defaults(run=run_render)
    add_convert(sub)


def run_info(args) -> int:
    """Print the recording's facts (text or one JSON object)."""
    import json

    from evtransfer.io.stats import event_stats, spike_stats

    reader = open_reader(args)
    info = reader.info()
    span = info.t_end_us - info.t_start_us
    out = {"format": info.format, "width": info.width, "height": info.height}
    out.update(_size_note(args, info))
    spikes = hasattr(info, "frames")
    if spikes:
        out.update(frames=info.frames, rate_hz=info.rate_hz)
    else:
        out.update(events=info.events, rate_ev_per_s=info.rate_ev_per_s)
    out.update(t_start_us=info.t_start_us, t_end_us=info.t_end_us, duration_us=span)
    if not args.header_only:
        out.update(spike_stats(reader, args.bins) if spikes else event_stats(reader, args.bins))
    if args.json:
        print(json.dumps(out))
        return 0
    for key, value in out.items():
        if isinstance(value, list):
            value = " ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in value)
        print(f"{key:<25}{value:.6g}" if isinstance(value, float) else f"{key:<25}{value}")
    return 0


def _size_note(args, info) -> dict:
    """With --width/--height, the size the file itself states when it differs."""
    from evtransfer.io import open_recording

    if args.width is None and args.height is None:
        return {}
    try:
        own = open_recording(args.path, **({"format": args.format} if args.format else {}))
        own_info = own.info()
    except (ValueError, OSError):
        return {}
    if (own_info.width, own_info.height) == (info.width, info.height):
        return {}
    return {"size_given_by": "--width/--height",
            "file_size": f"{own_info.width}x{own_info.height}"}


def run_render(args) -> int:
    """Draw an event histogram or a spike TFP image into `--out`."""
    import numpy as np
    from PIL import Image

    reader = open_reader(args)
    info = reader.info()
    shift = info.t_start_us if args.relative else 0
    t0 = info.t_start_us if args.t0 is None else args.t0 + shift
    t1 = None if args.t1 is None else args.t1 + shift
    if hasattr(info, "frames"):
        image = _render_spikes(reader, info, t0, t1, args)
    else:
        image = _render_events(reader, t0, t0 + 50_000 if t1 is None else t1)
    if args.scale > 1:
        image = np.repeat(np.repeat(image, args.scale, axis=0), args.scale, axis=1)
    Image.fromarray(image).save(args.out)
    print(f"wrote {image.shape[1]}x{image.shape[0]} image to {args.out}")
    return 0


def _render_events(reader, t0: int, t1: int):
    from evtransfer.represent import histogram
    from evtransfer.viz import colorize_events

    events = reader.read_window(t0, t1)
    if not len(events):
        info = reader.info()
        raise ValueError(f"{reader.path}: no events in [{t0}, {t1}) µs (the recording spans "
                         f"[{info.t_start_us}, {info.t_end_us}] µs; --relative counts from "
                         f"its start)")
    return colorize_events(histogram(events)[0])


def _render_spikes(reader, info, t0: int, t1: int | None, args):
    import numpy as np

    from evtransfer.represent import tfp
    from evtransfer.viz import stretch_contrast

    t1 = info.t_end_us + 1 if t1 is None else t1
    times = info.t_start_us + np.rint(np.arange(info.frames) * 1e6 / info.rate_hz)
    k0, k1 = (int(k) for k in np.searchsorted(times, [t0, t1], side="left"))
    if k1 <= k0:
        raise ValueError(f"{reader.path}: no spike frames in [{t0}, {t1}) µs")
    center, hw = (k0 + k1 - 1) // 2, args.half_window
    if hw < 0 or center - hw < 0 or center + hw >= info.frames:
        raise ValueError(f"{reader.path}: TFP window ±{hw} around frame {center} leaves the "
                         f"{info.frames} frames")
    texture = tfp(reader.read_frames(center - hw, center + hw + 1), hw, hw).numpy()
    if not args.no_stretch:
        texture = stretch_contrast(texture)
    return np.rint(texture * 255).astype(np.uint8)


def add_convert(sub) -> None:
    """Register `convert`."""
    p = sub.add_parser("convert", help="convert a recording: events to DSEC .h5 or EVT 2.0 "
                       ".raw, spikes to .dat (streamed)")
    add_recording_args(p)
    add_out(p, "file", "output file: .h5 (DSEC events), .raw (EVT 2.0) or .dat (spikes)")
    p.add_argument("--to", default=None, choices=("dsec-h5", "evt2", "spike-dat"),
                   help="output format (default: from the output suffix)")
    p.add_argument("--window-ms", type=positive_int, default=100,
                   help="events read and written per step, ms (default 100)")
    p.add_argument("--relative", action="store_true",
                   help="shift times to start at 0 (EVT 2.0 holds t < 2^34 µs)")
    p.set_defaults(run=run_convert)


def run_convert(args) -> int:
    """Convert `args.path` into `args.out`."""
    from evtransfer.cli._args import reader_options
    from evtransfer.io.convert import convert

    result = convert(args.path, args.out, to=args.to, window_us=args.window_ms * 1000,
                     relative=args.relative, reader_options=reader_options(args))
    what = f"{result['frames']} frames" if "frames" in result else f"{result['events']} events"
    print(f"wrote {what} ({result['format']} -> {result['to']}) to {args.out}")
    return 0
