"""Shared helpers for the network tests: devices, parameter counting, random weights."""

from __future__ import annotations

import torch
from torch import nn

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def n_params(module: nn.Module) -> int:
    """Number of parameter elements of `module`."""
    return sum(p.numel() for p in module.parameters())


def randomize_(module: nn.Module, seed: int = 0, scale: float = 0.2) -> nn.Module:
    """Fill every float parameter and BN running statistic with random values (norm scales
    and running variances around 1), so that a comparison exercises every weight."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            own = list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False))
            for name, t in own:
                if not t.is_floating_point():
                    continue
                values = torch.randn(t.shape, generator=gen, dtype=torch.float64) * scale
                if isinstance(m, _NORMS) and name in ("weight", "running_var"):
                    values = values.abs() + 1.0
                t.copy_(values.to(t.dtype))
    return module
