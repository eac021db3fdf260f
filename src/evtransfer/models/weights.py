"""Pretrained weights from local files: reading, key maps, input-channel adaptation.

Nothing here downloads. `load_pretrained(model, path)` reads a `.safetensors` file (via
safetensors) or a torch file `.pt/.pth/.bin/.ckpt` (via `torch.load(weights_only=True)`,
unwrapping a `state_dict`/`model` entry), renames keys with an optional key map, adapts input
convolutions whose channel count differs (e.g. an RGB stem loaded into a 2-channel event
model) and returns a `LoadReport` of what was loaded, missing, unexpected, adapted or
mismatched.

Key maps turn other libraries' SegFormer/MiT names into ours (`SegFormer`: `encoder.…`,
`decoder.…`; a bare `MixVisionTransformer` takes the `encoder.` part via `prefix`):
* `hf_segformer`: `transformers` (both the v4 names of published checkpoints,
  `segformer.encoder.block.0.0.attention.self.query`, and the v5 module names,
  `segformer.stages.0.blocks.0.attention.q_proj`); separate key/value projections are
  concatenated into our `kv`.
* `nvlabs_segformer`: the paper's release and the timm-style ImageNet `mit_b*.pth` files
  (`[backbone.]block1.0.attn.kv`, `decode_head.linear_c4.proj`, `linear_fuse.conv/bn`,
  `linear_pred`).
* `mmseg_mit`: mmsegmentation 1.x MiT backbones (`[backbone.]layers.0.1.0.attn.attn.
  in_proj_weight`, 1×1-conv FFN); its different SegformerHead is not mapped.
Keys a map does not recognise pass through unchanged (and are reported as unexpected).

Encoder checkpoints (`save_encoder`, `load_encoder_init`, the `encoder_init` scope) let one
method's pretrained encoder (ECDDP) initialise any other network whose encoder has the same
architecture; what loads and what does not is reported, never guessed.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

StateDict = dict[str, Tensor]
KeyMap = Callable[[Mapping[str, Tensor]], StateDict]
Shape = tuple[int, ...]

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


@dataclass(frozen=True)
class LoadReport:
    """What `load_pretrained` did: key lists, and (key, checkpoint shape, model shape) for
    input convs that were adapted and for shapes that could not be loaded."""

    path: str
    loaded: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    ignored: tuple[str, ...]
    adapted: tuple[tuple[str, Shape, Shape], ...]
    mismatched: tuple[tuple[str, Shape, Shape], ...]

    @property
    def complete(self) -> bool:
        """True when every model entry was loaded and every checkpoint entry used."""
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        """A few lines naming the file and each non-empty category (keys truncated)."""
        def names(keys: tuple[str, ...]) -> str:
            return ", ".join(keys[:8]) + (f", … ({len(keys)} in all)" if len(keys) > 8 else "")

        lines = [f"{self.path}: loaded {len(self.loaded)} tensors"]
        for label, keys in (("missing", self.missing), ("unexpected", self.unexpected),
                            ("ignored (outside prefix)", self.ignored)):
            if keys:
                lines.append(f"  {label}: {names(keys)}")
        for label, rows in (("adapted input channels", self.adapted),
                            ("shape mismatch", self.mismatched)):
            for key, src, dst in rows:
                lines.append(f"  {label}: {key} {src} -> {dst}")
        return "\n".join(lines)


def _unwrap(obj: object, path: Path) -> StateDict:
    for _ in range(3):  # e.g. {"state_dict": {...}} or {"model": {"module": {...}}}
        if not isinstance(obj, Mapping):
            break
        if obj and all(isinstance(v, Tensor) for v in obj.values()):
            return {str(k): v for k, v in obj.items()}
        inner = next((obj[k] for k in ("state_dict", "model", "module")
                      if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            bad = [k for k, v in obj.items() if not isinstance(v, Tensor)][:5]
            raise ValueError(f"{path}: not a state dict of tensors (top-level keys "
                             f"{list(obj)[:10]}; non-tensor entries {bad})")
        obj = inner
    raise ValueError(f"{path}: expected a state dict (mapping of name -> tensor), "
                     f"found {type(obj).__name__}")


def read_torch_file(path: str | Path) -> object:
    """The object a torch file holds, read on the CPU with `torch.load(weights_only=True)`
    (tensors and plain containers only). ValueError, one line naming the file, when the file
    is missing, truncated, not a torch file, or holds objects whose loading would run code."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        found = re.search(r"(?i)unsupported global:? (?:GLOBAL )?(\S+)", text)
        if found or re.search(r"(?i)\b(REDUCE|BUILD|NEWOBJ|INST|OBJ)\b", text):
            what = f" ({found.group(1)})" if found else ""
            raise ValueError(f"{path}: refused: the file holds a Python object{what} whose "
                             "loading would run code; a checkpoint holds tensors and plain "
                             "containers only") from None
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", text)
        raise ValueError(f"{path}: not a torch checkpoint (truncated or another format: "
                         f"{detail.group(1) if detail else _first_line(err)})") from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as err:
        raise ValueError(f"{path}: not a readable torch checkpoint (truncated or another "
                         f"format: {type(err).__name__} {_first_line(err)})") from None


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0][:160] if lines else "empty file"


