"""`evtransfer simulate events|spikes`: frames (a folder, a video, one image) to a recording."""

from __future__ import annotations

from evtransfer.cli._args import add_device, add_out, output_file, positive_int

# DvsConfig's fields (but seed, which is --seed) and their types: a test checks the two match.
# Listed here so that `simulate --help` does not import torch through the simulator package.
DVS_FIELDS = {"pos_threshold": float, "neg_threshold": float, "sigma_threshold": float,
              "min_threshold": float, "refractory_us": int, "cutoff_hz": float,
              "leak_rate_hz": float, "leak_rate_cov_decades": float, "shot_noise_rate_hz": float,
              "shot_noise_bright_factor": float, "hot_pixel_fraction": float,
              "hot_pixel_rate_hz": float, "jitter_us": float, "eps": float}


def add(sub) -> None:
    """Register `simulate events` and `simulate spikes`."""
    p = sub.add_parser("simulate", help="simulate DVS events or spike-camera spikes from frames")
    kinds = p.add_subparsers(dest="sensor", metavar="SENSOR", required=True)
    ev = kinds.add_parser("events", help="frames -> DVS events (DSEC-layout .h5)")
    ev.add_argument("--preset", default="clean", choices=("ideal", "clean", "noisy"),
                    help="DVS model whose parameters the options below replace (default: "
                         "clean)")
    dvs = ev.add_argument_group("DVS parameters (DvsConfig; thresholds in log intensity, "
                                "rates in Hz per pixel, times in µs; default: the preset's)")
    for name, kind in DVS_FIELDS.items():
        dvs.add_argument("--" + name.replace("_", "-"), type=kind, default=None,
                         metavar="INT" if kind is int else "X")
    ev.add_argument("--preview", default=None, metavar="GIF",
                    help="also write an animated GIF of the events (one image per frame "
                         "interval, at most --preview-frames)")
    ev.add_argument("--preview-frames", type=positive_int, default=100,
                    help="most images in the preview GIF (default 100)")
    sp = kinds.add_parser("spikes", help="frames -> spike-camera spikes (.dat)")
    sp.add_argument("--rate-hz", type=float, default=20000.0, help="readout rate (default 20000)")
    sp.add_argument("--ticks", type=int, default=1000,
                    help="readouts of a still image without --motion (default 1000)")
    for q, suffix in ((ev, ".h5"), (sp, ".dat")):
        q.add_argument("input", help="frame folder with timestamps, video file, or one image")
        add_out(q, "file", f"output file ({suffix})")
        q.add_argument("--motion", default="none", choices=("none", "random"),
                       help="random camera motion turns one image into a pseudo-video")
        q.add_argument("--frames", type=int, default=100, help="pseudo-video frames (default 100)")
        q.add_argument("--fps", type=float, default=1000.0, help="pseudo-video rate (default 1000)")
        q.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
        add_device(q)
    p.set_defaults(run=run_simulate)


def run_simulate(args) -> int:
    """Simulate `args.input` into `args.out`."""
    from pathlib import Path

    from tqdm import tqdm

    from evtransfer.simulate import open_frames
    from evtransfer.simulate.sources import IMAGE_SUFFIXES

    out = Path(args.out)
    suffix = ".h5" if args.sensor == "events" else ".dat"
    if out.suffix.lower() != suffix:
        kind = "DSEC-layout events" if args.sensor == "events" else "spike-camera bitstream"
        raise ValueError(f"{out}: simulate {args.sensor} writes a {kind} file; name it "
                         f"*{suffix} (got {out.suffix or 'no suffix'!r})")
    still = Path(args.input).suffix.lower() in IMAGE_SUFFIXES and args.motion == "none"
    if still and args.sensor == "events":
        raise ValueError(f"{args.input}: a still image makes no events; add --motion random")
    if still:
        return _simulate_still_spikes(args, out)
    source = open_frames(args.input, motion=args.motion, n_frames=args.frames, fps=args.fps,
                         seed=args.seed)
    frames = tqdm(source.frames, total=source.n_frames, unit="frame", desc=args.sensor,
                  disable=None)
    if args.sensor == "events":
        return _simulate_events(args, source, frames, out)
    return _simulate_spikes(args, source, frames, out)


