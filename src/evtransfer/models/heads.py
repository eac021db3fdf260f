"""Classification heads and decoder pieces shared by the model families.

Conventions used by every network in `evtransfer.models`:

* an encoder has `forward_features(x) -> list[Tensor]` (multi-scale maps, shallow to deep,
  each `(B, C_i, H / s_i, W / s_i)`) and the attributes `feature_channels` and
  `feature_strides` (tuples of ints, one entry per map);
* `forward(x)` returns the main prediction as one tensor; models whose methods need more
  (auxiliary logits, reconstructions, intermediate paths) also have `forward_all(x)` that
  returns a NamedTuple;
* registry builders take `in_chans` and `num_classes` where relevant and initialise every
  parameter from an explicit `seed` (`init_weights`), so two builds with the same options
  and seed are identical on any device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ActivationName = Literal["none", "relu", "sigmoid", "tanh", "softplus"]


def make_activation(name: ActivationName) -> nn.Module:
    """An activation module from its name: none, relu, sigmoid, tanh or softplus."""
    table = {
        "none": nn.Identity,
        "relu": nn.ReLU,
        "sigmoid": nn.Sigmoid,
        "tanh": nn.Tanh,
        "softplus": nn.Softplus,
    }
    if name not in table:
        raise ValueError(f"activation must be one of {sorted(table)}, got {name!r}")
    return table[name]()


def check_image(x: Tensor, in_chans: int, name: str = "x") -> None:
    """Raise ValueError unless `x` is a floating `(B, in_chans, H, W)` tensor with H, W > 0."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != in_chans or x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(
            f"{name} must have shape (B, {in_chans}, H, W) with H, W > 0, got {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got {x.dtype}")


def check_multiple(x: Tensor, multiple: int, model: str) -> None:
    """Raise ValueError unless `x` is `(B, C, H, W)` with H and W multiples of `multiple`."""
    if not isinstance(x, Tensor) or x.ndim != 4:
        raise ValueError(f"{model}: input must be a (B, C, H, W) tensor, got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
    h, w = x.shape[-2:]
    if h % multiple or w % multiple:
        raise ValueError(
            f"{model}: input height and width must be multiples of {multiple}, got {h}x{w}; "
            f"pad the input first"
        )


def resize(x: Tensor, size: tuple[int, int] | torch.Size, align_corners: bool = False) -> Tensor:
    """Bilinear resize of a `(B, C, H, W)` map to `size`; a no-op when already that size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=align_corners)


class ConvNormAct(nn.Sequential):
    """Conv2d → BatchNorm (or GroupNorm, or none) → ReLU (optional).

    Same-size padding for odd kernels (`dilation·(k−1)/2`); the conv has a bias only when
    there is no norm layer, as in mmcv's ConvModule and torchvision's DeepLab blocks.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        norm: Literal["bn", "gn", "none"] = "bn",
        act: bool = True,
    ) -> None:
        if norm not in ("bn", "gn", "none"):
            raise ValueError(f"norm must be 'bn', 'gn' or 'none', got {norm!r}")
        pad = dilation * (kernel_size - 1) // 2
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels, out_channels, kernel_size, stride, pad, dilation,
                bias=norm == "none",
            )
        ]
        if norm == "bn":
            layers.append(nn.BatchNorm2d(out_channels))
        elif norm == "gn":
            layers.append(nn.GroupNorm(min(32, out_channels), out_channels))
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