def read_state_dict(path: str | Path) -> StateDict:
    """Read a local weights file into `{name: tensor}` on the CPU; never downloads.

    `.safetensors` via safetensors; `.pt/.pth/.bin/.ckpt` via `torch.load(weights_only=True)`,
    taking the `state_dict`, `model` or `module` entry when the tensors are nested there.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except SafetensorError as err:
            raise ValueError(f"{path}: not a valid safetensors file ({err})") from err
    if suffix in TORCH_SUFFIXES:
        return _unwrap(read_torch_file(path), path)
    raise ValueError(f"{path}: unknown weights format {suffix!r}; expected .safetensors or "
                     f"one of {', '.join(TORCH_SUFFIXES)}")


def adapt_input_conv(weight: Tensor, in_chans: int) -> Tensor:
    """Conv filters `(O, I, kh, kw)` trained on I input channels → `(O, in_chans, kh, kw)`.

    `in_chans == 1`: the sum over the I channels (a grey image, copied to the I channels,
    gives the same response). Otherwise channel j takes source channel `j mod I` and every
    filter is scaled by `I / in_chans`, so an input with all channels equal gives the same
    response exactly when `in_chans` is a multiple of I (about the same otherwise). Computed
    in at least float32, returned in the input's dtype; the input is not modified.
    """
    if weight.ndim != 4:
        raise ValueError(f"weight must be a conv weight (O, I, kh, kw), got {tuple(weight.shape)}")
    if in_chans < 1:
        raise ValueError(f"in_chans must be >= 1, got {in_chans}")
    w = weight.to(torch.promote_types(weight.dtype, torch.float32))
    src = w.shape[1]
    if in_chans == 1:
        out = w.sum(dim=1, keepdim=True)
    else:
        index = torch.arange(in_chans, device=w.device) % src
        out = w.index_select(1, index) * (src / in_chans)
    return out.to(weight.dtype)


def _adaptable(src: Tensor, dst: Tensor) -> bool:
    return (src.ndim == 4 and dst.ndim == 4 and src.shape[1] != dst.shape[1]
            and src.shape[0] == dst.shape[0] and src.shape[2:] == dst.shape[2:])


def load_pretrained(model: nn.Module, path: str | Path, key_map: str | KeyMap | None = None,
                    strict: bool = True, adapt_in_chans: bool = True, prefix: str = ""
                    ) -> LoadReport:
    """Load a local weights file into `model` in place and report what happened.

    `key_map`: a name in `KEY_MAPS` or a function `state_dict -> state_dict` applied first.
    `prefix`: keep only checkpoint keys starting with it, stripped (e.g. `"encoder."` to load
    a SegFormer checkpoint into a bare encoder); the others are reported as `ignored`.
    `adapt_in_chans`: 4-D conv weights that differ from the model's only in input channels
    are converted with `adapt_input_conv` and listed in `adapted`. `strict`: raise
    ValueError (naming the file, before touching the model) if anything is missing,
    unexpected or of the wrong shape; otherwise load what fits. BatchNorm
    `num_batches_tracked` counters are not reported missing.
    """
    mapper = _resolve(key_map) if key_map is not None else None
    path = Path(path)
    state = read_state_dict(path)
    if mapper is not None:
        state = mapper(state)
    ignored = tuple(k for k in state if not k.startswith(prefix))
    state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    target = model.state_dict()
    load: StateDict = {}
    unexpected, adapted, mismatched = [], [], []
    for key, value in state.items():
        if key not in target:
            unexpected.append(key)
        elif value.shape == target[key].shape:
            load[key] = value
        elif adapt_in_chans and _adaptable(value, target[key]):
            load[key] = adapt_input_conv(value, target[key].shape[1])
            adapted.append((key, tuple(value.shape), tuple(target[key].shape)))
        else:
            mismatched.append((key, tuple(value.shape), tuple(target[key].shape)))
    missing = tuple(k for k in target if k not in state and not k.endswith("num_batches_tracked"))
    report = LoadReport(str(path), tuple(load), missing, tuple(unexpected), ignored,
                        tuple(adapted), tuple(mismatched))
    if strict and not report.complete:
        raise ValueError(f"strict load failed:\n{report.summary()}")
    model.load_state_dict(load, strict=False)
    return report


class _Rules:
    """Ordered regex renames; a template's `{s}` is the matched stage index minus `offset`."""

    def __init__(self, rules: list[tuple[str, str]], offset: int = 0) -> None:
        self.rules = [(re.compile(p), t) for p, t in rules]
        self.offset = offset

    def __call__(self, key: str) -> str:
        for pattern, template in self.rules:
            m = pattern.match(key)
            if m:
                groups = m.groupdict()
                if "s" in groups:
                    groups["s"] = str(int(groups["s"]) - self.offset)
                return template.format(**groups) + key[m.end():]
        return key


