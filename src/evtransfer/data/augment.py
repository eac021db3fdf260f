"""Augmentations of dense batches: each samples its parameters once from an explicit generator
and applies them alike to every tensor of a sample (events, image, label, depth, flow), so the
pairs stay aligned.

- `hflip`: random horizontal flips, per sample (a flow's x component changes sign);
- `random_resized_crop`: a random crop per sample resized back (bilinear inputs, nearest
  labels);
- multi-crop views (DINO's augmentation) that remember where they came from: random resized
  crops with horizontal flips of square images, sampled on the host and replayed with
  `grid_sample` (bilinear, align_corners=True: the crop's first and last output pixels sit on
  the box's first and last pixels, as kornia's "slice" crop then resize does). `box_grid`
  gives the sampling coordinates of any n × n grid of a box, so maps defined on the source
  image (cluster assignments, labels) can be warped into each crop at any resolution
  (`crop_boxes`, `box_grid`, `resized_crops`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def hflip(batch: Mapping[str, torch.Tensor], generator: torch.Generator,
          flow: Sequence[str] = ()) -> dict:
    """Flip a random half of the batch horizontally: every (B, ..., W) tensor of the batch
    with the same per-sample choice (inputs, labels, depths and flows stay aligned); the keys
    in `flow` are (B, 2, H, W) flows in pixels, whose x component changes sign."""
    out = dict(batch)
    first = next(v for v in batch.values() if isinstance(v, torch.Tensor))
    flip = torch.rand(first.shape[0], generator=generator) < 0.5
    for k, v in batch.items():
        if isinstance(v, torch.Tensor) and v.ndim >= 3:
            f = flip.to(v.device).view(-1, *([1] * (v.ndim - 1)))
            flipped = v.flip(-1)
            if k in flow:
                flipped = flipped * torch.tensor([-1.0, 1.0], device=v.device).view(1, 2, 1, 1)
            out[k] = torch.where(f, flipped, v)
    return out


def random_resized_crop(batch: dict, generator: torch.Generator, scale: tuple[float, float],
                        nearest: Sequence[str] = ("y",)) -> dict:
    """The same random crop (area fraction in `scale`, aspect ratio kept) of every (B, …, H, W)
    tensor of the batch, per sample, resized back to (H, W): bilinear for inputs, nearest for
    the keys in `nearest` (labels). scale (1, 1) returns the batch unchanged."""
    if scale[0] >= 1.0:
        return batch
    first = next(v for v in batch.values() if isinstance(v, Tensor))
    b = first.shape[0]
    frac = torch.empty(b).uniform_(scale[0], scale[1], generator=generator).sqrt()
    # the box's centre keeps it inside the image: |c| <= 1 - side, in normalised units
    centre = (1 - frac)[:, None] * (2 * torch.rand(b, 2, generator=generator) - 1)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = frac
    theta[:, :, 2] = centre
    out = dict(batch)
    for k, v in batch.items():
        if not isinstance(v, Tensor) or v.ndim < 3:
            continue
        x = v.unsqueeze(1) if v.ndim == 3 else v
        grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
        mode = "nearest" if k in nearest else "bilinear"
        y = F.grid_sample(x.float(), grid.to(torch.float32), mode=mode, align_corners=False)
        out[k] = (y.squeeze(1) if v.ndim == 3 else y).to(v.dtype)
    return out


def crop_boxes(n: int, size: int, scale: tuple[float, float], ratio: tuple[float, float],
               generator: torch.Generator) -> Tensor:
    """(n, 4) float boxes (top, left, h, w) in a size² image: area U(scale)·size², log-aspect
    uniform in `ratio`, 10 tries each (kornia's RandomResizedCrop); else the whole image."""
    area = torch.empty(n, 10).uniform_(*scale, generator=generator) * size * size
    logr = torch.empty(n, 10).uniform_(math.log(ratio[0]), math.log(ratio[1]),
                                       generator=generator)
    bw = (area * logr.exp()).sqrt().round()
    bh = (area / logr.exp()).sqrt().round()
    ok = (bw > 0) & (bw <= size) & (bh > 0) & (bh <= size)
    first = torch.where(ok.any(1), ok.float().argmax(1), 0)
    bh = torch.where(ok.any(1), bh.gather(1, first[:, None])[:, 0], float(size))
    bw = torch.where(ok.any(1), bw.gather(1, first[:, None])[:, 0], float(size))
    top = (torch.rand(n, generator=generator) * (size - bh + 1)).floor()
    left = (torch.rand(n, generator=generator) * (size - bw + 1)).floor()
    return torch.stack([top, left, bh, bw], 1)


def box_grid(boxes: Tensor, flips: Tensor, n: int, size: int) -> Tensor:
    """(B, n, n, 2) grid_sample coordinates (align_corners=True) of n × n points spanning each
    box's first to last pixel, mirrored where `flips`; the source image is size × size."""
    t = torch.linspace(0, 1, n) if n > 1 else torch.zeros(1)
    tx = torch.where(flips[:, None], 1 - t, t)
    xs = boxes[:, 1:2] + tx * (boxes[:, 3:4] - 1)
    ys = boxes[:, 0:1] + t * (boxes[:, 2:3] - 1)
    norm = max(size - 1, 1)
    gx, gy = 2 * xs / norm - 1, 2 * ys / norm - 1
    return torch.stack([gx[:, None, :].expand(-1, n, -1), gy[:, :, None].expand(-1, -1, n)], -1)


def resized_crops(x: Tensor, copies: int, out: int, scale: tuple[float, float],
                  ratio: tuple[float, float], generator: torch.Generator
                  ) -> tuple[Tensor, Tensor, Tensor]:
    """`copies` random resized, randomly flipped crops of every image of x (B, C, S, S), crop
    major: ((copies·B, C, out, out), boxes (copies·B, 4), flips (copies·B,))."""
    b, size = x.shape[0], x.shape[-1]
    boxes = crop_boxes(copies * b, size, scale, ratio, generator)
    flips = torch.rand(copies * b, generator=generator) < 0.5
    grid = box_grid(boxes, flips, out, size).to(x.device, x.dtype)
    crops = F.grid_sample(x.repeat(copies, 1, 1, 1), grid, mode="bilinear", align_corners=True)
    return crops, boxes, flips
