"""ResNet-18/34/50/101 encoders and DeepLabV3+ with an optional image-reconstruction decoder.

The ResNets follow torchvision's layout (v1.5: the stride sits on the 3×3 conv of the
bottleneck), so with 3 input channels and a 1000-class fc they have torchvision's
parameter counts (11 689 512 / 21 797 672 / 25 557 032 / 44 549 160). `in_chans` replaces
the stem's input channels (events: 2–20, spikes: 128). `output_stride` 16 or 8 replaces
the strides of the last one or two stages by dilation; the dilated stage's blocks use
rates `rate · multi_grid[i]` (DeepLab's multi-grid; code: addisonwang2013/evdistill
modeling/backbone/resnet.py uses [1, 2, 4] at output stride 16).

DeepLabV3+ (Chen et al., ECCV 2018) as used by EvDistill: ASPP with rates 6/12/18 at output
stride 16 and 256 channels, a decoder with a 48-channel projection of the stride-4
features, and optionally EvDistill's second ("sr") decoder that reconstructs an image,
plus its 1×1 conv + BN + ReLU projection of the logits to 3 channels used for the
affinity-graph KD (code: addisonwang2013/evdistill modeling/deeplab.py `DeepLab_Dual`,
modeling/aspp.py, modeling/decoder.py, modeling/im_recon_decoder.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from evtransfer.models.heads import (
    ActivationName,
    ConvNormAct,
    check_image,
    init_weights,
    make_activation,
    resize,
)


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN with identity (or 1×1 conv-BN projection) shortcut; expansion 1."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, dilation, dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1×1 → 3×3 (stride, dilation) → 1×1 (×4 channels) conv-BN bottleneck; expansion 4."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


Block = type[BasicBlock] | type[Bottleneck]


def make_layer(block: Block, cin: int, planes: int, blocks: int, stride: int = 1,
               dilations: Sequence[int] | None = None) -> nn.Sequential:
    """One ResNet stage: `blocks` blocks, the first with `stride` (and a 1×1 conv-BN
    projection shortcut when the shape changes); `dilations` gives each block's rate."""
    rates = list(dilations) if dilations is not None else [1] * blocks
    if len(rates) != blocks:
        raise ValueError(f"need one dilation per block ({blocks}), got {rates}")
    cout = planes * block.expansion
    down = None
    if stride != 1 or cin != cout:
        down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
    layers = [block(cin, planes, stride, rates[0], down)]
    layers += [block(cout, planes, 1, rates[i]) for i in range(1, blocks)]
    return nn.Sequential(*layers)


