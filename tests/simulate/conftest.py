import pytest
import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


@pytest.fixture(params=["torch", "numba"])
def backend(request, device) -> str:
    if request.param == "numba":
        pytest.importorskip("numba")
        if device != "cpu":
            pytest.skip("the numba kernels run on the CPU only")
    return request.param
