"""Export the inference network of a package to TorchScript or ONNX.

The exported graph is `InferenceHead`: the network alone (for CMESS the target branch: the
package holds only it) plus its output mapping, taking the representation tensor
(N, C, H, W) float32 at the network input size (`InputSpec.size`; N is dynamic in
TorchScript and fixed to the export batch in ONNX, whose legacy exporter bakes the batch into
the attention reshapes) and returning
class probabilities (N, K, H, W) or depth (N, H, W) metres. The representation itself
(voxel grid, window, crop, resize) is not part of the graph: it is described next to it —
in the TorchScript archive's extra file `evtransfer.json`, in the ONNX model's metadata
(`evtransfer`), and in a sidecar `<out>.json` — so a deployment can reproduce it.
`export_model` checks the exported model against PyTorch on a seeded random input (ONNX:
when onnxruntime is installed).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from evtransfer.inference.model import InferenceHead, Model

FORMATS = ("torchscript", "onnx")


def interface(model: Model, batch: int, dynamic: bool) -> dict:
    """The exported model's input and output, documented (shapes with N = `batch`, dynamic
    or fixed)."""
    i, s = model.input, model.spec
    h, w = i.size
    out = ([batch, s.num_classes, h, w] if s.task == "segmentation" else [batch, h, w])
    return {
        "input": {"name": "input", "dtype": "float32", "shape": [batch, i.channels(), h, w],
                  "dynamic_batch": dynamic, "representation": json.loads(s.to_json())["input"],
                  "text": model.describe()},
        "output": {"name": "output", "dtype": "float32", "shape": out,
                   "meaning": ("class probabilities (softmax)" if s.task == "segmentation"
                               else "depth in metres")},
        "spec": json.loads(s.to_json()),
    }


def _example(model: Model, batch: int, seed: int = 0) -> torch.Tensor:
    h, w = model.input.size
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, model.input.channels(), h, w, generator=gen)


def _torchscript(head: InferenceHead, example: torch.Tensor, out: Path, doc: str) -> None:
    with warnings.catch_warnings():  # TorchScript is deprecated upstream, still deployable
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(head, example, check_trace=False)
        torch.jit.save(traced, str(out), _extra_files={"evtransfer.json": doc})


def _onnx(head: InferenceHead, example: torch.Tensor, out: Path, doc: str, opset: int) -> None:
    try:
        import onnx
    except ImportError:
        raise ValueError("ONNX export needs the onnx package: pip install onnx "
                         "(onnxruntime to check the result)") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(head, (example,), str(out), dynamo=False, opset_version=opset,
                          input_names=["input"], output_names=["output"])
    proto = onnx.load(str(out))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "evtransfer", doc
    proto.doc_string = json.loads(doc)["input"]["text"]
    onnx.save(proto, str(out))


def run_exported(path: str | Path, x: torch.Tensor) -> torch.Tensor | None:
    """Outputs of an exported file on `x` (CPU); None for ONNX without onnxruntime."""
    path = Path(path)
    if path.suffix == ".onnx":
        try:
            import onnxruntime
        except ImportError:
            return None
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path), map_location="cpu")(x)


def export_model(model: Model, fmt: str, out: str | Path, *, batch: int = 1,
                 opset: int = 17) -> dict:
    """Write `model`'s inference graph as `fmt` ("torchscript" or "onnx") to `out` and a
    sidecar `out.json` (see `interface`); returns that description with `max_abs_diff`, the
    largest difference from PyTorch on a seeded random batch (None when it could not run)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    out = Path(out)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"{out}: folder {out.parent} does not exist")
    cpu_head = InferenceHead(model.network, model.task).to("cpu").eval()
    example = _example(model, batch)
    dynamic = fmt == "torchscript"
    info = interface(model, batch, dynamic)
    doc = json.dumps(info)
    try:
        if fmt == "torchscript":
            _torchscript(cpu_head, example, out, doc)
        else:
            _onnx(cpu_head, example, out, doc, opset)
    finally:
        model.network.to(model.device)
    check = _example(model, batch + dynamic, seed=1)
    got = run_exported(out, check)
    want = model.forward(check).cpu()
    info["max_abs_diff"] = None if got is None else float((got - want).abs().max())
    info.update(format=fmt, path=str(out))
    Path(f"{out}.json").write_text(json.dumps(info, indent=1))
    return info
