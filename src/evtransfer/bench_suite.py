"""The transfer benchmark over a world suite: one table per world, the mean over the worlds,
and the share of the source-only → oracle gap each method closes.

`run_transfer_suite` builds the suite's worlds (`world.suites`), runs `bench.run_transfer`
(every method × seed) on each into `out/runs/<world>/`, and writes `out/results.json` and
`out/results.md`. The source-side stages (M_S, M_T′, the reconstruction network) depend on the
source alone, which every world of a suite shares: they are cached once per seed in
`out/source/` (`StageConfig.source_cache`) and reused for every target world.

A method config may record in `defaults_chosen_on` the worlds whose target labels chose its
unpublished defaults; a report suite refuses to run such a method on those worlds.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from evtransfer.bench import TransferBenchConfig, gap_closed, method_config, run_transfer
from evtransfer.config import save_resolved
from evtransfer.methods import DEPTH_METHODS, METHODS
from evtransfer.world.suites import Suite, build_suite, resolve_suite


def defaults_provenance(cfg: TransferBenchConfig, methods: list[str]) -> dict[str, list[str]]:
    """`{method: worlds whose labels chose its unpublished defaults}` ([] when none recorded)."""
    return {m: list(getattr(method_config(cfg, m), "defaults_chosen_on", [])) for m in methods}


def check_provenance(suite: Suite, methods: list[str], cfg: TransferBenchConfig) -> None:
    """Refuse (ValueError naming the method, the field and the world) to report a method on a
    world that chose one of its defaults; dev suites, which are for choosing, pass."""
    if suite.role != "report":
        return
    names = {w.name for w in suite.worlds}
    for method, chosen in defaults_provenance(cfg, methods).items():
        tainted = [w for w in chosen if w in names]
        if tainted:
            raise ValueError(
                f"{method}: its config's defaults_chosen_on names {', '.join(tainted)}, so its "
                f"defaults were chosen on that world's labels; report suite {suite.name} cannot "
                f"report on it (choose defaults on dev worlds only)")


def _share(value: float) -> float | None:
    return None if math.isnan(value) else value


def world_table(summary: dict) -> dict[str, dict]:
    """Per method of one world's `bench.summarize` output: mIoU mean, std and per seed,
    accuracy, and the share of the gap closed (None without source_only and oracle, or
    with no gap)."""
    return {name: {"miou_mean": r["miou_mean"], "miou_std": r["miou_std"], "miou": r["miou"],
                   "acc_mean": r["acc_mean"], "gap_closed": _share(gap_closed(summary, name))}
            for name, r in summary["methods"].items()}


def mean_table(tables: dict[str, dict[str, dict]]) -> dict[str, dict]:
    """Per method over the worlds: mean mIoU, the gap closed by the mean (from the worlds'
    mean mIoUs), the mean of the worlds' gap shares, and on how many worlds its mean mIoU is
    at or above source_only's (shares are None where a world lacks source_only or oracle)."""
    methods = list(next(iter(tables.values())))
    miou = {m: float(np.mean([t[m]["miou_mean"] for t in tables.values()])) for m in methods}
    base, gap = miou.get("source_only", math.nan), miou.get("oracle", math.nan)
    gap -= base
    out = {}
    for m in methods:
        shares = [t[m]["gap_closed"] for t in tables.values()]
        above = [t[m]["miou_mean"] >= t["source_only"]["miou_mean"]
                 for t in tables.values() if "source_only" in t]
        out[m] = {"miou_mean": miou[m],
                  "gap_closed": _share((miou[m] - base) / gap) if gap else None,
                  "gap_closed_mean": None if None in shares else float(np.mean(shares)),
                  "at_or_above_source_only": f"{sum(above)}/{len(above)}" if above else "",
                  "miou_per_world": {w: t[m]["miou_mean"] for w, t in tables.items()}}
    return out


def _pct(share: float | None) -> str:
    return "—" if share is None else f"{100 * share:.0f} %"


