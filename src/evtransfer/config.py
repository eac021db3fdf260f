"""YAML configs mapped one-to-one onto nested dataclasses, with `--set a.b=value` overrides.

Types come from the dataclass annotations: int, float, bool, str, Path, Optional/`X | None`,
`list[X]`, `tuple[X, ...]`, `tuple[X, Y]`, `dict[str, X]`, `Literal[...]`, nested dataclasses
and `Any`. Values are checked and coerced where no information is lost (an int for a float,
YAML's `1e-4` string for a float, a list for a tuple); unknown keys and wrong types raise
`ConfigError` naming the dotted key and the file. `save_resolved` writes the final config and
a `meta.json` (package version, git SHA, command line, time) into the run directory.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import subprocess
import sys
import time
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value or key that does not fit the dataclass; names the key and its source."""


def load_config(
    cls: type[T],
    source: str | Path | Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
) -> T:
    """Build dataclass `cls` from a YAML file (or a mapping, or defaults) plus `overrides`.

    `overrides` are `"dotted.key=value"` strings; the value is parsed with `yaml.safe_load`
    (so `true`, `3`, `[1, 2]` and `null` work). Missing keys take the dataclass defaults; a
    field without a default must be given.
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"load_config needs a dataclass type, got {cls!r}")
    where = "<defaults>"
    data: dict[str, Any] = {}
    if isinstance(source, str | Path):
        where = str(source)
        data = _read_yaml(Path(source))
    elif isinstance(source, Mapping):
        where = "<dict>"
        data = _deep_copy_mapping(source)
    elif source is not None:
        raise TypeError(f"config source must be a path, a mapping or None, got {type(source)}")
    for item in overrides:
        _apply_override(cls, data, item)
    return _build(cls, data, "", where)


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split `"a.b.c=value"` into `(["a", "b", "c"], yaml.safe_load("value"))`."""
    key, sep, raw = item.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. optim.lr=1e-4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: value is not valid YAML ({exc})") from None
    return parts, value


QUICK_STEPS = 150  # unpublished: our choice (`--quick`: about 2 minutes of the demo on a CPU)


