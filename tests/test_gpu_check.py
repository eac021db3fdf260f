"""`make gpu-check` (benchmarks/gpu_check.py): on a machine without CUDA it says so and fails
at once; every benchmark it runs accepts `--device`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine runs the real check")
def test_without_cuda_it_says_so_and_fails():
    proc = subprocess.run([sys.executable, ROOT / "benchmarks" / "gpu_check.py"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "no CUDA device" in proc.stderr


def test_it_covers_every_benchmark_with_cuda(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from gpu_check import steps
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    commands = {name: [str(c) for c in cmd] for name, cmd, _ in steps(tmp_path)}
    scripts = {p.stem for p in (ROOT / "benchmarks").glob("*.py")} - {"gpu_check"}
    assert scripts <= set(commands)
    for name in scripts - {"io"}:  # io.py decodes files: it has no device
        assert commands[name][commands[name].index("--device") + 1] == "cuda", name
    assert sum(limit for *_, limit in steps(tmp_path)) <= 8 * 60
