"""Argument helpers shared by the command groups: recordings, worlds, configs, checkpoints."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_out(p: argparse.ArgumentParser, kind: str, help: str, *, default: str | None = None,
            required: bool = True) -> None:
    """`-o/--out`, the same on every writing command; `kind` is "file" or "folder" and says
    how `check_out` checks it before the command runs."""
    p.add_argument("-o", "--out", required=required and default is None, default=default,
                   help=help)
    p.set_defaults(out_kind=kind)


def check_out(args: argparse.Namespace) -> None:
    """Check `args.out` as its command's kind of output (no-op for commands without one)."""
    out = getattr(args, "out", None)
    if out is not None:
        (output_dir if args.out_kind == "folder" else output_file)(out)


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_device(p: argparse.ArgumentParser) -> None:
    """`--device` (a torch device string)."""
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def add_recording_args(p: argparse.ArgumentParser, positional: str = "path") -> None:
    """A recording path plus `--format/--width/--height` reader overrides."""
    p.add_argument(positional,
                   help="recording: .raw, .dat, .bin, .aedat4, .h5, spike .dat/.npy")
    p.add_argument("--format", default=None, help="skip detection (e.g. evt3, spike-dat)")
    p.add_argument("--width", type=int, default=None, help="sensor / frame width override")
    p.add_argument("--height", type=int, default=None, help="sensor / frame height override")


def reader_options(args: argparse.Namespace) -> dict:
    """The `open_recording` keyword arguments given on the command line."""
    return {k: v for k, v in (("format", args.format), ("width", args.width),
                              ("height", args.height)) if v is not None}


def open_reader(args: argparse.Namespace):
    """The reader of `args.path` with the command line's overrides."""
    from evtransfer.io import open_recording

    return open_recording(args.path, **reader_options(args))


def add_world_args(p: argparse.ArgumentParser, world: str | None = "small",
                   config: str = "benchmark/method YAML (TransferBenchConfig)",
                   example: str = "cmess.fuse_lambda=0.7") -> None:
    """`--world/--config/--set/--out/--device` of the training commands."""
    p.add_argument("--world", default=world,
                   help="a world preset (tiny, small, full), a world YAML, or a built world folder "
                        "(not used when the config's real: section names a dataset); `bench "
                        "transfer` also takes a world suite: suite:dev, suite:report[:tiny] or a "
                        "YAML list of worlds (docs/benchmarks.md)")
    p.add_argument("--config", default=None, help=config)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override a config field, e.g. --set {example}")
    add_out(p, "folder", "output folder")
    add_device(p)


def add_checkpoint_args(p: argparse.ArgumentParser) -> None:
    """`--checkpoint` (a model package or a train folder) and `--device`."""
    p.add_argument("--checkpoint", required=True,
                   help="model package (.safetensors) or a `train` output folder holding one")
    add_device(p)


def world_config(preset: str, path: str | None, overrides: list[str]):
    """A WorldConfig from a YAML file or a preset, with --set overrides."""
    from evtransfer.config import load_config, to_dict
    from evtransfer.world.domains import WorldConfig
    from evtransfer.world.domains import preset as world_preset

    base = path if path is not None else to_dict(world_preset(preset))
    return load_config(WorldConfig, base, overrides)


def world_root(spec: str, out, device: str) -> Path:
    """A built world folder from a preset name, a world YAML, or an existing folder."""
    from evtransfer.world.build import build_world

    path = Path(spec)
    if path.is_dir():
        if not (path / "world.yaml").is_file():
            raise FileNotFoundError(f"{path} is not a built world (no world.yaml)")
        return path
    if spec.endswith((".yaml", ".yml")):
        cfg = world_config("small", spec, [])
        return build_world(cfg, Path(out) / "world", device=device)
    if path.exists() or len(path.parts) > 1:
        raise FileNotFoundError(f"{path}: no such world folder (--world takes a preset "
                                f"tiny/small/full, a world YAML or a built world folder)")
    return build_world(world_config(spec, None, []), Path(out) / f"world-{spec}",
                       device=device)


def output_file(path: str | Path) -> Path:
    """`path` checked as a file to write: not a folder, in an existing writable folder."""
    out = Path(path)
    if out.is_dir():
        raise IsADirectoryError(f"{out}: is a folder; give a file name")
    if not out.parent.exists():
        raise FileNotFoundError(f"{out}: folder {out.parent} does not exist")
    _check_writable_folder(out.parent, out)
    return out


def output_dir(path: str | Path) -> Path:
    """`path` checked as a folder to write into: a folder or absent, under a writable folder."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: exists and is not a folder")
    parent = out
    while not parent.exists():
        parent = parent.parent
    _check_writable_folder(parent, out)
    return out


def _check_writable_folder(folder: Path, out: Path) -> None:
    import os

    if not folder.is_dir():
        raise NotADirectoryError(f"{out}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"{out}: folder {folder} is not writable")


def check_device(name: str) -> None:
    """A clear error for a device string torch does not know or this machine does not have."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r}: not a torch device (cpu, cuda, cuda:1, mps)") \
            from None
    available = {"cpu": lambda: True, "cuda": torch.cuda.is_available,
                 "mps": torch.backends.mps.is_available}
    if not available.get(device.type, lambda: True)():
        raise ValueError(f"--device {name!r}: this torch build or machine has no {device.type}")
    if device.type == "cuda" and device.index is not None \
            and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name!r}: only {torch.cuda.device_count()} CUDA devices")
