"""The `evtransfer` command. Each subcommand is a pair `_add_<name>(sub)` / `_run_<name>(args)`."""

from __future__ import annotations

import argparse
import sys

from evtransfer import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evtransfer",
        description="Dense perception for event and spike cameras by transfer from labeled RGB.",
    )
    parser.add_argument("--version", action="version", version=f"evtransfer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_demo, _add_simulate, _add_info, _add_render, _add_world, _add_train,
                _add_bench):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.run(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"evtransfer {args.command}: error: {exc}", file=sys.stderr)
        return 2


# --- demo ------------------------------------------------------------------------------
def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="run the end-to-end demo and write a report to --out")
    p.add_argument("--out", default="demo_out", help="output folder (default: ./demo_out)")
    p.add_argument("--quick", action="store_true", help="a shorter run (about 2 minutes)")
    p.add_argument("--world", default=None, help="world folder (default: OUT/world)")
    p.add_argument("--preset", default="small", choices=("tiny", "small", "full"),
                   help="world preset built when the folder is empty (default: small)")
    p.add_argument("--steps", type=int, default=None,
                   help="iterations per training run (default 400; 150 with --quick)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.set_defaults(run=_run_demo)


def _run_demo(args) -> int:
    from evtransfer.demo import run_demo

    run_demo(args.out, quick=args.quick, device=args.device, world=args.world,
             world_preset=args.preset, steps=args.steps)
    return 0


# --- simulate --------------------------------------------------------------------------
def _add_simulate(sub) -> None:
    p = sub.add_parser("simulate", help="simulate DVS events or spike-camera spikes from frames")
    kinds = p.add_subparsers(dest="sensor", metavar="SENSOR", required=True)
    ev = kinds.add_parser("events", help="frames -> DVS events (DSEC-layout .h5)")
    ev.add_argument("--preset", default="clean", choices=("ideal", "clean", "noisy"),
                    help="DVS model (default: clean)")
    sp = kinds.add_parser("spikes", help="frames -> spike-camera spikes (.dat)")
    sp.add_argument("--rate-hz", type=float, default=20000.0, help="readout rate (default 20000)")
    sp.add_argument("--ticks", type=int, default=1000,
                    help="readouts of a still image without --motion (default 1000)")
    for q, suffix in ((ev, ".h5"), (sp, ".dat")):
        q.add_argument("input", help="frame folder with timestamps, video file, or one image")
        q.add_argument("-o", "--out", required=True, help=f"output file ({suffix})")
        q.add_argument("--motion", default="none", choices=("none", "random"),
                       help="random camera motion turns one image into a pseudo-video")
        q.add_argument("--frames", type=int, default=100, help="pseudo-video frames (default 100)")
        q.add_argument("--fps", type=float, default=1000.0, help="pseudo-video rate (default 1000)")
        q.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
        q.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.set_defaults(run=_run_simulate)


def _run_simulate(args) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from evtransfer.simulate import open_frames
    from evtransfer.simulate.sources import IMAGE_SUFFIXES

    out = Path(args.out)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"{out}: folder {out.parent} does not exist")
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


def _simulate_events(args, source, frames, out) -> int:
    from evtransfer.io.dsec import DsecEventsWriter
    from evtransfer.simulate import DvsSimulator, dvs_preset

    sim = DvsSimulator(dvs_preset(args.preset, seed=args.seed), source.height, source.width,
                       device=args.device)
    writer = None
    total = 0
    try:
        for frame, t_us in frames:
            if writer is None:
                writer = DsecEventsWriter(out, width=source.width, height=source.height,
                                          t_offset_us=t_us)
            events = sim.feed(frame, t_us)[0]
            writer.write(events)
            total += len(events)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is None:
        raise ValueError(f"{args.input}: no frames")
    writer.close()
    print(f"wrote {total} events ({source.width}x{source.height}) to {out}")
    return 0


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
    write_spike_dat(out, spikes)
    print(f"wrote {len(spikes)} spike frames ({source.width}x{source.height}) to {out}")
    return 0


