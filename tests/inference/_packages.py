"""Model packages for the inference tests: a known constant output (hand-made golden values)
or seeded random weights (outputs that vary with the input)."""

from __future__ import annotations

import torch

from evtransfer.engine.package import InputSpec, method_spec, save_package
from evtransfer.models import create_model

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def segmenter_package(path, *, constant: int | None = None, num_classes: int = 11,
                      label_space: str = "dsec11", seed: int = 0, **inputs):
    """A SegFormer-B0 package; with `constant` its classifier predicts that class everywhere
    (weights 0, bias one-hot), otherwise seeded random weights."""
    spec_in = InputSpec(**inputs)
    net = create_model("segformer_b0", in_chans=spec_in.channels(), num_classes=num_classes,
                       seed=seed)
    if constant is not None:
        with torch.no_grad():
            net.decoder.classifier.weight.zero_()
            net.decoder.classifier.bias.zero_()
            net.decoder.classifier.bias[constant] = 10.0
    desc = {"model": "segformer_b0", "task": "segmentation", "output": "logits",
            "kwargs": {"in_chans": spec_in.channels(), "num_classes": num_classes}}
    return save_package(path, net, method_spec(desc, method="test", inputs=spec_in,
                                               label_space=label_space))


def depth_package(path, *, constant: float | None, depth_range=(1e-3, 80.0), seed: int = 0,
                  **inputs):
    """A DPT (MiT-B0 encoder, 16 features) package predicting `constant` metres everywhere
    (the last head convolution has weights 0 and bias `constant`, raw depth mode); None:
    seeded random weights."""
    spec_in = InputSpec(**inputs)
    kwargs = {"in_chans": spec_in.channels(), "features": 16, "uncertainty": False}
    net = create_model("dpt_mit_b0", **kwargs, seed=seed)
    last = [m for m in net.head if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        if constant is not None:
            last.weight.zero_()
            last.bias.fill_(constant)
    desc = {"model": "dpt_mit_b0", "task": "depth", "output": "depth", "kwargs": kwargs}
    return save_package(path, net, method_spec(desc, method="test", inputs=spec_in,
                                               depth_range=depth_range))