def init_weights(module: nn.Module, seed: int = 0, skip: Sequence[nn.Module] = (),
                 conv: Literal["kaiming", "uniform"] = "kaiming") -> nn.Module:
    """Re-initialise every parameter of `module` in place from `seed`; returns `module`.

    Scheme (the one torchvision's ResNet and timm's transformers use): conv and transposed
    conv weights Kaiming-normal (fan_out, ReLU gain) and biases 0 — or, with
    `conv="uniform"`, PyTorch's default conv initialisation (weights U(±√(1/fan_in)), i.e.
    Kaiming-uniform with a = √5, biases U(±1/√fan_in)), which keeps deep stacks without
    normalisation (DPT's decoder, E2VID) at a sane scale; linear weights truncated normal
    with std 0.02 and biases 0; norm weights 1 and biases 0; any other parameter (position
    embeddings, class/mask tokens, relative position tables) truncated normal std 0.02.
    One `torch.Generator` per device is seeded with `seed`, so the result does not depend
    on the global RNG. Parameters on the meta device are skipped (they hold no data), and
    so are the submodules in `skip` (e.g. a pretrained or separately initialised encoder).
    """
    generators: dict[torch.device, torch.Generator] = {}
    skipped = {id(m) for s in skip for m in s.modules()}

    def gen(t: Tensor) -> torch.Generator:
        if t.device not in generators:
            generators[t.device] = torch.Generator(device=t.device).manual_seed(seed)
        return generators[t.device]

    norms = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    with torch.no_grad():
        for m in module.modules():
            own = list(m.named_parameters(recurse=False))
            if not own or own[0][1].device.type == "meta" or id(m) in skipped:
                continue
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d) and conv == "kaiming":
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu",
                                        generator=gen(m.weight))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=gen(m.weight))
                if m.bias is not None:
                    fan_in = nn.init._calculate_fan_in_and_fan_out(m.weight)[0]
                    bound = 1.0 / math.sqrt(fan_in)
                    nn.init.uniform_(m.bias, -bound, bound, generator=gen(m.bias))
            elif isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02, generator=gen(m.weight))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, norms):
                for name, p in own:
                    (nn.init.ones_ if name == "weight" else nn.init.zeros_)(p)
            else:
                for _, p in own:
                    nn.init.trunc_normal_(p, std=0.02, generator=gen(p))
    return module


class ClassifierHead(nn.Module):
    """Global average pool → dropout → linear: `(B, C, H, W)` or `(B, C)` → `(B, num_classes)`."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 1:
            raise ValueError(
                f"in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}"
            )
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim == 4:
            x = x.mean(dim=(2, 3))
        return self.fc(self.dropout(x))


class EncoderClassifier(nn.Module):
    """Any encoder with `forward_features` plus a `ClassifierHead` on its deepest map.

    `forward(x)` maps `(B, C_in, H, W)` to logits `(B, num_classes)`; `forward_features`
    is the encoder's, so the classifier is itself an encoder.
    """

    def __init__(self, encoder: nn.Module, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        if not hasattr(encoder, "forward_features") or not hasattr(encoder, "feature_channels"):
            raise ValueError("encoder must have forward_features() and feature_channels")
        self.encoder = encoder
        self.feature_channels = tuple(encoder.feature_channels)
        self.feature_strides = tuple(encoder.feature_strides)
        self.head = ClassifierHead(self.feature_channels[-1], num_classes, dropout)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        return self.encoder.forward_features(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.forward_features(x)[-1])


class FCNHead(nn.Module):
    """mmseg's FCNHead: `num_convs` 3×3 ConvNormAct, optional input concat, dropout, 1×1.

    Maps one `(B, in_channels, h, w)` feature to logits `(B, num_classes, h, w)`. ECDDP uses it
    as the auxiliary head on Swin stage 3 (in 384, channels 256, one conv, dropout 0.1 —
    code: Yan98/Event-Camera-Data-Dense-Pre-training model/encoderdecoder_model.py).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        channels: int = 256,
        num_convs: int = 1,
        concat_input: bool = False,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if num_convs < 1:
            raise ValueError(f"num_convs must be >= 1, got {num_convs}")
        convs = [ConvNormAct(in_channels if i == 0 else channels, channels, 3)
                 for i in range(num_convs)]
        self.convs = nn.Sequential(*convs)
        self.concat = ConvNormAct(in_channels + channels, channels, 3) if concat_input else None
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.convs(x)
        if self.concat is not None:
            y = self.concat(torch.cat([x, y], dim=1))
        return self.classifier(self.dropout(y))


class _ConvINReLU(nn.Sequential):
    """3×3 conv (bias) → InstanceNorm (no affine) → ReLU, as ESS's `ReLUINSConv2d`."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1), nn.InstanceNorm2d(cout),
                         nn.ReLU(inplace=True))


class _INResBlock(nn.Module):
    """x + IN(conv(ReLU(IN(conv(x))))) with 3×3 convs, as ESS's `INSResBlock`."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.InstanceNorm2d(channels),
            nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 3, padding=1),
            nn.InstanceNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class LatentSegOutput(NamedTuple):
    """Outputs of `LatentSegDecoder`: logits at the input resolution and the stride-2 and
    stride-4 decoder features `{2: (B, C2, H/2, W/2), 4: (B, C4, H/4, W/4)}`."""

    logits: Tensor
    features: dict[int, Tensor]


