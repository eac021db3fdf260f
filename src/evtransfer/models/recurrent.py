"""Event → image reconstruction (recurrent U-Net, E2VID) and image → event translation (U-Net).

E2VID (Rebecq et al., TPAMI 2019; code: uzh-rpg/rpg_e2vid model/unet.py `UNetRecurrent`,
model/submodules.py): a 5×5 head conv (ReLU, never normalised) to `base` (32) channels;
`num_encoders` (3) encoders, each a stride-2 5×5 conv (norm, ReLU) followed by a ConvLSTM with
a 3×3 gate conv, doubling the channels (64, 128, 256 at strides 2, 4, 8);
`num_residual_blocks` (2) residual blocks; decoders (norm, ReLU) halving channels, each fed
the skip of the previous output and the matching encoder output; a 1×1 prediction conv (with
the norm) on the skip with the head output; sigmoid. `skip` "sum" adds, "concat"
concatenates (the decoders and the prediction then take twice the channels). `decoder`:
"transposed" (5×5 stride-2 transposed convs, output padding 1: the released
E2VID_lightweight) or "upsample" (×2 bilinear upsampling + 5×5 conv: the older E2VID.pth.tar
and our world presets). `norm` "bn" or "in" as the code's BN / IN (convs before a norm have
no bias; the residual blocks' IN keeps no running statistics). The released
E2VID_lightweight is `e2vid(norm="bn", decoder="transposed")`; the defaults (no norm,
upsampling decoders) are our world presets' reconstruction network, with 10 710 401
parameters at 5 bins. Parameter names follow rpg_e2vid's (`head.conv2d`,
`encoders.{i}.conv.conv2d`, `encoders.{i}.recurrent_block.Gates`, `resblocks.{i}.conv1/bn1`,
`decoders.{i}.transposed_conv2d` or `.conv2d`, `….norm_layer`, `pred.conv2d`), so a released
checkpoint's `unetrecurrent.*` entries load once that prefix is stripped
(`models.released.e2vid`). `e2vid_input_norm` is E2VID's input normalisation.

The recurrent state is explicit: `forward(x, state)` returns `(image, new_state)`; `state`
is None for a fresh sequence (zeros), otherwise the list of `(hidden, cell)` pairs
`(B, C_i, h_i, w_i)` returned by the previous step. `detach_state` cuts the graph for
truncated back-propagation through time.

The image → event translator (EvDistill's BMR image → event direction, CMESS's and ESS's
need for event-like tensors from frames) is the same U-Net without recurrence and with a
linear output by default, since event tensors are signed; its architecture is not published
by those papers (unpublished: our choice). `ImageLatentEncoder` is ESS's image encoder
(`StyleEncoderE2VID`, code: uzh-rpg/ess models/style_networks.py): a ResNet-18 stem without
max-pool and its layers 1–3, giving latents with E2VID's channels at strides 2, 4, 8.

Sides of any size are accepted: upsampling decoders resize to the exact size of their skip
and transposed-conv outputs (twice their input) are cropped to it. The reference code takes
sides divisible by 2^num_encoders only (it pads its input to them, utils/inference_utils.py
`CropParameters`), where both agree with it exactly. The U-Net builders initialise convs with
PyTorch's default (uniform) scheme, as the reference code.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from evtransfer.models.heads import ActivationName, check_image, init_weights, make_activation
from evtransfer.models.resnet import BasicBlock, make_layer

Norm = Literal["none", "bn", "in"]
Decoder = Literal["upsample", "transposed"]
Skip = Literal["sum", "concat"]
State = list[tuple[Tensor, Tensor]]


def _norm(kind: Norm, channels: int, running_stats: bool = True) -> nn.Module | None:
    if kind not in ("none", "bn", "in"):
        raise ValueError(f"norm must be 'none', 'bn' or 'in', got {kind!r}")
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "in":
        return nn.InstanceNorm2d(channels, track_running_stats=running_stats)
    return None


def e2vid_input_norm(x: Tensor, per_sample: bool = False) -> Tensor:
    """E2VID's input normalisation of one window's voxel grid x (B, bins, H, W) float: the
    non-zero entries become (v − mean)/std with the mean and the biased (N) standard
    deviation of the non-zero entries, zeros stay zero (code: uzh-rpg/rpg_e2vid
    utils/inference_utils.py `EventPreprocessor`, which ESS applies to every window).
    The code takes the statistics over the whole tensor, i.e. pooled over the batch
    (`per_sample=False`); `per_sample=True` takes them per batch item (the code's batch-1
    inference). An all-zero tensor (item) is returned unchanged; a constant non-zero one
    gives non-finite values, as the code (its std is 0)."""
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"x must be a (B, bins, H, W) float tensor, got {tuple(x.shape)} "
                         f"{x.dtype}")
    flat = x.reshape(x.shape[0] if per_sample else 1, -1)
    nonzero = flat != 0
    count = nonzero.sum(1, keepdim=True)
    safe = count.clamp(min=1)
    mean = flat.sum(1, keepdim=True) / safe
    std = (flat.square().sum(1, keepdim=True) / safe - mean.square()).sqrt()
    out = torch.where(nonzero, (flat - mean) / std, 0.0)
    return torch.where(count > 0, out, flat).reshape(x.shape)


INPUT_NORMS = ("batch", "sample", "none")


def normalize_windows(x: Tensor, bins: int, mode: str) -> Tensor:
    """`e2vid_input_norm` applied to each of the K windows of x (B, K·bins, H, W): "batch"
    pools the statistics over the batch (ESS's code), "sample" takes them per item, "none"
    returns x unchanged."""
    if mode not in INPUT_NORMS:
        raise ValueError(f"input_norm must be one of {INPUT_NORMS}, got {mode!r}")
    if mode == "none":
        return x
    return torch.cat([e2vid_input_norm(w, per_sample=mode == "sample")
                      for w in x.split(bins, dim=1)], dim=1)


class _ConvLayer(nn.Module):
    """k×k conv (bias unless batch norm) → optional norm → ReLU (or nothing). Named as
    rpg_e2vid's `ConvLayer` (`conv2d`, `norm_layer`)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, norm: Norm,
                 relu: bool = True) -> None:
        super().__init__()
        self.conv2d = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=norm != "bn")
        self.norm_layer = _norm(norm, cout)
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv2d(x)
        if self.norm_layer is not None:
            x = self.norm_layer(x)
        return F.relu(x) if self.relu else x