def _simulate_still_spikes(args, out) -> int:
    from evtransfer.io.spike import write_spike_dat
    from evtransfer.simulate import SpikeConfig, spikes_from_image
    from evtransfer.simulate.sources import load_gray

    image = load_gray(args.input)
    config = SpikeConfig(rate_hz=args.rate_hz, seed=args.seed)
    spikes = spikes_from_image(image, args.ticks, config, device=args.device)
    write_spike_dat(out, spikes)
    print(f"wrote {len(spikes)} spike frames ({spikes.width}x{spikes.height}) to {out}")
    return 0


# --- info / render ---------------------------------------------------------------------
def _add_recording_args(p) -> None:
    p.add_argument("path", help="recording: .raw, .dat, .bin, .aedat4, .h5, spike .dat/.npy")
    p.add_argument("--format", default=None, help="skip detection (e.g. evt3, spike-dat)")
    p.add_argument("--width", type=int, default=None, help="sensor / frame width override")
    p.add_argument("--height", type=int, default=None, help="sensor / frame height override")


def _open(args):
    from evtransfer.io import open_recording

    size = {k: v for k, v in (("width", args.width), ("height", args.height)) if v is not None}
    return open_recording(args.path, format=args.format, **size)


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="format, sensor size, event count and time span of a file")
    _add_recording_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=_run_info)


def _run_info(args) -> int:
    import json

    info = _open(args).info()
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


def _add_render(sub) -> None:
    p = sub.add_parser("render", help="draw a recording: event image, or TFP for spikes")
    _add_recording_args(p)
    p.add_argument("-o", "--out", required=True, help="output image (.png)")
    p.add_argument("--t0", type=int, default=None, help="window start, µs (default: first t)")
    p.add_argument("--t1", type=int, default=None,
                   help="window end, µs (events default: t0 + 50 ms; spikes: last frame)")
    p.add_argument("--half-window", type=int, default=20,
                   help="spikes: TFP half window in frames around the centre (default 20)")
    p.set_defaults(run=_run_render)


def _run_render(args) -> int:
    from pathlib import Path

    from PIL import Image

    out = Path(args.out)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"{out}: folder {out.parent} does not exist")
    reader = _open(args)
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


# --- world ---------------------------------------------------------------------------------
def _add_world(sub) -> None:
    p = sub.add_parser("world", help="build or inspect the embedded procedural world")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    b = verbs.add_parser("build", help="render and simulate a world into --out (resumable)")
    b.add_argument("--preset", default="small", choices=("tiny", "small", "full"))
    b.add_argument("--world", default=None, help="a world YAML (overrides --preset)")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a world config field, e.g. --set seed=3")
    b.add_argument("--out", required=True, help="output folder")
    b.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    b.set_defaults(run=_run_world_build)
    s = verbs.add_parser("show", help="montage RGB | label | depth | flow | events | spikes")
    s.add_argument("root", help="a built world folder")
    s.add_argument("-o", "--out", required=True, help="output PNG")
    s.add_argument("--samples", type=int, default=4, help="target samples to show (default 4)")
    s.add_argument("--domain", default="target", help="target or a built variant")
    s.set_defaults(run=_run_world_show)


def world_config_from(preset: str, path: str | None, overrides: list[str]):
    """A WorldConfig from a YAML file or a preset, with --set overrides."""
    from evtransfer.config import load_config, to_dict
    from evtransfer.world.domains import WorldConfig
    from evtransfer.world.domains import preset as world_preset

    base = path if path is not None else to_dict(world_preset(preset))
    return load_config(WorldConfig, base, overrides)


def _run_world_build(args) -> int:
    from evtransfer.world.build import build_world

    cfg = world_config_from(args.preset, args.world, args.set)
    out = build_world(cfg, args.out, device=args.device)
    print(f"world ready in {out}")
    return 0