def _block_rules(head: str, table: dict[str, str]) -> list[tuple[str, str]]:
    out = "encoder.stages.{s}.blocks.{b}."
    return [(head + re.escape(src) + r"(?=\.|$)", out + dst) for src, dst in table.items()]


def _finish(state: StateDict) -> StateDict:
    """Join `…#i` parts along dim 0 (kv from k and v; q/kv from an in-projection) and
    flatten 1×1 conv weights stored for our linear layers."""
    out: StateDict = {}
    parts: dict[str, dict[int, Tensor]] = {}
    for key, value in state.items():
        m = re.match(r"(.*)#(\d)(\..*)$", key)
        if m:
            parts.setdefault(m.group(1) + m.group(3), {})[int(m.group(2))] = value
        else:
            out[key] = value
    for key, pieces in parts.items():
        if sorted(pieces) != list(range(len(pieces))) or len(pieces) < 2:
            raise ValueError(f"checkpoint has only part of {key} (pieces {sorted(pieces)})")
        out[key] = torch.cat([pieces[i] for i in sorted(pieces)])
    linear = re.compile(r"(.*\.attn\.(q|kv|proj)|.*\.mlp\.fc[12]|decoder\.fuse)\.weight$")
    for key, value in out.items():
        if linear.match(key) and value.ndim == 4 and value.shape[2:] == (1, 1):
            out[key] = value.flatten(1)
    return out


