"""DVS simulation speed at 640×480: our `DvsSimulator` against evlib's ESIM simulator.

Peer: evlib (`evlib.simulation.ESIMSimulator`, torch, float64), the installable package that
implements the same model: a per-pixel reference log level, floor(|log I - ref| / C) events per
frame, the reference moved by whole thresholds. Others were ruled out: eventify-dvs differences
consecutive frames without a reference level (a pixel whose log intensity rises by less than C
per frame never fires, so it fails the ramp check below); v2e and esim_torch are not on PyPI
(esim_torch needs a CUDA build). evlib stamps all events of a frame with the frame time and we
interpolate each crossing, so only counts can be compared: both runs get the same log(I + eps)
(evlib's frames are 255 × (I + eps) with log_floor = eps) and the event counts on an ideal
log-intensity ramp must agree within 1 % before anything is timed.

Workload: a textured 640×480 image under a smooth random camera motion (`pseudo_video`), at
`--fps` (default 1000) for `--frames` frames, ideal preset (C = 0.2, no noise). Each variant
runs in a fresh Python process (evlib's method) with `--threads` torch threads (default 1 for
both), warms up once, then times `--repeats` passes over the frames; with `--rounds R` the
variants alternate over R processes each and the median is over all passes. Variants: ours
(backend "auto": the fused numba kernels when numba is installed), ours_torch (the pure torch
path), evlib, and ours on CUDA when available. Reported per variant: megapixel-frames per second
((frames - 1) × 0.3072 / s), events per second, and peak memory: the process's peak RSS, frames
included (CPU), or `max_memory_allocated` (CUDA). Frame generation and loading are not timed;
our time includes building the output `Events` (NumPy arrays) for every frame. The default
motion (`--translation 0.01`: about 0.2 px per frame) makes a few % of the pixels fire per frame,
about 10 M events/s at 1000 fps; larger values make busier frames, where the per-event work
dominates and the gap to evlib narrows.

Last stdout line: one JSON object with `mpix_frames_per_s`, `events_per_s` (ours on the CPU),
`vs_peer` (ours / evlib, > 1 = ours faster), `peer`, and the details.

    python benchmarks/simulate.py [--frames 31] [--rounds 3] [--threads 1]
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
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

EPS = 1e-3
C = 0.2
HEIGHT, WIDTH = 480, 640


def make_workload(frames: int, fps: float, seed: int,
                  translation: float) -> tuple[np.ndarray, np.ndarray]:
    """(frames, 480, 640) float64 intensities of a moving texture and their µs timestamps."""
    from evtransfer.simulate import pseudo_video

    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    texture = 0.5 + 0.25 * np.sin(x / 9.0 + 3 * np.sin(y / 23.0)) * np.cos(y / 13.0)
    texture += 0.1 * np.sin(x / 3.1 + y / 5.3)
    video = pseudo_video(torch.from_numpy(texture.clip(0.0, 1.0)), n_frames=frames, fps=fps,
                         generator=seed, max_translation=translation,
                         max_rotation_deg=50 * translation, max_scale=translation)
    return video.frames.numpy(), video.t_us.numpy()


def ramp(frames: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pixel's log(I + eps) moves linearly by a random slope per frame (ideal ramp)."""
    rng = np.random.default_rng(seed)
    start = rng.uniform(np.log(0.05 + EPS), np.log(0.5 + EPS), (HEIGHT, WIDTH))
    slope = rng.uniform(-0.3, 0.3, (HEIGHT, WIDTH))
    levels = start + slope * np.arange(frames)[:, None, None]
    return np.exp(levels) - EPS, 1_000 * np.arange(frames, dtype=np.int64)


class Ours:
    backend = "auto"

    def __init__(self, device: str):
        from evtransfer.simulate import DvsSimulator, dvs_preset

        self.make = lambda: DvsSimulator(dvs_preset("ideal"), HEIGHT, WIDTH, device=device,
                                         backend=self.backend)
        self.device = device

    def prepare(self, frames: np.ndarray) -> list:
        if self.device == "cpu":
            return list(frames)
        return [torch.from_numpy(f).to(self.device) for f in frames]

    def run(self, frames: list, t_us: np.ndarray) -> int:
        sim = self.make()
        return sum(len(sim.feed(f, int(t))[0]) for f, t in zip(frames, t_us, strict=True))


