"""Packages trained for two steps on the tiny world by the benchmark (session fixtures)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_run(tiny_world, tmp_path_factory):
    """`run_transfer` of source_only and recon_source (2 steps each) on the tiny world:
    (output folder, runs)."""
    from evtransfer.bench import run_transfer
    from evtransfer.demo import demo_config

    out = tmp_path_factory.mktemp("tiny_run")
    _, runs = run_transfer(tiny_world, ["source_only", "recon_source"], [0], out,
                           demo_config(steps=2), progress=False)
    return out, runs


@pytest.fixture(scope="session")
def tiny_package(tiny_run):
    """The source_only package of `tiny_run`."""
    return tiny_run[0] / "models" / "source_only-seed0.safetensors"
