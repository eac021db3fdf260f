"""`evtransfer predict|evaluate|export`: use a trained model package."""

from __future__ import annotations

from evtransfer.cli._args import add_checkpoint_args, add_out, positive_int


def add(sub) -> None:
    """Register `predict`, `evaluate` and `export`."""
    _add_predict(sub)
    _add_evaluate(sub)
    _add_export(sub)


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="run a trained model over recordings: label/depth PNGs, "
                       "overlay GIF, windows.json")
    add_checkpoint_args(p)
    p.add_argument("input", help="a recording (DSEC .h5, .aedat4, .raw, .dat, MVSEC .hdf5, "
                   "spike .dat, DDD17 folder) or a folder of them")
    add_out(p, "folder", "output folder")
    p.add_argument("--every", default=None,
                   help="prediction stride: 50ms, 20000us, 100000ev or 32fr (default: the "
                        "model's own window)")
    p.add_argument("--batch", type=positive_int, default=8,
                   help="windows per forward pass (default 8)")
    p.add_argument("--resize", action="store_true",
                   help="accept a sensor size other than the training one (resize the input)")
    p.add_argument("--partial", action="store_true",
                   help="also predict windows shorter than the model's (recording start)")
    p.add_argument("--t0", type=int, default=None, help="first window end no earlier, µs")
    p.add_argument("--t1", type=int, default=None, help="last window end no later, µs")
    p.add_argument("--limit", type=positive_int, default=None,
                   help="at most this many windows (default: all)")
    p.add_argument("--gif-frames", type=int, default=100,
                   help="overlay.gif frames, evenly spaced (default 100)")
    p.add_argument("--overlays", action="store_true", help="also write overlay/NNNNNN.png")
    p.add_argument("--format", default=None, help="skip format detection (e.g. evt3)")
    p.add_argument("--width", type=int, default=None, help="sensor / frame width override")
    p.add_argument("--height", type=int, default=None, help="sensor / frame height override")
    p.set_defaults(run=_run_predict)


def _run_predict(args) -> int:
    import sys

    from evtransfer.inference import load_model
    from evtransfer.inference.stream import PredictOptions, parse_every, predict_path

    model = load_model(args.checkpoint, device=args.device)
    reader = {k: v for k, v in (("format", args.format), ("width", args.width),
                                ("height", args.height)) if v is not None}
    opts = PredictOptions(every=parse_every(args.every) if args.every else None,
                          batch=args.batch, resize=args.resize, partial=args.partial,
                          t0_us=args.t0, t1_us=args.t1, limit=args.limit or 0,
                          gif_frames=args.gif_frames, overlays=args.overlays,
                          reader_options=reader, progress=sys.stderr.isatty())
    summaries = predict_path(model, args.input, args.out, opts)
    failed = [s for s in summaries if "error" in s]
    for s in summaries:
        if "error" in s:
            continue
        sec = s["seconds"]
        print(f"{s['recording']}: {s['predicted']} of {s['windows']} windows predicted in "
              f"{sec['total']:.1f} s ({s['predicted'] / max(sec['total'], 1e-9):.1f} windows/s)"
              f"; overlay {s['overlay_gif']}")
    if failed:
        raise ValueError(f"{len(failed)} of {len(summaries)} recordings failed, the others' "
                         f"results are in {args.out}; first: {failed[0]['error']}")
    return 0


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="score a trained model under a benchmark's protocol")
    add_checkpoint_args(p)
    p.add_argument("--dataset", required=True,
                   choices=("world", "dsec-semantic", "ddd17", "mvsec-depth", "kitti-depth"))
    p.add_argument("--root", required=True, help="dataset root (world: a built world folder)")
    p.add_argument("--split", default=None,
                   help="default: the reported split (world/dsec/mvsec/kitti test, ddd17 valid)")
    p.add_argument("--resize", action="store_true",
                   help="accept a model trained on another sensor / input size")
    p.add_argument("--batch", type=positive_int, default=8,
                   help="samples per forward pass (default 8)")
    p.add_argument("--limit", type=positive_int, default=None,
                   help="only the first N samples (smoke runs; default: all)")
    p.add_argument("--scenario", default="outdoor", choices=("outdoor", "indoor_flying"),
                   help="mvsec-depth scenario (default outdoor)")
    p.add_argument("--split-id", type=int, default=1, help="mvsec-depth indoor_flying split")
    p.add_argument("--test-sequences", type=int, default=0,
                   help="world: held-out sequences (default 0 = half, as bench transfer)")
    add_out(p, "file", "results JSON (default: evaluation-<dataset>.json beside the checkpoint)",
            required=False)
    p.set_defaults(run=_run_evaluate)


def _run_evaluate(args) -> int:
    import json
    from pathlib import Path

    from evtransfer.inference import load_model
    from evtransfer.inference.evaluate import EvalOptions, evaluate, format_table

    model = load_model(args.checkpoint, device=args.device)
    opts = EvalOptions(split=args.split, resize=args.resize, batch=args.batch,
                       limit=args.limit or 0,
                       scenario=args.scenario, split_id=args.split_id,
                       test_sequences=args.test_sequences)
    result = evaluate(model, args.dataset, args.root, opts)
    run = Path(args.checkpoint)
    beside = (run if run.is_dir() else run.parent) / f"evaluation-{args.dataset}.json"
    out = Path(args.out) if args.out else beside
    out.write_text(json.dumps(result, indent=1))
    print(format_table(result))
    print(f"wrote {out}")
    return 0


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a trained model to TorchScript or ONNX")
    add_checkpoint_args(p)
    p.add_argument("--to", required=True, choices=("torchscript", "onnx"),
                   help="output format")
    add_out(p, "file", "output file (.pt or .onnx)")
    p.add_argument("--batch", type=positive_int, default=1,
                   help="batch size N (ONNX: fixed to it; TorchScript: any)")
    p.add_argument("--opset", type=int, default=17,
                   help="ONNX opset (default 17; SegFormer needs 14 or later)")
    p.set_defaults(run=_run_export)


def _run_export(args) -> int:
    import torch

    from evtransfer.inference import load_model
    from evtransfer.inference.export import export_model

    model = load_model(args.checkpoint, device=args.device)
    try:
        info = export_model(model, args.to, args.out, batch=args.batch, opset=args.opset)
    except torch.onnx.errors.OnnxExporterError as exc:  # e.g. an op newer than --opset
        raise ValueError(f"--opset {args.opset}: {exc}") from None
    diff = info["max_abs_diff"]
    print(f"wrote {info['path']} and {info['path']}.json")
    batch = "dynamic" if info["input"]["dynamic_batch"] else "fixed"
    print(f"input  {info['input']['shape']} float32 (N {batch}): {info['input']['text']}")
    print(f"output {info['output']['shape']}: {info['output']['meaning']}")
    print("max |exported - PyTorch| = " + ("not checked (onnxruntime not installed)"
                                           if diff is None else f"{diff:.2e}"))
    return 0