class _UpsampleConvLayer(_ConvLayer):
    """Bilinear upsampling to `size` (×2 for even sides) → `_ConvLayer`."""

    def forward(self, x: Tensor, size: torch.Size) -> Tensor:
        return super().forward(F.interpolate(x, size=size, mode="bilinear", align_corners=False))


class _TransposedConvLayer(nn.Module):
    """5×5 stride-2 transposed conv (padding 2, output padding 1: exactly ×2), cropped to
    `size` → optional norm → ReLU (rpg_e2vid `TransposedConvLayer`, `transposed_conv2d`)."""

    def __init__(self, cin: int, cout: int, kernel: int, norm: Norm) -> None:
        super().__init__()
        self.transposed_conv2d = nn.ConvTranspose2d(cin, cout, kernel, 2, kernel // 2,
                                                    output_padding=1, bias=norm != "bn")
        self.norm_layer = _norm(norm, cout)

    def forward(self, x: Tensor, size: torch.Size) -> Tensor:
        x = self.transposed_conv2d(x)[..., :size[0], :size[1]]
        return F.relu(x if self.norm_layer is None else self.norm_layer(x))


class _ResBlock(nn.Module):
    """relu(x + norm(conv(relu(norm(conv(x)))))) with 3×3 convs (rpg_e2vid `ResidualBlock`,
    whose instance norms keep no running statistics)."""

    def __init__(self, channels: int, norm: Norm) -> None:
        super().__init__()
        bias = norm != "bn"
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1, bias=bias)
        self.bn1 = _norm(norm, channels, running_stats=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=bias)
        self.bn2 = _norm(norm, channels, running_stats=False)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv1(x)
        y = F.relu(y if self.bn1 is None else self.bn1(y))
        y = self.conv2(y)
        return F.relu(x + (y if self.bn2 is None else self.bn2(y)))


