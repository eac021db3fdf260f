"""rpg_e2vid's released checkpoints (`E2VID_lightweight.pth.tar`, `E2VID.pth.tar`) → our E2VID.

Official layout (code: uzh-rpg/rpg_e2vid utils/loading_utils.py `load_model`, the trainer's
saver): a `torch.save`d dict `{"arch": "E2VIDRecurrent", "model": <config>, "state_dict":
<tensors under "unetrecurrent.">}`; some files keep the config at `["config"]["model"]`. The
config names the architecture (model/model.py `BaseE2VID`, whose defaults apply to absent
keys): `num_bins`, `skip_type` ("sum"), `recurrent_block_type` ("convlstm"), `num_encoders`
(4), `base_num_channels` (32), `num_residual_blocks` (2), `norm` (None; "BN" or "IN"),
`use_upsample_conv` (True). E2VID_lightweight: 5 bins, sum, convlstm, 3 encoders, 32
channels, 2 residual blocks, BN, transposed-conv decoders; the older E2VID.pth.tar decodes
by upsampling and convolving. `load_e2vid` builds `models.recurrent.e2vid` from the file's
own config and loads every tensor strictly (only the prefix is stripped: our parameter names
are the code's). The file is read with `torch.load(weights_only=True)`: a pickle that would
run code is refused. Its input is one window's 5-bin voxel grid normalised by
`models.recurrent.e2vid_input_norm`; its output is an image in [0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from torch import Tensor

from evtransfer.models.recurrent import RecurrentUNet, e2vid
from evtransfer.models.weights import read_torch_file

ARCH = "E2VIDRecurrent"
PREFIX = "unetrecurrent."


def is_e2vid_layout(obj: object) -> bool:
    """True for rpg_e2vid's file layout: a dict with `arch`, a `state_dict` and a config
    (`model`, or `config.model`)."""
    if not (isinstance(obj, Mapping) and "arch" in obj
            and isinstance(obj.get("state_dict"), Mapping)):
        return False
    config = obj.get("config")
    return isinstance(obj.get("model"), Mapping) or (
        isinstance(config, Mapping) and isinstance(config.get("model"), Mapping))


def _describe(obj: object) -> str:
    if not isinstance(obj, Mapping):
        return f"a {type(obj).__name__}"
    return f"a dict with keys {list(obj)[:8]}" + (f", arch {obj['arch']!r}" if "arch" in obj
                                                  else "")


def e2vid_kwargs(config: Mapping, path: str | Path = "<config>") -> dict:
    """`models.recurrent.e2vid` keyword arguments for an rpg_e2vid model config (absent keys
    take the code's `BaseE2VID` defaults). ValueError naming `path` for a setting our network
    does not build (a ConvGRU, an unknown skip type)."""
    if "num_bins" not in config:
        raise ValueError(f"{path}: E2VID config has no 'num_bins' (keys {list(config)})")
    block = str(config.get("recurrent_block_type", "convlstm"))
    skip = str(config.get("skip_type", "sum"))
    if block != "convlstm" or skip not in ("sum", "concat"):
        raise ValueError(f"{path}: E2VID config with recurrent_block_type {block!r} and "
                         f"skip_type {skip!r}; we build 'convlstm' with 'sum' or 'concat'")
    norm = str(config.get("norm", None))  # the code: str(config['norm']), "None" = no norm
    return {"in_chans": int(config["num_bins"]), "skip": skip,
            "num_encoders": int(config.get("num_encoders", 4)),
            "base_channels": int(config.get("base_num_channels", 32)),
            "num_residual_blocks": int(config.get("num_residual_blocks", 2)),
            "norm": {"BN": "bn", "IN": "in"}.get(norm, "none"),
            "decoder": "upsample" if bool(config.get("use_upsample_conv", True))
            else "transposed"}


def e2vid_from_checkpoint(obj: Mapping, path: str | Path = "<checkpoint>") -> RecurrentUNet:
    """Our E2VID built from the config of an rpg_e2vid checkpoint object (as
    `models.weights.read_torch_file` reads it) with all its tensors loaded, in eval mode.
    ValueError naming `path` when the layout is another, the architecture is not
    `E2VIDRecurrent`, or any tensor does not map (the first few named) or is missing."""
    if not is_e2vid_layout(obj):
        raise ValueError(f"{path}: not an rpg_e2vid checkpoint ({{'arch', 'model', "
                         f"'state_dict'}} expected), found {_describe(obj)}")
    config = obj["model"] if isinstance(obj.get("model"), Mapping) else obj["config"]["model"]
    state = obj["state_dict"]
    if obj["arch"] != ARCH:
        raise ValueError(f"{path}: arch {obj['arch']!r} is not {ARCH!r}; its tensors do not "
                         f"map onto our recurrent E2VID (first: {list(state)[:4]})")
    model = e2vid(**e2vid_kwargs(config, path), final_activation="sigmoid")
    target = model.state_dict()
    mapped: dict[str, Tensor] = {}
    unmapped = []
    for key, value in state.items():
        name = key[len(PREFIX):] if key.startswith(PREFIX) else None
        if (name is None or name not in target or not isinstance(value, Tensor)
                or value.shape != target[name].shape):
            unmapped.append(key)
        else:
            mapped[name] = value
    missing = [k for k in target if k not in mapped and not k.endswith("num_batches_tracked")]
    if unmapped or missing:
        raise ValueError(f"{path}: {len(unmapped)} of {len(state)} tensors do not map onto "
                         f"E2VID {e2vid_kwargs(config, path)} (first: {unmapped[:4]}); "
                         f"{len(missing)} of the network's are missing (first: {missing[:4]})")
    for key in target:  # files saved before BatchNorm counted batches lack the counters
        mapped.setdefault(key, target[key])
    model.load_state_dict(mapped, strict=True)
    return model.eval()


def load_e2vid(path: str | Path) -> RecurrentUNet:
    """Read an rpg_e2vid `.pth.tar` (`E2VID_lightweight`, `E2VID`) and return our E2VID
    built from its config with every tensor loaded, in eval mode, on the CPU. Input: one
    window `(B, num_bins, H, W)` normalised with `e2vid_input_norm`; output `(B, 1, H, W)`
    in [0, 1] and the recurrent state."""
    return e2vid_from_checkpoint(read_torch_file(path), path)
