"""Self-supervised pre-training pieces: a masked dense-token encoder, attention pooling and
DINO-style projection heads.

- `DenseTokenEncoder`: any 4-stage encoder (Swin, MiT) followed by `DenseTokenFusion`, giving
  one token map at stride 16; an optional boolean mask replaces masked stride-4 patch tokens by
  a learned mask token (the encoder's own `mask_token` for Swin, one owned by the wrapper for
  MiT, which has none).
- `AttentionPool`: `R` learned queries read a token set through cross-attention blocks
  (pre-norm, queries attend to themselves and to the tokens, an optional `(B, R, N)` mask
  restricts each query to its tokens), a learned 6 × 6 position embedding resized bicubically
  to the token grid, and a final LayerNorm — the pooling of image- and region-level embeddings
  (code: Yan98/Event-Camera-Data-Dense-Pre-training model/network/layers.py `AttPool`).
- `ProjectionHead`: MLP (GELU) → L2 normalisation → weight-normalised linear layer onto
  `prototypes` logits (DINO's head), optionally preceded by an `AttentionPool`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from evtransfer.models.heads import init_weights
from evtransfer.models.mit import MixVisionTransformer
from evtransfer.models.swin import DenseTokenFusion


def _expand_mask(mask: Tensor, h: int, w: int) -> Tensor:
    """A (B, m, n) bool mask on a grid dividing (h, w) → (B, h, w)."""
    if mask.ndim != 3 or mask.dtype != torch.bool or h % mask.shape[1] or w % mask.shape[2]:
        raise ValueError(f"mask must be bool (B, h, w) dividing the token grid {h}x{w}, "
                         f"got {mask.dtype} {tuple(mask.shape)}")
    return mask.repeat_interleave(h // mask.shape[1], 1).repeat_interleave(w // mask.shape[2], 2)


class DenseTokenEncoder(nn.Module):
    """Encoder + `DenseTokenFusion`: `(B, C_in, H, W)` → tokens `(B, dim, H/16, W/16)`.

    H and W must be multiples of 32 (the fusion aligns stride 4 … 32 at stride 16). `mask`
    (bool `(B, H/16, W/16)` or any grid dividing the stride-4 token grid) replaces masked
    patch-embedding tokens by the mask token before the first stage. Works with a
    `SwinTransformer` built with `mask_token=True` and with a `MixVisionTransformer`.
    """

    def __init__(self, encoder: nn.Module, dim: int) -> None:
        super().__init__()
        if len(getattr(encoder, "feature_channels", ())) != 4:
            raise ValueError("DenseTokenEncoder needs a 4-stage encoder with feature_channels")
        self.encoder = encoder
        self.fusion = DenseTokenFusion(tuple(encoder.feature_channels), dim)
        self.dim = dim
        self.mit = isinstance(encoder, MixVisionTransformer)
        if self.mit:
            self.mask_token = nn.Parameter(torch.zeros(1, encoder.feature_channels[0]))
        elif getattr(encoder, "mask_token", None) is None:
            raise ValueError("a Swin encoder must be built with mask_token=True")

    def features(self, x: Tensor, mask: Tensor | None = None) -> list[Tensor]:
        """The encoder's four stage maps, with masked patch tokens."""
        if not self.mit:
            return self.encoder.forward_features(x, mask=mask)
        self.encoder._check(x, "x")
        feats = []
        for i, stage in enumerate(self.encoder.stages):
            t, hw = stage.patch_embed(x)
            if i == 0 and mask is not None:
                full = _expand_mask(mask, *hw).flatten(1)
                t = torch.where(full[..., None], self.mask_token.to(t.dtype), t)
            for block in stage.blocks:
                t = block(t, hw)
            x = stage.norm(t).transpose(1, 2).unflatten(2, hw)
            feats.append(x)
        return feats

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.fusion(self.features(x, mask))


