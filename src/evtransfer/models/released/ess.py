"""ESS's released checkpoints (uzh-rpg/ess, the DSEC and DDD17 `Epoch_N.pt` files).

Layout (code: uzh-rpg/ess utils/saver.py `save_checkpoint`): one dict holding a state dict
per network the trainer keeps in `models_dict` (training/ess_trainer.py `buildModels`):
`front_sensor_a` (the image encoder, `StyleEncoderE2VID`), `front_sensor_b` (the frozen
`E2VIDRecurrent`, keys `unetrecurrent.*`) and `back_end` (the task decoder, `SemSegE2VID` with
skip connections of type "concat", as both released settings files), then one state dict per
optimiser (`optimizer_front_sensor_a`, `optimizer_back`) and the numbers `epoch`,
`step_count`, `batch_size_a`, `batch_size_b`.

The key maps below rename the image encoder onto `ImageLatentEncoder` (models/recurrent.py)
and the decoder onto `LatentSegDecoder` (models/heads.py); the E2VID part goes through the
key map of our E2VID network, passed in by the caller. Files are read with
`torch.load(weights_only=True)`: nothing in them is executed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn

from evtransfer.models.weights import read_torch_file

StateDict = dict[str, Tensor]

# code: uzh-rpg/ess training/ess_trainer.py buildModels (models_dict names)
IMAGE_ENCODER, EVENT_ENCODER, DECODER = "front_sensor_a", "front_sensor_b", "back_end"

# (reference pattern, our replacement): StyleEncoderE2VID's encoder_scale_1 is
# [conv1, bn1, relu, layer1] of a ResNet-18 (models/style_networks.py), scales 2 and 3 are
# layer2 and layer3.
_ENCODER_RULES = (
    (r"^encoder_scale_1\.0\.weight$", "stem.0.weight"),
    (r"^encoder_scale_1\.1\.(.+)$", r"stem.1.\1"),
    (r"^encoder_scale_1\.3\.(.+)$", r"layers.0.\1"),
    (r"^encoder_scale_2\.(.+)$", r"layers.1.\1"),
    (r"^encoder_scale_3\.(.+)$", r"layers.2.\1"),
)
# SemSegE2VID(skip_connect=True): decoder_scale_1 = residual blocks (INSResBlock, convs at
# model.0 / model.3, mapped in `decoder_state`) then one ReLUINSConv2d (conv at model.0);
# scales 2-4 are ReLUINSConv2d lists; decoder_scale_5 is the 1×1 classifier.
_DECODER_RULES = (
    (r"^decoder_scale_2\.([01])\.model\.0\.(weight|bias)$", r"stage4.\1.0.\2"),
    (r"^decoder_scale_3\.([01])\.model\.0\.(weight|bias)$", r"stage2.\1.0.\2"),
    (r"^decoder_scale_4\.0\.model\.0\.(weight|bias)$", r"stage1.0.\1"),
    (r"^decoder_scale_5\.0\.(weight|bias)$", r"classifier.\1"),
)


class CheckpointLayoutError(ValueError):
    """A file that is not an ESS checkpoint of the expected architecture."""


def _rename(state: Mapping[str, Tensor], rules, path: Path | str, part: str) -> StateDict:
    """Apply `rules` to every key; a key no rule maps is refused, naming the first few."""
    out, unmapped = {}, []
    for key, value in state.items():
        for pattern, repl in rules:
            if re.match(pattern, key):
                out[re.sub(pattern, repl, key)] = value
                break
        else:
            unmapped.append(key)
    if unmapped:
        raise CheckpointLayoutError(
            f"{path}: {part} holds {len(unmapped)} tensors of another architecture that do not "
            f"map onto ours, first {unmapped[:5]} (of keys {list(state)[:5]}…)")
    return out


def image_encoder_state(state: Mapping[str, Tensor], path: Path | str = "<state>") -> StateDict:
    """ESS `front_sensor_a` (StyleEncoderE2VID) names → `ImageLatentEncoder` names."""
    return _rename(state, _ENCODER_RULES, path, IMAGE_ENCODER)


def decoder_state(state: Mapping[str, Tensor], path: Path | str = "<state>") -> StateDict:
    """ESS `back_end` (SemSegE2VID, concat skips) names → `LatentSegDecoder` names. The
    residual blocks of decoder_scale_1 are those with a second conv (model.3); the entry
    after them is the channel-halving conv."""
    n = len({m.group(1) for k in state
             if (m := re.match(r"^decoder_scale_1\.(\d+)\.model\.3\.", k))})
    blocks = "|".join(str(i) for i in range(n))
    rules = ((rf"^decoder_scale_1\.({blocks})\.model\.([03])\.(weight|bias)$",
              r"stage8.\1.body.\2.\3"),
             (rf"^decoder_scale_1\.{n}\.model\.0\.(weight|bias)$", rf"stage8.{n}.0.\1"),
             *_DECODER_RULES)
    return _rename(state, rules, path, DECODER)


@dataclass(frozen=True)
class EssCheckpoint:
    """An ESS `Epoch_N.pt` in our names: the image encoder's and the decoder's state dicts,
    the E2VID state dict as stored (`unetrecurrent.*`), and the saver's counters."""

    path: Path
    image_encoder: StateDict
    decoder: StateDict
    event_encoder: StateDict
    epoch: int
    step_count: int
    batch_size_a: int
    batch_size_b: int

    @property
    def decoder_res_blocks(self) -> int:
        """Residual blocks of the stored decoder (5 in ESS's released settings)."""
        return len({m.group(1) for k in self.decoder
                    if (m := re.match(r"^stage8\.(\d+)\.body\.", k))})

    @property
    def num_classes(self) -> int:
        """Classes of the stored decoder (11 for DSEC, 6 for DDD17)."""
        return int(self.decoder["classifier.weight"].shape[0])


