"""`evtransfer weights list|inspect|convert`: the authors' released checkpoints.

`list` prints the catalogue (`models.released.CATALOGUE`); `inspect FILE` recognises a file's
layout and says how its tensors map onto each catalogue entry of that layout; `convert FILE
--as NAME -o OUT` loads it strictly into our network and writes what the entry's product is:
a model package (`engine.package`, carrying the paper's input protocol) for `predict`,
`evaluate` and `export`, a safetensors state dict in our names for a config field, or an
encoder checkpoint for `--init`. Files are read without running code from them.
"""

from __future__ import annotations

import json

from evtransfer.cli._args import add_out


def add(sub) -> None:
    """Register the `weights` command group."""
    p = sub.add_parser("weights", help="the authors' released checkpoints: list, inspect, "
                       "convert to our formats")
    group = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    q = group.add_parser("list", help="print the catalogue of released checkpoints")
    q.add_argument("--json", action="store_true", help="one JSON object per entry")
    q.set_defaults(run=_run_list)
    q = group.add_parser("inspect", help="recognise a checkpoint file and show how it maps")
    q.add_argument("file", help="a released checkpoint (.pth.tar, .pt, .pth)")
    q.set_defaults(run=_run_inspect)
    q = group.add_parser("convert", help="load a released checkpoint strictly and write our "
                         "model package (or weights file)")
    q.add_argument("file", help="a released checkpoint (.pth.tar, .pt, .pth)")
    q.add_argument("--as", dest="name", required=True,
                   help="catalogue entry (see `evtransfer weights list`)")
    add_out(q, "file", "output .safetensors file")
    q.set_defaults(run=_run_convert)


def _run_list(args) -> int:
    from dataclasses import asdict

    from evtransfer.models.released import CATALOGUE, LAYOUTS

    for item in CATALOGUE:
        if args.json:
            print(json.dumps(asdict(item), default=list))
            continue
        e = item.expects
        print(f"{item.name}  ({item.task}; converts to a {item.product} for {item.used_by})")
        rows = [("paper", item.paper), ("file", item.file_name), ("published", item.published),
                ("layout", f"{item.layout}: {LAYOUTS[item.layout][0]} (read by "
                           f"models/released/{LAYOUTS[item.layout][1]}.py)"),
                ("ours", f"{item.model} {dict(item.kwargs)}"),
                ("key map", item.key_map)]
        if e is not None:
            rows += [("input", f"{e.representation}; {e.window}"),
                     ("sensor", "any" if e.sensor == (0, 0) else f"{e.sensor[0]}x{e.sensor[1]}"),
                     ("crop", e.crop), ("normalise", e.normalisation),
                     ("size", "any" if e.size == (0, 0) else f"{e.size[0]}x{e.size[1]} (HxW)"),
                     ("source", e.source)]
        rows.append(("reproduces", item.figure))
        print("\n".join(f"  {k:<10} {v}" for k, v in rows) + "\n")
    return 0


def _run_inspect(args) -> int:
    from evtransfer.models.released import inspect_file

    found = inspect_file(args.file)
    if found.layout is None:
        raise ValueError(f"{args.file}: not a released layout in the catalogue; found "
                         f"{found.description}")
    print(f"{args.file}: {found.description} (layout {found.layout})")
    ok = 0
    for name, result in found.results:
        if isinstance(result, str):
            print(f"  --as {name}: refused: {result}")
        else:
            ok += 1
            params = sum(p.numel() for p in result.network.parameters())
            print(f"  --as {name}: all {result.tensors} tensors map onto "
                  f"{type(result.network).__name__} {result.kwargs} ({params:,} parameters)")
    return 0 if ok else 1


def _run_convert(args) -> int:
    from pathlib import Path

    from evtransfer.models.released import entry, load_released

    item = entry(args.name)
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise ValueError(f"{out}: the output must be a .safetensors file")
    loaded = load_released(item.name, args.file)
    provenance = {"released": item.name, "file": Path(args.file).name, "paper": item.paper,
                  "tensors": loaded.tensors}
    if item.product == "package":
        from evtransfer.engine.package import InputSpec, method_spec, save_package
        from evtransfer.inference import load_model

        network = {"model": item.model, "kwargs": loaded.kwargs, "task": item.task,
                   "output": "logits" if item.task == "segmentation" else "depth"}
        spec = method_spec(network, method=item.name, inputs=InputSpec(**item.package),
                           label_space=item.label_space, provenance=provenance)
        save_package(out, loaded.network, spec)
        print(load_model(out).describe())
    else:
        from evtransfer.models.weights import save_encoder

        meta = {"released": item.name, "model": item.model,
                "kwargs": json.dumps(loaded.kwargs), "file": Path(args.file).name}
        save_encoder(out, loaded.network, meta)
    print(f"{args.file} -> {out}: {loaded.tensors} tensors as {item.name} ({item.product}; "
          f"for {item.used_by})")
    return 0
