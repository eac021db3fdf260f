"""Mix Transformer (MiT-B0…B5) encoders and SegFormer with its all-MLP decoder.

Paper: Xie et al., "SegFormer: Simple and Efficient Design for Semantic Segmentation with
Transformers", NeurIPS 2021. Sizes follow its Table 6 and the public code
(code: NVlabs/SegFormer mmseg/models/backbones/mix_transformer.py), which `transformers`'
`SegformerConfig` reproduces. Each stage is an overlapping patch embedding (strided conv +
LayerNorm), blocks of efficient attention (keys and values from tokens reduced by a strided
conv of ratio `sr`) and Mix-FFN (linear → 3×3 depthwise conv → GELU → linear), then a
LayerNorm. Any number of input channels (events 2–20, spikes 128).

Cross-attention (CMESS's weight-sharing triple branch). With the same weights, a block can
take its queries from one token stream and its keys and values from another: the K/V stream
is the plain self-attention run of the encoder on the other input, and at every block of a
cross stage the K/V come from that stream's tokens at the block's input (after the block's
own `norm1` and key/value reduction). `forward_branches(x_q, x_kv, cross_stages)` computes
three branches in one pass: `q_self` (self-attention on x_q), `kv_self` (self-attention on
x_kv) and `cross` (queries from a stream that starts at x_q, K/V from `kv_self`). The two
self branches are batched together when their inputs have the same shape, the K/V of
`kv_self` are computed once per block and shared with `cross`, and before the first cross
stage the cross stream is the `q_self` stream (not recomputed). Stages outside
`cross_stages` run self-attention on the cross stream's own tokens. The two inputs may have
different spatial sizes; they must have the same batch size. For CMESS (which modality gives
the queries is unpublished; the argument order chooses it):

    out = segformer.forward_branches(e_synthetic, e_real)  # Branches of stride-4 logits
    # out.q_self: source branch (L_s); out.kv_self: target branch (L_t);
    # out.cross: cross branch, the KD teacher of out.kv_self
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from evtransfer.models.heads import check_image, resize

HW = tuple[int, int]

# name: (embed dims, depths, decoder embed dim); paper Tab. 6, code: NVlabs/SegFormer
# mix_transformer.py (mit_b0…b5) and local_configs/segformer/*/ (decoder embed_dim)
VARIANTS: dict[str, tuple[tuple[int, ...], tuple[int, ...], int]] = {
    "b0": ((32, 64, 160, 256), (2, 2, 2, 2), 256),
    "b1": ((64, 128, 320, 512), (2, 2, 2, 2), 256),
    "b2": ((64, 128, 320, 512), (3, 4, 6, 3), 768),
    "b3": ((64, 128, 320, 512), (3, 4, 18, 3), 768),
    "b4": ((64, 128, 320, 512), (3, 8, 27, 3), 768),
    "b5": ((64, 128, 320, 512), (3, 6, 40, 3), 768),
}


@dataclass(frozen=True)
class MiTConfig:
    """Hyperparameters of a Mix Transformer; per-stage tuples all have one entry per stage."""

    embed_dims: tuple[int, ...] = (32, 64, 160, 256)  # paper Tab. 6 (B0)
    depths: tuple[int, ...] = (2, 2, 2, 2)  # paper Tab. 6 (B0)
    num_heads: tuple[int, ...] = (1, 2, 5, 8)  # paper Tab. 6
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)  # paper Tab. 6
    mlp_ratios: tuple[int, ...] = (4, 4, 4, 4)  # paper Tab. 6
    patch_sizes: tuple[int, ...] = (7, 3, 3, 3)  # paper Sec. 3.1
    strides: tuple[int, ...] = (4, 2, 2, 2)  # paper Sec. 3.1
    in_chans: int = 3  # unpublished: our choice (RGB)
    qkv_bias: bool = True  # code: NVlabs mix_transformer.py mit_b*
    drop_path_rate: float = 0.1  # code: NVlabs mix_transformer.py mit_b*
    # block and stage LayerNorms; code: NVlabs (eps 1e-6); `transformers` uses 1e-5
    norm_eps: float = 1e-6
    # patch-embedding and key/value-reduction LayerNorms; code: NVlabs (PyTorch default)
    embed_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        per_stage = ("embed_dims", "depths", "num_heads", "sr_ratios", "mlp_ratios",
                     "patch_sizes", "strides")
        for name in per_stage:
            value = tuple(getattr(self, name))
            object.__setattr__(self, name, value)
            if len(value) != len(self.embed_dims) or any(int(v) < 1 for v in value):
                raise ValueError(f"MiTConfig.{name} must hold {len(self.embed_dims)} positive "
                                 f"ints (one per stage), got {value}")
        for dim, heads in zip(self.embed_dims, self.num_heads, strict=True):
            if dim % heads:
                raise ValueError(f"MiTConfig: embed dim {dim} is not divisible by {heads} heads")
        if self.in_chans < 1:
            raise ValueError(f"MiTConfig.in_chans must be >= 1, got {self.in_chans}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"MiTConfig.drop_path_rate must be in [0, 1), "
                             f"got {self.drop_path_rate}")

    @property
    def num_stages(self) -> int:
        return len(self.embed_dims)


def mit_config(variant: str, **overrides) -> MiTConfig:
    """The `MiTConfig` of MiT-`variant` ('b0'…'b5') with field `overrides` applied."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown MiT variant {variant!r}; expected one of {sorted(VARIANTS)}")
    dims, depths, _ = VARIANTS[variant]
    return replace(MiTConfig(embed_dims=dims, depths=depths), **overrides)


