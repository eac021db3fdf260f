"""Shared fixtures for the reader tests: the real samples and the decoder engines."""

from __future__ import annotations

from pathlib import Path

import pytest
from evio_encoders import ENGINES

SAMPLES = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "samples"


@pytest.fixture(scope="session")
def samples() -> Path:
    """The real sample recordings (../shared/data/samples beside the repository)."""
    if not SAMPLES.is_dir():
        pytest.skip(f"real samples not found at {SAMPLES.resolve()}")
    return SAMPLES.resolve()


@pytest.fixture(params=ENGINES)
def engine(request) -> str:
    """Each available EVT decoder engine."""
    return request.param