def suite_markdown(result: dict) -> str:
    """One table per world, then the mean over the worlds."""
    role = {"dev": "dev worlds: for choosing defaults, not for reporting",
            "report": "report worlds: never used for any choice"}[result["role"]]
    lines = [f"# {result['suite']} ({role}; size {result['size']}; seeds "
             f"{', '.join(map(str, result['seeds']))})", ""]
    for world, info in result["worlds"].items():
        lines += [f"## {world}", "", f"`{info['path']}`", "",
                  "| method | mIoU (mean ± std) | per seed | acc | gap closed |",
                  "|---|---|---|---|---|"]
        for name, r in info["table"].items():
            seeds = ", ".join(f"{v:.2f}" for v in r["miou"])
            lines.append(f"| {name} | {r['miou_mean']:.2f} ± {r['miou_std']:.2f} | {seeds} | "
                         f"{r['acc_mean']:.2f} | {_pct(r['gap_closed'])} |")
        lines.append("")
    lines += [f"## mean over {len(result['worlds'])} worlds", "",
              "| method | mIoU | gap closed (of the mean) | mean of the worlds' gap closed "
              "| ≥ source_only on |", "|---|---|---|---|---|"]
    for name, r in result["mean"].items():
        lines.append(f"| {name} | {r['miou_mean']:.2f} | {_pct(r['gap_closed'])} | "
                     f"{_pct(r['gap_closed_mean'])} | {r['at_or_above_source_only']} |")
    chosen = [f"{m}: {', '.join(w)}" for m, w in result["defaults_chosen_on"].items() if w]
    lines += ["", "Defaults chosen on: " + ("; ".join(chosen) if chosen else "none recorded")]
    return "\n".join(lines) + "\n"


def run_transfer_suite(spec: str, methods: list[str], seeds: list[int], out: str | Path,
                       cfg: TransferBenchConfig, *, size: str = "small",
                       worlds_dir: str | Path | None = None,
                       source_dir: str | Path | None = None, device: str = "cpu",
                       progress: bool = True) -> dict:
    """The transfer table on every world of the suite `spec` (`world.suites.resolve_suite`:
    `suite:dev`, `suite:report`, or a YAML list; `size` unless the spec names one). Named
    worlds are built into `worlds_dir` (default `out/worlds`), the source-side stages cached
    in `source_dir` (default `out/source`; suites of one source and size may share it).
    Writes `out/results.json` and `out/results.md`; returns the results dict."""
    if cfg.real.target:
        raise ValueError(f"a world suite runs on worlds, but the config's real.target is "
                         f"{cfg.real.target!r}; leave it empty")
    choices = [m for m in METHODS if m not in DEPTH_METHODS]
    unknown = [m for m in methods if m not in choices]
    if unknown:
        raise ValueError(f"not segmentation methods: {', '.join(unknown)}; available: "
                         f"{', '.join(choices)}")
    suite = resolve_suite(spec, size)
    check_provenance(suite, methods, cfg)
    out = Path(out)
    folders = build_suite(suite, worlds_dir or out / "worlds", device=device, progress=progress)
    shared = replace(cfg, stages=replace(cfg.stages,
                                         source_cache=str(source_dir or out / "source")))
    worlds = {}
    for name, folder in folders.items():
        if progress:
            print(f"== world {name} ({folder})")
        summary, _ = run_transfer(folder, methods, seeds, out / "runs" / name, shared,
                                  device=device, progress=progress)
        worlds[name] = {"path": str(folder), "table": world_table(summary)}
    result = {"suite": suite.name, "role": suite.role, "size": suite.size, "seeds": seeds,
              "methods": methods, "worlds": worlds,
              "mean": mean_table({w: v["table"] for w, v in worlds.items()}),
              "defaults_chosen_on": defaults_provenance(cfg, methods),
              "gap_closed": "(method - source_only) / (oracle - source_only), mIoU"}
    save_resolved(cfg, out)  # the config as given: the CLI's run record compares with it
    (out / "results.json").write_text(json.dumps(result, indent=1))
    (out / "results.md").write_text(suite_markdown(result))
    return result
