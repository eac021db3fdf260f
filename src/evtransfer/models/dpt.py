"""DPT-style dense depth decoder on a ViT-hybrid or a hierarchical (MiT) encoder — BiCross.

DPT (Ranftl et al., ICCV 2021; code: isl-org/DPT dpt/vit.py, dpt/blocks.py, dpt/models.py):

* **ViT-hybrid encoder** (`vitb_rn50_384`): a ResNet-50-style stem (weight-standardised
  convs with TF "same" padding, GroupNorm 32, stages of 3-4-9 bottlenecks → 1024 channels at
  stride 16), a 1×1 patch projection, a class token, learned position embeddings for a
  24×24 grid (bilinearly resized to the input's grid) and pre-norm transformer blocks.
  DPT reads the stride-4 and stride-8 stem stages and the tokens after blocks 8 and 11.
* **Reassemble**: the readout (class) token is ignored, added, or projected
  (`Linear(2D, D) + GELU` on [token, readout]); tokens become a stride-16 map; 1×1 conv,
  then (hook 4 only) a stride-2 3×3 conv to stride 32.
* **Fusion**: 3×3 convs to `features` (256), then four fusion blocks (residual conv units,
  ×2 bilinear upsampling with align_corners=True, 1×1 out conv), deep to shallow.
* **Head**: 3×3 conv to features/2, ×2 upsampling, 3×3 conv to 32, ReLU, 1×1 conv to 1
  (optional final ReLU, `non_negative`; BiCross uses none).

BiCross adds an **uncertainty head** of the same structure on the finest fusion output
(`path_1`); its activation is configurable and "none" by default as in BiCross's code
("sigmoid" bounds it to (0, 1) like its target, the clamped relative error; "softplus"
keeps it positive). `depth_mode="inverse_affine"` turns the raw output x (inverse depth)
into depth = 1 / max(s·x + t, 1e-8) (BiCross: s = 6.016e-5, t = 0.00579 outdoors).

Builders initialise from `seed` with PyTorch's default (uniform) conv initialisation, which
the reference decoder uses: the fusion path has no normalisation, and Kaiming-normal convs
would start it with outputs in the tens.

Input sides must be multiples of 32 (patch 16, one stride-2 reassemble conv and ×2 fusion
upsampling must meet the skips exactly); other sizes raise ValueError — pad first.
Differences from the reference: the timm classifier head, the ViT's final LayerNorm and the
deepest fusion block's first residual unit are never used by DPT and are not built (they
account for 1.95 M of the published 123 M parameters of DPT-Hybrid). The tests check a small
configuration against transformers' `DPTForDepthEstimation` (hybrid) with the same weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from evtransfer.models.heads import (
    ActivationName,
    check_image,
    check_multiple,
    init_weights,
    make_activation,
)
from evtransfer.models.mit import build_mit

Readout = Literal["ignore", "add", "project"]
DepthMode = Literal["raw", "inverse_affine"]


def pad_same(x: Tensor, kernel: int, stride: int, value: float = 0.0) -> Tensor:
    """TensorFlow "same" padding of a `(B, C, H, W)` map for a `kernel`/`stride` window:
    output size ⌈n / stride⌉, the odd pixel of padding goes to the bottom/right."""
    pads = []
    for n in (x.shape[-1], x.shape[-2]):
        total = max((math.ceil(n / stride) - 1) * stride + kernel - n, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value)


class StdConv2d(nn.Conv2d):
    """Conv2d with weight standardisation (per output channel: zero mean, unit biased
    variance, eps 1e-8 as BiT's code) and optional TF "same" padding, as the ViT-hybrid's
    ResNet stem."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1,
                 same: bool = False, eps: float = 1e-8) -> None:
        super().__init__(cin, cout, kernel, stride, 0 if same else kernel // 2, bias=False)
        self.same, self.eps = same, eps

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        var = w.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
        w = (w - mean) / torch.sqrt(var + self.eps)
        if self.same:
            x = pad_same(x, self.kernel_size[0], self.stride[0])
        return F.conv2d(x, w, None, self.stride, self.padding)


def _gn(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups (the reference), fewer for narrow CPU presets."""
    return nn.GroupNorm(min(32, channels), channels, eps=1e-5)


class _StemBottleneck(nn.Module):
    """Non-pre-activation bottleneck with StdConv + GroupNorm; stride on the 3×3 conv."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        mid = cout // 4
        self.conv1, self.norm1 = StdConv2d(cin, mid, 1), _gn(mid)
        self.conv2, self.norm2 = StdConv2d(mid, mid, 3, stride, same=stride > 1), _gn(mid)
        self.conv3, self.norm3 = StdConv2d(mid, cout, 1), _gn(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(StdConv2d(cin, cout, 1, stride), _gn(cout))

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        y = self.norm3(self.conv3(y))
        return F.relu(y + (x if self.down is None else self.down(x)))


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class ViTBlock(nn.Module):
    """Pre-norm transformer block (LayerNorm eps 1e-6, MHSA with qkv bias, GELU MLP)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class HybridTokens(NamedTuple):
    """ViT-hybrid intermediate outputs: the stride-4/8 stem maps, the hooked token
    sequences `(B, 1 + gh·gw, D)` (class token first) and the token grid (gh, gw)."""

    stem: list[Tensor]
    tokens: list[Tensor]
    grid: tuple[int, int]


class ViTHybrid(nn.Module):
    """ResNet-stem + ViT encoder (DPT-Hybrid's `vit_base_resnet50_384`), any `in_chans`.

    `forward_tokens(x)` returns `HybridTokens`; `forward_features(x)` returns four maps:
    stem stage 1 and 2 (`stem_widths[0:2]` channels, strides 4, 8) and the two hooked token
    maps with the readout token dropped (`embed_dim` channels, stride 16). Input sides
    must be multiples of 16. BiCross's spike stem is this with `in_chans=128`. `stem_eps` is
    the first conv's standardisation eps: 1e-8 in timm's hybrid (vision_transformer_hybrid.py
    `_resnetv2`), 1e-6 for BiCross's replaced spike stem (timm's StdConv2dSame default).
    """

    def __init__(
        self,
        in_chans: int = 3,
        stem_depths: Sequence[int] = (3, 4, 9),
        stem_widths: Sequence[int] = (256, 512, 1024),
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        hooks: Sequence[int] = (8, 11),
        pretrain_grid: int = 24,
        mlp_ratio: float = 4.0,
        stem_eps: float = 1e-8,
    ) -> None:
        super().__init__()
        if len(stem_depths) != 3 or len(stem_widths) != 3:
            raise ValueError("stem_depths and stem_widths must list 3 stages")
        if len(hooks) != 2 or not 0 <= hooks[0] < hooks[1] == depth - 1:
            raise ValueError(f"hooks must be 2 increasing block indices, the last {depth - 1} "
                             f"(blocks after it would be unused), got {hooks}")
        self.in_chans = in_chans
        self.stem_conv = StdConv2d(in_chans, 64, 7, 2, same=True, eps=stem_eps)
        self.stem_norm = _gn(64)
        stages, cin = [], 64
        for i, (d, w) in enumerate(zip(stem_depths, stem_widths, strict=True)):
            blocks = [_StemBottleneck(cin if j == 0 else w, w, (1 if i == 0 else 2) if j == 0
                                      else 1) for j in range(d)]
            stages.append(nn.Sequential(*blocks))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.patch_proj = nn.Conv2d(cin, embed_dim, 1)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + pretrain_grid**2, embed_dim))
        self.blocks = nn.ModuleList([ViTBlock(embed_dim, num_heads, mlp_ratio)
                                     for _ in range(depth)])
        self.hooks = tuple(hooks)
        self.embed_dim = embed_dim
        self.feature_channels = (stem_widths[0], stem_widths[1], embed_dim, embed_dim)
        self.feature_strides = (4, 8, 16, 16)

    def _pos_embed(self, gh: int, gw: int) -> Tensor:
        tok, grid = self.pos_embed[:, :1], self.pos_embed[0, 1:]
        g = math.isqrt(grid.shape[0])
        grid = grid.reshape(1, g, g, -1).permute(0, 3, 1, 2)
        if (gh, gw) != (g, g):
            grid = F.interpolate(grid, size=(gh, gw), mode="bilinear", align_corners=False)
        return torch.cat([tok, grid.flatten(2).transpose(1, 2)], dim=1)

    def forward_tokens(self, x: Tensor) -> HybridTokens:
        check_image(x, self.in_chans)
        check_multiple(x, 16, "ViTHybrid")
        y = F.relu(self.stem_norm(self.stem_conv(x)))
        y = F.max_pool2d(pad_same(y, 3, 2, value=float("-inf")), 3, 2)
        stem = []
        for stage in self.stages:
            y = stage(y)
            stem.append(y)
        y = self.patch_proj(y)
        gh, gw = y.shape[-2:]
        t = torch.cat([self.cls_token.expand(y.shape[0], -1, -1), y.flatten(2).transpose(1, 2)],
                      dim=1)
        t = t + self._pos_embed(gh, gw)
        tokens = []
        for i, block in enumerate(self.blocks):
            t = block(t)
            if i in self.hooks:
                tokens.append(t)
        return HybridTokens(stem[:2], tokens, (gh, gw))

    def forward_features(self, x: Tensor) -> list[Tensor]:
        out = self.forward_tokens(x)
        maps = [t[:, 1:].transpose(1, 2).unflatten(2, out.grid) for t in out.tokens]
        return [*out.stem, *maps]


class _ReadoutMap(nn.Module):
    """Tokens `(B, 1+N, D)` → map `(B, D, gh, gw)` using the readout token as configured."""

    def __init__(self, dim: int, readout: Readout) -> None:
        super().__init__()
        if readout not in ("ignore", "add", "project"):
            raise ValueError(f"readout must be 'ignore', 'add' or 'project', got {readout!r}")
        self.readout = readout
        self.project = (nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU())
                        if readout == "project" else None)

    def forward(self, t: Tensor, grid: tuple[int, int]) -> Tensor:
        x, cls = t[:, 1:], t[:, :1]
        if self.readout == "add":
            x = x + cls
        elif self.project is not None:
            x = self.project(torch.cat([x, cls.expand_as(x)], dim=-1))
        return x.transpose(1, 2).unflatten(2, grid)


class _ResidualConvUnit(nn.Module):
    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """DPT fusion: (x + RCU(skip)) → RCU → ×2 bilinear (align_corners) → 1×1 conv."""

    def __init__(self, features: int, with_skip: bool = True) -> None:
        super().__init__()
        self.skip_unit = _ResidualConvUnit(features) if with_skip else None
        self.unit = _ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, 1)

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        if self.skip_unit is not None and skip is not None:
            x = x + self.skip_unit(skip)
        x = F.interpolate(self.unit(x), scale_factor=2.0, mode="bilinear", align_corners=True)
        return self.out_conv(x)


def _dense_head(features: int, final: nn.Module) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(features, features // 2, 3, padding=1),
        nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=True),
        nn.Conv2d(features // 2, 32, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(32, 1, 1), final,
    )


class DPTOutputs(NamedTuple):
    """depth `(B, 1, H, W)` (after `depth_mode`); raw head output `(B, 1, H, W)`;
    uncertainty `(B, 1, H, W)` or None; the four reassembled encoder maps `layers`
    (strides 4, 8, 16, 32; BiCross's CKD pools `layers[3]`) and the fusion outputs
    `paths` = [path_1 … path_4] (strides 2, 4, 8, 16; BiCross's FKD uses `paths[3]`)."""

    depth: Tensor
    raw: Tensor
    uncertainty: Tensor | None
    layers: list[Tensor]
    paths: list[Tensor]


class DPTDepth(nn.Module):
    """DPT depth network on a `ViTHybrid` or a hierarchical encoder (4 maps, strides 4–32).

    `forward(x)` maps `(B, in_chans, H, W)` (H, W multiples of 32) to depth `(B, 1, H, W)`;
    `forward_all(x)` returns `DPTOutputs`; `forward_features` is the encoder's.
    """

    def __init__(
        self,
        encoder: nn.Module,
        features: int = 256,
        readout: Readout = "project",
        uncertainty: bool = True,
        uncertainty_activation: ActivationName = "none",
        non_negative: bool = False,
        depth_mode: DepthMode = "raw",
        scale: float = 6.016e-5,
        shift: float = 0.00579,
    ) -> None:
        super().__init__()
        if depth_mode not in ("raw", "inverse_affine"):
            raise ValueError(f"depth_mode must be 'raw' or 'inverse_affine', got {depth_mode!r}")
        self.encoder = encoder
        self.hybrid = isinstance(encoder, ViTHybrid)
        chans = list(encoder.feature_channels)
        if len(chans) != 4:
            raise ValueError(f"encoder must give 4 maps, got channels {chans}")
        if self.hybrid:
            dim = encoder.embed_dim
            self.readouts = nn.ModuleList([_ReadoutMap(dim, readout) for _ in range(2)])
            self.post3 = nn.Conv2d(dim, dim, 1)
            self.post4 = nn.Sequential(nn.Conv2d(dim, dim, 1), nn.Conv2d(dim, dim, 3, 2, 1))
        self.feature_channels = tuple(chans)
        self.feature_strides = tuple(encoder.feature_strides)
        self.layer_rn = nn.ModuleList([nn.Conv2d(c, features, 3, padding=1, bias=False)
                                       for c in chans])
        self.fusion = nn.ModuleList([FusionBlock(features, with_skip=i < 3) for i in range(4)])
        self.head = _dense_head(features, nn.ReLU() if non_negative else nn.Identity())
        self.uncertainty_head = (_dense_head(features, make_activation(uncertainty_activation))
                                 if uncertainty else None)
        self.depth_mode, self.scale, self.shift = depth_mode, scale, shift

    def forward_features(self, x: Tensor) -> list[Tensor]:
        return self.encoder.forward_features(x)

    def _layers(self, x: Tensor) -> list[Tensor]:
        if not self.hybrid:
            return list(self.encoder.forward_features(x))
        out = self.encoder.forward_tokens(x)
        l3 = self.post3(self.readouts[0](out.tokens[0], out.grid))
        l4 = self.post4(self.readouts[1](out.tokens[1], out.grid))
        return [*out.stem, l3, l4]

    def to_depth(self, raw: Tensor) -> Tensor:
        """Apply `depth_mode`: identity, or 1 / max(scale·raw + shift, 1e-8)."""
        if self.depth_mode == "raw":
            return raw
        return 1.0 / torch.clamp(self.scale * raw + self.shift, min=1e-8)

    def forward_all(self, x: Tensor) -> DPTOutputs:
        check_multiple(x, 32, "DPTDepth")
        layers = self._layers(x)
        rn = [conv(f) for conv, f in zip(self.layer_rn, layers, strict=True)]
        p4 = self.fusion[3](rn[3])
        p3 = self.fusion[2](p4, rn[2])
        p2 = self.fusion[1](p3, rn[1])
        p1 = self.fusion[0](p2, rn[0])
        raw = self.head(p1)
        unc = self.uncertainty_head(p1) if self.uncertainty_head is not None else None
        return DPTOutputs(self.to_depth(raw), raw, unc, layers, [p1, p2, p3, p4])

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_all(x).depth


_HYBRID_BASE = dict(stem_depths=(3, 4, 9), stem_widths=(256, 512, 1024), embed_dim=768,
                    depth=12, num_heads=12, hooks=(8, 11))  # code: isl-org/DPT vitb_rn50_384
_HYBRID_SMALL = dict(stem_depths=(1, 1, 1), stem_widths=(64, 128, 256), embed_dim=192,
                     depth=4, num_heads=3, hooks=(1, 3))  # unpublished: CPU preset


_DECODER_OPTIONS = ("features", "readout", "uncertainty", "uncertainty_activation",
                    "non_negative", "depth_mode", "scale", "shift")


def _build(encoder: nn.Module, seed: int, options: dict) -> DPTDepth:
    """`DPTDepth` from the builder's keyword options; a MiT keeps its own initialisation."""
    net = DPTDepth(encoder, **{k: options[k] for k in _DECODER_OPTIONS})
    skip = [] if isinstance(encoder, ViTHybrid) else [encoder]
    return init_weights(net, seed, skip=skip, conv="uniform")


def dpt_hybrid(in_chans: int = 3, features: int = 256, readout: Readout = "project",
               uncertainty: bool = True, uncertainty_activation: ActivationName = "none",
               non_negative: bool = False, depth_mode: DepthMode = "raw",
               scale: float = 6.016e-5, shift: float = 0.00579, stem_eps: float = 1e-8,
               seed: int = 0) -> DPTDepth:
    """DPT-Hybrid: ViT-B/16 (12 blocks, 768, hooks 8/11) on a 3-4-9 ResNet stem, 256
    features, readout project; `stem_eps` as `ViTHybrid`. Decoder options as `DPTDepth`."""
    return _build(ViTHybrid(in_chans, **_HYBRID_BASE, stem_eps=stem_eps), seed, locals())


def dpt_hybrid_small(in_chans: int = 3, features: int = 64, readout: Readout = "project",
                     uncertainty: bool = True, uncertainty_activation: ActivationName = "none",
                     non_negative: bool = False, depth_mode: DepthMode = "raw",
                     scale: float = 6.016e-5, shift: float = 0.00579, stem_eps: float = 1e-8,
                     seed: int = 0) -> DPTDepth:
    """A small DPT-Hybrid for CPU runs (1-1-1 stem, 192-dim 4-block ViT, 64 features)."""
    return _build(ViTHybrid(in_chans, **_HYBRID_SMALL, stem_eps=stem_eps), seed, locals())


def _mit_builder(variant: str):
    def build(in_chans: int = 3, features: int = 256, readout: Readout = "project",
              uncertainty: bool = True, uncertainty_activation: ActivationName = "none",
              non_negative: bool = False, depth_mode: DepthMode = "raw",
              scale: float = 6.016e-5, shift: float = 0.00579, drop_path_rate: float = 0.1,
              seed: int = 0) -> DPTDepth:
        encoder = build_mit(variant, in_chans=in_chans, drop_path_rate=drop_path_rate,
                            seed=seed)
        return _build(encoder, seed, locals())

    build.__name__ = f"dpt_mit_{variant}"
    build.__doc__ = (f"DPT decoder on the MiT-{variant.upper()} encoder (SegFormer's, its own "
                     f"initialisation); `readout` is unused. Decoder options as `DPTDepth`.")
    return build


MODELS = {"dpt_hybrid": dpt_hybrid, "dpt_hybrid_small": dpt_hybrid_small}
MODELS.update({f"dpt_mit_{v}": _mit_builder(v) for v in ("b0", "b1", "b2", "b3", "b4", "b5")})
