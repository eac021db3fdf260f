"""BiCross / DPT-Hybrid checkpoints in their official layouts → our `DPTDepth` (models/dpt.py).

Three layouts (nothing here downloads; files are read with `torch.load(weights_only=True)`):

* `bicross`: what BiCross's trainers save (Theia-4869/BiCross BiCross/Trainer_*.py, read back
  by DPT/base_model.py `load`): `{"model_state_dict": …, "optimizer_*_state_dict": …}`, the
  `DPTDepthModel` names `pretrained.model.…` (timm's `vit_base_resnet50_384`),
  `pretrained.act_postprocess{3,4}.…`, `scratch.…` and `uncertaity_head.…` (sic). A spike
  model's stem conv has T = 128 input channels; build ours with `in_chans` to match.
* `dpt`: a plain state dict in the same names without the uncertainty head (isl-org/DPT's and
  MiDaS's released `dpt_hybrid-*.pt`); the uncertainty head stays as built.
* `timm`: timm's ImageNet `vit_base_resnet50_384` weights (keys `patch_embed.backbone.…`,
  `blocks.…`, `cls_token`), which BiCross's stage 0 starts from (DPT/vit.py
  `timm.create_model(..., pretrained=True)`): the encoder only.

Tensors DPT never uses are dropped by name (the ViT's final `norm`, timm's classifier `head`,
`scratch.refinenet4.resConfUnit1`); any other key that does not map is refused, naming the
first few, so a checkpoint of another architecture never half-loads.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from pathlib import Path

from torch import Tensor, nn

from evtransfer.models.weights import load_pretrained, read_torch_file

StateDict = dict[str, Tensor]

_TIMM_RULES = [  # timm vit_base_resnet50_384 name -> our ViTHybrid name
    (r"patch_embed\.backbone\.stem\.conv\.(.*)", r"stem_conv.\1"),
    (r"patch_embed\.backbone\.stem\.norm\.(.*)", r"stem_norm.\1"),
    (r"patch_embed\.backbone\.stages\.(\d+)\.blocks\.(\d+)\.downsample\.conv\.(.*)",
     r"stages.\1.\2.down.0.\3"),
    (r"patch_embed\.backbone\.stages\.(\d+)\.blocks\.(\d+)\.downsample\.norm\.(.*)",
     r"stages.\1.\2.down.1.\3"),
    (r"patch_embed\.backbone\.stages\.(\d+)\.blocks\.(\d+)\.((conv|norm)[123]\..*)",
     r"stages.\1.\2.\3"),
    (r"patch_embed\.proj\.(.*)", r"patch_proj.\1"),
    (r"(cls_token|pos_embed)", r"\1"),
    (r"blocks\.(\d+)\.(norm[12]|attn\.qkv|attn\.proj)\.(.*)", r"blocks.\1.\2.\3"),
    (r"blocks\.(\d+)\.mlp\.fc1\.(.*)", r"blocks.\1.mlp.0.\2"),
    (r"blocks\.(\d+)\.mlp\.fc2\.(.*)", r"blocks.\1.mlp.2.\2"),
]
_TIMM_UNUSED = r"(norm|head|fc_norm)\.(weight|bias)"  # the classifier DPT does not run

_DPT_RULES = [  # DPT / BiCross decoder name -> our DPTDepth name
    (r"pretrained\.act_postprocess3\.0\.project\.0\.(.*)", r"readouts.0.project.0.\1"),
    (r"pretrained\.act_postprocess4\.0\.project\.0\.(.*)", r"readouts.1.project.0.\1"),
    (r"pretrained\.act_postprocess3\.3\.(.*)", r"post3.\1"),
    (r"pretrained\.act_postprocess4\.3\.(.*)", r"post4.0.\1"),
    (r"pretrained\.act_postprocess4\.4\.(.*)", r"post4.1.\1"),
    (r"scratch\.layer([1-4])_rn\.(.*)", lambda m: f"layer_rn.{int(m[1]) - 1}.{m[2]}"),
    (r"scratch\.refinenet([1-4])\.resConfUnit1\.(.*)",
     lambda m: f"fusion.{int(m[1]) - 1}.skip_unit.{m[2]}"),
    (r"scratch\.refinenet([1-4])\.resConfUnit2\.(.*)",
     lambda m: f"fusion.{int(m[1]) - 1}.unit.{m[2]}"),
    (r"scratch\.refinenet([1-4])\.out_conv\.(.*)",
     lambda m: f"fusion.{int(m[1]) - 1}.out_conv.{m[2]}"),
    (r"scratch\.output_conv\.([024])\.(.*)", r"head.\1.\2"),
    (r"uncertaity_head\.([024])\.(.*)", r"uncertainty_head.\1.\2"),
]
_DPT_UNUSED = r"scratch\.refinenet4\.resConfUnit1\..*"  # the deepest block has no skip


def _apply(rules, key: str) -> str | None:
    for pattern, repl in rules:
        m = re.fullmatch(pattern, key)
        if m:
            return repl(m) if callable(repl) else m.expand(repl)
    return None


def _refuse(path: str, layout: str, keys: list[str], total: int) -> ValueError:
    return ValueError(f"{path}: {len(keys)} of {total} tensors of this {layout} checkpoint do "
                      f"not map onto our DPT-Hybrid (another architecture?); first: "
                      f"{', '.join(keys[:5])}")


def timm_hybrid_to_evtransfer(state: Mapping[str, Tensor], path: str = "<state>",
                              prefix: str = "encoder.") -> StateDict:
    """timm `vit_base_resnet50_384` names → ours under `prefix`; ValueError naming the first
    keys that do not map (the classifier's `norm`/`head` are dropped)."""
    out, bad = {}, []
    for key, value in state.items():
        new = _apply(_TIMM_RULES, key)
        if new is not None:
            out[prefix + new] = value
        elif not re.fullmatch(_TIMM_UNUSED, key):
            bad.append(key)
    if bad:
        raise _refuse(path, "timm", bad, len(state))
    return out


def dpt_to_evtransfer(state: Mapping[str, Tensor], path: str = "<state>") -> StateDict:
    """DPT / BiCross `DPTDepthModel` names → ours; ValueError naming the first keys that do
    not map (DPT's unused tensors are dropped)."""
    backbone = {k[len("pretrained.model."):]: v for k, v in state.items()
                if k.startswith("pretrained.model.")}
    bad = [k for k in state if not k.startswith("pretrained.model.")
           and _apply(_DPT_RULES, k) is None and not re.fullmatch(_DPT_UNUSED, k)]
    try:
        out = timm_hybrid_to_evtransfer(backbone, path)
    except ValueError:
        bad = [f"pretrained.model.{k}" for k in backbone
               if _apply(_TIMM_RULES, k) is None and not re.fullmatch(_TIMM_UNUSED, k)] + bad
        out = {}
    if bad:
        raise _refuse(path, "DPT", bad, len(state))
    for key, value in state.items():
        new = None if re.fullmatch(_DPT_UNUSED, key) else _apply(_DPT_RULES, key)
        if new is not None:
            out[new] = value
    return out


def is_released_layout(path: str | Path) -> bool:
    """Whether a weights file is in one of the three layouts above (and not in our names)."""
    try:
        obj = read_torch_file(path)
    except ValueError:
        return False
    if not isinstance(obj, Mapping):
        return False
    if isinstance(obj.get("model_state_dict"), Mapping):
        return True
    return any(str(k).startswith(("pretrained.", "scratch.", "patch_embed.backbone."))
               for k in obj)


def read_bicross_checkpoint(path: str | Path) -> tuple[str, StateDict]:
    """(layout, our-name state dict) of a BiCross / DPT / timm-hybrid file; a file that is
    not a plain weights pickle, or of another architecture, gives a one-line ValueError."""
    path = Path(path)
    obj = read_torch_file(path)
    if isinstance(obj, Mapping) and isinstance(obj.get("model_state_dict"), Mapping):
        return "bicross", dpt_to_evtransfer(obj["model_state_dict"], str(path))
    if not (isinstance(obj, Mapping) and obj and all(isinstance(v, Tensor)
                                                      for v in obj.values())):
        what = list(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
        raise ValueError(f"{path}: neither {{'model_state_dict': …}} nor a state dict of "
                         f"tensors (found {what})")
    if any(k.startswith(("pretrained.", "scratch.")) for k in obj):
        return "dpt", dpt_to_evtransfer(obj, str(path))
    return "timm", timm_hybrid_to_evtransfer(obj, str(path))


def load_bicross(model: nn.Module, path: str | Path) -> tuple[str, list[str]]:
    """Load a BiCross / DPT / timm-hybrid checkpoint into our `DPTDepth` (a hybrid) in place.
    Every tensor of the file must fit (name and shape); a `bicross` file must fill the whole
    model, a `dpt` file all but the uncertainty head, a `timm` file the whole encoder.
    Returns (layout, our keys left as built)."""
    layout, state = read_bicross_checkpoint(path)
    own = model.state_dict()
    unknown = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(v.shape)} vs ours {tuple(own[k].shape)}" for k, v in state.items()
             if k in own and v.shape != own[k].shape]
    if unknown or wrong:
        raise ValueError(f"{path}: {layout} checkpoint does not fit this model: "
                         f"{', '.join((unknown + wrong)[:5])}")
    left = [k for k in own if k not in state]
    allowed = {"bicross": (), "dpt": ("uncertainty_head.",), "timm": ("",)}[layout]
    needed = [k for k in left if not k.startswith(allowed)
              or (layout == "timm" and k.startswith("encoder."))]
    if needed:
        raise ValueError(f"{path}: {layout} checkpoint lacks {len(needed)} of the model's "
                         f"tensors; first: {', '.join(needed[:5])}")
    model.load_state_dict(state, strict=False)
    return layout, left


def load_dpt_init(model: nn.Module, path: str | Path, field: str) -> None:
    """A DPT's starting weights from `path` (the config `field` names it in messages): a file
    in one of the three layouts above (strict per layout, `load_bicross`), or a state dict in
    our names (what does not fit stays as built, with a warning; nothing fitting is an error)."""
    if is_released_layout(path):
        layout, left = load_bicross(model, path)
        if left:
            warnings.warn(f"{field} ({layout} layout) leaves {len(left)} tensors as built, "
                          f"e.g. {left[:3]}", stacklevel=2)
        return
    report = load_pretrained(model, path, strict=False)
    if not report.loaded:
        raise ValueError(f"{field}: nothing fits the model\n{report.summary()}")
    if not report.complete:
        warnings.warn(f"{field} loaded partially:\n{report.summary()}", stacklevel=2)