def dvs_config(args):
    """The `--preset` DvsConfig with the parameters given on the command line."""
    from evtransfer.simulate import dvs_preset

    given = {k: getattr(args, k) for k in DVS_FIELDS if getattr(args, k) is not None}
    return dvs_preset(args.preset, seed=args.seed, **given)


def _simulate_events(args, source, frames, out) -> int:
    from evtransfer.io.dsec import DsecEventsWriter
    from evtransfer.simulate import DvsSimulator

    preview = output_file(args.preview) if args.preview else None
    sim = DvsSimulator(dvs_config(args), source.height, source.width, device=args.device)
    every = max(1, -(-(source.n_frames - 1) // args.preview_frames)) if source.n_frames else 1
    images, shown = [], ()
    writer = None
    total = 0
    try:
        for k, (frame, t_us) in enumerate(frames):
            if writer is None:
                writer = DsecEventsWriter(out, width=source.width, height=source.height,
                                          t_offset_us=t_us)
            events = sim.feed(frame, t_us)[0]
            writer.write(events)
            total += len(events)
            # the first frame only sets the reference level: no events, no image
            if preview is not None and k and (k - 1) % every == 0 \
                    and len(images) < args.preview_frames:
                images.append(_event_image(events, source.height, source.width))
                shown = (shown[0] if shown else t_us, t_us)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is None:
        raise ValueError(f"{args.input}: no frames")
    writer.close()
    print(f"wrote {total} events ({source.width}x{source.height}) to {out}")
    if preview is not None:
        # real time between images, at least 20 ms (what GIF viewers honour)
        duration = max(20, round((shown[1] - shown[0]) / 1000 / max(len(images) - 1, 1)))
        images[0].save(preview, save_all=True, append_images=images[1:], duration=duration,
                       loop=0)
        print(f"wrote {len(images)} preview images to {preview}")
    return 0


def _event_image(events, height: int, width: int):
    """One frame interval's events as a PIL image (ON blue, OFF red, on white)."""
    import numpy as np
    from PIL import Image

    from evtransfer.viz import colorize_events

    net = np.zeros((height, width), np.int64)
    np.add.at(net, (events.y.astype(np.intp), events.x.astype(np.intp)), events.p)
    return Image.fromarray(colorize_events(net))


def _simulate_spikes(args, source, frames, out) -> int:
    import numpy as np

    from evtransfer.events import Spikes
    from evtransfer.io.spike import write_spike_dat
    from evtransfer.simulate import SpikeConfig, SpikeSimulator

    config = SpikeConfig(rate_hz=args.rate_hz, seed=args.seed)
    sim = SpikeSimulator(config, source.height, source.width, device=args.device)
    parts = [sim.feed(frame, t_us)[0] for frame, t_us in frames]
    if len(parts) < 2:
        raise ValueError(f"{args.input}: spikes need at least two frames")
    spikes = Spikes(np.concatenate([s.data for s in parts[1:]]), config.rate_hz,
                    width=source.width, packed=True, t0_us=parts[1].t0_us)
    write_spike_dat(out, spikes, sidecar=True)
    print(f"wrote {len(spikes)} spike frames ({source.width}x{source.height}) to {out}")
    return 0


def _simulate_still_spikes(args, out) -> int:
    from evtransfer.io.spike import write_spike_dat
    from evtransfer.simulate import SpikeConfig, spikes_from_image
    from evtransfer.simulate.sources import load_gray

    image = load_gray(args.input)
    config = SpikeConfig(rate_hz=args.rate_hz, seed=args.seed)
    spikes = spikes_from_image(image, args.ticks, config, device=args.device)
    write_spike_dat(out, spikes, sidecar=True)
    print(f"wrote {len(spikes)} spike frames ({spikes.width}x{spikes.height}) to {out}")
    return 0