def read_ess_checkpoint(path: str | Path) -> EssCheckpoint:
    """Read an ESS `Epoch_N.pt` (torch.load with weights_only=True) and rename its image
    encoder and decoder onto ours; CheckpointLayoutError names the file and what is wrong."""
    path = Path(path)
    obj = read_torch_file(path)
    needed = (IMAGE_ENCODER, EVENT_ENCODER, DECODER, "epoch", "step_count")
    if not isinstance(obj, Mapping) or any(k not in obj for k in needed):
        found = list(obj)[:10] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointLayoutError(f"{path}: not an ESS checkpoint (utils/saver.py layout "
                                    f"with {list(needed)}); found {found}")
    for name in (IMAGE_ENCODER, EVENT_ENCODER, DECODER):
        if not isinstance(obj[name], Mapping) or not all(
                isinstance(v, Tensor) for v in obj[name].values()):
            raise CheckpointLayoutError(f"{path}: entry {name!r} is not a state dict of tensors")
    return EssCheckpoint(path, image_encoder_state(obj[IMAGE_ENCODER], path),
                         decoder_state(obj[DECODER], path), dict(obj[EVENT_ENCODER]),
                         int(obj["epoch"]), int(obj["step_count"]),
                         int(obj.get("batch_size_a", 0)), int(obj.get("batch_size_b", 0)))


def load_strict(module: nn.Module, state: Mapping[str, Tensor], path: Path | str,
                part: str) -> None:
    """`module.load_state_dict(state)` strictly; any missing, unexpected or mis-shaped
    tensor is a CheckpointLayoutError naming the file, the part and the first offenders."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in own.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise CheckpointLayoutError(
            f"{path}: {part} does not fit our {type(module).__name__}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, shapes (file, ours) {shapes[:5]}")
    module.load_state_dict(state)


def load_ess_checkpoint(path: str | Path, image_encoder: nn.Module | None, decoder: nn.Module,
                        event_encoder: nn.Module | None = None,
                        event_key_map: Callable[[Mapping[str, Tensor]], StateDict] | None = None
                        ) -> EssCheckpoint:
    """Load an ESS checkpoint strictly into our networks, in place: `image_encoder`
    (ImageLatentEncoder, b = 32; None skips it, inference does not use it), `decoder`
    (LatentSegDecoder, 11 or 6 classes) and optionally `event_encoder` (our E2VID), whose
    tensors `event_key_map` renames from rpg_e2vid's `unetrecurrent.*` names (default: the
    prefix stripped). Returns the checkpoint read."""
    ckpt = read_ess_checkpoint(path)
    if image_encoder is not None:
        load_strict(image_encoder, ckpt.image_encoder, ckpt.path, IMAGE_ENCODER)
    load_strict(decoder, ckpt.decoder, ckpt.path, DECODER)
    if event_encoder is not None:
        state = (event_key_map(ckpt.event_encoder) if event_key_map is not None else
                 {k.removeprefix("unetrecurrent."): v for k, v in ckpt.event_encoder.items()})
        load_strict(event_encoder, state, ckpt.path, EVENT_ENCODER)
    return ckpt
