"""`make gpu-check`: prove the CUDA paths in one call on the first GPU at hand.

Runs the tests that exercise CUDA (`pytest -k cuda`: the device-parametrised tests' cuda
cases and the CPU-vs-CUDA agreement tests), then every benchmark in this folder with
`--device cuda` at sizes that fit the whole check in under 8 minutes, and prints each
benchmark's JSON (its last stdout line). `io.py` times file decoding, which has no device,
and runs as is at a small size. Without CUDA it says so and exits 1 at once. The last line is
one JSON object: each step's exit code and seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 8 * 60


def steps(tmp: Path) -> list[tuple[str, list[str], float]]:
    """(name, command, timeout in s) of every check."""
    py, bench = sys.executable, ROOT / "benchmarks"
    world = tmp / "world"
    return [
        ("cuda tests", [py, "-m", "pytest", "-q", "-x", "-k", "cuda", "-p", "no:cacheprovider",
                        str(ROOT / "tests")], 130),
        ("represent", [py, bench / "represent.py", "--device", "cuda", "--events", "2000000",
                       "--repeats", "3"], 50),
        ("simulate", [py, bench / "simulate.py", "--device", "cuda", "--rounds", "1"], 50),
        ("predict", [py, bench / "predict.py", "--device", "cuda", "--repeats", "1"], 40),
        ("train_step", [py, bench / "train_step.py", "--device", "cuda", "--runs", "1"], 60),
        ("io", [py, bench / "io.py", "--events", "1000000", "--rounds", "1", "--repeats", "2",
                "--no-dsec", "--tmp", str(tmp)], 30),
        ("world", [py, "-m", "evtransfer.cli", "world", "build", "--preset", "tiny", "--out",
                   str(world), "--device", "cuda"], 30),
        ("evdistill_world", [py, bench / "evdistill_world.py", "--world", str(world), "--work",
                             str(tmp / "work"), "--stage-steps", "20", "--joint-steps", "20",
                             "--device", "cuda"], 60),
        ("cmess_tpl", [py, bench / "cmess_tpl.py", "--world", str(world), "--work",
                       str(tmp / "tpl"), "--device", "cuda", "--set", "stages.source.steps=20",
                       "--set", "stages.synthetic.steps=20", "--set", "stages.recon.steps=20"],
         20),
    ]


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print(f"make gpu-check: no CUDA device (torch {torch.__version__}, CUDA build "
              f"{torch.version.cuda}); run it on a machine with an NVIDIA GPU", file=sys.stderr)
        return 1
    print(f"gpu-check on {torch.cuda.get_device_name()} (torch {torch.__version__}, "
          f"CUDA {torch.version.cuda})", flush=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + str(ROOT)}
    report, start = {}, time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        for name, cmd, limit in steps(Path(tmp)):
            left = BUDGET_S - (time.monotonic() - start)
            if left < 5:
                report[name] = {"rc": None, "skipped": "out of the 8-minute budget"}
                continue
            t0 = time.monotonic()
            try:
                proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                                      env=env, cwd=ROOT, timeout=min(limit, left))
                rc, out, err = proc.returncode, proc.stdout, proc.stderr
            except subprocess.TimeoutExpired as exc:
                rc, out, err = "timeout", _text(exc.stdout), _text(exc.stderr)
            seconds = round(time.monotonic() - t0, 1)
            report[name] = {"rc": rc, "seconds": seconds}
            lines = out.strip().splitlines()
            print(f"== {name}: rc {rc}, {seconds} s", flush=True)
            print(lines[-1] if lines else "(no output)", flush=True)
            if rc != 0:
                print("\n".join((err or out).strip().splitlines()[-15:]), flush=True)
    print(json.dumps({"gpu_check": report, "total_s": round(time.monotonic() - start, 1)}))
    return 0 if all(r["rc"] == 0 for r in report.values()) else 1


def _text(data) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


if __name__ == "__main__":
    sys.exit(main())
