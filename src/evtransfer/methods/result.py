"""What every method returns to the benchmark: a predictor, its inference network, its cost."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class MethodResult:
    """`predict(x)` maps target inputs (N, C, H, W) to class probabilities (N, K, H, W);
    `network` is what runs at inference (its parameters are the method's inference size);
    `minutes` the training time of each stage it needed."""

    predict: Callable[[torch.Tensor], torch.Tensor]
    network: nn.Module
    minutes: dict[str, float]

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.network.parameters())

    @property
    def train_minutes(self) -> float:
        return sum(self.minutes.values())
