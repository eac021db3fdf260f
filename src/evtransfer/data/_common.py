"""Pieces the benchmark datasets share: ESS event chunking, representations, label resizing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from evtransfer.events import Events

Representation = Callable[[Events], torch.Tensor]
"""Any callable turning one event window into a (C, H, W) float tensor on the sensor grid."""

Sample = dict[str, Any]
Transform = Callable[[Sample], Sample]
"""A joint transform over a whole sample dict (events/representation, label, depth, …)."""


def ess_chunks(events: Events, k: int) -> list[Events]:
    """Split a window into `k` consecutive chunks of ⌊N / k⌋ events, as ESS does.

    Chunk i holds events [i·s, (i+1)·s) with s = ⌊N / k⌋, so when fewer than k·s events were
    available the newest N mod k events are left out (uzh-rpg/ess : DSEC/dataset/sequence.py
    `generate_event_tensor`; datasets/ddd17_events_loader.py). Chunks are zero-copy views.
    """
    if k <= 0:
        raise ValueError(f"number of chunks must be positive, got {k}")
    size = len(events) // k
    return [events[i * size : (i + 1) * size] for i in range(k)]


def represent_chunks(chunks: Sequence[Any], representation: Representation) -> torch.Tensor:
    """Concatenate `representation(chunk)` along channels: (k·C, H, W) float32.

    The representation may return (C, H, W) or a batch of one, (1, C, H, W), as the
    `evtransfer.represent` functions do.
    """
    parts = []
    for chunk in chunks:
        out = representation(chunk)
        if isinstance(out, torch.Tensor) and out.ndim == 4 and out.shape[0] == 1:
            out = out[0]
        if not isinstance(out, torch.Tensor) or out.ndim != 3:
            raise ValueError(
                "representation must return a (C, H, W) or (1, C, H, W) tensor, got "
                f"{type(out).__name__} {getattr(out, 'shape', '')}"
            )
        if out.shape[1:] != (chunk.height, chunk.width):
            raise ValueError(
                f"representation returned spatial size {tuple(out.shape[1:])}, expected the "
                f"sensor's ({chunk.height}, {chunk.width})"
            )
        parts.append(out.float())
    return torch.cat(parts, dim=0)


def resize_bilinear(tensor: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(C, H, W) → (C, *size) bilinear with align_corners=True (the ESS resize)."""
    if tuple(tensor.shape[1:]) == tuple(size):
        return tensor
    return F.interpolate(tensor[None], size=size, mode="bilinear", align_corners=True)[0]


def resize_nearest(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) label → (*size) by nearest neighbour, reproducing OpenCV's INTER_NEAREST.

    Output column c reads input ⌊c · (1 / (w / W))⌋ (clipped to W - 1) with the reciprocal
    taken in float64, exactly as `cv2.resize` computes it (so 1/(200/260) = 1.2999… maps row 10
    to 12, not 13); rows likewise. ESS resizes its labels this way.
    """

    def source(n_out: int, n_in: int) -> np.ndarray:
        inv = 1.0 / (n_out / n_in)
        return np.minimum(np.floor(np.arange(n_out) * inv).astype(np.int64), n_in - 1)

    h, w = size
    return label[source(h, label.shape[0])[:, None], source(w, label.shape[1])[None, :]]


def finish(sample: Sample, transform: Transform | None) -> Sample:
    """Apply the optional joint transform."""
    return transform(sample) if transform is not None else sample


def require_dir(path: Path, what: str) -> Path:
    """`path` if it is a folder, else FileNotFoundError saying what was expected there."""
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such folder ({what})")
    return path


class TensorDict(Dataset):
    """A map-style dataset over equally long tensors: item i is {name: tensor[i]}."""

    def __init__(self, **tensors: torch.Tensor):
        lengths = {len(v) for v in tensors.values()}
        if len(lengths) != 1:
            raise ValueError(f"tensors must have the same length, got {lengths}")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.tensors.items()}