class Evlib:
    def __init__(self, device: str):
        from evlib.simulation.config import ESIMConfig
        from evlib.simulation.esim import ESIMSimulator

        config = ESIMConfig(positive_threshold=C, negative_threshold=C, refractory_period_ms=0.0,
                            log_floor=EPS, device=device, dtype="float64")
        self.make = lambda: ESIMSimulator(config)

    def prepare(self, frames: np.ndarray) -> list:
        return list(255.0 * (frames + EPS))  # evlib takes log(max(frame / 255, log_floor))

    def run(self, frames: list, t_us: np.ndarray) -> int:
        sim = self.make()
        return sum(len(sim.process_frame(f, float(t) * 1e-6)[0])
                   for f, t in zip(frames, t_us, strict=True))


class OursTorch(Ours):
    backend = "torch"


VARIANTS = {"ours": Ours, "ours_torch": OursTorch, "evlib": Evlib}


def peak_rss_bytes() -> int:
    """This process's peak RSS (VmHWM; ru_maxrss would include the parent's peak on Linux)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def worker(args) -> None:
    torch.set_num_threads(args.threads)
    data = np.load(args.worker_data)
    sim = VARIANTS[args.worker](args.device)
    frames = sim.prepare(data["frames"])
    t_us = data["t_us"]
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    events = sim.run(frames, t_us)  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        sim.run(frames, t_us)
        if args.device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() if args.device == "cuda" else peak_rss_bytes()
    print(json.dumps({"times": times, "events": events, "peak_bytes": peak}))


def spawn(variant: str, device: str, path: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", variant, "--worker-data", str(path),
           "--device", device, "--threads", str(args.threads), "--repeats", str(args.repeats)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def check_ramp(args) -> dict:
    frames, t_us = ramp(args.ramp_frames, args.seed)
    counts = {name: VARIANTS[name]("cpu").run(VARIANTS[name]("cpu").prepare(frames), t_us)
              for name in ("ours", "evlib")}
    diff = abs(counts["ours"] - counts["evlib"]) / max(counts["evlib"], 1)
    print(f"ideal ramp: ours {counts['ours']} events, evlib {counts['evlib']} ({diff:.4%} apart)")
    if diff > 0.01:
        raise SystemExit("event counts differ by more than 1 %: not the same model")
    return counts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=31)
    p.add_argument("--fps", type=float, default=1000.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--translation", type=float, default=0.01,
                   help="end-pose translation as a fraction of the image (default 0.01)")
    p.add_argument("--ramp-frames", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--worker", choices=sorted(VARIANTS))
    p.add_argument("--worker-data")
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    torch.set_num_threads(args.threads)
    ramp_counts = check_ramp(args)
    frames, t_us = make_workload(args.frames, args.fps, args.seed, args.translation)
    plan = [("ours", "cpu"), ("ours_torch", "cpu"), ("evlib", "cpu")]
    if torch.cuda.is_available():
        plan.append(("ours", "cuda"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "workload.npz"
        np.savez(path, frames=frames, t_us=t_us)
        runs: dict = {key: [] for key in plan}
        for _ in range(args.rounds):
            for key in plan:
                runs[key].append(spawn(*key, path, args))
    mpix = (args.frames - 1) * HEIGHT * WIDTH / 1e6
    results = {}
    for (variant, device), reps in runs.items():
        median = statistics.median(t for r in reps for t in r["times"])
        events = reps[0]["events"]
        results[f"{variant}_{device}"] = {
            "seconds": median,
            "mpix_frames_per_s": mpix / median,
            "events_per_s": events / median,
            "events": events,
            "peak_mib": max(r["peak_bytes"] for r in reps) / 2**20,
        }
        print(f"{variant:10s} {device:4s}: {median * 1e3:8.1f} ms for {args.frames - 1} frames, "
              f"{mpix / median:7.1f} Mpix-frames/s, {events / median / 1e6:6.2f} Mev/s, "
              f"{events} events, peak {results[f'{variant}_{device}']['peak_mib']:.0f} MiB")
    ours, peer = results["ours_cpu"], results["evlib_cpu"]
    if ours["events"] != peer["events"]:
        print(f"workload counts: ours {ours['events']}, evlib {peer['events']}")
    print(json.dumps({
        "mpix_frames_per_s": round(ours["mpix_frames_per_s"], 2),
        "events_per_s": round(ours["events_per_s"]),
        "vs_peer": round(peer["seconds"] / ours["seconds"], 2),
        "peer": f"evlib=={version('evlib')} (evlib.simulation.ESIMSimulator, CPU, float64)",
        "threads": args.threads,
        "vs_peer_torch_backend": round(peer["seconds"] / results["ours_torch_cpu"]["seconds"], 2),
        "frames": args.frames,
        "events_per_frame": round(ours["events"] / (args.frames - 1)),
        "ramp_events": ramp_counts,
        "variants": {k: {m: round(v, 3) for m, v in r.items()} for k, r in results.items()},
    }))


if __name__ == "__main__":
    main()