def _run_world_show(args) -> int:
    import numpy as np

    from evtransfer.data.world import WorldTarget, WorldTargetConfig
    from evtransfer.represent import histogram, tfp
    from evtransfer.viz import (
        DSEC11_PALETTE,
        colorize_depth,
        colorize_events,
        colorize_flow,
        colorize_labels,
        save_panel,
    )

    cfg = WorldTargetConfig(domain=args.domain, split="all", with_depth=True, with_flow=True,
                            with_rgb=True, with_spikes=True)
    data = WorldTarget(args.root, cfg)
    picks = np.linspace(0, len(data) - 1, min(args.samples, len(data))).round().astype(int)
    images, titles = [], []
    for i in picks:
        s = data[int(i)]
        hw = min(20, (len(s["spikes"]) - 1) // 2)
        row = [
            (s["rgb"].permute(1, 2, 0).numpy() * 255).astype(np.uint8),
            colorize_labels(s["label"].numpy(), DSEC11_PALETTE),
            colorize_depth(s["depth"].numpy()),
            colorize_flow(s["flow"].numpy()),
            colorize_events(histogram(s["events"])[0]),
            _gray(tfp(s["spikes"], len(s["spikes"]) - 1 - hw, hw).numpy()),
        ]
        images += row
        titles += [f"{s['sequence']} #{s['index']}", "label", "depth", "flow", "events",
                   "spikes (TFP)"]
    path = save_panel(images, titles, args.out, ncols=6)
    print(f"wrote {path}")
    return 0


def _gray(image):
    """A float image stretched to its own maximum, as uint8 (dark spike textures stay visible)."""
    import numpy as np

    return (255 * image / max(float(image.max()), 1e-9)).astype(np.uint8)


# --- train / bench -------------------------------------------------------------------------
def _add_world_args(p) -> None:
    p.add_argument("--world", default="small",
                   help="a world preset (tiny, small, full), a world YAML, or a built world folder")
    p.add_argument("--config", default=None, help="benchmark/method YAML (TransferBenchConfig)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set cmess.fuse_lambda=0.7")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def _add_train(sub) -> None:
    from evtransfer.methods import METHODS

    p = sub.add_parser("train", help="train one transfer method on a world (resumable)")
    p.add_argument("method", choices=sorted(METHODS))
    p.add_argument("--seed", type=int, default=0)
    _add_world_args(p)
    p.set_defaults(run=_run_train)


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    t = kinds.add_parser("transfer", help="methods × seeds on a world: results.json/.md")
    t.add_argument("--methods", default="source_only,recon_source,cmess,oracle",
                   help="comma-separated method names")
    t.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    _add_world_args(t)
    t.set_defaults(run=_run_bench_transfer)


def _world_root(spec: str, out, device: str):
    """A built world folder from a preset name, a world YAML, or an existing folder."""
    from pathlib import Path

    from evtransfer.world.build import build_world

    path = Path(spec)
    if path.is_dir():
        if not (path / "world.yaml").is_file():
            raise FileNotFoundError(f"{path} is not a built world (no world.yaml)")
        return path
    if spec.endswith((".yaml", ".yml")):
        cfg = world_config_from("small", spec, [])
        return build_world(cfg, Path(out) / "world", device=device)
    return build_world(world_config_from(spec, None, []), Path(out) / f"world-{spec}",
                       device=device)


def _bench_config(args):
    from evtransfer.bench import TransferBenchConfig
    from evtransfer.config import load_config

    return load_config(TransferBenchConfig, args.config, args.set)


def _run_train(args) -> int:
    from evtransfer.bench import run_transfer

    cfg = _bench_config(args)
    world = _world_root(args.world, args.out, args.device)
    summary, _ = run_transfer(world, [args.method], [args.seed], args.out, cfg,
                              device=args.device)
    r = summary["methods"][args.method]
    print(f"{args.method}: mIoU {r['miou_mean']:.2f}, acc {r['acc_mean']:.2f} "
          f"(results in {args.out})")
    return 0


def _run_bench_transfer(args) -> int:
    from evtransfer.bench import markdown, run_transfer

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    cfg = _bench_config(args)
    world = _world_root(args.world, args.out, args.device)
    summary, _ = run_transfer(world, methods, list(range(args.seeds)), args.out, cfg,
                              device=args.device)
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
