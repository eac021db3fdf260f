"""Decode throughput of our EVT 2.0 / EVT 3.0 / DAT readers against the fastest installable
peers, and window streaming over a large DSEC-format file.

Workload: N events (default 10 M) encoded here by small vectorised encoders into files in a
temporary folder: EVT 2.0 and DAT from random time-sorted events on 640×480, EVT 3.0 from
rows of events sharing t, y and polarity (60 % as VECT_BASE_X + VECT_12 masks, the rest as
ADDR_X), as Prophesee sensors emit them. Before any timing, every decoder's output is
checked against the events that were encoded (x, y, p equal; t equal).

Variants, each timed in fresh Python processes (evlib's method: one warm-up, then
`--repeats` runs; `--rounds` processes per variant, interleaved; the median over all runs,
plus the largest peak resident memory):
- ours: open the reader (the indexing pass) and read every event into `Events`, with the
  default engine (numba kernels when installed) and with engine="numpy";
- peers (benchmark-only dependencies): expelliarmus `Wizard.read` (C) for EVT 2.0 and DAT,
  and the `evt3` package (Rust) for EVT 3.0; expelliarmus's EVT 3.0 stretches time
  (formats.md §5), so it is not a reference there.
- DSEC (when `evtransfer.io.dsec` exists): a DSEC-layout events.h5 of `--dsec-events`
  events (default 2·10^8, written chunk by chunk) read as consecutive 50 ms windows in a
  fresh process; reports windows/s, events/s and the peak resident memory (must stay < 1 GB).

The last stdout line is one JSON object; vs_peer is peer time / our time (> 1: we are faster).
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

WIDTH, HEIGHT = 640, 480


# --- workloads -------------------------------------------------------------------------
def random_events(n: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, WIDTH, n)
    y = rng.integers(0, HEIGHT, n)
    t = np.sort(rng.integers(0, n // 20 + 1, n))  # about 20 Mev/s
    p = rng.integers(0, 2, n)
    return x, y, t, p


def encode_evt2(x, y, t, p) -> np.ndarray:
    high = t >> 6
    new = np.ones(len(t), dtype=bool)
    new[1:] = high[1:] != high[:-1]
    pos = np.arange(len(t)) + np.cumsum(new)
    words = np.empty(len(t) + int(new.sum()), dtype="<u4")
    words[pos[new] - 1] = (0x8 << 28) | (high[new] & 0x0FFFFFFF)
    words[pos] = (p << 28) | ((t & 0x3F) << 22) | (x << 11) | y
    return words


def encode_dat(x, y, t, p) -> bytes:
    rec = np.empty((len(t), 2), dtype="<u4")
    rec[:, 0] = t
    rec[:, 1] = x | (y << 14) | (p << 28)
    head = b"% Data file containing Event2D events.\n% Version 2\n% Height 480\n% Width 640\n"
    return head + bytes([0, 8]) + rec.tobytes()


def evt3_workload(n: int, seed: int):
    """(words, expected x, y, t, p) for about n events in rows sharing t, y, p."""
    rng = np.random.default_rng(seed)
    groups = n // 4
    vec = rng.random(groups) < 0.6
    mask = np.where(vec, rng.integers(1, 1 << 12, groups), 1)
    base = np.where(vec, rng.integers(0, WIDTH - 12, groups), rng.integers(0, WIDTH, groups))
    y = rng.integers(0, HEIGHT, groups)
    p = rng.integers(0, 2, groups)
    t = np.cumsum(rng.integers(0, 2, groups)) * 8 // 10
    new_high = np.ones(groups, bool)
    new_high[1:] = (t[1:] >> 12) != (t[:-1] >> 12)
    new_low = np.ones(groups, bool)
    new_low[1:] = t[1:] != t[:-1]
    new_low |= new_high
    new_y = np.ones(groups, bool)
    new_y[1:] = y[1:] != y[:-1]
    count = new_high.astype(int) + new_low + new_y + np.where(vec, 2, 1)
    at = np.cumsum(count) - count
    words = np.empty(int(count.sum()), dtype="<u2")
    for flag, value in ((new_high, 0x8000 | ((t >> 12) & 0xFFF)), (new_low, 0x6000 | (t & 0xFFF)),
                        (new_y, y)):
        words[at[flag]] = value[flag]
        at = at + flag
    words[at[vec]] = 0x3000 | (p[vec] << 11) | base[vec]
    words[at[vec] + 1] = 0x4000 | mask[vec]
    words[at[~vec]] = 0x2000 | (p[~vec] << 11) | base[~vec]
    rows, bits = np.nonzero((mask[:, None] >> np.arange(12)) & 1)
    return words, (base[rows] + bits, y[rows], t[rows], p[rows])


def write_files(folder: Path, n: int, seed: int) -> dict[str, tuple[Path, tuple]]:
    x, y, t, p = random_events(n, seed)
    evt2 = folder / "bench_evt2.raw"
    evt2.write_bytes(b"% evt 2.0\n% geometry 640x480\n" + encode_evt2(x, y, t, p).tobytes())
    dat = folder / "bench.dat"
    dat.write_bytes(encode_dat(x, y, t, p))
    words, expected3 = evt3_workload(n, seed + 1)
    evt3 = folder / "bench_evt3.raw"
    evt3.write_bytes(b"% evt 3.0\n% format EVT3;height=480;width=640\n" + words.tobytes())
    return {"evt2": (evt2, (x, y, t, p)), "dat": (dat, (x, y, t, p)), "evt3": (evt3, expected3)}


# --- decoders --------------------------------------------------------------------------
def decode(fmt: str, variant: str, path: str) -> dict[str, np.ndarray]:
    """x, y, t, p01 arrays from one variant."""
    if variant in ("ours", "ours-numpy"):
        from evtransfer.io.prophesee import DatReader, Evt2Reader, Evt3Reader

        cls = {"evt2": Evt2Reader, "evt3": Evt3Reader, "dat": DatReader}[fmt]
        opts = {} if fmt == "dat" else {"engine": "numpy" if variant == "ours-numpy" else "auto"}
        ev = cls(path, **opts).read_all()
        return {"x": ev.x, "y": ev.y, "t": ev.t, "p": ev.p > 0}
    if variant == "expelliarmus":
        from expelliarmus import Wizard

        a = Wizard(encoding=fmt).read(path)
        return {"x": a["x"], "y": a["y"], "t": a["t"], "p": a["p"] == 1}
    if variant == "evt3":
        import evt3

        r = evt3.decode_file(path)
        return {"x": r.x, "y": r.y, "t": r.t, "p": r.polarity == 1}
    raise ValueError(variant)


VARIANTS = {
    "evt2": ("ours", "ours-numpy", "expelliarmus"),
    "dat": ("ours", "expelliarmus"),
    "evt3": ("ours", "ours-numpy", "evt3"),
}
PEERS = {"evt2": "expelliarmus", "dat": "expelliarmus", "evt3": "evt3"}


def check(fmt: str, variant: str, path: Path, expected) -> None:
    got = decode(fmt, variant, str(path))
    for name, want in zip("xytp", expected, strict=True):
        if not np.array_equal(got[name].astype(np.int64), np.asarray(want, np.int64)):
            raise SystemExit(f"{fmt}/{variant}: {name} differs from the encoded events")


def peak_rss_mb() -> float:
    """This process's peak resident memory. /proc's VmHWM, when present, starts afresh at
    exec; getrusage's ru_maxrss keeps the parent's peak across fork + exec on Linux."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(fmt: str, variant: str, path: str, repeats: int) -> None:
    decode(fmt, variant, path)  # warm-up (and numba's cached compile)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = decode(fmt, variant, path)
        times.append(time.perf_counter() - start)
        del out
    print(json.dumps({"times_s": times, "peak_rss_mb": peak_rss_mb()}))