class _PoolBlock(nn.Module):
    """Queries ← cross-attention over [queries, tokens] (pre-norm), then an MLP (pre-norm)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        # no q/k/v bias: ECDDP's AttentionPool is built with its default qkv_bias=False
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, queries: Tensor, tokens: Tensor, allowed: Tensor | None) -> Tensor:
        b, r, c = queries.shape
        both = self.norm1(torch.cat([queries, tokens], 1))

        def heads(t: Tensor) -> Tensor:
            return t.view(b, -1, self.heads, c // self.heads).transpose(1, 2)

        q, k, v = heads(self.q(both[:, :r])), heads(self.k(both)), heads(self.v(both))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        queries = queries + self.proj(out.transpose(1, 2).reshape(b, r, c))
        return queries + self.mlp(self.norm2(queries))


class AttentionPool(nn.Module):
    """`R` learned queries pool tokens `(B, N, dim)` laid out on an (h, w) grid → `(B, R, dim)`.

    `mask` (bool `(B, R, N)`): query r attends only to the tokens where it is True (and to
    itself, so an empty region stays finite); without a mask every query sees every token
    and every query. The position embedding (6 × 6, resized bicubically to (h, w)) is added
    to the tokens. `heads` defaults to dim // 32 (ECDDP's AttPool).
    """

    def __init__(self, dim: int, blocks: int = 2, heads: int | None = None) -> None:
        super().__init__()
        heads = heads or max(1, dim // 32)
        if dim % heads:
            raise ValueError(f"AttentionPool: dim {dim} is not divisible by {heads} heads")
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, dim, 6, 6))
        self.blocks = nn.ModuleList([_PoolBlock(dim, heads) for _ in range(blocks)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, tokens: Tensor, hw: tuple[int, int], queries: int = 1,
                mask: Tensor | None = None) -> Tensor:
        b, n, _ = tokens.shape
        if hw[0] * hw[1] != n:
            raise ValueError(f"AttentionPool: grid {hw} does not hold {n} tokens")
        pos = F.interpolate(self.pos_embed, size=hw, mode="bicubic", align_corners=False)
        tokens = tokens + pos.flatten(2).transpose(1, 2).to(tokens.dtype)
        allowed = None
        if mask is not None:
            if mask.shape != (b, queries, n) or mask.dtype != torch.bool:
                raise ValueError(f"mask must be bool {(b, queries, n)}, got "
                                 f"{mask.dtype} {tuple(mask.shape)}")
            eye = torch.eye(queries, dtype=torch.bool, device=mask.device).expand(b, -1, -1)
            allowed = torch.cat([eye, mask], 2)[:, None]
        q = self.query.expand(b, queries, -1).to(tokens.dtype)
        for block in self.blocks:
            q = block(q, tokens, allowed)
        return self.norm(q)


class WeightNormLinear(nn.Module):
    """Bias-free linear layer with weight `g · v / ‖v‖` per output row (`weight_v`,
    `weight_g`), `g` initialised to 1: DINO's prototype layer."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight_v = nn.Parameter(torch.empty(out_features, in_features))
        self.weight_g = nn.Parameter(torch.ones(out_features, 1))
        nn.init.trunc_normal_(self.weight_v, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight_g * F.normalize(self.weight_v, dim=1)
        return F.linear(x, w.to(x.dtype))


class ProjectionHead(nn.Module):
    """`(…, dim)` embeddings → `(…, prototypes)` logits: MLP (`layers` linear layers, GELU)
    to `bottleneck`, L2 normalisation, `WeightNormLinear` (its parameters are named
    `last_layer.*`, so a training loop can freeze them early). With `pool=True` the head owns
    an `AttentionPool` (`self.pool`) for `pooled(tokens, hw, …)`."""

    def __init__(self, dim: int, prototypes: int, hidden: int = 2048, bottleneck: int = 256,
                 layers: int = 3, pool: bool = False) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"ProjectionHead needs >= 1 layer, got {layers}")
        widths = [dim] + [hidden] * (layers - 1) + [bottleneck]
        mlp: list[nn.Module] = []
        for i in range(layers):
            mlp.append(nn.Linear(widths[i], widths[i + 1]))
            if i < layers - 1:
                mlp.append(nn.GELU())
        self.mlp = nn.Sequential(*mlp)
        self.last_layer = WeightNormLinear(bottleneck, prototypes)
        self.pool = AttentionPool(dim) if pool else None

    def forward(self, x: Tensor) -> Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1, eps=1e-6))

    def pooled(self, tokens: Tensor, hw: tuple[int, int], queries: int = 1,
               mask: Tensor | None = None) -> Tensor:
        """The head's pooled embeddings `(B, queries, dim)` (before the projection)."""
        if self.pool is None:
            raise ValueError("this ProjectionHead was built without pool=True")
        return self.pool(tokens, hw, queries, mask)


def dense_token_encoder(encoder: nn.Module, dim: int, seed: int = 0) -> DenseTokenEncoder:
    """A `DenseTokenEncoder` around `encoder` whose fusion (and MiT mask token) are initialised
    from `seed`; the encoder keeps its weights."""
    return init_weights(DenseTokenEncoder(encoder, dim), seed, skip=[encoder])


def projection_head(dim: int, prototypes: int, hidden: int = 2048, bottleneck: int = 256,
                    layers: int = 3, pool: bool = False, seed: int = 0) -> ProjectionHead:
    """A seeded `ProjectionHead` as ECDDP's `DINOHead` initialises it (code:
    model/network/layers.py): MLP and pool linear weights truncated normal 0.02, biases 0,
    query and position embedding truncated normal 0.02, prototype directions `v` PyTorch's
    default linear init (U(±1/√bottleneck), applied before `weight_norm`), `g` = 1."""
    head = init_weights(ProjectionHead(dim, prototypes, hidden, bottleneck, layers, pool), seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        v = torch.empty_like(head.last_layer.weight_v, device="cpu")
        nn.init.kaiming_uniform_(v, a=math.sqrt(5), generator=gen)
        head.last_layer.weight_v.copy_(v)
        head.last_layer.weight_g.fill_(1.0)
    return head


def check_grid(sizes: Sequence[int], multiple: int = 32, what: str = "crop") -> None:
    """Raise ValueError unless every size is a positive multiple of `multiple`."""
    bad = [s for s in sizes if s <= 0 or s % multiple]
    if bad:
        raise ValueError(f"{what} sizes must be positive multiples of {multiple}, got {bad}")
