"""Using a trained model: load a model package, predict on recordings, evaluate under a
benchmark's protocol, export for deployment.

- `load_model(path)` → `Model`, a callable taking `Events`, `Spikes` or a tensor
  (`inference.model`);
- `predict_recording` / `predict_path` stream recordings window by window and write label or
  depth PNGs, an overlay GIF and `windows.json` (`inference.stream`);
- `evaluate` reproduces the world, DSEC-Semantic, DDD17, MVSEC-depth and KITTI-depth
  protocols (`inference.evaluate`);
- `export_model` writes TorchScript or ONNX of the inference network (`inference.export`).

The package format itself lives in `engine.package`.
"""

from evtransfer.inference.model import InferenceHead, Model, Prepared, load_model

__all__ = ["InferenceHead", "Model", "Prepared", "load_model"]
