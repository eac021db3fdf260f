import json
import warnings

import pytest
import torch

from evtransfer.inference import load_model
from evtransfer.inference.export import export_model, run_exported

from ._packages import depth_package, segmenter_package

SEG = dict(window_us=50_000, sensor=(64, 48), size=(48, 64))
DEPTH = dict(modality="spikes", kind="spike_stack", frames=4, sensor=(20, 12), size=(32, 32),
             resize="nearest")


@pytest.fixture()
def seg_model(tmp_path):
    return load_model(segmenter_package(tmp_path / "m.safetensors", **SEG))


def _input(model, n, seed=5):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, model.input.channels(), *model.input.size, generator=gen)


def test_torchscript_matches_pytorch_and_documents_the_input(seg_model, tmp_path):
    info = export_model(seg_model, "torchscript", tmp_path / "m.pt", batch=2)
    assert info["max_abs_diff"] < 1e-4
    assert info["input"]["shape"] == [2, 5, 48, 64] and info["input"]["dynamic_batch"]
    assert info["input"]["representation"]["window_us"] == 50_000
    x = _input(seg_model, 3)  # another batch size than the traced one
    got = run_exported(tmp_path / "m.pt", x)
    torch.testing.assert_close(got, seg_model.forward(x), atol=1e-4, rtol=0)
    extra = {"evtransfer.json": ""}
    with warnings.catch_warnings():  # TorchScript is deprecated upstream
        warnings.simplefilter("ignore")
        torch.jit.load(str(tmp_path / "m.pt"), _extra_files=extra)
    assert json.loads(extra["evtransfer.json"])["spec"]["method"] == "test"
    sidecar = json.loads((tmp_path / "m.pt.json").read_text())
    assert sidecar["output"]["shape"] == [2, 11, 48, 64]


def test_depth_model_exports(tmp_path):
    model = load_model(depth_package(tmp_path / "d.safetensors", constant=None, **DEPTH))
    info = export_model(model, "torchscript", tmp_path / "d.pt")
    assert info["max_abs_diff"] < 1e-4 and info["output"]["shape"] == [1, 32, 32]
    x = _input(model, 2)
    want = model.forward(x)
    assert float(want.std()) > 1e-3  # random weights: the depth varies, so parity means much
    torch.testing.assert_close(run_exported(tmp_path / "d.pt", x), want, atol=1e-4, rtol=1e-4)


def test_onnx_matches_pytorch(seg_model, tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    info = export_model(seg_model, "onnx", tmp_path / "m.onnx", batch=2)
    assert info["max_abs_diff"] < 1e-4 and not info["input"]["dynamic_batch"]
    x = _input(seg_model, 2)
    torch.testing.assert_close(run_exported(tmp_path / "m.onnx", x), seg_model.forward(x),
                               atol=1e-4, rtol=0)
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert json.loads(meta["evtransfer"])["input"]["shape"] == [2, 5, 48, 64]


def test_bad_export_requests(seg_model, tmp_path):
    with pytest.raises(ValueError, match="format must be one of"):
        export_model(seg_model, "tflite", tmp_path / "m.tflite")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_model(seg_model, "torchscript", tmp_path / "no" / "m.pt")
