import numpy as np
import pytest

from .reference import BACKENDS, DEVICES


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


@pytest.fixture(params=BACKENDS)
def backend(request, device) -> str:
    if request.param == "numba" and device != "cpu":
        pytest.skip("the numba kernels run on the CPU only")
    return request.param


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
