"""What every method returns to the benchmark: a predictor, its inference network, its cost,
and (when the network runs alone at inference) how to rebuild it for a model package."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class MethodResult:
    """`predict(x)` maps target inputs (N, C, H, W) to class probabilities (N, K, H, W) (depth
    methods: packed spike clips to depth (N, H, W) metres); `network` is what runs at inference
    (its parameters are the method's inference size); `minutes` the training time of each
    stage it needed.

    `spec` describes `network` when it is ONE registry model that predicts alone, so the
    benchmark can save it as a model package (`engine.package`, read by
    `evtransfer.load_model`); None when inference needs more (e.g. reconstruction then a
    segmenter): no package is written. Its keys:
    - "model": the `models.create_model` name; "kwargs": the keyword arguments that rebuild
      the architecture (in_chans, num_classes, ...; not `seed`);
    - "task": "segmentation" or "depth"; "output": "logits" ((B, K, h, w) at any stride) or
      "depth" ((B, 1, h, w) metres);
    - optional "input": `engine.package.InputSpec` fields the method decides beyond the
      benchmark's data (the benchmark fills representation, window and sensor), e.g.
      {"size": [H, W], "resize": "nearest"} for a network run at another size than the
      sensor's. `segmentation_spec` builds the common case.
    """

    predict: Callable[[torch.Tensor], torch.Tensor]
    network: nn.Module
    minutes: dict[str, float]
    spec: dict | None = None

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.network.parameters())

    @property
    def train_minutes(self) -> float:
        return sum(self.minutes.values())


def segmentation_spec(model: str, in_chans: int, num_classes: int) -> dict:
    """`MethodResult.spec` of a registry segmenter `model` returning logits."""
    return {"model": model, "kwargs": {"in_chans": int(in_chans), "num_classes": int(num_classes)},
            "task": "segmentation", "output": "logits"}
