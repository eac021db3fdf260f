"""Multi-crop views (DINO's augmentation) that remember where they came from.

Random resized crops with horizontal flips of square images, sampled once on the host from an
explicit generator and replayed with `grid_sample` (bilinear, align_corners=True: the crop's
first and last output pixels sit on the box's first and last pixels, as kornia's "slice" crop
then resize does). `box_grid` gives the sampling coordinates of any n × n grid of a box, so
maps defined on the source image (cluster assignments, labels) can be warped into each crop
at any resolution.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


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