def with_steps(cfg: T, steps: int) -> T:
    """`cfg` with every training budget set to `steps` iterations: each nested dataclass's
    `steps` and `max_steps` (a `steps` of 0 means "skip" and stays 0); a `warmup_steps` keeps
    its share of the `steps` beside it, else is clipped to the budget. For short runs
    (`--steps`, `--quick`)."""
    if steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {steps}")
    if not (dataclasses.is_dataclass(cfg) and not isinstance(cfg, type)):
        return cfg
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name == "steps" and isinstance(value, int) and value > 0:
            changes[f.name] = steps
        elif f.name == "max_steps" and isinstance(value, int):
            changes[f.name] = steps
        elif f.name == "warmup_steps" and isinstance(value, int):
            own = getattr(cfg, "steps", 0)  # the same share of a budget beside it
            share = round(value * steps / own) if isinstance(own, int) and own > 0 else value
            changes[f.name] = min(share, steps)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            changes[f.name] = with_steps(value, steps)
        elif isinstance(value, dict) and any(dataclasses.is_dataclass(v) for v in value.values()):
            changes[f.name] = {k: with_steps(v, steps) for k, v in value.items()}
    return dataclasses.replace(cfg, **changes) if changes else cfg


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two `to_dict` configs."""
    keys = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            keys += config_diff(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys


def to_dict(cfg: Any) -> Any:
    """A dataclass config as plain YAML/JSON-ready data (tuples become lists, Paths strings)."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, Mapping):
        return {str(k): to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, list | tuple):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def run_metadata(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Package version, git SHA (None outside a git checkout), command line, time, versions."""
    import torch

    from evtransfer import __version__

    return {
        "package": "evtransfer",
        "version": __version__,
        "git_sha": git_sha(),
        "argv": list(sys.argv if argv is None else argv),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
    }


def save_resolved(cfg: Any, run_dir: str | Path, argv: Sequence[str] | None = None) -> Path:
    """Write `config.yaml` (the resolved config) and `meta.json` into `run_dir`; return it.

    Call on rank 0 only (`evtransfer.engine.is_main()`).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    (run_dir / "config.yaml").write_text(text, encoding="utf-8")
    meta = json.dumps(run_metadata(argv), indent=2)
    (run_dir / "meta.json").write_text(meta + "\n", encoding="utf-8")
    return run_dir


@functools.cache
def git_sha() -> str | None:
    """The HEAD commit of the git checkout holding this package, or None (cached)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha or None


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def _deep_copy_mapping(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy_mapping(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def _apply_override(cls: type, data: dict[str, Any], item: str) -> None:
    """Set `data[a][b] = value` for `a.b=value`, checking each key against the dataclass."""
    parts, value = parse_override(item)
    node, tp = data, cls
    for i, part in enumerate(parts):
        dotted = ".".join(parts[: i + 1])
        if dataclasses.is_dataclass(tp):
            hints = _hints(tp)
            if part not in hints:
                raise ConfigError(f"--set {item!r}: unknown key {dotted!r}; "
                                  f"{_nearby(part, hints, '.'.join(parts[:i]))}")
            tp = _strip_optional(hints[part])
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1] if typing.get_args(tp) else Any
        else:
            raise ConfigError(f"--set {item!r}: {'.'.join(parts[:i])!r} has no sub-keys")
        if i == len(parts) - 1:
            node[part] = value
        else:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child


def _nearby(key: str, valid: Mapping[str, Any], parent: str) -> str:
    """"did you mean …" for the closest valid keys, and the valid keys at that level."""
    import difflib

    where = f"{parent}." if parent else ""
    close = difflib.get_close_matches(key, list(valid), n=3, cutoff=0.6)
    names = sorted(valid)
    shown = ", ".join(names[:12]) + (f", … ({len(names)} in all)" if len(names) > 12 else "")
    guess = f"did you mean {' or '.join(repr(where + c) for c in close)}? " if close else ""
    return f"{guess}valid keys {'under ' + repr(parent) if parent else 'at the top'}: {shown}"


def _hints(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _strip_optional(tp: Any) -> Any:
    if _is_union(tp):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _build(cls: type, data: Any, prefix: str, where: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: {prefix or 'config'} must be a mapping, got {data!r}")
    hints = _hints(cls)
    for key in data:
        if key not in hints:
            raise ConfigError(f"{where}: unknown key {prefix + str(key)!r}; "
                              f"{_nearby(str(key), hints, prefix.rstrip('.'))}")
    kwargs = {}
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        key = prefix + field.name
        if field.name in data:
            kwargs[field.name] = _coerce(hints[field.name], data[field.name], key, where)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            if dataclasses.is_dataclass(hints[field.name]):
                kwargs[field.name] = _build(hints[field.name], {}, key + ".", where)
            else:
                raise ConfigError(f"{where}: missing required key {key!r}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {prefix.rstrip('.') or cls.__name__}: {exc}") from None


def _coerce(tp: Any, value: Any, key: str, where: str) -> Any:
    """`value` checked against annotation `tp` and converted where lossless."""

    def fail(expected: str) -> ConfigError:
        return ConfigError(f"{where}: {key!r} must be {expected}, got {value!r}")

    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".", where)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if _is_union(tp):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, key, where)
            except ConfigError:
                continue
        raise fail(" or ".join(_type_name(a) for a in args))
    if origin is Literal:
        if value in args and all(type(value) is type(a) for a in args if a == value):
            return value
        raise fail(f"one of {list(args)}")
    if origin in (list, tuple, dict):
        return _coerce_container(tp, origin, args, value, key, where, fail)
    return _coerce_scalar(tp, value, key, fail)


def _coerce_container(tp, origin, args, value, key, where, fail) -> Any:
    if origin is dict:
        if not isinstance(value, Mapping):
            raise fail("a mapping")
        vt = args[1] if args else Any
        return {k: _coerce(vt, v, f"{key}.{k}", where) for k, v in value.items()}
    if not isinstance(value, list | tuple):
        raise fail(f"a list ({_type_name(tp)})")
    if origin is list:
        item = args[0] if args else Any
        return [_coerce(item, v, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_coerce(args[0], v, f"{key}[{i}]", where) for i, v in enumerate(value))
    if args and len(args) != len(value):
        raise fail(f"a list of {len(args)} items")
    items = args or (Any,) * len(value)
    pairs = enumerate(zip(items, value, strict=True))
    return tuple(_coerce(t, v, f"{key}[{i}]", where) for i, (t, v) in pairs)


def _coerce_scalar(tp: Any, value: Any, key: str, fail) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise fail("true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise fail("an integer")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise fail("a number") from None
        raise fail("a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise fail("a string")
    if tp is Path:
        if isinstance(value, str | Path):
            return Path(value)
        raise fail("a path string")
    raise TypeError(f"config key {key!r}: unsupported annotation {_type_name(tp)}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
