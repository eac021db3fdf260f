"""Checkpoints that never execute code on load and are never half-written.

Layout of one checkpoint directory (e.g. `run/checkpoints/last/`):

- `model.safetensors`: the weights of every named module, keys `"<module>/<state_dict key>"`
  (module names use letters, digits, `_`, `-` and `.`);
- `state.pt`: everything else (optimizer, scaler, schedule position, step, epoch, RNG,
  metadata) as tensors and plain containers only, read back with `torch.load(weights_only=True)`
  so a tampered file cannot run code.

Writing is atomic. The files go to a sibling temporary directory `.<name>.tmp`, are flushed to
disk, and then swapped in with two renames: `<name>` -> `.<name>.old`, `.tmp` -> `<name>`;
finally `.old` is removed. At every instant either `<name>/` or `.<name>.old/` holds a complete
checkpoint, and `resolve_checkpoint` falls back to `.old` when a crash struck between the two
renames. A crash while writing leaves only a stale `.tmp`, which the next save discards.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

from evtransfer.engine.distributed import unwrap

FORMAT = "evtransfer.checkpoint"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "state.pt"
_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupted, foreign or does not match the modules."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def save_checkpoint(
    directory: str | Path, modules: Mapping[str, nn.Module], state: Mapping[str, Any]
) -> Path:
    """Atomically write `modules`' weights and the `state` dict to checkpoint `directory`.

    `state` must hold only tensors, numbers, strings, None and lists/tuples/dicts of them
    (anything else would not load with `weights_only=True` and is refused here). Returns the
    directory path. Only call this on the process that writes (rank 0).
    """
    final = Path(directory)
    tmp, old = _siblings(final)
    _check_plain(state, "state")
    if {"format", "version"} & set(state):
        raise ValueError("checkpoint state keys 'format' and 'version' are reserved")
    tensors = _collect_weights(modules)
    payload = {**state, "format": FORMAT, "version": FORMAT_VERSION}
    final.parent.mkdir(parents=True, exist_ok=True)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    safetensors.torch.save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT})
    torch.save(payload, tmp / STATE_FILE)
    for name in (WEIGHTS_FILE, STATE_FILE):
        _fsync(tmp / name)
    _fsync(tmp)
    if final.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync(final.parent)
    if old.exists():
        shutil.rmtree(old)
    return final


def resolve_checkpoint(directory: str | Path) -> Path:
    """The complete checkpoint for `directory`: itself, or its `.old` twin after a crash."""
    final = Path(directory)
    if (final / STATE_FILE).is_file():
        return final
    _, old = _siblings(final)
    if (old / STATE_FILE).is_file() and (old / WEIGHTS_FILE).is_file():
        return old
    raise FileNotFoundError(f"{final}: no checkpoint here (no {STATE_FILE})")


def load_checkpoint(directory: str | Path, modules: Mapping[str, nn.Module]) -> dict[str, Any]:
    """Load weights into `modules` (in place, strict) and return the checkpoint's state dict.

    Every module name must be present in the file and the file must hold no other module;
    shapes must match. The state dict is loaded on CPU with `weights_only=True`.
    """
    path = resolve_checkpoint(directory)
    state = read_state(path)
    weights = read_weights(path)
    extra = sorted(set(weights) - set(modules))
    if extra:
        raise CheckpointError(path / WEIGHTS_FILE, f"holds modules {extra} not being loaded")
    for name, module in modules.items():  # check every module before changing any
        _check_module_weights(path, name, module, weights)
    for name, module in modules.items():
        unwrap(module).load_state_dict(weights[name], strict=True)
    return state


def read_state(directory: str | Path) -> dict[str, Any]:
    """The `state.pt` dict of a checkpoint, loaded on CPU with `weights_only=True`."""
    file = resolve_checkpoint(directory) / STATE_FILE
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            file, f"refused: holds objects other than tensors and plain containers ({exc})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(file, f"corrupted or not a torch file ({exc})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(file, "not an evtransfer checkpoint (no format marker)")
    if state.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            file, f"checkpoint version {state.get('version')!r}, expected {FORMAT_VERSION}"
        )
    return state


def read_weights(directory: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """All weights of a checkpoint on CPU, grouped by module name: {module: state_dict}."""
    file = resolve_checkpoint(directory) / WEIGHTS_FILE
    if not file.is_file():
        raise CheckpointError(file, "missing weights file")
    try:
        flat = safetensors.torch.load_file(str(file), device="cpu")
    except (safetensors.SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(file, f"corrupted or not a safetensors file ({exc})") from None
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in flat.items():
        module, sep, param = key.partition("/")
        if not sep:
            raise CheckpointError(file, f"key {key!r} is not '<module>/<parameter>'")
        grouped.setdefault(module, {})[param] = tensor
    return grouped


def load_module_weights(
    directory: str | Path,
    name: str,
    module: nn.Module,
    weights: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
) -> None:
    """Load module `name`'s weights from a checkpoint into `module` (strict, in place).

    `weights` (from `read_weights`) avoids re-reading the file when loading several modules.
    """
    path = resolve_checkpoint(directory)
    weights = read_weights(path) if weights is None else weights
    _check_module_weights(path, name, module, weights)
    unwrap(module).load_state_dict(weights[name], strict=True)


def _check_module_weights(
    path: Path, name: str, module: nn.Module, weights: Mapping[str, Mapping[str, torch.Tensor]]
) -> None:
    """Raise CheckpointError unless `weights[name]` has exactly `module`'s keys and shapes."""
    if name not in weights:
        raise CheckpointError(
            path / WEIGHTS_FILE, f"no module {name!r} (it holds {sorted(weights)})"
        )
    expected = unwrap(module).state_dict()
    given = weights[name]
    missing, unexpected = sorted(set(expected) - set(given)), sorted(set(given) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            path / WEIGHTS_FILE,
            f"module {name!r}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}",
        )
    for key, tensor in given.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                path / WEIGHTS_FILE,
                f"module {name!r} key {key!r}: shape {tuple(tensor.shape)} in file, "
                f"{tuple(expected[key].shape)} in model",
            )