def spawn(*args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(fmt: str, path: Path, repeats: int, rounds: int) -> dict[str, dict]:
    """Median time and largest peak memory per variant over `rounds` fresh processes each,
    the variants interleaved round by round so that load on a shared machine hits all."""
    times: dict[str, list[float]] = {v: [] for v in VARIANTS[fmt]}
    rss: dict[str, float] = dict.fromkeys(VARIANTS[fmt], 0.0)
    for _ in range(rounds):
        for v in VARIANTS[fmt]:
            r = spawn("--worker", fmt, v, str(path), "--repeats", str(repeats))
            times[v] += r["times_s"]
            rss[v] = max(rss[v], r["peak_rss_mb"])
    return {v: {"median_s": statistics.median(times[v]), "peak_rss_mb": rss[v]} for v in times}


# --- DSEC ------------------------------------------------------------------------------
def write_dsec(path: Path, n: int, seed: int, chunk: int = 4_000_000) -> None:
    from evtransfer.events import Events
    from evtransfer.io.dsec import DsecEventsWriter

    rng = np.random.default_rng(seed)
    rate = 20  # events per µs
    with DsecEventsWriter(path, width=WIDTH, height=HEIGHT, t_offset_us=0) as writer:
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            t = start // rate + np.sort(rng.integers(0, m // rate + 1, m))
            writer.write(Events(rng.integers(0, WIDTH, m), rng.integers(0, HEIGHT, m), t,
                                2 * rng.integers(0, 2, m) - 1, WIDTH, HEIGHT))


def dsec_worker(path: str, window_us: int) -> None:
    from evtransfer.io.base import iter_time_windows
    from evtransfer.io.dsec import DsecEventsReader

    reader = DsecEventsReader(path)
    start = time.perf_counter()
    windows = events = 0
    for ev in iter_time_windows(reader, window_us):
        windows += 1
        events += len(ev)
    elapsed = time.perf_counter() - start
    print(json.dumps({"windows": windows, "events": events, "seconds": elapsed,
                      "windows_per_s": windows / elapsed, "events_per_s": events / elapsed,
                      "peak_rss_mb": peak_rss_mb()}))


def dsec_section(folder: Path, n: int, seed: int) -> dict | None:
    try:
        import evtransfer.io.dsec  # noqa: F401
    except ImportError:
        return None
    path = folder / "events.h5"
    start = time.perf_counter()
    write_dsec(path, n, seed)
    written = time.perf_counter() - start
    result = spawn("--dsec-worker", str(path), "--window-us", "50000")
    if result["events"] != n:
        raise SystemExit(f"DSEC windows returned {result['events']} events, wrote {n}")
    result.update(file_mb=path.stat().st_size / 2**20, write_seconds=written)
    return result


# --- main ------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3, help="fresh processes per variant")
    ap.add_argument("--dsec-events", type=float, default=2e8)
    ap.add_argument("--formats", default="evt2,dat,evt3", help="comma-separated subset")
    ap.add_argument("--no-dsec", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tmp", default=None, help="folder for the generated files")
    ap.add_argument("--worker", nargs=3, metavar=("FORMAT", "VARIANT", "PATH"))
    ap.add_argument("--dsec-worker", metavar="PATH")
    ap.add_argument("--window-us", type=int, default=50_000)
    args = ap.parse_args()
    if args.worker:
        return worker(*args.worker, args.repeats)
    if args.dsec_worker:
        return dsec_worker(args.dsec_worker, args.window_us)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        files = write_files(Path(tmp), args.events, args.seed)
        report: dict = {"events": args.events, "vs_peer": {}, "vs_peer_numpy": {}}
        for fmt, (path, expected) in files.items():
            if fmt not in args.formats.split(","):
                continue
            for variant in VARIANTS[fmt]:
                check(fmt, variant, path, expected)
            runs = measure(fmt, path, args.repeats, args.rounds)
            n = len(expected[0])
            report[fmt] = {v: {"ev_per_s": n / r["median_s"], **r} for v, r in runs.items()}
            peer = runs[PEERS[fmt]]["median_s"]
            report["vs_peer"][fmt] = peer / runs["ours"]["median_s"]
            if "ours-numpy" in runs:
                report["vs_peer_numpy"][fmt] = peer / runs["ours-numpy"]["median_s"]
            print(fmt, json.dumps(report[fmt]), flush=True)
        dsec = None if args.no_dsec else dsec_section(Path(tmp), int(args.dsec_events), args.seed)
        report["dsec"] = dsec
        report["peak_rss_mb"] = dsec["peak_rss_mb"] if dsec else None
    print(json.dumps(report))


if __name__ == "__main__":
    main()
