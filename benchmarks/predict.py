"""End-to-end `evtransfer predict` throughput on a DSEC-format recording at 440×640.

Workload (written into a temporary folder): a DSEC-layout `events.h5` (blosc-zstd, as the
official files) of `--seconds` of random events on the 640×480 sensor at `--rate` events/s,
and a model package shaped like a DSEC-Semantic model: SegFormer-B0 (seeded random weights;
speed does not depend on training), 5-bin normalised voxel grid of 50 ms windows, bottom 40
rows cropped → 440×640 input, 11 classes.

Before timing, the first predicted label PNG is checked against an independent path (the
window read with `DsecEventsReader`, `voxel_grid` + `normalize_nonzero`, the crop, the bare
network, bilinear upsampling, argmax): at least 99.9 % of the pixels must agree.

Variants, each in fresh Python processes (one warm-up window first; `--repeats` runs, the
median; peak resident memory):
- predict: `inference.stream.predict_recording` over `--windows` consecutive 50 ms windows,
  batched (`--batch`): reading + representation + model + writing (label PNGs, overlay GIF,
  windows.json), with the seconds of each stage;
- model (peer): the same number of forward passes on precomputed inputs (the network alone).

The last stdout line is one JSON object: windows/s of each, the share of each predict stage,
`read_represent_share` (must stay below 1/3 on CPU) and `overhead` = predict time / model
time (≥ 1; how much the pipeline adds to the network).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WIDTH, HEIGHT, CROP, WINDOW_US = 640, 480, 40, 50_000


def write_workload(folder: Path, seconds: float, rate: float, seed: int) -> tuple[Path, Path]:
    """The events.h5 and the model package; returns their paths."""
    from evtransfer.engine.package import InputSpec, method_spec, save_package
    from evtransfer.events import Events
    from evtransfer.io.dsec import write_events_h5
    from evtransfer.models import create_model

    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.sort(rng.integers(0, int(seconds * 1e6), n))
    events = Events(rng.integers(0, WIDTH, n), rng.integers(0, HEIGHT, n), t,
                    rng.choice(np.array([-1, 1], np.int8), n), WIDTH, HEIGHT)
    h5 = write_events_h5(folder / "events.h5", events, t_offset_us=0)
    net = {"model": "segformer_b0", "kwargs": {"in_chans": 5, "num_classes": 11},
           "task": "segmentation", "output": "logits"}
    inputs = InputSpec(window_us=WINDOW_US, sensor=(WIDTH, HEIGHT), crop_bottom=CROP,
                       size=(HEIGHT - CROP, WIDTH))
    spec = method_spec(net, method="benchmark", inputs=inputs, label_space="dsec11")
    package = save_package(folder / "model.safetensors",
                           create_model("segformer_b0", in_chans=5, num_classes=11, seed=seed),
                           spec)
    return h5, package


def check(h5: Path, package: Path, out: Path, device: str = "cpu") -> float:
    """Share of pixels where predict's first label PNG equals the independent path."""
    import torch
    import torch.nn.functional as F

    from evtransfer.inference import load_model
    from evtransfer.inference.stream import PredictOptions, predict_recording
    from evtransfer.io.dsec import DsecEventsReader
    from evtransfer.io.images import read_label_png
    from evtransfer.represent import normalize_nonzero, voxel_grid

    model = load_model(package, device=device)
    predict_recording(model, h5, out, PredictOptions(limit=1, progress=False))
    got = read_label_png(out / "labels" / "000000.png")
    reader = DsecEventsReader(h5)
    t0 = reader.info().t_start_us
    x = normalize_nonzero(voxel_grid(reader.read_window(t0, t0 + WINDOW_US), 5))
    x = x[..., : HEIGHT - CROP, :].to(device)
    with torch.no_grad():
        logits = model.network(x).cpu()
    want = F.interpolate(logits, size=x.shape[-2:], mode="bilinear",
                         align_corners=False).argmax(1)[0].numpy()
    return float((got[: HEIGHT - CROP] == want).mean())


def worker(args) -> dict:
    """One timed run in this (fresh) process."""
    import torch

    from evtransfer.inference import load_model
    from evtransfer.inference.stream import PredictOptions, predict_recording

    folder = Path(args.dir)
    model = load_model(folder / "model.safetensors", device=args.device)
    predict_recording(model, folder / "events.h5", folder / "warmup",
                      PredictOptions(limit=1, progress=False))  # numba compile, allocator
    if args.worker == "model":
        x = torch.randn(args.batch, 5, HEIGHT - CROP, WIDTH, device=args.device)
        runs = -(-args.windows // args.batch)
        start = time.perf_counter()
        for _ in range(runs):
            model.forward(x, (HEIGHT - CROP, WIDTH), logits=True)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = {"total": time.perf_counter() - start}
    else:
        opts = PredictOptions(limit=args.windows, batch=args.batch, progress=False)
        summary = predict_recording(model, folder / "events.h5", folder / "run", opts)
        seconds = summary["seconds"]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "peak_mb": peak_mb, "threads": torch.get_num_threads()}


def spawn(args, variant: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", variant, "--dir", args.dir,
           "--windows", str(args.windows), "--batch", str(args.batch), "--device", args.device]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=1.2, help="recording length (s)")
    p.add_argument("--rate", type=float, default=3e6, help="events per second (DSEC-like)")
    p.add_argument("--windows", type=int, default=16)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="torch device of the model (default cpu)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--dir", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        args.dir = tmp
        h5, package = write_workload(Path(tmp), args.seconds, args.rate, args.seed)
        agree = check(h5, package, Path(tmp) / "check", args.device)
        if agree < 0.999:
            raise SystemExit(f"predict disagrees with the independent path on "
                             f"{100 * (1 - agree):.2f} % of the pixels")
        runs = {v: [spawn(args, v) for _ in range(args.repeats)] for v in ("predict", "model")}
    total = {v: statistics.median(r["seconds"]["total"] for r in rs) for v, rs in runs.items()}
    stages = ("read", "represent", "model", "write")
    share = {s: statistics.median(r["seconds"][s] / r["seconds"]["total"]
                                  for r in runs["predict"]) for s in stages}
    model_windows = args.batch * -(-args.windows // args.batch)
    result = {
        "benchmark": "predict", "input": "DSEC-format events.h5, 640x480 → 440x640",
        "events_per_window": int(args.rate * WINDOW_US / 1e6), "windows": args.windows,
        "batch": args.batch, "threads": runs["predict"][0]["threads"], "device": args.device,
        "check_pixel_agreement": agree,
        "predict_windows_per_s": args.windows / total["predict"],
        "model_windows_per_s": model_windows / total["model"],
        "stage_share": share,
        "read_represent_share": share["read"] + share["represent"],
        "read_represent_below_third": share["read"] + share["represent"] < 1 / 3,
        "overhead": (total["predict"] / args.windows) / (total["model"] / model_windows),
        "peak_mb": max(r["peak_mb"] for rs in runs.values() for r in rs),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
