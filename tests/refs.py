"""The papers' public code in ../shared/refs, imported as test oracles.

Each reference repository is a folder of loose modules with generic top-level names
(`utils`, `model`, `models`, `base`, …) that collide between repositories and with installed
packages. `import_ref` imports one module with only that repository on the front of
`sys.path`, then restores `sys.path` and `sys.modules`, so references never see each other.
Tests that need a reference skip with a clear reason when ../shared/refs is absent; a
reference folder of another commit (a module or name missing) fails with the file and name.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Mapping
from pathlib import Path

import pytest

REFS = (Path(__file__).resolve().parents[1] / ".." / "shared" / "refs").resolve()


class RefMismatch(AssertionError):
    """The reference folder lacks a module or name the test was written against."""


def ref_root(repo: str) -> Path:
    """The folder of one reference repository (e.g. 'uzh-rpg+rpg_e2vid'); skips when absent."""
    root = REFS / repo
    if not root.is_dir():
        pytest.skip(f"reference code not found at {root} (../shared/refs beside the repository)")
    return root


def _provides(root: Path, name: str) -> bool:
    top = name.split(".")[0]
    return (root / top).is_dir() or (root / f"{top}.py").is_file()


def import_ref(repo: str, module: str, *, stubs: Mapping[str, types.ModuleType] = {},
               extra_paths: tuple[str, ...] = ()) -> types.ModuleType:
    """Import `module` (dotted, relative to the repository root or to one of `extra_paths`,
    sub-folders of it) from reference `repo`, with `stubs` standing in for packages that do
    not load here (timm, mmcv, torchvision): the test that passes them says which."""
    root = ref_root(repo)
    roots = [root / p for p in extra_paths] + [root]
    rel = Path(*module.split("."))
    if not any((r / rel).with_suffix(".py").is_file() or (r / rel / "__init__.py").is_file()
               for r in roots):
        raise RefMismatch(f"{root / rel}.py: module {module!r} is missing from reference {repo} "
                          "(another commit of the reference code?)")
    saved_modules, saved_path = dict(sys.modules), list(sys.path)
    for name in list(sys.modules):
        if any(_provides(r, name) for r in roots):
            del sys.modules[name]
    sys.path[:0] = [str(r) for r in roots]
    sys.modules.update(stubs)
    try:
        return importlib.import_module(module)
    finally:
        # drop the reference's own modules and the stubs; keep third-party packages the
        # reference imported (numpy's C extensions cannot be loaded twice in one process)
        for name in list(sys.modules):
            if name not in saved_modules and (name in stubs or any(_provides(r, name)
                                                                   for r in roots)):
                del sys.modules[name]
        sys.modules.update(saved_modules)
        sys.path[:] = saved_path


def ref_attr(module: types.ModuleType, name: str):
    """`module.name`, or a RefMismatch naming the reference file and the missing name."""
    try:
        return getattr(module, name)
    except AttributeError:
        raise RefMismatch(f"{module.__file__}: reference has no {name!r} "
                          "(another commit of the reference code?)") from None


def stub_module(name: str, **attrs) -> types.ModuleType:
    """A module named `name` holding `attrs`: a stand-in for a package that does not load here."""
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module