class Branches(NamedTuple):
    """Per-branch outputs of `forward_branches`: lists of per-stage maps, or logits."""

    cross: list[Tensor] | Tensor
    kv_self: list[Tensor] | Tensor
    q_self: list[Tensor] | Tensor | None


def _to_map(tokens: Tensor, hw: HW) -> Tensor:
    """(B, h·w, C) tokens → (B, C, h, w) view (channels-last strides, no copy)."""
    return tokens.transpose(1, 2).unflatten(2, hw)


def _to_tokens(x: Tensor) -> Tensor:
    """(B, C, h, w) map → (B, h·w, C); a view when `x` has channels-last strides."""
    return x.flatten(2).transpose(1, 2)


def _drop_path(x: Tensor, p: float, training: bool) -> Tensor:
    """Stochastic depth: zero whole samples with probability `p`, scale the rest by 1/(1−p).

    Draws from torch's default generator, like `nn.Dropout`; seed it for reproducibility.
    """
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1.0 - p)
    return x * keep.div_(1.0 - p)


class OverlapPatchEmbed(nn.Module):
    """Strided conv (kernel `patch`, padding patch//2) + LayerNorm: map → tokens, (h, w)."""

    def __init__(self, in_chans: int, dim: int, patch: int, stride: int, eps: float) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch, stride, patch // 2)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: Tensor) -> tuple[Tensor, HW]:
        x = self.proj(x)
        return self.norm(_to_tokens(x)), (x.shape[2], x.shape[3])


