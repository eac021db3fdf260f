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
                _add_bench, _add_evdistill, _add_predict, _add_evaluate, _add_export,
                _add_pretrain, _add_finetune):
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


def _world_config(preset: str, path: str | None, overrides: list[str]):
    """A WorldConfig from a YAML file or a preset, with --set overrides."""
    from evtransfer.config import load_config, to_dict
    from evtransfer.world.domains import WorldConfig
    from evtransfer.world.domains import preset as world_preset

    base = path if path is not None else to_dict(world_preset(preset))
    return load_config(WorldConfig, base, overrides)


def _run_world_build(args) -> int:
    from evtransfer.world.build import build_world

    cfg = _world_config(args.preset, args.world, args.set)
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
def _add_world_args(p, world: str | None = "small",
                    config: str = "benchmark/method YAML (TransferBenchConfig)",
                    example: str = "cmess.fuse_lambda=0.7") -> None:
    p.add_argument("--world", default=world,
                   help="a world preset (tiny, small, full), a world YAML, or a built world folder "
                        "(not used when the config's real: section names a dataset)")
    p.add_argument("--config", default=None, help=config)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override a config field, e.g. --set {example}")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def _add_train(sub) -> None:
    from evtransfer.methods import METHODS

    p = sub.add_parser("train", help="train one transfer method on a world or a real scenario "
                       "(the config's real: section) (resumable)")
    p.add_argument("method", choices=sorted(METHODS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", default=None, metavar="PATH",
                   help="encoder checkpoint (e.g. from `evtransfer pretrain ecddp`) that every "
                        "network with a matching encoder starts from")
    _add_world_args(p)
    p.set_defaults(run=_run_train_init)


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    t = kinds.add_parser("transfer", help="methods × seeds on a world: results.json/.md")
    t.add_argument("--task", default="segmentation", choices=("segmentation", "depth"),
                   help="segmentation (events) or depth (spike camera, BiCross)")
    t.add_argument("--methods", default=None,
                   help="comma-separated method names (default: source_only,recon_source,cmess,"
                        "oracle; with --task depth: pre_src,bicross,spike_supervised)")
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
        cfg = _world_config("small", spec, [])
        return build_world(cfg, Path(out) / "world", device=device)
    return build_world(_world_config(spec, None, []), Path(out) / f"world-{spec}",
                       device=device)


def _bench_config(args):
    from evtransfer.bench import TransferBenchConfig
    from evtransfer.config import load_config

    return load_config(TransferBenchConfig, args.config, args.set)


def _run_train(args) -> int:
    from evtransfer.bench import run_depth_transfer, run_transfer
    from evtransfer.methods import DEPTH_METHODS

    cfg = _bench_config(args)
    depth = args.method in DEPTH_METHODS
    real = bool(cfg.depth_real.source if depth else cfg.real.target)  # needs no world
    world = None if real else _world_root(args.world, args.out, args.device)
    run = run_depth_transfer if depth else run_transfer
    summary, runs = run(world, [args.method], [args.seed], args.out, cfg, device=args.device)
    r = summary["methods"][args.method]
    scores = (f"AbsRel {r['abs_rel_mean']:.3f}, RMSE {r['rmse_mean']:.3f}, δ1 {r['d1_mean']:.3f}"
              if depth else f"mIoU {r['miou_mean']:.2f}, acc {r['acc_mean']:.2f}")
    print(f"{args.method}: {scores} (results in {args.out})")
    _print_package(runs[0])
    return 0


def _print_package(run) -> None:
    if run.package is not None:
        print(f"model package: {run.package} (use with `evtransfer predict|evaluate|export "
              f"--checkpoint`)")
    else:
        print(f"no model package: {run.method} predicts with more than one network")


def _run_bench_transfer(args) -> int:
    from evtransfer.bench import markdown, markdown_depth, run_depth_transfer, run_transfer

    depth = args.task == "depth"
    default = ("pre_src,bicross,spike_supervised" if depth
               else "source_only,recon_source,cmess,oracle")
    methods = [m.strip() for m in (args.methods or default).split(",") if m.strip()]
    cfg = _bench_config(args)
    real = bool(cfg.depth_real.source if depth else cfg.real.target)  # needs no world
    world = None if real else _world_root(args.world, args.out, args.device)
    run = run_depth_transfer if depth else run_transfer
    summary, _ = run(world, methods, list(range(args.seeds)), args.out, cfg, device=args.device)
    print((markdown_depth if depth else markdown)(summary))
    return 0


# --- evdistill: real-data segmentation and recognition ---------------------------------------
def _add_evdistill(sub) -> None:
    p = sub.add_parser("evdistill", help="EvDistill beyond the world table: segmentation on "
                       "EvDistill-layout data (DDD17, MVSEC), recognition (world, N-Caltech101)")
    p.add_argument("task", choices=("segment", "recognize"))
    p.add_argument("--config", required=True,
                   help="RealSegmentationRun (segment) or RecognitionRun (recognize) YAML")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set method.losses.bmr=false")
    p.add_argument("--out", required=True, help="output folder (results.json, work/)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.set_defaults(run=_run_evdistill)


def _run_evdistill(args) -> int:
    import json
    from dataclasses import replace

    from evtransfer.config import load_config
    from evtransfer.methods import evdistill

    if args.task == "segment":
        cfg = load_config(evdistill.RealSegmentationRun, args.config, args.set)
        summary = evdistill.run_real_segmentation(cfg, args.out, device=args.device)
    else:
        cfg = load_config(evdistill.RecognitionRun, args.config, args.set)
        if cfg.dataset == "world":
            cfg = replace(cfg, world=str(_world_root(cfg.world or "small", args.out,
                                                     args.device)))
        summary = evdistill.run_recognition(cfg, args.out, device=args.device)
    print(json.dumps(summary))
    return 0


# --- predict / evaluate / export: using a trained model --------------------------------------
def _add_checkpoint_args(p) -> None:
    p.add_argument("--checkpoint", required=True,
                   help="model package (.safetensors) or a `train` output folder holding one")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="run a trained model over recordings: label/depth PNGs, "
                       "overlay GIF, windows.json")
    _add_checkpoint_args(p)
    p.add_argument("input", help="a recording (DSEC .h5, .aedat4, .raw, .dat, MVSEC .hdf5, "
                   "spike .dat, DDD17 folder) or a folder of them")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--every", default=None,
                   help="prediction stride: 50ms, 20000us, 100000ev or 32fr (default: the "
                        "model's own window)")
    p.add_argument("--batch", type=int, default=8, help="windows per forward pass (default 8)")
    p.add_argument("--resize", action="store_true",
                   help="accept a sensor size other than the training one (resize the input)")
    p.add_argument("--partial", action="store_true",
                   help="also predict windows shorter than the model's (recording start)")
    p.add_argument("--t0", type=int, default=None, help="first window end no earlier, µs")
    p.add_argument("--t1", type=int, default=None, help="last window end no later, µs")
    p.add_argument("--limit", type=int, default=0, help="at most this many windows")
    p.add_argument("--gif-frames", type=int, default=100,
                   help="overlay.gif frames, evenly spaced (default 100)")
    p.add_argument("--overlays", action="store_true", help="also write overlay/NNNNNN.png")
    p.add_argument("--format", default=None, help="skip format detection (e.g. evt3)")
    p.add_argument("--width", type=int, default=None, help="sensor / frame width override")
    p.add_argument("--height", type=int, default=None, help="sensor / frame height override")
    p.set_defaults(run=_run_predict)


