"""`evtransfer demo|train|bench|evdistill|pretrain|finetune`: the commands that train."""

from __future__ import annotations

from evtransfer.cli._args import add_device, add_out, add_world_args, positive_int, world_root
from evtransfer.cli._record import add_budget_args, budget, record_run


def add(sub) -> None:
    """Register the training commands but `demo`."""
    _add_train(sub)
    _add_bench(sub)
    _add_evdistill(sub)
    _add_pretrain(sub)
    _add_finetune(sub)


def add_demo(sub) -> None:
    """Register `demo`."""
    p = sub.add_parser("demo", help="run the end-to-end demo and write a report to --out")
    add_out(p, "folder", "output folder (default: ./demo_out)", default="demo_out")
    p.add_argument("--world", default=None, help="world folder (default: OUT/world)")
    p.add_argument("--preset", default="small", choices=("tiny", "small", "full"),
                   help="world preset built when the folder is empty (default: small)")
    add_budget_args(p)
    add_device(p)
    p.set_defaults(run=_run_demo, config_of=_demo_config)


def _demo_config(args):
    from evtransfer.demo import demo_config, demo_steps

    return demo_config(demo_steps(args.quick, args.steps))


def _run_demo(args) -> int:
    from evtransfer.demo import run_demo

    record_run(args.out, _demo_config(args), args)
    run_demo(args.out, quick=args.quick, device=args.device, world=args.world,
             world_preset=args.preset, steps=args.steps)
    return 0


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train one transfer method on a world or a real scenario "
                       "(the config's real: section) (resumable)")
    p.add_argument("method", metavar="METHOD",
                   help="a transfer method, e.g. cmess (a wrong name lists them all)")
    p.add_argument("--seed", type=int, default=0, help="the one seed to run (default 0)")
    p.add_argument("--init", default=None, metavar="PATH",
                   help="encoder checkpoint (e.g. from `evtransfer pretrain ecddp`) that every "
                        "network with a matching encoder starts from")
    add_world_args(p)
    add_budget_args(p)
    p.set_defaults(run=_run_train_init, config_of=_bench_config)


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    t = kinds.add_parser("transfer", help="methods × seeds on a world: results.json/.md")
    t.add_argument("--task", default="segmentation", choices=("segmentation", "depth"),
                   help="segmentation (events) or depth (spike camera, BiCross)")
    t.add_argument("--methods", default=None,
                   help="comma-separated method names (default: source_only,recon_source,cmess,"
                        "oracle; with --task depth: pre_src,bicross,spike_supervised)")
    t.add_argument("--seeds", type=positive_int, default=3, metavar="N",
                   help="run seeds 0..N-1 (default 3; `train --seed S` runs seed S alone)")
    add_world_args(t)
    t.add_argument("--worlds-dir", default=None, help="with a world suite: where its named "
                   "worlds are built (default OUT/worlds; share it between suites)")
    t.add_argument("--source-dir", default=None, help="with a world suite: the source-side "
                   "stage cache (default OUT/source; share it between suites of one size)")
    add_budget_args(t)
    t.set_defaults(run=_run_bench_transfer, config_of=_bench_config)


def _bench_config(args):
    from evtransfer.bench import TransferBenchConfig
    from evtransfer.config import load_config

    return budget(load_config(TransferBenchConfig, args.config, args.set), args)


def _run_train(args) -> int:
    from evtransfer.bench import run_depth_transfer, run_transfer
    from evtransfer.methods import DEPTH_METHODS

    cfg = _bench_config(args)
    record_run(args.out, cfg, args)
    depth = args.method in DEPTH_METHODS
    real = bool(cfg.depth_real.source if depth else cfg.real.target)  # needs no world
    world = None if real else world_root(args.world, args.out, args.device)
    run = run_depth_transfer if depth else run_transfer
    summary, runs = run(world, [args.method], [args.seed], args.out, cfg, device=args.device)
    r = summary["methods"][args.method]
    scores = (f"AbsRel {r['abs_rel_mean']:.3f}, RMSE {r['rmse_mean']:.3f}, δ1 {r['d1_mean']:.3f}"
              if depth else f"mIoU {r['miou_mean']:.2f}, acc {r['acc_mean']:.2f}")
    print(f"{args.method}: {scores} (results in {args.out})")
    _print_package(runs[0])
    return 0


