"""Run `evtransfer` as a user does: a fresh Python process, this checkout's sources."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def run_cli(*argv: str, prelude: str = "", cwd: str | Path | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """`evtransfer ARGV` in a subprocess (after running `prelude`, Python source, in it)."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    code = f"{prelude}\nimport sys\nfrom evtransfer.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *map(str, argv)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=timeout)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The error line of a run that must fail cleanly (exit 2, one stderr line, no
    traceback)."""
    assert (proc.returncode, proc.stderr.count("\n")) == (2, 1), proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stderr