def _run_predict(args) -> int:
    from evtransfer.inference import load_model
    from evtransfer.inference.stream import PredictOptions, parse_every, predict_path

    model = load_model(args.checkpoint, device=args.device)
    reader = {k: v for k, v in (("format", args.format), ("width", args.width),
                                ("height", args.height)) if v is not None}
    opts = PredictOptions(every=parse_every(args.every) if args.every else None,
                          batch=args.batch, resize=args.resize, partial=args.partial,
                          t0_us=args.t0, t1_us=args.t1, limit=args.limit,
                          gif_frames=args.gif_frames, overlays=args.overlays,
                          reader_options=reader)
    for s in predict_path(model, args.input, args.out, opts):
        sec = s["seconds"]
        print(f"{s['recording']}: {s['predicted']} of {s['windows']} windows predicted in "
              f"{sec['total']:.1f} s ({s['predicted'] / max(sec['total'], 1e-9):.1f} windows/s)"
              f"; overlay {s['overlay_gif']}")
    return 0


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="score a trained model under a benchmark's protocol")
    _add_checkpoint_args(p)
    p.add_argument("--dataset", required=True,
                   choices=("world", "dsec-semantic", "ddd17", "mvsec-depth", "kitti-depth"))
    p.add_argument("--root", required=True, help="dataset root (world: a built world folder)")
    p.add_argument("--split", default=None,
                   help="default: the reported split (world/dsec/mvsec/kitti test, ddd17 valid)")
    p.add_argument("--resize", action="store_true",
                   help="accept a model trained on another sensor / input size")
    p.add_argument("--batch", type=int, default=8, help="samples per forward pass (default 8)")
    p.add_argument("--limit", type=int, default=0, help="only the first N samples (smoke runs)")
    p.add_argument("--scenario", default="outdoor", choices=("outdoor", "indoor_flying"),
                   help="mvsec-depth scenario (default outdoor)")
    p.add_argument("--split-id", type=int, default=1, help="mvsec-depth indoor_flying split")
    p.add_argument("--test-sequences", type=int, default=0,
                   help="world: held-out sequences (default 0 = half, as bench transfer)")
    p.add_argument("-o", "--out", default=None,
                   help="results JSON (default: evaluation-<dataset>.json)")
    p.set_defaults(run=_run_evaluate)


