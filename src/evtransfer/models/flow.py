"""An iterative optical-flow network on any multi-scale encoder (RAFT's scheme, kept small).

Teed & Deng, "RAFT: Recurrent All-Pairs Field Transforms for Optical Flow", ECCV 2020. The
event input `(B, 2C, H, W)` holds two consecutive halves of a window (channels [0, C) older,
[C, 2C) newer); one shared encoder maps both (batched) to feature maps, whose stages at
strides 8, 16 and 32 are projected to `dim` channels and summed at stride 8. An all-pairs
correlation volume between the two halves' features (a `levels`-level pyramid, average pooled
over the second half's grid) is looked up in a `(2r+1)²` neighbourhood around the current
flow at every level; a convolutional GRU, started from context features of the newer half,
updates a stride-8 flow `iters` times. Every iterate is upsampled bilinearly (values × 8) to
the input size, so a sequence loss can supervise them all.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from evtransfer.models.heads import init_weights, resize


class _ConvGRU(nn.Module):
    """3×3 convolutional GRU cell: h ← (1 − z)·h + z·tanh(W_q [r·h, x])."""

    def __init__(self, hidden: int, inputs: int) -> None:
        super().__init__()
        self.zr = nn.Conv2d(hidden + inputs, 2 * hidden, 3, padding=1)
        self.q = nn.Conv2d(hidden + inputs, hidden, 3, padding=1)

    def forward(self, h: Tensor, x: Tensor) -> Tensor:
        z, r = torch.sigmoid(self.zr(torch.cat([h, x], 1))).chunk(2, 1)
        q = torch.tanh(self.q(torch.cat([r * h, x], 1)))
        return (1 - z) * h + z * q


def correlation_pyramid(f1: Tensor, f2: Tensor, levels: int) -> list[Tensor]:
    """All-pairs correlation `f1ᵀ f2 / √C` of (B, C, h, w) maps as `(B·h·w, 1, h_l, w_l)`
    volumes, level l average-pooled 2^l times over the second map's grid."""
    b, c, h, w = f1.shape
    corr = torch.einsum("bci,bcj->bij", f1.flatten(2), f2.flatten(2)) / c**0.5
    corr = corr.reshape(b * h * w, 1, h, w)
    pyramid = [corr]
    for _ in range(levels - 1):
        corr = F.avg_pool2d(corr, 2, ceil_mode=True)
        pyramid.append(corr)
    return pyramid


def lookup(pyramid: list[Tensor], coords: Tensor, radius: int) -> Tensor:
    """Correlations around `coords` (B, 2, h, w) (x, y positions in the level-0 grid) at every
    level, bilinear, zero outside: `(B, levels·(2r+1)², h, w)`."""
    b, _, h, w = coords.shape
    d = torch.arange(-radius, radius + 1, device=coords.device, dtype=coords.dtype)
    dy, dx = torch.meshgrid(d, d, indexing="ij")
    delta = torch.stack([dx, dy], -1).view(1, 2 * radius + 1, 2 * radius + 1, 2)
    centre = coords.permute(0, 2, 3, 1).reshape(b * h * w, 1, 1, 2)
    out = []
    for level, corr in enumerate(pyramid):
        pts = centre / 2**level + delta
        hl, wl = corr.shape[-2:]
        grid = torch.stack([2 * pts[..., 0] / max(wl - 1, 1) - 1,
                            2 * pts[..., 1] / max(hl - 1, 1) - 1], -1)
        sampled = F.grid_sample(corr, grid.to(corr.dtype), align_corners=True)
        out.append(sampled.view(b, h, w, -1))
    return torch.cat(out, -1).permute(0, 3, 1, 2)


class IterativeFlowNet(nn.Module):
    """See the module docstring. `forward(x)` → flow `(B, 2, H, W)` in pixels (last iterate);
    `forward_all(x, iters)` → the list of all iterates. `encoder` takes `C = in_chans / 2`
    channels and has maps at strides (…, 8, 16, 32) as its last three `feature_strides`."""

    def __init__(self, encoder: nn.Module, dim: int = 128, hidden: int = 96,
                 iters: int = 6, levels: int = 2, radius: int = 3) -> None:
        super().__init__()
        strides = tuple(encoder.feature_strides)
        if strides[-3:] != (8, 16, 32):
            raise ValueError(f"IterativeFlowNet needs encoder maps at strides 8, 16, 32; "
                             f"got {strides}")
        self.encoder = encoder
        self.iters, self.levels, self.radius = iters, levels, radius
        self.feature_channels = tuple(encoder.feature_channels)
        self.feature_strides = strides
        self.lateral = nn.ModuleList([nn.Conv2d(c, dim, 1) for c in self.feature_channels[-3:]])
        self.context = nn.Conv2d(dim, 2 * hidden, 3, padding=1)
        corr_ch = levels * (2 * radius + 1) ** 2
        self.motion = nn.Sequential(nn.Conv2d(corr_ch + 2, hidden, 3, padding=1), nn.ReLU())
        self.gru = _ConvGRU(hidden, 2 * hidden)
        self.flow_head = nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(),
                                       nn.Conv2d(hidden, 2, 3, padding=1))

    def features(self, x: Tensor) -> Tensor:
        """Stride-8 features `(B, dim, ⌈H/8⌉, ⌈W/8⌉)` of one half."""
        feats = self.encoder.forward_features(x)[-3:]
        size = feats[0].shape[-2:]
        return sum(resize(conv(f), size) for conv, f in zip(self.lateral, feats, strict=True))

    def forward_all(self, x: Tensor, iters: int | None = None) -> list[Tensor]:
        if x.ndim != 4 or x.shape[1] % 2:
            raise ValueError(f"IterativeFlowNet: input must be (B, 2C, H, W), got "
                             f"{tuple(x.shape)}")
        old, new = x.chunk(2, 1)
        f1, f2 = self.features(torch.cat([old, new])).chunk(2)
        pyramid = correlation_pyramid(f1.float(), f2.float(), self.levels)
        h, inp = self.context(f2).chunk(2, 1)
        h, inp = torch.tanh(h), torch.relu(inp)
        b, _, hh, ww = f1.shape
        ys, xs = torch.meshgrid(torch.arange(hh, device=x.device, dtype=torch.float32),
                                torch.arange(ww, device=x.device, dtype=torch.float32),
                                indexing="ij")
        base = torch.stack([xs, ys])[None].expand(b, -1, -1, -1)
        flow = torch.zeros_like(base)
        scale_h, scale_w = x.shape[-2] / hh, x.shape[-1] / ww
        scale = torch.tensor([scale_w, scale_h], device=x.device).view(1, 2, 1, 1)
        out = []
        for _ in range(iters or self.iters):
            corr = lookup(pyramid, base + flow.detach(), self.radius)
            motion = self.motion(torch.cat([corr.to(inp.dtype), flow.to(inp.dtype)], 1))
            h = self.gru(h, torch.cat([inp, motion], 1))
            flow = flow + self.flow_head(h).float()
            out.append(resize(flow * scale, x.shape[-2:], align_corners=True))
        return out

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_all(x)[-1]


def iterative_flow_net(encoder: nn.Module, dim: int = 128, hidden: int = 96, iters: int = 6,
                       levels: int = 2, radius: int = 3, seed: int = 0) -> IterativeFlowNet:
    """An `IterativeFlowNet` whose head is initialised from `seed` (the encoder keeps its
    weights)."""
    net = IterativeFlowNet(encoder, dim, hidden, iters, levels, radius)
    return init_weights(net, seed, skip=[encoder], conv="uniform")
