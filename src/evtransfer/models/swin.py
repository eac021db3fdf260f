"""Swin Transformer encoder, ECDDP's dense-token fusion and UPerNet with an FCN auxiliary head.

Swin-T/7 (Liu et al., ICCV 2021): patch 4, embed 96, depths 2-2-6-2, heads 3-6-12-24,
window 7, MLP ratio 4, qkv bias; ECDDP's pre-training and segmentation backbone
(code: Yan98/Event-Camera-Data-Dense-Pre-training config/seg/swin_small.yml). Inputs of any
size are accepted: the patch embedding pads to a multiple of the patch size, each block pads
its map to a multiple of the window and crops back, and patch merging pads odd sizes
(the detection/segmentation variant of the official code, which ECDDP's `SWINPad` uses).

`stage_norms=True` puts a LayerNorm on each of the four stage outputs (ECDDP's and mmseg's
layout; they are what the dense tokens and UPerNet read). `stage_norms=False` has only the
final LayerNorm before the classifier, the official classification layout whose Swin-T has
28 288 354 parameters with a 1000-class head.

UPerNet (Xiao et al., ECCV 2018) follows mmseg's `UPerHead`: a pyramid pooling module
(scales 1, 2, 3, 6) on the last stage, an FPN over all four, 512 channels, BN, dropout 0.1;
the auxiliary `FCNHead` reads stage 3 (256 channels). The 0.4 loss weight of the auxiliary
head belongs to the method config. The tests check UPerNet-Swin against transformers'
`UperNetForSemanticSegmentation` (Swin backbone) with the same weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from evtransfer.models.heads import ConvNormAct, FCNHead, check_image, init_weights, resize

_MASK_VALUE = -100.0  # additive attention mask between shifted regions (official Swin code)


def _window_partition(x: Tensor, ws: int) -> Tensor:
    """(B, H, W, C) with H, W multiples of ws → (B, nW, ws·ws, C)."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // ws) * (w // ws), ws * ws, c)


def _window_reverse(windows: Tensor, ws: int, h: int, w: int) -> Tensor:
    """(B, nW, ws·ws, C) → (B, H, W, C), inverse of `_window_partition`."""
    b, _, _, c = windows.shape
    x = windows.view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


def shifted_window_mask(h: int, w: int, ws: int, shift: int, device: torch.device) -> Tensor:
    """Additive mask `(nW, ws², ws²)` for shifted-window attention on a padded (h, w) map.

    After the cyclic shift, tokens from different regions of the unshifted map share a
    window; the regions are the row bands [0, h−ws), [h−ws, h−shift), [h−shift, h) times the
    same column bands. Pairs from different regions get −100, pairs from the same 0.
    """
    def band(n: int) -> Tensor:
        idx = torch.arange(n, device=device)
        return (idx >= n - ws).long() + (idx >= n - shift).long()

    region = band(h)[:, None] * 3 + band(w)[None, :]
    win = _window_partition(region[None, :, :, None], ws)[0, :, :, 0]
    diff = win[:, None, :] != win[:, :, None]
    return torch.zeros(diff.shape, device=device).masked_fill(diff, _MASK_VALUE)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative position bias table
    of `(2·ws − 1)²` entries per head. Input/output `(B, nW, ws², C)`."""

    def __init__(self, dim: int, num_heads: int, window: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.window = window
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window - 1) ** 2, num_heads))
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window),
                                            indexing="ij")).flatten(1)
        rel = coords[:, :, None] - coords[:, None, :] + (window - 1)
        self.register_buffer("relative_position_index", rel[0] * (2 * window - 1) + rel[1],
                             persistent=False)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        b, nw, n, c = x.shape
        heads = self.num_heads
        qkv = self.qkv(x).view(b, nw, n, 3, heads, c // heads)
        # (B, nW·heads, N, d): 4-D so that every SDPA backend accepts it
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).reshape(3, b, nw * heads, n, c // heads)
        bias = self.relative_position_bias_table[self.relative_position_index]  # (N, N, heads)
        bias = bias.permute(2, 0, 1)[None]  # (1, heads, N, N)
        bias = bias + mask[:, None] if mask is not None else bias.expand(nw, -1, -1, -1)
        bias = bias.reshape(nw * heads, n, n).to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.view(b, nw, heads, n, -1).transpose(2, 3).reshape(b, nw, n, c))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    """Pre-norm (shifted-)window attention + MLP block on `(B, H, W, C)` tokens."""

    def __init__(self, dim: int, num_heads: int, window: int, shift: int, mlp_ratio: float,
                 qkv_bias: bool, eps: float) -> None:
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = WindowAttention(dim, num_heads, window, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, c = x.shape
        ws = self.window
        y = self.norm1(x)
        pad_h, pad_w = (-h) % ws, (-w) % ws
        y = F.pad(y, (0, 0, 0, pad_w, 0, pad_h))
        hp, wp = h + pad_h, w + pad_w
        mask = None
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), dims=(1, 2))
            mask = shifted_window_mask(hp, wp, ws, self.shift, x.device)
        y = _window_reverse(self.attn(_window_partition(y, ws), mask), ws, hp, wp)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), dims=(1, 2))
        x = x + y[:, :h, :w]
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """2×2 neighbourhood concat (padding odd sizes) → LayerNorm(4C) → Linear(4C, 2C, no bias)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim, eps=eps)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[1:3]
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]],
                      dim=-1)
        return self.reduction(self.norm(x))