def _run_evaluate(args) -> int:
    import json
    from pathlib import Path

    from evtransfer.inference import load_model
    from evtransfer.inference.evaluate import EvalOptions, evaluate, format_table

    model = load_model(args.checkpoint, device=args.device)
    opts = EvalOptions(split=args.split, resize=args.resize, batch=args.batch, limit=args.limit,
                       scenario=args.scenario, split_id=args.split_id,
                       test_sequences=args.test_sequences)
    result = evaluate(model, args.dataset, args.root, opts)
    out = Path(args.out or f"evaluation-{args.dataset}.json")
    out.write_text(json.dumps(result, indent=1))
    print(format_table(result))
    print(f"wrote {out}")
    return 0


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a trained model to TorchScript or ONNX")
    _add_checkpoint_args(p)
    p.add_argument("--format", required=True, choices=("torchscript", "onnx"))
    p.add_argument("-o", "--out", required=True, help="output file (.pt or .onnx)")
    p.add_argument("--batch", type=int, default=1,
                   help="batch size N (ONNX: fixed to it; TorchScript: any)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.set_defaults(run=_run_export)


def _run_export(args) -> int:
    from evtransfer.inference import load_model
    from evtransfer.inference.export import export_model

    model = load_model(args.checkpoint, device=args.device)
    info = export_model(model, args.format, args.out, batch=args.batch, opset=args.opset)
    diff = info["max_abs_diff"]
    print(f"wrote {info['path']} and {info['path']}.json")
    batch = "dynamic" if info["input"]["dynamic_batch"] else "fixed"
    print(f"input  {info['input']['shape']} float32 (N {batch}): {info['input']['text']}")
    print(f"output {info['output']['shape']}: {info['output']['meaning']}")
    print("max |exported - PyTorch| = " + ("not checked (onnxruntime not installed)"
                                           if diff is None else f"{diff:.2e}"))
    return 0


def _run_train_init(args) -> int:
    """`train`, inside an `encoder_init` scope when --init is given (a separate --out per
    init: cached stages do not know which init trained them)."""
    if args.init is None:
        return _run_train(args)
    import json
    from pathlib import Path

    from evtransfer.models.weights import encoder_init

    marker, init = Path(args.out) / "init.json", str(Path(args.init).resolve())
    if marker.exists() and json.loads(marker.read_text())["init"] != init:
        raise ValueError(f"{args.out} was trained from another --init; use a new --out")
    if not marker.exists() and (Path(args.out) / "work").exists():
        raise ValueError(f"{args.out} holds stages trained without --init; use a new --out")
    with encoder_init(args.init) as scope:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"init": init}))
        code = _run_train(args)
    for name, report in scope.reports:
        print(f"--init into {name}: {len(report.loaded)} tensors loaded, "
              f"{len(report.mismatched)} shape mismatches, {len(report.missing)} left at init")
    return code


