"""Runs that record themselves: `--steps/--quick/--overwrite`, and `config.yaml` +
`meta.json` (command line, version, git commit, environment) written into `--out` before a
command trains."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

CONFIG_FILE, META_FILE = "config.yaml", "meta.json"


def add_budget_args(p: argparse.ArgumentParser) -> None:
    """`--steps N`, `--quick` and `--overwrite` of the training commands."""
    p.add_argument("--steps", type=int, default=None, metavar="N",
                   help="every training stage runs N iterations (a short run without editing "
                        "the YAML)")
    p.add_argument("--quick", action="store_true",
                   help="a short run: --steps 150 unless --steps is given")
    p.add_argument("--overwrite", action="store_true",
                   help="accept a config that differs from the one recorded in --out (stages "
                        "keyed by an unchanged config are reused, the others retrain)")


def budget(cfg, args: argparse.Namespace):
    """`cfg` with the command line's `--steps` / `--quick` applied to every stage."""
    from evtransfer.config import QUICK_STEPS, with_steps

    steps = args.steps if args.steps is not None else QUICK_STEPS if args.quick else None
    return cfg if steps is None else with_steps(cfg, steps)


def record_run(out: str | Path, cfg: Any, args: argparse.Namespace) -> Path:
    """Write `config.yaml` (the resolved `cfg`) and `meta.json` into `out`; an `out` that
    recorded another config is refused unless `--overwrite` (the same config resumes)."""
    import yaml

    from evtransfer.config import config_diff, to_dict

    out = Path(out)
    new = to_dict(cfg)
    old_path = out / CONFIG_FILE
    if old_path.is_file() and not getattr(args, "overwrite", False):
        try:
            old = yaml.safe_load(old_path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{old_path}: not valid YAML ({exc})") from None
        changed = config_diff(old, new) if isinstance(old, dict) else ["(everything)"]
        if changed:
            shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more"
                                              if len(changed) > 5 else "")
            raise ValueError(f"{out} holds a run with another config ({shown} differ); use a "
                             f"new --out, or --overwrite to continue it with this config")
    out.mkdir(parents=True, exist_ok=True)
    old_path.write_text(yaml.safe_dump(new, sort_keys=False), encoding="utf-8")
    meta = {**environment(args.device if hasattr(args, "device") else "cpu"),
            "command": args.command}
    (out / META_FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return out


def environment(device: str) -> dict:
    """Version, git commit, command line, time, and the torch / device / accelerator setup."""
    import importlib.util
    import platform

    import torch

    from evtransfer.config import run_metadata

    meta = run_metadata(sys.argv)
    meta.update(device=device, platform=platform.platform(), cuda=torch.version.cuda,
                gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                numba=_version("numba") if importlib.util.find_spec("numba") else None)
    return meta


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def print_config(args: argparse.Namespace) -> None:
    """The resolved config of the command (its options, for a command without a config)."""
    import yaml

    from evtransfer.config import to_dict

    if hasattr(args, "config_of"):
        data = to_dict(args.config_of(args))
    else:
        skip = {"run", "config_of", "out_kind", "print_config", "debug"}
        data = {k: v for k, v in vars(args).items() if k not in skip}
    print(yaml.safe_dump(data, sort_keys=False), end="")