class LatentSegDecoder(nn.Module):
    """Skip-concatenating segmentation decoder on stride-2/4/8 latents (ESS `SemSegE2VID`).

    Input: three maps at strides 2, 4, 8 with `in_channels = (c2, c4, c8)` (E2VID's encoder
    latents: 64, 128, 256). Stage 1 applies `num_res_blocks` instance-norm residual blocks
    and halves channels; then nearest ×2, concat with the stride-4 skip, two conv-IN-ReLU
    (÷2, ÷2); nearest ×2, concat the stride-2 skip, two conv-IN-ReLU (÷2, ×1); nearest ×2,
    one conv-IN-ReLU (÷2) and a 1×1 classifier. With (64, 128, 256) and 5 residual blocks
    this is exactly ESS's skip-connected decoder (code: uzh-rpg/ess models/style_networks.py).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: tuple[int, int, int] = (64, 128, 256),
        num_res_blocks: int = 5,
    ) -> None:
        super().__init__()
        if len(in_channels) != 3:
            raise ValueError(f"in_channels must list 3 maps (strides 2, 4, 8), got {in_channels}")
        c2, c4, c8 = in_channels
        self.in_channels = tuple(in_channels)
        self.stage8 = nn.Sequential(*[_INResBlock(c8) for _ in range(num_res_blocks)],
                                    _ConvINReLU(c8, c8 // 2))
        cin4 = c8 // 2 + c4
        self.stage4 = nn.Sequential(_ConvINReLU(cin4, cin4 // 2),
                                    _ConvINReLU(cin4 // 2, cin4 // 4))
        cin2 = cin4 // 4 + c2
        self.stage2 = nn.Sequential(_ConvINReLU(cin2, cin2 // 2),
                                    _ConvINReLU(cin2 // 2, cin2 // 2))
        self.stage1 = _ConvINReLU(cin2 // 2, cin2 // 4)
        self.classifier = nn.Conv2d(cin2 // 4, num_classes, 1)

    def forward(self, latents: list[Tensor], out_size: tuple[int, int] | None = None
                ) -> LatentSegOutput:
        """`latents` = [stride 2, stride 4, stride 8] maps; `out_size` defaults to 2× the
        stride-2 map. Returns `LatentSegOutput`."""
        if len(latents) != 3:
            raise ValueError(f"latents must hold 3 maps (strides 2, 4, 8), got {len(latents)}")
        for t, c in zip(latents, self.in_channels, strict=True):
            if t.ndim != 4 or t.shape[1] != c:
                raise ValueError(f"latent channels must be {self.in_channels}, "
                                 f"got {[tuple(t.shape) for t in latents]}")
        s2, s4, s8 = latents
        x = self.stage8(s8)
        x = F.interpolate(x, size=s4.shape[-2:], mode="nearest")
        f4 = self.stage4(torch.cat([x, s4], dim=1))
        x = F.interpolate(f4, size=s2.shape[-2:], mode="nearest")
        f2 = self.stage2(torch.cat([x, s2], dim=1))
        size = out_size if out_size is not None else (2 * s2.shape[-2], 2 * s2.shape[-1])
        x = self.stage1(F.interpolate(f2, size=tuple(size), mode="nearest"))
        return LatentSegOutput(self.classifier(x), {2: f2, 4: f4})


def classifier_head(in_channels: int, num_classes: int, dropout: float = 0.0,
                    seed: int = 0) -> ClassifierHead:
    """Registry builder for `ClassifierHead`."""
    return init_weights(ClassifierHead(in_channels, num_classes, dropout), seed)


def fcn_head(in_channels: int, num_classes: int, channels: int = 256, num_convs: int = 1,
             concat_input: bool = False, dropout: float = 0.1, seed: int = 0) -> FCNHead:
    """Registry builder for `FCNHead`."""
    head = FCNHead(in_channels, num_classes, channels, num_convs, concat_input, dropout)
    return init_weights(head, seed)


def latent_seg_decoder(num_classes: int, in_channels: tuple[int, int, int] = (64, 128, 256),
                       num_res_blocks: int = 5, seed: int = 0) -> LatentSegDecoder:
    """Registry builder for `LatentSegDecoder` (ESS's task decoder)."""
    return init_weights(LatentSegDecoder(num_classes, tuple(in_channels), num_res_blocks), seed)


MODELS = {
    "classifier_head": classifier_head,
    "fcn_head": fcn_head,
    "latent_seg_decoder": latent_seg_decoder,
}
