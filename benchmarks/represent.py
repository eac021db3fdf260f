"""Speed of our voxel grid and (neg, pos) histogram against tonic and a plain memory copy.

Workload: N random events (default 10 M) on a 640×480 sensor over one second, 5 bins. Each
variant runs in a fresh Python process (evlib's method): it loads the events, runs once as
a warm-up, checks that output against a float64 NumPy reference computed here, then times
`--repeats` runs and reports the median, the process's peak resident memory and that peak
before the first run (inputs prepared, libraries imported). With `--rounds R` every variant
runs in R fresh processes, interleaved, and the median is taken over all R · repeats runs
(useful on a shared, noisy machine).

Variants:
- ours: `voxel_grid(events, 5)` and `histogram(events)` with backend "auto" (the numba
  kernel on the CPU when numba is installed), and the same with backend "torch";
- tonic (benchmark-only dependency): `ToVoxelGrid(n_time_bins=5)` and
  `ToFrame(n_event_bins=1)` on a structured array. tonic's voxel grid maps time to
  [0, B] (not [0, B − 1]) and drops the weight that falls past bin B − 1, so it is checked
  against the first 5 bins of the 6-bin reference (the same computation); its frame
  equals the (neg, pos) histogram when p ∈ {0, 1};
- memcpy: NumPy copies of the x, y, t, p arrays, the memory-bandwidth yardstick;
- on CUDA, when available: ours with the events already on the GPU, and the fraction of
  the memory-bandwidth bound (bytes that must move / measured device copy bandwidth).

The last stdout line is one JSON object. Ratios *_vs_tonic are tonic time / our time;
voxel_vs_memcpy is memcpy time / voxel time (1.0 = as fast as copying the input).
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

FIELDS = ("x", "y", "t", "p")


def make_events(n: int, width: int, height: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.integers(0, width, n).astype(np.int16),
        "y": rng.integers(0, height, n).astype(np.int16),
        "t": np.sort(rng.integers(0, 1_000_000, n)).astype(np.int64),
        "p": (2 * rng.integers(0, 2, n) - 1).astype(np.int8),
    }


def reference_voxel(ev, width: int, height: int, bins: int) -> np.ndarray:
    """float64 E2VID voxel grid: tent weights over t_norm = (B − 1)(t − t0)/(t1 − t0)."""
    t = ev["t"]
    t_norm = (bins - 1) * (t - t[0]).astype(np.float64) / max(int(t[-1] - t[0]), 1)
    out = np.zeros((bins, height, width))
    pixel = ev["y"].astype(np.int64) * width + ev["x"]
    for k in range(bins):
        weight = np.maximum(0.0, 1.0 - np.abs(t_norm - k)) * ev["p"]
        touched = weight != 0
        np.add.at(out.reshape(bins, -1)[k], pixel[touched], weight[touched])
    return out


def reference_histogram(ev, width: int, height: int) -> np.ndarray:
    out = np.zeros((2, height, width))
    np.add.at(out, ((ev["p"] > 0).astype(np.int64), ev["y"], ev["x"]), 1.0)
    return out


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM; ru_maxrss would carry the parent's over
    exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def check(name: str, got: np.ndarray, expected: np.ndarray, scale: float) -> None:
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=1e-5,
                                                      atol=1e-5 * max(scale, 1.0)):
        worst = float(np.abs(got.reshape(expected.shape) - expected).max()) \
            if got.size == expected.size else float("nan")
        raise SystemExit(f"{name}: output differs from the float64 reference "
                         f"(shape {got.shape} vs {expected.shape}, max error {worst})")


def build(name: str, ev, args):
    """(function to time, output → NumPy array, reference key) for one variant."""
    w, h, bins = args.width, args.height, args.bins
    if name == "memcpy":
        return (lambda: [ev[k].copy() for k in FIELDS]), None, None
    if name.startswith("tonic"):
        import tonic.transforms as T

        structured = np.zeros(len(ev["t"]), dtype=[(k, ev[k].dtype) for k in FIELDS])
        for k in FIELDS:
            structured[k] = ev[k]
        structured["p"] = ev["p"] > 0
        if name == "tonic_voxel":
            f = T.ToVoxelGrid(sensor_size=(w, h, 2), n_time_bins=bins)
            return (lambda: f(structured)), (lambda o: o[:, 0]), "voxel_plus_one"
        f = T.ToFrame(sensor_size=(w, h, 2), n_event_bins=1)
        return (lambda: f(structured)), (lambda o: o[0]), "histogram"
    import torch

    from evtransfer import Events
    from evtransfer.represent import as_event_batch, histogram, voxel_grid
    from evtransfer.represent._common import numba_available

    if numba_available():
        import evtransfer.represent._numba  # noqa: F401  (count its import before the runs)

    events = Events(ev["x"], ev["y"], ev["t"], ev["p"], w, h)
    backend = "torch" if name.endswith("_torch") else "auto"
    source, sync = events, (lambda: None)
    if name.endswith("_cuda"):
        source, sync = as_event_batch(events, "cuda"), torch.cuda.synchronize
    if name.startswith("voxel"):
        def run():
            out = voxel_grid(source, bins, backend=backend)
            sync()
            return out
        return run, (lambda o: o[0].cpu().numpy()), "voxel"

    def run_hist():
        out = histogram(source, backend=backend)
        sync()
        return out
    return run_hist, (lambda o: o[0].cpu().numpy()), "histogram"


def worker(args) -> None:
    data = Path(args.data)
    ev = {k: np.load(data / f"{k}.npy") for k in FIELDS}
    run, to_numpy, ref_key = build(args.worker, ev, args)
    rss_before = peak_rss_mb()  # inputs, their tonic/torch form and the imported libraries
    out = run()
    if ref_key is not None:
        expected = np.load(data / f"ref_{ref_key}.npy")
        check(args.worker, np.asarray(to_numpy(out), dtype=np.float64), expected,
              float(np.abs(expected).max()))
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    print(json.dumps({"median_s": statistics.median(times), "times_s": times,
                      "rss_before_run_mb": rss_before, "peak_rss_mb": peak_rss_mb()}))


def spawn(name: str, args, data: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, "--data", str(data)]
    for key in ("events", "width", "height", "bins", "repeats"):
        cmd += [f"--{key}", str(getattr(args, key))]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"variant {name} failed:\n{proc.stderr}{proc.stdout}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"{name:14s} median {result['median_s'] * 1e3:9.1f} ms  peak {result['peak_rss_mb']:.0f}"
          f" MB", file=sys.stderr)
    return result


def cuda_report(args, results: dict) -> dict | None:
    """Device name and the fraction of the bandwidth bound reached on the GPU, if any."""
    import torch

    if not torch.cuda.is_available() or "voxel_cuda" not in results:
        return None
    block = torch.empty(2**28, dtype=torch.float32, device="cuda")  # 1 GiB
    copy = torch.empty_like(block)
    copy.copy_(block)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(5):
        copy.copy_(block)
    torch.cuda.synchronize()
    bandwidth = 2 * block.numel() * 4 * 5 / (time.perf_counter() - start)  # read + write
    read = args.events * 13  # x, y int16 + t int64 + p int8
    plane = args.width * args.height * 4
    needed = {"voxel": read + 2 * args.bins * plane, "hist": read + 2 * 2 * plane}
    report = {"gpu": torch.cuda.get_device_name(), "copy_bandwidth_gb_s": bandwidth / 1e9}
    for name, nbytes in needed.items():
        seconds = results[f"{name}_cuda"]["median_s"]
        report[f"{name}_s"] = seconds
        report[f"{name}_bw_fraction"] = nbytes / bandwidth / seconds
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--bins", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=1,
                        help="fresh processes per variant; the median is over all their runs")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="cuda: also time ours on the GPU (an error without one); auto: "
                             "when one is present (default)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    try:
        import tonic  # noqa: F401
    except ImportError:
        raise SystemExit("tonic is needed for the comparison: "
                         ".venv/bin/pip install -c constraints.txt tonic") from None
    import torch

    variants = ["memcpy", "voxel", "voxel_torch", "hist", "hist_torch", "tonic_voxel",
                "tonic_hist"]
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: this torch build or machine has no CUDA")
    if args.device != "cpu" and torch.cuda.is_available():
        variants += ["voxel_cuda", "hist_cuda"]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        ev = make_events(args.events, args.width, args.height, args.seed)
        for k in FIELDS:
            np.save(data / f"{k}.npy", ev[k])
        np.save(data / "ref_voxel.npy", reference_voxel(ev, args.width, args.height, args.bins))
        plus_one = reference_voxel(ev, args.width, args.height, args.bins + 1)[: args.bins]
        np.save(data / "ref_voxel_plus_one.npy", plus_one)
        np.save(data / "ref_histogram.npy", reference_histogram(ev, args.width, args.height))
        del ev
        runs = {name: [] for name in variants}
        for _ in range(args.rounds):  # rounds interleave the variants under a changing load
            for name in variants:
                runs[name].append(spawn(name, args, data))
    results = {
        name: {
            "median_s": statistics.median(t for r in rs for t in r["times_s"]),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
            "rss_before_run_mb": max(r["rss_before_run_mb"] for r in rs),
        }
        for name, rs in runs.items()
    }
    print(json.dumps(summary(args, results)))


def summary(args, results: dict) -> dict:
    import torch

    from evtransfer.represent._common import numba_available

    med = {name: r["median_s"] for name, r in results.items()}
    cuda = cuda_report(args, results)
    return {
        "events": args.events,
        "sensor": [args.width, args.height],
        "bins": args.bins,
        "device": "cpu" if cuda is None else f"cpu + {cuda['gpu']}",
        "cpu_backend": "numba" if numba_available() else "torch",
        "torch_threads": torch.get_num_threads(),
        "voxel_ev_per_s": args.events / med["voxel"],
        "hist_ev_per_s": args.events / med["hist"],
        "voxel_vs_tonic": med["tonic_voxel"] / med["voxel"],
        "hist_vs_tonic": med["tonic_hist"] / med["hist"],
        "voxel_torch_vs_tonic": med["tonic_voxel"] / med["voxel_torch"],
        "hist_torch_vs_tonic": med["tonic_hist"] / med["hist_torch"],
        "voxel_vs_memcpy": med["memcpy"] / med["voxel"],
        "hist_vs_memcpy": med["memcpy"] / med["hist"],
        "median_s": med,
        "peak_rss_mb": {name: r["peak_rss_mb"] for name, r in results.items()},
        "rss_before_run_mb": {name: r["rss_before_run_mb"] for name, r in results.items()},
        "cuda": cuda,
    }


if __name__ == "__main__":
    main()