# --- ECDDP: self-supervised pre-training and the fine-tuning study ----------------------------
def _add_ecddp_args(p) -> None:
    p.add_argument("method", choices=("ecddp",))
    _add_world_args(p, world=None, config="ECDDP YAML (bench_ecddp.EcddpStudyConfig)",
                    example="ecddp.pretrain.epochs=50")


def _add_pretrain(sub) -> None:
    p = sub.add_parser("pretrain", help="self-supervised pre-training of an event encoder "
                       "(resumable; reports samples/s and peak memory)")
    _add_ecddp_args(p)
    p.add_argument("--recording", action="append", default=[], metavar="PATH",
                   help="also pre-train on a real recording (DSEC h5, AEDAT4, EVT .raw, ...)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_run_pretrain)


def _ecddp_config(args):
    from evtransfer.bench_ecddp import EcddpStudyConfig
    from evtransfer.config import load_config

    return load_config(EcddpStudyConfig, args.config, args.set)


def _run_pretrain(args) -> int:
    import json
    from dataclasses import replace
    from pathlib import Path

    from evtransfer.data.pretrain_events import load_pretrain_windows
    from evtransfer.methods.ecddp import pretrain_ecddp

    cfg = _ecddp_config(args).ecddp.pretrain
    data = replace(cfg.data, recordings=cfg.data.recordings + tuple(args.recording))
    world = None
    if args.world is not None:
        world = _world_root(args.world, args.out, args.device)
    elif not data.recordings:
        raise ValueError("pretrain: give --world and/or --recording")
    else:
        data = replace(data, source=False, target=False)
    groups = load_pretrain_windows(world, data, cache_dir=Path(args.out) / "cache")
    summary = pretrain_ecddp(groups, replace(cfg, data=data), Path(args.out) / "work",
                             seed=args.seed, device=args.device)
    (Path(args.out) / "pretrain.json").write_text(json.dumps(summary, indent=1))
    print(f"encoder: {summary['encoder']}\n{summary['steps']} steps, "
          f"{summary['samples_per_s']:.1f} samples/s, peak memory "
          f"{summary['peak_memory_mb']:.0f} MB ({summary['memory_kind']})")
    return 0


def _add_finetune(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune encoder initialisations on the world's "
                       "segmentation, flow and depth with few labels: results.json/.md")
    _add_ecddp_args(p)
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    p.add_argument("--real", default=None, metavar="YAML",
                   help="a RealFinetuneConfig (DSEC, DDD17 or MVSEC; --set applies to it): "
                        "one fine-tuning on a real benchmark instead of the world study")
    p.set_defaults(run=_run_finetune)


def _run_finetune(args) -> int:
    from evtransfer.bench_ecddp import markdown, run_ecddp_study

    if args.real is not None:
        import json

        from evtransfer.bench_ecddp import RealFinetuneConfig, run_real_finetune
        from evtransfer.config import load_config

        cfg = load_config(RealFinetuneConfig, args.real, args.set)
        print(json.dumps(run_real_finetune(cfg, args.out, device=args.device), default=str))
        return 0
    world = _world_root(args.world or "small", args.out, args.device)
    summary = run_ecddp_study(world, _ecddp_config(args), args.out, list(range(args.seeds)),
                              device=args.device)
    print(markdown(summary["table"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