_HF_V4 = [  # transformers' own v4 -> v5 renames (transformers conversion_mapping.py)
    (r"encoder\.patch_embeddings\.(\d+)\.", r"stages.\1.patch_embeddings."),
    (r"encoder\.block\.(\d+)\.", r"stages.\1.blocks."),
    (r"encoder\.layer_norm\.(\d+)\.", r"stages.\1.layer_norm."),
    (r"attention\.self\.query\.", "attention.q_proj."),
    (r"attention\.self\.key\.", "attention.k_proj."),
    (r"attention\.self\.value\.", "attention.v_proj."),
    (r"attention\.self\.sr\.", "attention.sequence_reduction.sequence_reduction."),
    (r"attention\.self\.layer_norm\.", "attention.sequence_reduction.layer_norm."),
    (r"attention\.output\.dense\.", "attention.o_proj."),
    (r"mlp\.dense1\.", "mlp.fc1."),
    (r"mlp\.dense2\.", "mlp.fc2."),
    (r"layer_norm_1\.", "layernorm_before."),
    (r"layer_norm_2\.", "layernorm_after."),
    (r"decode_head\.linear_c\.", "decode_head.linear_projections."),
]
_HF_STAGE = r"^(?:segformer\.)?stages\.(?P<s>\d+)\."
_HF = _Rules([
    (_HF_STAGE + r"patch_embeddings\.proj\.", "encoder.stages.{s}.patch_embed.proj."),
    (_HF_STAGE + r"patch_embeddings\.layer_norm\.", "encoder.stages.{s}.patch_embed.norm."),
    *_block_rules(_HF_STAGE + r"blocks\.(?P<b>\d+)\.", {
        "layernorm_before": "norm1", "attention.q_proj": "attn.q",
        "attention.k_proj": "attn.kv#0", "attention.v_proj": "attn.kv#1",
        "attention.o_proj": "attn.proj",
        "attention.sequence_reduction.sequence_reduction": "attn.sr",
        "attention.sequence_reduction.layer_norm": "attn.sr_norm",
        "layernorm_after": "norm2", "mlp.fc1": "mlp.fc1", "mlp.dwconv.dwconv": "mlp.dwconv",
        "mlp.fc2": "mlp.fc2"}),
    (_HF_STAGE + r"layer_norm\.", "encoder.stages.{s}.norm."),
    (r"^decode_head\.linear_projections\.(?P<s>\d+)\.proj\.", "decoder.proj.{s}."),
    (r"^decode_head\.linear_fuse\.", "decoder.fuse."),
    (r"^decode_head\.batch_norm\.", "decoder.norm."),
    (r"^decode_head\.classifier\.", "decoder.classifier."),
])

_NV = r"^(?:backbone\.)?"
_NVLABS = _Rules([
    (_NV + r"patch_embed(?P<s>\d)\.proj\.", "encoder.stages.{s}.patch_embed.proj."),
    (_NV + r"patch_embed(?P<s>\d)\.norm\.", "encoder.stages.{s}.patch_embed.norm."),
    *_block_rules(_NV + r"block(?P<s>\d)\.(?P<b>\d+)\.", {
        "norm1": "norm1", "attn.q": "attn.q", "attn.kv": "attn.kv", "attn.proj": "attn.proj",
        "attn.sr": "attn.sr", "attn.norm": "attn.sr_norm", "norm2": "norm2",
        "mlp.fc1": "mlp.fc1", "mlp.dwconv.dwconv": "mlp.dwconv", "mlp.fc2": "mlp.fc2"}),
    (_NV + r"norm(?P<s>\d)\.", "encoder.stages.{s}.norm."),
    (r"^decode_head\.linear_c(?P<s>\d)\.proj\.", "decoder.proj.{s}."),
    (r"^decode_head\.linear_fuse\.conv\.", "decoder.fuse."),
    (r"^decode_head\.linear_fuse\.bn\.", "decoder.norm."),
    (r"^decode_head\.linear_pred\.", "decoder.classifier."),
], offset=1)

_MM = r"^(?:backbone\.)?layers\.(?P<s>\d+)\."
_MMSEG = _Rules([
    (_MM + r"0\.projection\.", "encoder.stages.{s}.patch_embed.proj."),
    (_MM + r"0\.norm\.", "encoder.stages.{s}.patch_embed.norm."),
    (_MM + r"1\.(?P<b>\d+)\.attn\.attn\.in_proj_(?P<p>weight|bias)$",
     "encoder.stages.{s}.blocks.{b}.attn.in_proj#.{p}"),
    *_block_rules(_MM + r"1\.(?P<b>\d+)\.", {
        "norm1": "norm1", "attn.attn.out_proj": "attn.proj", "attn.sr": "attn.sr",
        "attn.norm": "attn.sr_norm", "norm2": "norm2", "ffn.layers.0": "mlp.fc1",
        "ffn.layers.1": "mlp.dwconv", "ffn.layers.4": "mlp.fc2"}),
    (_MM + r"2\.", "encoder.stages.{s}.norm."),
])


def _rename(state: Mapping[str, Tensor], rules: _Rules) -> StateDict:
    out: StateDict = {}
    for key, value in state.items():
        new = rules(key)
        if new in out:
            raise ValueError(f"key map sends two checkpoint keys to {new!r}")
        out[new] = value
    return out


def hf_segformer_to_evtransfer(state: Mapping[str, Tensor]) -> StateDict:
    """`transformers` Segformer{Model,ForSemanticSegmentation} names (v4 or v5) → ours."""
    v5 = {}
    for key, value in state.items():
        for pattern, repl in _HF_V4:
            key = re.sub(pattern, repl, key)
        v5[key] = value
    return _finish(_rename(v5, _HF))


