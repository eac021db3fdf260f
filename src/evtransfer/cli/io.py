"""`evtransfer info` and `evtransfer render`: look at a recording."""

from __future__ import annotations

from evtransfer.cli._args import add_out, add_recording_args, open_reader


def add(sub) -> None:
    """Register `info` and `render`."""
    p = sub.add_parser("info", help="format, sensor size, event count and time span of a file")
    add_recording_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run_info)

    p = sub.add_parser("render", help="draw a recording: event image, or TFP for spikes")
    add_recording_args(p)
    add_out(p, "file", "output image (.png)")
    p.add_argument("--t0", type=int, default=None, help="window start, µs (default: first t)")
    p.add_argument("--t1", type=int, default=None,
                   help="window end, µs (events default: t0 + 50 ms; spikes: last frame)")
    p.add_argument("--half-window", type=int, default=20,
                   help="spikes: TFP half window in frames around the centre (default 20)")
    p.set_defaults(run=run_render)


def run_info(args) -> int:
    """Print the recording's header facts (text or one JSON object)."""
    import json

    info = open_reader(args).info()
    span = info.t_end_us - info.t_start_us
    out = {"format": info.format, "width": info.width, "height": info.height}
    if hasattr(info, "frames"):
        out.update(frames=info.frames, rate_hz=info.rate_hz)
    else:
        out.update(events=info.events, rate_ev_per_s=info.rate_ev_per_s)
    out.update(t_start_us=info.t_start_us, t_end_us=info.t_end_us, duration_us=span)
    if args.json:
        print(json.dumps(out))
    else:
        for key, value in out.items():
            print(f"{key:<14}{value:.6g}" if isinstance(value, float) else f"{key:<14}{value}")
    return 0


def run_render(args) -> int:
    """Draw an event histogram or a spike TFP image into `--out`."""
    from PIL import Image

    out = args.out
    reader = open_reader(args)
    info = reader.info()
    t0 = info.t_start_us if args.t0 is None else args.t0
    if hasattr(info, "frames"):
        image = _render_spikes(reader, info, t0, args)
    else:
        image = _render_events(reader, t0, t0 + 50_000 if args.t1 is None else args.t1)
    Image.fromarray(image).save(out)
    print(f"wrote {image.shape[1]}x{image.shape[0]} image to {out}")
    return 0


def _render_events(reader, t0: int, t1: int):
    from evtransfer.represent import histogram
    from evtransfer.viz import colorize_events

    events = reader.read_window(t0, t1)
    if not len(events):
        raise ValueError(f"{reader.path}: no events in [{t0}, {t1}) µs")
    return colorize_events(histogram(events)[0])


def _render_spikes(reader, info, t0: int, args):
    import numpy as np

    from evtransfer.represent import tfp

    t1 = info.t_end_us + 1 if args.t1 is None else args.t1
    times = info.t_start_us + np.rint(np.arange(info.frames) * 1e6 / info.rate_hz)
    k0, k1 = (int(k) for k in np.searchsorted(times, [t0, t1], side="left"))
    if k1 <= k0:
        raise ValueError(f"{reader.path}: no spike frames in [{t0}, {t1}) µs")
    center, hw = (k0 + k1 - 1) // 2, args.half_window
    if hw < 0 or center - hw < 0 or center + hw >= info.frames:
        raise ValueError(f"{reader.path}: TFP window ±{hw} around frame {center} leaves the "
                         f"{info.frames} frames")
    texture = tfp(reader.read_frames(center - hw, center + hw + 1), hw, hw)
    return np.rint(texture.numpy() * 255).astype(np.uint8)
