"""The engine knows no paper: no module under src/evtransfer/engine/ imports a method, the
command line or the benchmark harness above them (read with `ast`, nothing is executed)."""

import ast
from pathlib import Path

import evtransfer

PACKAGE = Path(evtransfer.__file__).parent
# the layers above the engine (STYLE.md: cli → methods → engine)
ABOVE = ("evtransfer.methods", "evtransfer.cli", "evtransfer.bench", "evtransfer.bench_ecddp",
         "evtransfer.bench_suite", "evtransfer.demo")


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module an `import` or `from … import …` of `source` names, at any depth (inside
    functions too), relative imports resolved against `module`; a `from X import name` also
    yields `X.name`, which may be a submodule."""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = parts[:len(parts) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def reaches_above(names: set[str]) -> list[str]:
    """The names that are (or lie inside) a layer above the engine."""
    return sorted(n for n in names if any(n == a or n.startswith(a + ".") for a in ABOVE))


def test_the_walker_sees_every_form_of_a_forbidden_import():
    sources = ["import evtransfer.methods.cmess",
               "from evtransfer.methods import cmess",
               "from evtransfer import methods",
               "def f():\n    from evtransfer.cli import main\n",
               "from ..methods._stages import StageConfig",
               "from evtransfer import bench_suite"]
    for src in sources:
        assert reaches_above(imported_modules(src, "evtransfer.engine.fit")), src
    allowed = "from evtransfer.engine.loop import train\nfrom evtransfer import metrics\n"
    assert not reaches_above(imported_modules(allowed, "evtransfer.engine.fit"))


def test_the_engine_imports_no_method_and_no_command():
    files = sorted((PACKAGE / "engine").rglob("*.py"))
    assert files
    bad = {}
    for path in files:
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        is_package = rel.name == "__init__"
        module = ".".join(rel.parts[:-1] if is_package else rel.parts)
        hits = reaches_above(imported_modules(path.read_text(), module, is_package))
        if hits:
            bad[str(path.relative_to(PACKAGE))] = hits
    assert not bad, f"engine modules import layers above the engine: {bad}"