def _collect_weights(modules: Mapping[str, nn.Module]) -> dict[str, torch.Tensor]:
    """Flat `{"<module>/<key>": tensor}`; tensors sharing memory (tied weights) are copied."""
    flat: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for name, module in modules.items():
        if not _NAME.fullmatch(name):
            raise ValueError(f"module name {name!r} must use only letters, digits, _ - .")
        for key, tensor in unwrap(module).state_dict().items():
            if not isinstance(tensor, torch.Tensor):
                raise ValueError(f"module {name!r}: state_dict entry {key!r} is not a tensor")
            t = tensor.detach()
            storage = (t.untyped_storage().data_ptr(), t.device.index or 0)
            if storage in seen:
                t = t.clone()
            seen.add(storage)
            flat[f"{name}/{key}"] = t.contiguous().cpu()
    return flat


_PLAIN = (int, float, bool, str, type(None), torch.Tensor, torch.dtype, torch.Size)


def _check_plain(obj: Any, where: str) -> None:
    """Refuse anything `weights_only=True` loading would not accept (or would run code for)."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, int | str):
                raise ValueError(f"checkpoint {where}: key {key!r} is not a string or integer")
            _check_plain(value, f"{where}.{key}")
    elif type(obj) in (list, tuple):
        for i, value in enumerate(obj):
            _check_plain(value, f"{where}[{i}]")
    elif not isinstance(obj, _PLAIN):
        raise ValueError(
            f"checkpoint {where}: {type(obj).__name__} is not a tensor, number, string, "
            "None or a list/tuple/dict of them"
        )


def _siblings(final: Path) -> tuple[Path, Path]:
    return final.with_name(f".{final.name}.tmp"), final.with_name(f".{final.name}.old")


def _fsync(path: Path) -> None:
    """Flush a file or directory to disk (directories only where the OS allows it)."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() and hasattr(os, "O_DIRECTORY") else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
