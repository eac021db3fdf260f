"""Batched inference with trained networks: `predict` maps any function over inputs in
batches, `segment` / `segment_tta` give class probabilities (with flips and scales),
`predict_depth` metric depth from a normalised-log-depth network, `reconstruct` an image from
event windows (`reconstruct_images` over a set in batches). Nothing here knows a paper.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from evtransfer.metrics import log_normalized_to_depth


@torch.no_grad()
def predict(fn: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, *, batch: int = 16,
            device: torch.device | str = "cpu") -> torch.Tensor:
    """Concatenated `fn(inputs[i:i+batch])` outputs moved to the CPU (inputs (N, ...))."""
    outs = [fn(inputs[i:i + batch].to(device)).float().cpu() for i in range(0, len(inputs), batch)]
    return torch.cat(outs)


def segment(model: nn.Module, inputs: torch.Tensor, *, batch: int = 16,
            device: torch.device | str = "cpu") -> torch.Tensor:
    """Class probabilities (N, C, H, W) of a segmentation model at the inputs' size."""
    model.eval()

    def probs(x: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits.softmax(1)

    return predict(probs, inputs, batch=batch, device=device)


@torch.no_grad()
def segment_tta(model: nn.Module, x: Tensor, *, scales: Sequence[float] = (1.0,),
                flip: bool = False, batch: int = 16,
                device: torch.device | str = "cpu") -> Tensor:
    """Class probabilities (N, K, H, W) averaged over input scales (bilinear resize of the
    input, logits resized back) and, with `flip`, horizontal flips."""
    model.eval()

    def probs(inp: Tensor) -> Tensor:
        size = inp.shape[-2:]
        total = 0
        for s in scales:
            scaled = inp if s == 1 else F.interpolate(
                inp, size=(round(size[0] * s), round(size[1] * s)), mode="bilinear",
                align_corners=False)
            for flipped in (False, True) if flip else (False,):
                logits = model(scaled.flip(-1) if flipped else scaled)
                logits = logits.flip(-1) if flipped else logits
                logits = F.interpolate(logits.float(), size=size, mode="bilinear",
                                       align_corners=False)
                total = total + logits.softmax(1)
        return total / (len(scales) * (2 if flip else 1))

    return predict(probs, x, batch=batch, device=device)


def predict_depth(model: nn.Module, x: Tensor, *, max_depth: float = 80.0, batch: int = 16,
                  device: torch.device | str = "cpu") -> Tensor:
    """Depth (N, H, W) metres from a model trained by `train_depth`."""
    model.eval()
    logits = predict(model, x, batch=batch, device=device)
    return log_normalized_to_depth(torch.sigmoid(logits[:, 0]), max_depth)


def reconstruct(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) image of a reconstruction network from x (B, C, H, W). A recurrent network
    whose `in_chans` b divides C runs over the C / b windows of x, oldest first, from a fresh
    state, and gives the last window's image (E2VID over consecutive windows); any other
    network maps x in one pass."""
    if not getattr(model, "recurrent", False):
        return model(x)
    last, state = model.history(x)
    return model(last, state)[0]


@torch.no_grad()
def reconstruct_images(recon: nn.Module, x: torch.Tensor, device, batch: int = 16) -> torch.Tensor:
    """Images (N, 1, H, W) in [0, 1] reconstructed from event windows (N, C, H, W)."""
    recon.eval()
    out = [reconstruct(recon, x[i:i + batch].to(device)).clamp(0, 1).cpu()
           for i in range(0, len(x), batch)]
    return torch.cat(out)