def nvlabs_segformer_to_evtransfer(state: Mapping[str, Tensor]) -> StateDict:
    """The SegFormer paper's release (and timm-style `mit_b*.pth`) names → ours."""
    return _finish(_rename(state, _NVLABS))


def mmseg_mit_to_evtransfer(state: Mapping[str, Tensor]) -> StateDict:
    """mmsegmentation 1.x MiT backbone names → ours; the in-projection (3C, C) is split
    into `q` (rows [0, C)) and `kv` (rows [C, 3C)), 1×1-conv FFN weights flattened."""
    renamed = _rename(state, _MMSEG)
    out: StateDict = {}
    for key, value in renamed.items():
        m = re.match(r"(.*)\.attn\.in_proj#\.(weight|bias)$", key)
        if m:
            c = value.shape[0] // 3
            out[f"{m.group(1)}.attn.q.{m.group(2)}"] = value[:c]
            out[f"{m.group(1)}.attn.kv.{m.group(2)}"] = value[c:]
        else:
            out[key] = value
    return _finish(out)


KEY_MAPS: dict[str, KeyMap] = {
    "hf_segformer": hf_segformer_to_evtransfer,
    "nvlabs_segformer": nvlabs_segformer_to_evtransfer,
    "mmseg_mit": mmseg_mit_to_evtransfer,
}


def _resolve(key_map: str | KeyMap) -> KeyMap:
    if callable(key_map):
        return key_map
    if key_map not in KEY_MAPS:
        raise ValueError(f"unknown key_map {key_map!r}; expected a function or one of "
                         f"{sorted(KEY_MAPS)}")
    return KEY_MAPS[key_map]


def load_adapted(model: nn.Module, state_dict: Mapping[str, Tensor]) -> list[str]:
    """Load `state_dict` (e.g. another model's `state_dict()`) strictly into `model`, adapting
    every conv weight that differs only in its input channels with `adapt_input_conv` (an RGB
    or grayscale network initialising an event network). Returns the adapted keys."""
    own = model.state_dict()
    state = dict(state_dict)
    adapted = []
    for key, value in state.items():
        target = own.get(key)
        if (target is not None and value.ndim == 4 and target.ndim == 4
                and value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:]
                and value.shape[1] != target.shape[1]):
            state[key] = adapt_input_conv(value, target.shape[1])
            adapted.append(key)
    model.load_state_dict(state)
    return adapted


# --- encoder checkpoints: one method's pretrained encoder initialises another's ---------------
ENCODER_PREFIXES = ("", "encoder.", "backbone.encoder.", "backbone.", "student.backbone.",
                    "teacher.backbone.", "module.backbone.", "model.encoder.")


def save_encoder(path: str | Path, encoder: nn.Module, metadata: Mapping[str, str]) -> Path:
    """Write `encoder`'s state dict to `path` (.safetensors, atomically) with string
    `metadata` (e.g. the method and the architecture); returns the path."""
    from safetensors.torch import save_file

    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp), metadata={"format": "evtransfer-encoder", **metadata})
    tmp.replace(path)
    return path


def _best_prefix(state: Mapping[str, Tensor], target: Mapping[str, Tensor]) -> str:
    """The checkpoint prefix under which most keys match the target's names and shapes."""
    def hits(prefix: str) -> int:
        return sum(1 for k, v in state.items() if k.startswith(prefix)
                   and k[len(prefix):] in target and target[k[len(prefix):]].shape == v.shape)

    return max(ENCODER_PREFIXES, key=hits)