class ResNet(nn.Module):
    """ResNet encoder / classifier for `(B, in_chans, H, W)` float input.

    `forward_features(x)` returns the four stage outputs (layer1..layer4) with
    `feature_channels` (64·e, 128·e, 256·e, 512·e; e = block expansion) and
    `feature_strides` (4, 8, 16, 32 for output stride 32; the last ones stay at 16 or 8
    when dilated). `forward(x)` returns logits `(B, num_classes)`, or the pooled
    `(B, 512·e)` features when `num_classes == 0`.
    """

    def __init__(
        self,
        block: Block,
        layers: Sequence[int],
        in_chans: int = 3,
        num_classes: int = 1000,
        output_stride: int = 32,
        multi_grid: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if in_chans < 1:
            raise ValueError(f"in_chans must be >= 1, got {in_chans}")
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        if len(layers) != 4:
            raise ValueError(f"layers must list 4 stage depths, got {layers}")
        self.in_chans = in_chans
        dilated = {32: 0, 16: 1, 8: 2}[output_stride]
        strides = [1, 2, 2, 2]
        rates = [1, 1, 1, 1]
        for i in range(4 - dilated, 4):
            rates[i] = rates[i - 1] * strides[i]
            strides[i] = 1
        grid = list(multi_grid) if multi_grid is not None else [1] * layers[3]
        if len(grid) != layers[3]:
            raise ValueError(f"multi_grid needs {layers[3]} entries (layer4 blocks), got {grid}")
        self.conv1 = nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths = (64, 128, 256, 512)
        cin = 64
        stages = []
        for i, (planes, depth) in enumerate(zip(widths, layers, strict=True)):
            per_block = [rates[i] * (grid[j] if i == 3 else 1) for j in range(depth)]
            stages.append(make_layer(block, cin, planes, depth, strides[i], per_block))
            cin = planes * block.expansion
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.feature_channels = tuple(w * block.expansion for w in widths)
        stride, feature_strides = 4, []
        for s in strides:
            stride *= s
            feature_strides.append(stride)
        self.feature_strides = tuple(feature_strides)
        self.num_classes = num_classes
        self.fc = nn.Linear(cin, num_classes) if num_classes > 0 else None

    def forward_features(self, x: Tensor) -> list[Tensor]:
        check_image(x, self.in_chans)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        feats = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            feats.append(x)
        return feats

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.forward_features(x)[-1].mean(dim=(2, 3))
        return pooled if self.fc is None else self.fc(pooled)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1×1, three 3×3 atrous convs and image pooling, each
    conv-BN-ReLU to `channels`, concatenated, projected by 1×1 conv-BN-ReLU and dropout.
    `(B, in_channels, h, w)` → `(B, channels, h, w)`. As in the reference, the pooling
    branch's BatchNorm sees one value per channel and sample, so training needs batch > 1."""

    def __init__(self, in_channels: int, channels: int = 256,
                 rates: Sequence[int] = (6, 12, 18), dropout: float = 0.5) -> None:
        super().__init__()
        branches = [ConvNormAct(in_channels, channels, 1)]
        branches += [ConvNormAct(in_channels, channels, 3, dilation=r) for r in rates]
        self.branches = nn.ModuleList(branches)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), ConvNormAct(in_channels, channels, 1))
        self.project = ConvNormAct(channels * (len(rates) + 2), channels, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        outs = [b(x) for b in self.branches]
        # bilinear resize of a 1×1 map with align_corners=True is a broadcast (as the code)
        outs.append(self.pool(x).expand(-1, -1, *x.shape[-2:]))
        return self.dropout(self.project(torch.cat(outs, dim=1)))


class DeepLabDecoder(nn.Module):
    """DeepLabV3+ decoder: 1×1 conv-BN-ReLU of the low-level map to `low_channels` (48),
    concat with the upsampled ASPP output, 3×3 conv-BN-ReLU to `mid[0]` → dropout 0.5 →
    3×3 conv-BN-ReLU to `mid[1]` → dropout 0.1 → 1×1 conv (bias) to `out_channels`.
    Output at the low-level map's resolution (stride 4)."""

    def __init__(self, low_in: int, high_in: int, out_channels: int,
                 low_channels: int = 48, mid: tuple[int, int] = (256, 256)) -> None:
        super().__init__()
        self.low = ConvNormAct(low_in, low_channels, 1)
        self.body = nn.Sequential(
            ConvNormAct(high_in + low_channels, mid[0], 3), nn.Dropout(0.5),
            ConvNormAct(mid[0], mid[1], 3), nn.Dropout(0.1),
            nn.Conv2d(mid[1], out_channels, 1),
        )

    def forward(self, high: Tensor, low: Tensor) -> Tensor:
        low = self.low(low)
        high = resize(high, low.shape[-2:], align_corners=True)
        return self.body(torch.cat([high, low], dim=1))


class _ResidualConvs(nn.Module):
    """conv3×3 → ReLU → conv3×3 plus a bias-free 1×1 shortcut (EvDistill's `EDSRConv`)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(cout, cout, 3, padding=1))
        self.shortcut = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + self.shortcut(x)


class ImageReconDecoder(nn.Module):
    """EvDistill's image-reconstruction ("sr") decoder on the shared encoder + ASPP.

    A DeepLab decoder 256 → 128 → 64 channels at stride 4, then two ×2 transposed convs
    (64→64, 64→32), each followed by residual convs, and a 1×1 conv to `out_channels`
    with `activation` (EvDistill: none in `DeepLab_Dual`, tanh in `DeepLab_Dual_V2`).
    Output `(B, out_channels, H, W)` resized to `out_size`.
    """

    def __init__(self, low_in: int, high_in: int, out_channels: int = 3,
                 activation: ActivationName = "none") -> None:
        super().__init__()
        self.decoder = DeepLabDecoder(low_in, high_in, 64, mid=(256, 128))
        self.up = nn.Sequential(
            nn.ConvTranspose2d(64, 64, 2, stride=2), _ResidualConvs(64, 64),
            nn.ConvTranspose2d(64, 32, 2, stride=2), _ResidualConvs(32, 32),
            nn.Conv2d(32, out_channels, 1),
        )
        self.act = make_activation(activation)

    def forward(self, high: Tensor, low: Tensor, out_size: tuple[int, int]) -> Tensor:
        return resize(self.act(self.up(self.decoder(high, low))), out_size, align_corners=True)


class DeepLabOutputs(NamedTuple):
    """All DeepLabV3+ outputs. logits `(B, K, H, W)`; recon `(B, R, H, W)` or None;
    affinity `(B, 3, H, W)` (ReLU'd 1×1 projection of the logits) or None; aspp
    `(B, 256, H/16, W/16)`; low_level `(B, C1, H/4, W/4)` (encoder layer1)."""

    logits: Tensor
    recon: Tensor | None
    affinity: Tensor | None
    aspp: Tensor
    low_level: Tensor


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ on a ResNet encoder, optionally with EvDistill's reconstruction decoder.

    `forward(x)` maps `(B, in_chans, H, W)` to logits `(B, num_classes, H, W)` (bilinear,
    align_corners=True, as the code); `forward_all(x)` returns `DeepLabOutputs`;
    `forward_features` is the encoder's.
    """

    def __init__(
        self,
        encoder: ResNet,
        num_classes: int,
        recon_channels: int | None = None,
        recon_activation: ActivationName = "none",
        affinity_channels: int | None = None,
        aspp_rates: Sequence[int] = (6, 12, 18),
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.encoder = encoder
        self.feature_channels = encoder.feature_channels
        self.feature_strides = encoder.feature_strides
        low_in, high_in = encoder.feature_channels[0], encoder.feature_channels[3]
        self.aspp = ASPP(high_in, 256, aspp_rates)
        self.decoder = DeepLabDecoder(low_in, 256, num_classes)
        self.recon = (ImageReconDecoder(low_in, 256, recon_channels, recon_activation)
                      if recon_channels else None)
        self.affinity = None
        if affinity_channels:
            self.affinity = nn.Sequential(nn.Conv2d(num_classes, affinity_channels, 1),
                                          nn.BatchNorm2d(affinity_channels), nn.ReLU(inplace=True))

    def forward_features(self, x: Tensor) -> list[Tensor]:
        return self.encoder.forward_features(x)

    def forward_all(self, x: Tensor) -> DeepLabOutputs:
        feats = self.encoder.forward_features(x)
        low, high = feats[0], self.aspp(feats[3])
        size = x.shape[-2:]
        logits = resize(self.decoder(high, low), size, align_corners=True)
        recon = self.recon(high, low, size) if self.recon is not None else None
        affinity = self.affinity(logits) if self.affinity is not None else None
        return DeepLabOutputs(logits, recon, affinity, high, low)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_all(x).logits


_DEPTHS: dict[str, tuple[Block, tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
}


def _resnet(arch: str, in_chans: int, num_classes: int, output_stride: int,
            multi_grid: Sequence[int] | None, seed: int) -> ResNet:
    block, layers = _DEPTHS[arch]
    net = ResNet(block, layers, in_chans, num_classes, output_stride, multi_grid)
    return init_weights(net, seed)


def _classifier_builder(arch: str):
    def build(in_chans: int = 3, num_classes: int = 1000, output_stride: int = 32,
              multi_grid: Sequence[int] | None = None, seed: int = 0) -> ResNet:
        return _resnet(arch, in_chans, num_classes, output_stride, multi_grid, seed)

    build.__name__ = arch
    build.__doc__ = (f"{arch}: torchvision layout; `num_classes=0` drops the fc "
                     f"(then `forward` returns pooled features).")
    return build


def _deeplab_builder(arch: str):
    default_grid = (1, 2, 4) if _DEPTHS[arch][1][3] == 3 else (1, 2)

    def build(in_chans: int = 3, num_classes: int = 21, output_stride: int = 16,
              multi_grid: Sequence[int] | None = default_grid,
              recon_channels: int | None = None, recon_activation: ActivationName = "none",
              affinity_channels: int | None = None, seed: int = 0) -> DeepLabV3Plus:
        if output_stride not in (8, 16):
            raise ValueError(f"DeepLabV3+ output_stride must be 8 or 16, got {output_stride}")
        encoder = ResNet(*_DEPTHS[arch], in_chans, 0, output_stride, multi_grid)
        rates = (6, 12, 18) if output_stride == 16 else (12, 24, 36)
        net = DeepLabV3Plus(encoder, num_classes, recon_channels, recon_activation,
                            affinity_channels, rates)
        return init_weights(net, seed)

    build.__name__ = f"deeplabv3plus_{arch}"
    build.__doc__ = (f"DeepLabV3+ on {arch}: ASPP rates 6/12/18 at output stride 16 "
                     f"(12/24/36 at 8), multi-grid {default_grid}; `recon_channels` adds "
                     f"EvDistill's image decoder, `affinity_channels` its logit projection.")
    return build


MODELS = {arch: _classifier_builder(arch) for arch in _DEPTHS}
MODELS.update({f"deeplabv3plus_{arch}": _deeplab_builder(arch) for arch in _DEPTHS})
