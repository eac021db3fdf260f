import pytest

from evtransfer.world.build import build_world
from evtransfer.world.domains import preset


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """The tiny preset built once per test session (a few seconds)."""
    return build_world(preset("tiny"), tmp_path_factory.mktemp("world") / "tiny", progress=False)