class ConvLSTM(nn.Module):
    """Convolutional LSTM cell: one k×k conv on [x, h] gives the input, forget, output and
    cell gates (in that order); c' = f·c + i·tanh(g), h' = o·tanh(c').
    `x` `(B, C_in, h, w)`, state `(hidden, cell)` each `(B, hidden, h, w)` or None (zeros)."""

    def __init__(self, input_size: int, hidden_size: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.Gates = nn.Conv2d(input_size + hidden_size, 4 * hidden_size, kernel_size,
                               padding=kernel_size // 2)  # named as in rpg_e2vid

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor]:
        if state is None:
            zeros = x.new_zeros(x.shape[0], self.hidden_size, *x.shape[-2:])
            state = (zeros, zeros)
        hidden, cell = state
        i, f, o, g = self.Gates(torch.cat([x, hidden], dim=1)).chunk(4, dim=1)
        cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(cell), cell


class _RecurrentEncoder(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, norm: Norm) -> None:
        super().__init__()
        self.conv = _ConvLayer(cin, cout, kernel, 2, norm)
        self.recurrent_block = ConvLSTM(cout, cout, 3)

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None
                ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        new = self.recurrent_block(self.conv(x), state)
        return new[0], new


class UNet(nn.Module):
    """Feed-forward E2VID-topology U-Net: `(B, in_chans, H, W)` → `(B, out_chans, H, W)`.

    `forward_features(x)` returns the encoder outputs at strides 2, 4, … with
    `feature_channels` (2·base, 4·base, …). The output passes through `final_activation`.
    `decoder` and `skip` as rpg_e2vid's `use_upsample_conv` and `skip_type` (module docstring).
    """

    recurrent = False

    def __init__(
        self,
        in_chans: int,
        out_chans: int = 1,
        base_channels: int = 32,
        num_encoders: int = 3,
        num_residual_blocks: int = 2,
        kernel_size: int = 5,
        norm: Norm = "none",
        final_activation: ActivationName = "none",
        decoder: Decoder = "upsample",
        skip: Skip = "sum",
    ) -> None:
        super().__init__()
        if in_chans < 1 or out_chans < 1 or num_encoders < 1:
            raise ValueError(f"in_chans, out_chans and num_encoders must be >= 1, got "
                             f"{in_chans}, {out_chans}, {num_encoders}")
        if decoder not in ("upsample", "transposed") or skip not in ("sum", "concat"):
            raise ValueError(f"decoder must be 'upsample' or 'transposed' and skip 'sum' or "
                             f"'concat', got {decoder!r}, {skip!r}")
        self.in_chans, self.skip = in_chans, skip
        chans = [base_channels * 2**i for i in range(num_encoders + 1)]
        wide = 2 if skip == "concat" else 1
        self.head = _ConvLayer(in_chans, base_channels, kernel_size, 1, "none")
        self.encoders = nn.ModuleList([self._encoder(chans[i], chans[i + 1], kernel_size, norm)
                                       for i in range(num_encoders)])
        self.resblocks = nn.Sequential(*[_ResBlock(chans[-1], norm)
                                         for _ in range(num_residual_blocks)])
        self.decoders = nn.ModuleList([
            _TransposedConvLayer(wide * c, c // 2, kernel_size, norm) if decoder == "transposed"
            else _UpsampleConvLayer(wide * c, c // 2, kernel_size, 1, norm)
            for c in reversed(chans[1:])])
        self.pred = _ConvLayer(wide * base_channels, out_chans, 1, 1, norm, relu=False)
        self.act = make_activation(final_activation)
        self.feature_channels = tuple(chans[1:])
        self.feature_strides = tuple(2**i for i in range(1, num_encoders + 1))

    def _encoder(self, cin: int, cout: int, kernel: int, norm: Norm) -> nn.Module:
        return _ConvLayer(cin, cout, kernel, 2, norm)

    def _join(self, x: Tensor, skip: Tensor) -> Tensor:
        return x + skip if self.skip == "sum" else torch.cat([x, skip], dim=1)

    def _decode(self, head: Tensor, skips: list[Tensor]) -> Tensor:
        x = self.resblocks(skips[-1])
        targets = [head, *skips[:-1]]
        for i, decoder in enumerate(self.decoders):
            x = decoder(self._join(x, skips[-1 - i]), targets[-1 - i].shape[-2:])
        return self.act(self.pred(self._join(x, head)))

    def forward_features(self, x: Tensor) -> list[Tensor]:
        check_image(x, self.in_chans)
        skips, y = [], self.head(x)
        for encoder in self.encoders:
            y = encoder(y)
            skips.append(y)
        return skips

    def forward(self, x: Tensor) -> Tensor:
        check_image(x, self.in_chans)
        head = self.head(x)
        skips, y = [], head
        for encoder in self.encoders:
            y = encoder(y)
            skips.append(y)
        return self._decode(head, skips)


class RecurrentOutputs(NamedTuple):
    """image `(B, out_chans, H, W)`, the new state, and the encoder latents (strides 2, 4, …)."""

    image: Tensor
    state: State
    features: list[Tensor]


class RecurrentUNet(UNet):
    """E2VID: the U-Net with a ConvLSTM after every encoder conv.

    `forward(x, state=None)` → `(image, new_state)`; `encode(x, state=None)` →
    `(latents, new_state)` (ESS's event latents, no decoder); `forward_all` →
    `RecurrentOutputs`; `history` runs the windows before the last. `forward_features(x)`
    keeps the encoder contract: one window's latents from a fresh state.
    """

    recurrent = True

    def _encoder(self, cin: int, cout: int, kernel: int, norm: Norm) -> nn.Module:
        return _RecurrentEncoder(cin, cout, kernel, norm)

    def _check_state(self, state: State | None, head: Tensor) -> None:
        if state is None:
            return
        if len(state) != len(self.encoders):
            raise ValueError(f"state must hold {len(self.encoders)} (hidden, cell) pairs, "
                             f"got {len(state)}")
        h, w = head.shape[-2:]
        for i, (pair, c) in enumerate(zip(state, self.feature_channels, strict=True)):
            h, w = (h + 1) // 2, (w + 1) // 2
            want = (head.shape[0], c, h, w)
            if len(pair) != 2 or any(tuple(t.shape) != want for t in pair):
                raise ValueError(f"state[{i}] must be (hidden, cell) of shape {want}; the input "
                                 f"size or batch changed — start a new sequence with state=None")

    def _encode(self, x: Tensor, state: State | None) -> tuple[Tensor, list[Tensor], State]:
        check_image(x, self.in_chans)
        head = self.head(x)
        self._check_state(state, head)
        skips, new_state, y = [], [], head
        for i, encoder in enumerate(self.encoders):
            y, pair = encoder(y, None if state is None else state[i])
            skips.append(y)
            new_state.append(pair)
        return head, skips, new_state

    def forward_all(self, x: Tensor, state: State | None = None) -> RecurrentOutputs:
        head, skips, new_state = self._encode(x, state)
        return RecurrentOutputs(self._decode(head, skips), new_state, skips)

    def encode(self, x: Tensor, state: State | None = None) -> tuple[list[Tensor], State]:
        """One recurrent step of the encoders (no decoder) on x (B, in_chans, H, W) from
        `state` (None: fresh); (latents at strides 2, 4, …, new state)."""
        _, skips, new_state = self._encode(x, state)
        return skips, new_state

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """Latents of one window x (B, in_chans, H, W) from a fresh state (the encoder
        contract); for a sequence use `encode` with the state or `history`."""
        return self.encode(x)[0]

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        out = self.forward_all(x, state)
        return out.image, out.state

    def history(self, x: Tensor) -> tuple[Tensor, State | None]:
        """Cut x (B, K·in_chans, H, W) into K consecutive windows, run the encoders (no decoder)
        over all but the last, oldest first, from a fresh state; (last window, state)."""
        if x.ndim != 4 or x.shape[1] % self.in_chans:
            raise ValueError(f"input must be (B, K·{self.in_chans}, H, W): K windows of the "
                             f"recurrent network's {self.in_chans} channels, got "
                             f"{tuple(x.shape)}")
        *older, last = x.split(self.in_chans, dim=1)
        state = None
        for window in older:
            _, _, state = self._encode(window, state)
        return last, state


def detach_state(state: State | None) -> State | None:
    """The same state cut from the autograd graph (truncated BPTT); None stays None."""
    if state is None:
        return None
    return [(h.detach(), c.detach()) for h, c in state]


class ImageLatentEncoder(nn.Module):
    """ESS's image encoder: 7×7 stride-2 conv (no bias) → BN → ReLU → ResNet-18 layer1
    (no max-pool) → layer2 → layer3. `forward_features(x)` / `forward(x)` return latents
    `[(B, 2b, H/2, W/2), (B, 4b, H/4, W/4), (B, 8b, H/8, W/8)]`: the channels of an E2VID with
    `base_channels` b (b = 32: ResNet-18's 64, 128, 256, as ESS)."""

    def __init__(self, in_chans: int = 1, base_channels: int = 32) -> None:
        super().__init__()
        if base_channels < 1:
            raise ValueError(f"base_channels must be >= 1, got {base_channels}")
        self.in_chans = in_chans
        c = 2 * base_channels
        self.stem = nn.Sequential(nn.Conv2d(in_chans, c, 7, 2, 3, bias=False),
                                  nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        self.layers = nn.ModuleList([make_layer(BasicBlock, c, c, 2),
                                     make_layer(BasicBlock, c, 2 * c, 2, stride=2),
                                     make_layer(BasicBlock, 2 * c, 4 * c, 2, stride=2)])
        self.feature_channels = (c, 2 * c, 4 * c)
        self.feature_strides = (2, 4, 8)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        check_image(x, self.in_chans)
        y, out = self.stem(x), []
        for layer in self.layers:
            y = layer(y)
            out.append(y)
        return out

    def forward(self, x: Tensor) -> list[Tensor]:
        return self.forward_features(x)


def e2vid(in_chans: int = 5, out_chans: int = 1, base_channels: int = 32, num_encoders: int = 3,
          num_residual_blocks: int = 2, norm: Norm = "none",
          final_activation: ActivationName = "sigmoid", decoder: Decoder = "upsample",
          skip: Skip = "sum", seed: int = 0) -> RecurrentUNet:
    """E2VID recurrent U-Net. The defaults are our world presets' network; the released
    E2VID_lightweight is `norm="bn", decoder="transposed"`, the older E2VID.pth.tar
    `decoder="upsample"` with the norm its file names (`models.released.e2vid` reads both)."""
    net = RecurrentUNet(in_chans, out_chans, base_channels, num_encoders, num_residual_blocks,
                        5, norm, final_activation, decoder, skip)
    return init_weights(net, seed, conv="uniform")


def img2event(in_chans: int = 1, out_chans: int = 5, base_channels: int = 32,
              num_encoders: int = 3, num_residual_blocks: int = 2, norm: Norm = "none",
              final_activation: ActivationName = "none", seed: int = 0) -> UNet:
    """Image → event-tensor translator (E2VID-topology U-Net, linear output)."""
    net = UNet(in_chans, out_chans, base_channels, num_encoders, num_residual_blocks, 5, norm,
               final_activation)
    return init_weights(net, seed, conv="uniform")


def image_latent_encoder(in_chans: int = 1, base_channels: int = 32,
                         seed: int = 0) -> ImageLatentEncoder:
    """ESS's image encoder (latents at strides 2, 4, 8 with the channels of an E2VID of
    `base_channels`)."""
    return init_weights(ImageLatentEncoder(in_chans, base_channels), seed)


MODELS = {"e2vid": e2vid, "img2event": img2event, "image_latent_encoder": image_latent_encoder}
