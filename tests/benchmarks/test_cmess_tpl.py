"""benchmarks/cmess_tpl.py on the tiny dev world: every rule keeps what it says, and a report
world is refused before anything trains."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from evtransfer.world.build import build_world
from evtransfer.world.domains import named_world

ROOT = Path(__file__).resolve().parents[2]
TINY_STEPS = ["--set", "stages.source.steps=3", "--set", "stages.synthetic.steps=3",
              "--set", "stages.recon.steps=3"]


def _run(world: Path, work: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, ROOT / "benchmarks" / "cmess_tpl.py", "--world",
                           str(world), "--work", str(work), *TINY_STEPS],
                          capture_output=True, text=True, timeout=300)


def test_rules_keep_what_they_say_on_a_dev_world(tiny_world, tmp_path):
    proc = _run(tiny_world, tmp_path / "work")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["world"] == "small"
    rows = {(r["lambda"], r["rule"], r["value"], r["class_fraction"]): r
            for r in report["rules"]}
    for lam in (0.0, 0.2):
        assert rows[lam, "fixed", 0.0, 0.0]["kept"] == 1.0
        fixed = [rows[lam, "fixed", c, 0.0]["kept"] for c in (0.0, 0.5, 0.7, 0.9)]
        assert fixed == sorted(fixed, reverse=True)
        for share in (0.3, 0.5, 0.7):  # the top share, up to the pixels of one 1/1000 bin
            assert rows[lam, "share", share, 0.0]["kept"] == pytest.approx(share, abs=0.03)
            assert rows[lam, "share", share, 0.5]["kept"] >= rows[lam, "share", share, 0.0]["kept"]
    everything = rows[0.0, "fixed", 0.0, 0.0]
    assert set(everything["kept_per_class"]) <= {0.0, 1.0}  # 0: a class absent from the target
    cal = report["calibration"]
    assert all(0 <= cal[k] <= 1 for k in ("M_T' on target", "recon path on target"))


def test_a_report_world_is_refused(tmp_path):
    world = build_world(named_world("report-light", "tiny"), tmp_path / "w", progress=False)
    proc = _run(world, tmp_path / "work")
    assert proc.returncode != 0 and "not a dev world" in proc.stderr
    assert not (tmp_path / "work").exists()