class PatchEmbed(nn.Module):
    """Patch embedding: pad to a multiple of the patch, p×p stride-p conv, LayerNorm.
    `(B, C_in, H, W)` → tokens `(B, ⌈H/p⌉, ⌈W/p⌉, D)`."""

    def __init__(self, in_chans: int, dim: int, patch: int, eps: float) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(in_chans, dim, patch, patch)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        p = self.patch
        x = F.pad(x, (0, (-x.shape[-1]) % p, 0, (-x.shape[-2]) % p))
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class SwinStage(nn.Module):
    """`depth` blocks alternating plain and shifted windows, then optional patch merging."""

    def __init__(self, dim: int, depth: int, heads: int, window: int, mlp_ratio: float,
                 qkv_bias: bool, eps: float, merge: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([
            SwinBlock(dim, heads, window, 0 if j % 2 == 0 else window // 2, mlp_ratio,
                      qkv_bias, eps) for j in range(depth)])
        self.downsample = PatchMerging(dim, eps) if merge else None

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class SwinTransformer(nn.Module):
    """Swin Transformer encoder / classifier for `(B, in_chans, H, W)` float input.

    `forward_features(x, *, mask=None)` returns the four stage maps `(B, C_i, ⌈H/s_i⌉, ⌈W/s_i⌉)`
    with `feature_channels` (C, 2C, 4C, 8C) and `feature_strides` (4, 8, 16, 32). `mask`
    (bool, `(B, h, w)` on a grid that divides the stride-4 token grid) replaces the masked
    patch tokens by the learned `mask_token` (ECDDP's masked pre-training; needs
    `mask_token=True`). `forward(x)` returns logits `(B, num_classes)` from the mean of the
    normalised last stage, or that mean itself when `num_classes == 0`.

    Parameter names follow the official and ECDDP code (`patch_embed.proj`,
    `layers.{i}.blocks.{j}.attn.qkv`, `layers.{i}.downsample`, `norm{i}` or `norm`,
    `mask_token` `(1, D)`), so their checkpoints load without renaming.
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window: int = 7,
        patch_size: int = 4,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        stage_norms: bool = True,
        mask_token: bool = False,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if len(depths) != len(num_heads) or not depths:
            raise ValueError(f"depths {depths} and num_heads {num_heads} must match in length")
        if in_chans < 1:
            raise ValueError(f"in_chans must be >= 1, got {in_chans}")
        self.in_chans = in_chans
        self.patch_embed = PatchEmbed(in_chans, embed_dim, patch_size, eps)
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim)) if mask_token else None
        dims = [embed_dim * 2**i for i in range(len(depths))]
        self.layers = nn.ModuleList([
            SwinStage(dim, depth, heads, window, mlp_ratio, qkv_bias, eps, i < len(dims) - 1)
            for i, (dim, depth, heads) in enumerate(zip(dims, depths, num_heads, strict=True))])
        if stage_norms:
            for i, dim in enumerate(dims):
                self.add_module(f"norm{i}", nn.LayerNorm(dim, eps=eps))
        else:
            self.norm = nn.LayerNorm(dims[-1], eps=eps)
        self.stage_norms = stage_norms
        self.feature_channels = tuple(dims)
        self.feature_strides = tuple(patch_size * 2**i for i in range(len(dims)))
        self.num_classes = num_classes
        self.head = nn.Linear(dims[-1], num_classes) if num_classes > 0 else None

    def _out_norm(self, i: int) -> nn.Module:
        if self.stage_norms:
            return getattr(self, f"norm{i}")
        return self.norm if i == len(self.layers) - 1 else nn.Identity()

    def _embed(self, x: Tensor, mask: Tensor | None) -> Tensor:
        x = self.patch_embed(x)  # (B, h, w, C)
        if mask is None:
            return x
        if self.mask_token is None:
            raise ValueError("mask given but the model was built without mask_token=True")
        b, h, w = x.shape[:3]
        if (mask.ndim != 3 or mask.dtype != torch.bool or mask.shape[0] != b
                or h % mask.shape[1] or w % mask.shape[2]):
            raise ValueError(f"mask must be bool (B, h, w) dividing the token grid {h}x{w}, "
                             f"got {mask.dtype} {tuple(mask.shape)}")
        full = mask.repeat_interleave(h // mask.shape[1], 1).repeat_interleave(
            w // mask.shape[2], 2)
        return torch.where(full[..., None], self.mask_token.to(x.dtype), x)

    def forward_features(self, x: Tensor, *, mask: Tensor | None = None) -> list[Tensor]:
        check_image(x, self.in_chans)
        x = self._embed(x, mask)
        feats = []
        for i, stage in enumerate(self.layers):
            x = stage(x)
            feats.append(self._out_norm(i)(x).permute(0, 3, 1, 2).contiguous())
            if stage.downsample is not None:
                x = stage.downsample(x)
        return feats

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.forward_features(x)[-1].mean(dim=(2, 3))
        return pooled if self.head is None else self.head(pooled)


class DenseTokenFusion(nn.Module):
    """ECDDP's stride-16 dense tokens: the four normalised Swin stage maps, each mapped to
    `dim` channels (s1: avg-pool 4 + 1×1 conv; s2: avg-pool 2 + 1×1; s3: 1×1; s4: 2×2
    stride-2 transposed conv; all bias-free) and averaged.

    Input: the `forward_features` list of a `SwinTransformer(stage_norms=True)` (the
    LayerNorms are the backbone's stage norms, as in the code, so they travel with the
    backbone to fine-tuning); output `(B, dim, H/16, W/16)`. Code:
    Yan98/Event-Camera-Data-Dense-Pre-training model/network/swin_pretrain.py (`fpns`).
    """

    def __init__(self, in_channels: Sequence[int] = (96, 192, 384, 768), dim: int = 768) -> None:
        super().__init__()
        if len(in_channels) != 4:
            raise ValueError(f"in_channels must list the 4 stage widths, got {in_channels}")
        c1, c2, c3, c4 = in_channels
        self.in_channels = tuple(in_channels)
        self.dim = dim
        # named and nested as ECDDP's `fpns`, so its pre-training checkpoints load as they are
        self.fpns = nn.ModuleList([
            nn.Sequential(nn.AvgPool2d(4), nn.Conv2d(c1, dim, 1, bias=False)),
            nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(c2, dim, 1, bias=False)),
            nn.Sequential(nn.Conv2d(c3, dim, 1, bias=False)),
            nn.Sequential(nn.ConvTranspose2d(c4, dim, 2, stride=2, bias=False)),
        ])

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        if len(feats) != 4 or any(f.shape[1] != c for f, c in zip(feats, self.in_channels,
                                                                  strict=True)):
            raise ValueError(f"expected 4 maps with channels {self.in_channels}, "
                             f"got {[tuple(f.shape) for f in feats]}")
        outs = [proj(f) for proj, f in zip(self.fpns, feats, strict=True)]
        size = outs[2].shape[-2:]
        if any(o.shape[-2:] != size for o in outs):
            raise ValueError(f"stage maps do not align at stride 16: {[o.shape for o in outs]}; "
                             f"use inputs whose sides are multiples of 32")
        return torch.stack(outs).mean(dim=0)


class UPerHead(nn.Module):
    """mmseg UPerHead: PPM on the last map + FPN over all maps → fused 3×3 conv → logits.

    Input: maps at strides (4, 8, 16, 32) with `in_channels`; output logits
    `(B, num_classes, H/4, W/4)` at the first map's size (bilinear, align_corners=False).
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, channels: int = 512,
                 pool_scales: Sequence[int] = (1, 2, 3, 6), dropout: float = 0.1) -> None:
        super().__init__()
        self.in_channels = tuple(in_channels)
        self.ppm = nn.ModuleList([nn.Sequential(nn.AdaptiveAvgPool2d(s),
                                                ConvNormAct(in_channels[-1], channels, 1))
                                  for s in pool_scales])
        self.bottleneck = ConvNormAct(in_channels[-1] + len(pool_scales) * channels, channels, 3)
        self.lateral = nn.ModuleList([ConvNormAct(c, channels, 1) for c in in_channels[:-1]])
        self.fpn = nn.ModuleList([ConvNormAct(channels, channels, 3) for _ in in_channels[:-1]])
        self.fuse = ConvNormAct(len(in_channels) * channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def _psp(self, x: Tensor) -> Tensor:
        pooled = [resize(m(x), x.shape[-2:]) for m in self.ppm]
        return self.bottleneck(torch.cat([x, *pooled], dim=1))

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        laterals = [conv(f) for conv, f in zip(self.lateral, feats, strict=False)]
        laterals.append(self._psp(feats[-1]))
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + resize(laterals[i], laterals[i - 1].shape[-2:])
        outs = [conv(lat) for conv, lat in zip(self.fpn, laterals, strict=False)]
        outs.append(laterals[-1])
        outs = [resize(o, outs[0].shape[-2:]) for o in outs]
        return self.classifier(self.dropout(self.fuse(torch.cat(outs, dim=1))))


class UPerNetOutputs(NamedTuple):
    """logits and aux_logits `(B, K, H, W)` (aux None without the auxiliary head) and the
    backbone's four stage maps."""

    logits: Tensor
    aux_logits: Tensor | None
    features: list[Tensor]


class UPerNet(nn.Module):
    """Encoder + `UPerHead` (+ optional `FCNHead` on `aux_index`), logits resized bilinearly
    to the input size. `forward(x)` → `(B, num_classes, H, W)`; `forward_all` → outputs."""

    def __init__(self, encoder: nn.Module, num_classes: int, channels: int = 512,
                 aux_channels: int | None = 256, aux_index: int = 2) -> None:
        super().__init__()
        self.encoder = encoder
        self.feature_channels = tuple(encoder.feature_channels)
        self.feature_strides = tuple(encoder.feature_strides)
        self.decode_head = UPerHead(self.feature_channels, num_classes, channels)
        self.aux_index = aux_index
        self.aux_head = (FCNHead(self.feature_channels[aux_index], num_classes, aux_channels)
                         if aux_channels else None)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        return self.encoder.forward_features(x)

    def forward_all(self, x: Tensor) -> UPerNetOutputs:
        feats = self.encoder.forward_features(x)
        logits = resize(self.decode_head(feats), x.shape[-2:])
        aux = None
        if self.aux_head is not None:
            aux = resize(self.aux_head(feats[self.aux_index]), x.shape[-2:])
        return UPerNetOutputs(logits, aux, feats)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_all(x).logits


def swin_init(module: nn.Module, scheme: str, seed: int) -> nn.Module:
    """Seeded initialisation of a Swin encoder or a `DenseTokenFusion` in place; returns it.

    Both schemes: LayerNorms 1/0, relative position tables truncated normal std 0.02, a mask
    token 0, patch-embedding convs PyTorch's default. `"torch"`: every other linear and conv
    layer PyTorch's default (weights U(±1/√fan_in), biases U(±1/√fan_in)), what ECDDP's SWIN
    keeps since its `init_weights` is never applied. `"trunc_normal"`: their weights
    truncated normal std 0.02 and biases 0 (that unapplied rule).
    """
    if scheme not in ("torch", "trunc_normal"):
        raise ValueError(f"backbone.init must be 'torch' or 'trunc_normal', got {scheme!r}")
    init_weights(module, seed, conv="uniform")
    layers = [m for m in module.modules() if isinstance(m, nn.Linear | nn.Conv2d
                                                          | nn.ConvTranspose2d)]
    patch = {id(m) for pe in module.modules() if isinstance(pe, PatchEmbed)
             for m in pe.modules()}
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in layers:
            if id(m) in patch:
                continue
            if scheme == "torch":
                m.reset_parameters()
            else:
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if getattr(module, "mask_token", None) is not None:
            module.mask_token.zero_()
    return module


def swin_t(in_chans: int = 3, num_classes: int = 1000, stage_norms: bool = True,
           mask_token: bool = False, window: int = 7, eps: float = 1e-5,
           seed: int = 0) -> SwinTransformer:
    """Swin-T/7 (embed 96, depths 2-2-6-2, heads 3-6-12-24, patch 4); `num_classes=0` gives
    the pure encoder. ECDDP's code uses LayerNorm eps 1e-6 (pass `eps=1e-6`)."""
    net = SwinTransformer(in_chans, num_classes, 96, (2, 2, 6, 2), (3, 6, 12, 24), window,
                          stage_norms=stage_norms, mask_token=mask_token, eps=eps)
    return init_weights(net, seed)


def upernet_swin_t(in_chans: int = 3, num_classes: int = 150, channels: int = 512,
                   aux_channels: int | None = 256, eps: float = 1e-5,
                   seed: int = 0) -> UPerNet:
    """UPerNet (512 channels, PPM 1-2-3-6) + FCN auxiliary head (256) on stage 3 of Swin-T."""
    encoder = SwinTransformer(in_chans, 0, 96, (2, 2, 6, 2), (3, 6, 12, 24), 7,
                              stage_norms=True, eps=eps)
    return init_weights(UPerNet(encoder, num_classes, channels, aux_channels), seed)


def dense_token_fusion(in_channels: Sequence[int] = (96, 192, 384, 768), dim: int = 768,
                       seed: int = 0) -> DenseTokenFusion:
    """ECDDP's dense-token fusion module (stride 16, `dim` channels)."""
    return init_weights(DenseTokenFusion(tuple(in_channels), dim), seed)


MODELS = {
    "swin_t": swin_t,
    "upernet_swin_t": upernet_swin_t,
    "dense_token_fusion": dense_token_fusion,
}