def _print_package(run) -> None:
    if run.package is not None:
        print(f"model package: {run.package} (use with `evtransfer predict|evaluate|export "
              f"--checkpoint`)")
    else:
        print(f"no model package: {run.method} predicts with more than one network")


def _run_bench_transfer(args) -> int:
    from evtransfer.bench import markdown, markdown_depth, run_depth_transfer, run_transfer
    from evtransfer.bench_suite import run_transfer_suite, suite_markdown
    from evtransfer.world.suites import is_suite_spec

    depth = args.task == "depth"
    default = ("pre_src,bicross,spike_supervised" if depth
               else "source_only,recon_source,cmess,oracle")
    methods = [m.strip() for m in (args.methods or default).split(",") if m.strip()]
    cfg = _bench_config(args)
    record_run(args.out, cfg, args)
    if args.world and is_suite_spec(args.world):
        if depth:
            raise ValueError("world suites run the segmentation table; give one world for "
                             "--task depth")
        result = run_transfer_suite(args.world, methods, list(range(args.seeds)), args.out, cfg,
                                    worlds_dir=args.worlds_dir, source_dir=args.source_dir,
                                    device=args.device)
        print(suite_markdown(result))
        return 0
    real = bool(cfg.depth_real.source if depth else cfg.real.target)  # needs no world
    world = None if real else world_root(args.world, args.out, args.device)
    run = run_depth_transfer if depth else run_transfer
    summary, _ = run(world, methods, list(range(args.seeds)), args.out, cfg, device=args.device)
    print((markdown_depth if depth else markdown)(summary))
    return 0


def _run_train_init(args) -> int:
    """`train`, inside an `encoder_init` scope when --init is given (a separate --out per
    init: cached stages do not know which init trained them)."""
    from evtransfer.methods import METHODS

    if args.method not in METHODS:
        names = ", ".join(sorted(METHODS))
        raise ValueError(f"unknown method {args.method!r}; choose from {names}")
    if args.init is None:
        return _run_train(args)
    import json
    from pathlib import Path

    from evtransfer.models.weights import encoder_init

    marker, init = Path(args.out) / "init.json", str(Path(args.init).resolve())
    if marker.exists() and json.loads(marker.read_text())["init"] != init:
        raise ValueError(f"{args.out} was trained from another --init; use a new --out")
    if not marker.exists() and (Path(args.out) / "work").exists():
        raise ValueError(f"{args.out} holds stages trained without --init; use a new --out")
    with encoder_init(args.init) as scope:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"init": init}))
        code = _run_train(args)
    for name, report in scope.reports:
        print(f"--init into {name}: {len(report.loaded)} tensors loaded, "
              f"{len(report.mismatched)} shape mismatches, {len(report.missing)} left at init")
    return code


def _add_evdistill(sub) -> None:
    p = sub.add_parser("evdistill", help="EvDistill beyond the world table: segmentation on "
                       "EvDistill-layout data (DDD17, MVSEC), recognition (world, N-Caltech101)")
    p.add_argument("task", choices=("segment", "recognize"))
    p.add_argument("--config", required=True,
                   help="RealSegmentationRun (segment) or RecognitionRun (recognize) YAML")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set method.losses.bmr=false")
    add_out(p, "folder", "output folder (results.json, work/)")
    add_device(p)
    add_budget_args(p)
    p.set_defaults(run=_run_evdistill, config_of=_evdistill_config)


def _evdistill_config(args):
    from evtransfer.config import load_config
    from evtransfer.methods import evdistill

    cls = evdistill.RealSegmentationRun if args.task == "segment" else evdistill.RecognitionRun
    return budget(load_config(cls, args.config, args.set), args)


