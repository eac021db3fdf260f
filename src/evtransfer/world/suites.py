"""World suites: the worlds where a method's defaults may be chosen, and those it is reported on.

- `suite:dev`: the only worlds whose target labels may choose a method's unpublished defaults
  (the small world, on which the first defaults were chosen, and `dev-rain`);
- `suite:report`: worlds never used for any choice, which docs and tables quote; each changes
  one way a deployment differs (event sensor, light, motion and city style) and its target
  seed (`world.domains.NAMED_WORLDS`);
- a YAML list of named worlds and built world folders (`resolve_suite`).

Every named world keeps the presets' source, so all worlds of a suite at one size share their
source data and the source-side stages trained on it. A suite is built at a size: "tiny" for
tests, "small" for real runs (`suite:report:tiny` names the size in the spec).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from evtransfer.world.build import build_world, world_yaml
from evtransfer.world.domains import NAMED_WORLDS, SUITE_SIZES, WorldConfig, named_world

ROLES = ("dev", "report")
SUITES: dict[str, tuple[str, ...]] = {
    "dev": ("small", "dev-rain"),
    "report": ("report-sensor", "report-light", "report-motion"),
}
_LIST_KEYS = ("worlds", "role", "size")


@dataclass(frozen=True)
class SuiteWorld:
    """One world of a suite: a named world (`config`, built on demand) or a built `folder`."""

    name: str
    config: WorldConfig | None = None
    folder: Path | None = None


@dataclass(frozen=True)
class Suite:
    """Worlds run together: `role` "dev" (for choosing defaults) or "report" (for quoting)."""

    name: str
    role: str
    size: str
    worlds: tuple[SuiteWorld, ...]


def is_suite_spec(spec: str) -> bool:
    """True for `suite:NAME[:SIZE]` and for a YAML file holding a list of worlds (a bare list,
    or a mapping with a `worlds` key), False for anything else (a world YAML, a folder)."""
    if spec.startswith("suite:"):
        return True
    path = Path(spec)
    if path.suffix not in (".yaml", ".yml") or not path.is_file():
        return False
    data = yaml.safe_load(path.read_text())
    return isinstance(data, list) or (isinstance(data, dict) and "worlds" in data)


def world_name(folder: Path) -> str:
    """The named world a built folder holds (its world.yaml equals that world's at a suite
    size), else the folder's name."""
    text = (folder / "world.yaml").read_text()
    for name in NAMED_WORLDS:
        if any(text == world_yaml(named_world(name, size)) for size in SUITE_SIZES):
            return name
    return folder.name


def resolve_suite(spec: str, size: str = "small") -> Suite:
    """The suite `spec` names: `suite:dev` / `suite:report` (optionally `:tiny` / `:small`,
    else `size`), or a YAML list file. The file is a list of entries or a mapping
    `{worlds: [...], role: report|dev, size: tiny|small}` (role defaults to report); an entry
    is a named world or a built world folder (relative to the file). Raises ValueError
    listing the choices for an unknown suite, size, role or entry."""
    if spec.startswith("suite:"):
        name, _, spec_size = spec[len("suite:"):].partition(":")
        if name not in SUITES:
            raise ValueError(f"unknown suite {spec!r}; choose from "
                             f"{', '.join('suite:' + s for s in SUITES)} or a YAML list of "
                             f"worlds")
        size = _size(spec_size or size, spec)
        worlds = tuple(SuiteWorld(w, config=named_world(w, size)) for w in SUITES[name])
        return Suite(spec, name, size, worlds)
    return _suite_from_list(Path(spec), size)


def _size(size: str, where: str) -> str:
    if size not in SUITE_SIZES:
        raise ValueError(f"{where}: unknown suite size {size!r}; choose from "
                         f"{', '.join(SUITE_SIZES)}")
    return size


def _suite_from_list(path: Path, size: str) -> Suite:
    if not path.is_file():
        raise ValueError(f"unknown suite {str(path)!r}: not suite:dev, suite:report or a YAML "
                         f"list file")
    data = yaml.safe_load(path.read_text())
    if isinstance(data, list):
        data = {"worlds": data}
    if not isinstance(data, dict) or not isinstance(data.get("worlds"), list):
        raise ValueError(f"{path}: a world list must be a YAML list or a mapping with a "
                         f"'worlds' list")
    unknown = sorted(set(data) - set(_LIST_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}; allowed: {', '.join(_LIST_KEYS)}")
    role, size = str(data.get("role", "report")), _size(str(data.get("size", size)), str(path))
    if role not in ROLES:
        raise ValueError(f"{path}: unknown role {role!r}; choose from {', '.join(ROLES)}")
    worlds, bad = [], []
    for entry in map(str, data["worlds"]):
        folder = Path(entry) if Path(entry).is_absolute() else path.parent / entry
        if entry in NAMED_WORLDS:
            worlds.append(SuiteWorld(entry, config=named_world(entry, size)))
        elif (folder / "world.yaml").is_file():
            worlds.append(SuiteWorld(world_name(folder), folder=folder))
        else:
            bad.append(entry)
    if bad:
        raise ValueError(f"{path}: {', '.join(map(repr, bad))} is neither a suite world "
                         f"({', '.join(NAMED_WORLDS)}) nor a built world folder (one with "
                         f"world.yaml)")
    suite = Suite(str(path), role, size, tuple(worlds))
    _check(suite)
    return suite


def _check(suite: Suite) -> None:
    """One name per world, and no dev world in a report suite (its labels may have chosen a
    default)."""
    names = [w.name for w in suite.worlds]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"{suite.name}: worlds named twice: {', '.join(twice)}")
    dev = [n for n in names if n in SUITES["dev"]]
    if suite.role == "report" and dev:
        raise ValueError(f"{suite.name}: {', '.join(dev)} is a dev world (for choosing "
                         f"defaults); a report suite cannot hold it (use role: dev)")


def build_suite(suite: Suite, root: str | Path, *, device: str = "cpu",
                progress: bool = True) -> dict[str, Path]:
    """`{name: built world folder}`: named worlds are built into `root/<name>-<size>`
    (resumable; reused when already built), folders are taken as they are."""
    root = Path(root)
    return {w.name: w.folder if w.folder is not None
            else build_world(w.config, root / f"{w.name}-{suite.size}", device=device,
                             progress=progress)
            for w in suite.worlds}