def load_encoder_init(model: nn.Module, path: str | Path, *, drop: tuple[str, ...] = (),
                      adapt_input_conv: bool = False) -> LoadReport:
    """Initialise the encoder of `model` (`model.encoder`, or `model` itself) from an encoder
    checkpoint (`save_encoder`, ECDDP's own `student.backbone.*` checkpoints, or any state
    dict whose names match after one of `ENCODER_PREFIXES`). Tensors whose name and shape
    match are loaded; the rest is reported, never raised. Checkpoint keys containing any
    substring in `drop` are not used (ECDDP drops its patch embedding, `keep_patch_keys:
    false`) and show up as `missing`; an input conv whose channel count differs is left at
    its initialisation (`mismatched`) unless `adapt_input_conv` converts it with
    `adapt_input_conv()`. Across architectures (a Swin checkpoint into a MiT encoder)
    nothing matches and the report's `loaded` is empty."""
    encoder = getattr(model, "encoder", model)
    if not isinstance(encoder, nn.Module):
        raise ValueError(f"{type(model).__name__} has no encoder module to initialise")
    prefix = _best_prefix(read_state_dict(path), encoder.state_dict())

    def keep(state: Mapping[str, Tensor]) -> StateDict:
        return {k: v for k, v in state.items() if not any(d in k for d in drop)}

    return load_pretrained(encoder, path, key_map=keep, strict=False,
                           adapt_in_chans=adapt_input_conv, prefix=prefix)


@dataclass
class EncoderInit:
    """An active `encoder_init` scope: the checkpoint and one (model name, report) per model
    built inside it."""

    path: Path
    reports: list[tuple[str, LoadReport]] = field(default_factory=list)


_ENCODER_INIT: ContextVar[EncoderInit | None] = ContextVar("encoder_init", default=None)


@contextmanager
def encoder_init(path: str | Path) -> Iterator[EncoderInit]:
    """Within this scope every model `create_model` builds that has an encoder
    (`feature_channels`) starts from the encoder checkpoint at `path` (`load_encoder_init`:
    every tensor whose name and shape match, so an input conv for other channels is not),
    so any method's networks (a CMESS source model, an EvDistill student) can start from an
    ECDDP pre-training without changing the method. Yields the scope, whose `reports` list
    what each model loaded."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: encoder checkpoint not found")
    read_state_dict(path)  # a bad file fails here, not inside a method
    scope = EncoderInit(path)
    token = _ENCODER_INIT.set(scope)
    try:
        yield scope
    finally:
        _ENCODER_INIT.reset(token)


def _input_conv(shapes: tuple[Shape, Shape]) -> bool:
    """Whether a (checkpoint, model) shape pair differs only in a conv's input channels."""
    src, dst = shapes
    return len(src) == len(dst) == 4 and src[0] == dst[0] and src[2:] == dst[2:]


def require_encoder_filled(report: LoadReport, what: str, drop: tuple[str, ...] = ()) -> None:
    """Raise ValueError (naming the file, `what` and the first tensors left out) unless
    `report` (of `load_encoder_init`) filled every tensor of the encoder but input convs
    built for other channels and keys containing one of `drop` (left out on purpose): a
    checkpoint of another architecture (0 tensors) or a partial one must not silently leave
    a network at its random initialisation."""
    left = [k for k in report.missing if not any(d in k for d in drop)]
    left += [k for k, *shapes in report.mismatched if not _input_conv(tuple(shapes))]
    if left:
        total = len(report.loaded) + len(left)
        why = (f"the checkpoint holds another architecture, first keys: "
               f"{', '.join(report.unexpected[:3])}" if report.unexpected
               else "the checkpoint lacks them")
        raise ValueError(f"{report.path}: {what} loads {len(report.loaded)} of the {total} "
                         f"tensors it needs; not loaded: {', '.join(left[:5])}"
                         f"{' …' if len(left) > 5 else ''} ({why})")


def apply_encoder_init(name: str, model: nn.Module) -> None:
    """Load the active `encoder_init` checkpoint into `model` if it has an encoder (called by
    `create_model`). The first model of a scope must load at least one tensor (an
    incompatible checkpoint fails before anything trains); later models without any matching
    tensor (a method's other networks) are reported and left untouched; a model that loads
    some tensors must load all its encoder needs (`require_encoder_filled`: only an input
    conv built for other channels may stay at its initialisation)."""
    scope = _ENCODER_INIT.get()
    if scope is None or not hasattr(model, "feature_channels"):
        return
    report = load_encoder_init(model, scope.path)
    if not report.loaded and not any(r.loaded for _, r in scope.reports):
        raise ValueError(f"{scope.path}: matches no tensor of {name}'s encoder (a checkpoint "
                         f"of another architecture?); nothing was trained")
    scope.reports.append((name, report))
    if report.loaded:
        require_encoder_filled(report, f"--init into {name}'s encoder")