def _run_evdistill(args) -> int:
    import json
    from dataclasses import replace

    from evtransfer.methods import evdistill

    cfg = _evdistill_config(args)
    record_run(args.out, cfg, args)
    if args.task == "segment":
        summary = evdistill.run_real_segmentation(cfg, args.out, device=args.device)
    else:
        if cfg.dataset == "world":
            cfg = replace(cfg, world=str(world_root(cfg.world or "small", args.out,
                                                     args.device)))
        summary = evdistill.run_recognition(cfg, args.out, device=args.device)
    print(json.dumps(summary))
    return 0


def _add_ecddp_args(p) -> None:
    p.add_argument("method", choices=("ecddp",))
    add_world_args(p, world=None, config="ECDDP YAML (bench_ecddp.EcddpStudyConfig)",
                   example="ecddp.pretrain.epochs=50")
    add_budget_args(p)


def _add_pretrain(sub) -> None:
    p = sub.add_parser("pretrain", help="self-supervised pre-training of an event encoder "
                       "(resumable; reports samples/s and peak memory)")
    _add_ecddp_args(p)
    p.add_argument("--recording", action="append", default=[], metavar="PATH",
                   help="also pre-train on a real recording (DSEC h5, AEDAT4, EVT .raw, ...)")
    p.add_argument("--seed", type=int, default=0, help="the one seed to run (default 0)")
    p.set_defaults(run=_run_pretrain, config_of=_ecddp_config)


def _ecddp_config(args):
    from evtransfer.bench_ecddp import EcddpStudyConfig
    from evtransfer.config import load_config

    return budget(load_config(EcddpStudyConfig, args.config, args.set), args)


def _run_pretrain(args) -> int:
    import json
    from dataclasses import replace
    from pathlib import Path

    from evtransfer.data.pretrain_events import load_pretrain_windows
    from evtransfer.methods.ecddp import pretrain_ecddp

    study = _ecddp_config(args)
    record_run(args.out, study, args)
    cfg = study.ecddp.pretrain
    data = replace(cfg.data, recordings=cfg.data.recordings + tuple(args.recording))
    world = None
    if args.world is not None:
        world = world_root(args.world, args.out, args.device)
    elif not data.recordings:
        raise ValueError("pretrain: give --world and/or --recording")
    else:
        data = replace(data, source=False, target=False)
    groups = load_pretrain_windows(world, data, cache_dir=Path(args.out) / "cache")
    summary = pretrain_ecddp(groups, replace(cfg, data=data), Path(args.out) / "work",
                             seed=args.seed, device=args.device)
    (Path(args.out) / "pretrain.json").write_text(json.dumps(summary, indent=1))
    print(f"encoder: {summary['encoder']}\n{summary['steps']} steps, "
          f"{summary['samples_per_s']:.1f} samples/s, peak memory "
          f"{summary['peak_memory_mb']:.0f} MB ({summary['memory_kind']})")
    return 0


def _add_finetune(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune encoder initialisations on the world's "
                       "segmentation, flow and depth with few labels: results.json/.md")
    _add_ecddp_args(p)
    p.add_argument("--seeds", type=positive_int, default=3, metavar="N",
                   help="run seeds 0..N-1 (default 3; `train --seed S` runs seed S alone)")
    p.add_argument("--real", default=None, metavar="YAML",
                   help="a RealFinetuneConfig (DSEC, DDD17 or MVSEC; --set applies to it): "
                        "one fine-tuning on a real benchmark instead of the world study")
    p.set_defaults(run=_run_finetune, config_of=_finetune_config)


def _finetune_config(args):
    from evtransfer.bench_ecddp import RealFinetuneConfig
    from evtransfer.config import load_config

    if args.real is None:
        return _ecddp_config(args)
    return budget(load_config(RealFinetuneConfig, args.real, args.set), args)


def _run_finetune(args) -> int:
    from evtransfer.bench_ecddp import markdown, run_ecddp_study

    cfg = _finetune_config(args)
    record_run(args.out, cfg, args)
    if args.real is not None:
        import json

        from evtransfer.bench_ecddp import run_real_finetune

        print(json.dumps(run_real_finetune(cfg, args.out, device=args.device), default=str))
        return 0
    world = world_root(args.world or "small", args.out, args.device)
    summary = run_ecddp_study(world, cfg, args.out, list(range(args.seeds)), device=args.device)
    print(markdown(summary["table"]))
    return 0