class EfficientAttention(nn.Module):
    """Multi-head attention whose keys/values come from tokens reduced `sr_ratio`× per side.

    `q`: (C → C); `kv`: (C → 2C), rows [0, C) keys and [C, 2C) values, head-major as in the
    paper's code; `sr`: conv of kernel = stride = `sr_ratio`, then `sr_norm`.
    """

    def __init__(self, dim: int, heads: int, sr_ratio: int, qkv_bias: bool, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.sr_ratio = sr_ratio
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.sr_norm = nn.LayerNorm(dim, eps=eps)

    def keys_values(self, h: Tensor, hw: HW) -> tuple[Tensor, Tensor]:
        """Normalised tokens (B, h·w, C) → keys, values (B, heads, M, C/heads), M = reduced."""
        if self.sr_ratio > 1:
            h = self.sr_norm(_to_tokens(self.sr(_to_map(h, hw))))
        b, m, c = h.shape
        kv = self.kv(h).view(b, m, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        return kv[0], kv[1]

    def attend(self, h: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Queries from normalised tokens `h` (B, N, C) attend to `k`, `v` → (B, N, C)."""
        b, n, c = h.shape
        q = self.q(h).view(b, n, self.heads, c // self.heads).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))

    def forward(self, h: Tensor, hw: HW, context: tuple[Tensor, HW] | None = None) -> Tensor:
        """Self-attention on `h`, or cross-attention to normalised `context` = (tokens, hw)."""
        return self.attend(h, *self.keys_values(*(context if context is not None else (h, hw))))


class MixFFN(nn.Module):
    """Linear → 3×3 depthwise conv → GELU → linear on (B, h·w, C) tokens."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor, hw: HW) -> Tensor:
        x = _to_tokens(self.dwconv(_to_map(self.fc1(x), hw)))
        return self.fc2(F.gelu(x))


class MiTBlock(nn.Module):
    """Pre-norm transformer block: x + attn(norm1 x), then x + MixFFN(norm2 x)."""

    def __init__(self, dim: int, heads: int, sr_ratio: int, mlp_ratio: int, drop_path: float,
                 cfg: MiTConfig) -> None:
        super().__init__()
        self.drop_path = drop_path
        self.norm1 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.attn = EfficientAttention(dim, heads, sr_ratio, cfg.qkv_bias, cfg.embed_norm_eps)
        self.norm2 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.mlp = MixFFN(dim, dim * mlp_ratio)

    def keys_values(self, tokens: Tensor, hw: HW) -> tuple[Tensor, Tensor]:
        """This block's keys and values for a stream's tokens (B, h·w, C) at its input."""
        return self.attn.keys_values(self.norm1(tokens), hw)

    def forward(self, x: Tensor, hw: HW, context: tuple[Tensor, HW] | None = None) -> Tensor:
        """Tokens (B, h·w, C) → same shape. With `context` = (tokens, hw) of another stream at
        this block's input, queries come from `x` and keys/values from `context`."""
        h = self.norm1(x)
        kv = self.keys_values(*context) if context is not None else self.attn.keys_values(h, hw)
        return self.forward_normed(x, h, hw, kv)

    def forward_normed(self, x: Tensor, h: Tensor, hw: HW, kv: tuple[Tensor, Tensor]) -> Tensor:
        """The block given `h = norm1(x)` and precomputed keys/values `kv`."""
        x = x + _drop_path(self.attn.attend(h, *kv), self.drop_path, self.training)
        return x + _drop_path(self.mlp(self.norm2(x), hw), self.drop_path, self.training)


class MiTStage(nn.Module):
    """Overlapping patch embedding, `depth` blocks, LayerNorm."""

    def __init__(self, index: int, in_chans: int, cfg: MiTConfig, drop_paths: Sequence[float]
                 ) -> None:
        super().__init__()
        dim = cfg.embed_dims[index]
        self.patch_embed = OverlapPatchEmbed(in_chans, dim, cfg.patch_sizes[index],
                                             cfg.strides[index], cfg.embed_norm_eps)
        self.blocks = nn.ModuleList(
            MiTBlock(dim, cfg.num_heads[index], cfg.sr_ratios[index], cfg.mlp_ratios[index], p,
                     cfg) for p in drop_paths)
        self.norm = nn.LayerNorm(dim, eps=cfg.norm_eps)


class MixVisionTransformer(nn.Module):
    """MiT encoder: `(B, in_chans, H, W)` float → 4 maps `(B, C_i, H_i, W_i)`, strides 4…32.

    `H_1 = ceil(H / 4)` and each later stage halves (rounding up). Inputs must be large
    enough that every stage keeps at least `sr_ratio` tokens per side (≥ 29 px for the
    default ratios). See the module docstring for the cross-attention scheme.
    """

    def __init__(self, config: MiTConfig) -> None:
        super().__init__()
        self.config = config
        n = sum(config.depths)  # stochastic depth grows linearly from 0 (code: NVlabs)
        rates = [config.drop_path_rate * i / max(n - 1, 1) for i in range(n)]
        starts = [sum(config.depths[:i]) for i in range(config.num_stages)]
        chans = (config.in_chans,) + config.embed_dims[:-1]
        self.stages = nn.ModuleList(
            MiTStage(i, chans[i], config, rates[starts[i]:starts[i] + config.depths[i]])
            for i in range(config.num_stages))
        self.feature_channels = tuple(config.embed_dims)
        self.feature_strides = tuple(math.prod(config.strides[:i + 1])
                                     for i in range(config.num_stages))

    def _check(self, x: Tensor, name: str) -> None:
        check_image(x, self.config.in_chans, name)
        h, w = x.shape[-2:]
        for i, (p, s, r) in enumerate(zip(self.config.patch_sizes, self.config.strides,
                                          self.config.sr_ratios, strict=True)):
            h, w = (h + 2 * (p // 2) - p) // s + 1, (w + 2 * (p // 2) - p) // s + 1
            if min(h, w) < r:
                raise ValueError(
                    f"{name} of size {tuple(x.shape[-2:])} is too small: stage {i + 1} would "
                    f"have {h}x{w} tokens, fewer than its key/value reduction ratio {r}")

    def _stage_set(self, cross_stages: Iterable[int] | None) -> frozenset[int]:
        n = self.config.num_stages
        stages = frozenset(range(n) if cross_stages is None else cross_stages)
        if any(not isinstance(s, int) or not 0 <= s < n for s in stages):
            raise ValueError(f"cross_stages must be stage indices in [0, {n}), "
                             f"got {sorted(stages, key=str)}")
        return stages

    def _forward_self(self, x: Tensor) -> list[Tensor]:
        feats = []
        for stage in self.stages:
            t, hw = stage.patch_embed(x)
            for block in stage.blocks:
                t = block(t, hw)
            x = _to_map(stage.norm(t), hw)
            feats.append(x)
        return feats

    def forward_features(self, x: Tensor, *, context: Tensor | None = None,
                         cross_stages: Iterable[int] | None = None) -> list[Tensor]:
        """Per-stage maps of `x`; with `context` (B, in_chans, H', W'), the cross branch:
        queries from `x`, keys/values from the self-attention stream of `context` in the
        stages `cross_stages` (default: all)."""
        self._check(x, "x")
        if context is None:
            return self._forward_self(x)
        return self.forward_branches(x, context, cross_stages, q_self=False).cross

    def forward(self, x: Tensor, *, context: Tensor | None = None,
                cross_stages: Iterable[int] | None = None) -> list[Tensor]:
        return self.forward_features(x, context=context, cross_stages=cross_stages)

    def forward_branches(self, x_q: Tensor, x_kv: Tensor,
                         cross_stages: Iterable[int] | None = None, q_self: bool = True
                         ) -> Branches:
        """Cross, kv-self and (if `q_self`) q-self branch features of one weight-shared
        encoder in one pass; see the module docstring. Each branch is a list of per-stage
        maps; the two inputs need the same batch size but not the same spatial size."""
        self._check(x_q, "x_q")
        self._check(x_kv, "x_kv")
        if x_q.shape[0] != x_kv.shape[0] or (x_q.dtype, x_q.device) != (x_kv.dtype, x_kv.device):
            raise ValueError(f"x_q and x_kv need the same batch size, dtype and device, got "
                             f"{x_q.shape[0]}/{x_kv.shape[0]}, {x_q.dtype}/{x_kv.dtype}, "
                             f"{x_q.device}/{x_kv.device}")
        cross = self._stage_set(cross_stages)
        b = x_q.shape[0]
        joint = q_self and x_q.shape == x_kv.shape
        q_feats = self._forward_self(x_q) if q_self and not joint else None
        s = torch.cat([x_q, x_kv]) if joint else x_kv
        c = None if joint else x_q  # None: the cross stream is still the q-self half of `s`
        s_feats, c_feats = [], []
        for i, stage in enumerate(self.stages):
            s_tok, s_hw = stage.patch_embed(s)
            c_tok, c_hw = stage.patch_embed(c) if c is not None else (None, s_hw)
            if c_tok is None and i in cross:
                c_tok = s_tok[:b]
            for block in stage.blocks:
                h = block.norm1(s_tok)
                k, v = block.attn.keys_values(h, s_hw)
                if c_tok is not None and i in cross:
                    c_tok = block.forward_normed(c_tok, block.norm1(c_tok), c_hw, (k[-b:], v[-b:]))
                elif c_tok is not None:
                    c_tok = block(c_tok, c_hw)
                s_tok = block.forward_normed(s_tok, h, s_hw, (k, v))
            s = _to_map(stage.norm(s_tok), s_hw)
            s_feats.append(s)
            if c_tok is not None:
                c = _to_map(stage.norm(c_tok), c_hw)
            c_feats.append(s[:b] if c is None else c)
        if joint:
            return Branches(c_feats, [f[b:] for f in s_feats], [f[:b] for f in s_feats])
        return Branches(c_feats, s_feats, q_feats)


class SegFormerHead(nn.Module):
    """SegFormer's all-MLP decoder: per-stage linear to `embed_dim`, upsample to the first
    map's size, concat (deepest first), linear fuse, BatchNorm, ReLU, dropout, 1×1 classifier.

    Computed in an equivalent but cheaper order: the fuse weight's column block for stage i
    (block `n−1−i`, as the concat is deepest first) is folded into stage i's projection,
    `A_i = W_i P_i`, so each stage is projected straight to `embed_dim` at its own
    resolution, upsampled and summed, and the constant `Σ W_i p_i` is added once (bilinear
    weights sum to one). The 4·D → D fuse at stride 4 is never formed. Parameters and their
    meaning are those of the paper's head: `proj.i` (C_i → D), `fuse` (4D → D, no bias),
    `norm`, `classifier`.
    """

    def __init__(self, in_channels: Sequence[int], embed_dim: int, num_classes: int,
                 dropout: float = 0.1) -> None:
        super().__init__()
        if embed_dim < 1 or num_classes < 1:
            raise ValueError(f"embed_dim and num_classes must be >= 1, got {embed_dim}, "
                             f"{num_classes}")
        self.in_channels = tuple(in_channels)
        self.embed_dim = embed_dim
        self.proj = nn.ModuleList(nn.Linear(c, embed_dim) for c in self.in_channels)
        self.fuse = nn.Linear(len(self.in_channels) * embed_dim, embed_dim, bias=False)
        self.norm = nn.BatchNorm2d(embed_dim)
        self.dropout = nn.Dropout2d(dropout)  # code: mmseg BaseDecodeHead (Dropout2d)
        self.classifier = nn.Conv2d(embed_dim, num_classes, 1)

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        """Maps `(B, C_i, h_i, w_i)` → logits `(B, num_classes, h_0, w_0)`."""
        chans = self.in_channels
        if len(feats) != len(chans) or any(
                f.ndim != 4 or f.shape[1] != c for f, c in zip(feats, chans, strict=True)):
            raise ValueError(f"SegFormerHead expects {len(self.in_channels)} maps with channels "
                             f"{self.in_channels}, got {[tuple(f.shape) for f in feats]}")
        n, d = len(feats), self.embed_dim
        size = feats[0].shape[-2:]
        # PyTorch's CPU bilinear upsampling is about 2x slower channels-last at batch 1 and
        # faster at larger batches, so single frames are decoded NCHW, batches channels-last
        nchw = feats[0].shape[0] == 1
        blocks = [self.fuse.weight[:, (n - 1 - i) * d:(n - i) * d] for i in range(n)]
        bias = sum(w @ p.bias for w, p in zip(blocks, self.proj, strict=True))
        # stage 0 is already at the output size: the summed bias rides on its matmul
        fused = _project(feats[0], blocks[0] @ self.proj[0].weight, bias, nchw)
        inplace = not torch.is_grad_enabled()  # saves an allocation per stage at inference
        for f, w, proj in zip(feats[1:], blocks[1:], self.proj[1:], strict=True):
            y = resize(_project(f, w @ proj.weight, None, nchw), size)
            fused = fused.add_(y) if inplace else fused + y
        x = self.dropout(F.relu_(self.norm(fused)))
        weight = self.classifier.weight.flatten(1)
        return _project(x, weight, self.classifier.bias, nchw).contiguous()


def _project(x: Tensor, weight: Tensor, bias: Tensor | None, nchw: bool) -> Tensor:
    """1×1 projection of a map (B, C, h, w) by `weight` (D, C) and optional `bias` (D,) →
    (B, D, h, w), computed as one matmul whose output is NCHW or channels-last."""
    if not nchw:
        return _to_map(F.linear(_to_tokens(x), weight, bias), x.shape[-2:])
    w = weight.expand(x.shape[0], -1, -1)
    out = torch.bmm(w, x.flatten(2)) if bias is None else torch.baddbmm(bias[:, None], w,
                                                                      x.flatten(2))
    return out.unflatten(2, x.shape[-2:])


class SegFormer(nn.Module):
    """MiT encoder + all-MLP decoder: `(B, in_chans, H, W)` → logits `(B, K, H_1, W_1)` at
    stride 4 (`H_1 = ceil(H/4)`); `forward_upsampled` returns them at `(H, W)`."""

    def __init__(self, encoder: MixVisionTransformer, decoder: SegFormerHead) -> None:
        super().__init__()
        if tuple(encoder.feature_channels) != decoder.in_channels:
            raise ValueError(f"decoder channels {decoder.in_channels} do not match the encoder's "
                             f"{encoder.feature_channels}")
        self.encoder = encoder
        self.decoder = decoder
        self.feature_channels = encoder.feature_channels
        self.feature_strides = encoder.feature_strides

    def forward_features(self, x: Tensor, *, context: Tensor | None = None,
                         cross_stages: Iterable[int] | None = None) -> list[Tensor]:
        return self.encoder.forward_features(x, context=context, cross_stages=cross_stages)

    def forward(self, x: Tensor, *, context: Tensor | None = None,
                cross_stages: Iterable[int] | None = None) -> Tensor:
        """Stride-4 logits of `x` (the cross branch when `context` is given)."""
        return self.decoder(self.forward_features(x, context=context,
                                                  cross_stages=cross_stages))

    def forward_upsampled(self, x: Tensor) -> Tensor:
        """Logits bilinearly upsampled to the input size: `(B, K, H, W)`."""
        return resize(self(x), x.shape[-2:])

    def forward_branches(self, x_q: Tensor, x_kv: Tensor,
                         cross_stages: Iterable[int] | None = None, q_self: bool = True
                         ) -> Branches:
        """Stride-4 logits of the cross, kv-self and q-self branches (see the module
        docstring); each branch is decoded separately, so BatchNorm sees per-branch batches
        as three separate weight-shared networks would."""
        feats = self.encoder.forward_branches(x_q, x_kv, cross_stages, q_self)
        return Branches(*(None if f is None else self.decoder(f) for f in feats))


def init_mit_weights(module: nn.Module, seed: int = 0) -> nn.Module:
    """Initialise `module` in place from `seed` as the paper's code does; returns it.

    Linear: truncated normal std 0.02, bias 0; LayerNorm/BatchNorm: 1, 0; Conv2d: normal
    with std sqrt(2 / fan_out), fan_out = k_h·k_w·out/groups, bias 0 (code: NVlabs
    mix_transformer.py `_init_weights`); a SegFormer head's `fuse` as the 1×1 conv it is
    (std sqrt(2 / D)) and its classifier normal std 0.01 (code: mmseg BaseDecodeHead).
    Parameters are drawn on the CPU from one `torch.Generator` seeded with `seed`.
    """
    gen = torch.Generator().manual_seed(seed)

    def fill(p: Tensor, std: float, trunc: bool = False) -> None:
        value = torch.empty(p.shape, dtype=torch.float32)
        if trunc:
            nn.init.trunc_normal_(value, std=std, generator=gen)
        else:
            nn.init.normal_(value, std=std, generator=gen)
        p.copy_(value)

    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Linear):
                fill(m.weight, 0.02, trunc=True)
            elif isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                fill(m.weight, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.LayerNorm | nn.BatchNorm2d):
                m.weight.fill_(1.0)
            if isinstance(getattr(m, "bias", None), Tensor):
                m.bias.zero_()
        for head in (m for m in module.modules() if isinstance(m, SegFormerHead)):
            fill(head.fuse.weight, math.sqrt(2.0 / head.embed_dim))
            fill(head.classifier.weight, 0.01)
    return module


def build_mit(variant: str, *, in_chans: int = 3, drop_path_rate: float = 0.1,
              norm_eps: float = 1e-6, seed: int = 0) -> MixVisionTransformer:
    """MiT-`variant` encoder ('b0'…'b5') for `in_chans` input channels, seeded init."""
    cfg = mit_config(variant, in_chans=in_chans, drop_path_rate=drop_path_rate,
                     norm_eps=norm_eps)
    return init_mit_weights(MixVisionTransformer(cfg), seed)


def build_segformer(variant: str, *, num_classes: int, in_chans: int = 3,
                    drop_path_rate: float = 0.1, decoder_dropout: float = 0.1,
                    norm_eps: float = 1e-6, seed: int = 0) -> SegFormer:
    """SegFormer-`variant` ('b0'…'b5') with `num_classes` outputs, seeded init. The decoder
    embed dim is 256 for B0/B1 and 768 for B2–B5 (code: NVlabs local_configs)."""
    encoder = MixVisionTransformer(mit_config(variant, in_chans=in_chans,
                                              drop_path_rate=drop_path_rate, norm_eps=norm_eps))
    decoder = SegFormerHead(encoder.feature_channels, VARIANTS[variant][2], num_classes,
                            decoder_dropout)
    return init_mit_weights(SegFormer(encoder, decoder), seed)


MODELS = {
    **{f"mit_{v}": partial(build_mit, v) for v in VARIANTS},
    **{f"segformer_{v}": partial(build_segformer, v) for v in VARIANTS},
}
