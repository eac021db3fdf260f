"""`evtransfer world build|show`: the embedded procedural world."""

from __future__ import annotations

from evtransfer.cli._args import add_device, add_out, positive_int, world_config


def add(sub) -> None:
    """Register `world build` and `world show`."""
    p = sub.add_parser("world", help="build or inspect the embedded procedural world")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    b = verbs.add_parser("build", help="render and simulate a world into --out (resumable)")
    b.add_argument("--preset", default="small", choices=("tiny", "small", "full"))
    b.add_argument("--world", default=None, help="a world YAML (overrides --preset)")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a world config field, e.g. --set seed=3")
    add_out(b, "folder", "output folder")
    add_device(b)
    b.set_defaults(run=run_world_build, config_of=_build_config)
    s = verbs.add_parser("show", help="montage RGB | label | depth | flow | events | spikes")
    s.add_argument("root", help="a built world folder")
    add_out(s, "file", "output PNG")
    s.add_argument("--samples", type=positive_int, default=4,
                   help="target samples to show (default 4)")
    s.add_argument("--domain", default="target", help="target or a built variant")
    s.set_defaults(run=run_world_show)


def _build_config(args):
    return world_config(args.preset, args.world, args.set)


def run_world_build(args) -> int:
    """Build (or finish building) a world into `args.out`."""
    from evtransfer.world.build import build_world

    cfg = _build_config(args)
    out = build_world(cfg, args.out, device=args.device)
    print(f"world ready in {out}")
    return 0


def run_world_show(args) -> int:
    """A montage of target samples: RGB, label, depth, flow, events, spikes."""
    import numpy as np

    from evtransfer.data.world import WorldTarget, WorldTargetConfig
    from evtransfer.engine.package import CLASS_NAMES
    from evtransfer.represent import histogram, tfp
    from evtransfer.viz import (
        DSEC11_PALETTE,
        colorize_depth,
        colorize_events,
        colorize_flow,
        colorize_labels,
        save_panel,
    )

    cfg = WorldTargetConfig(domain=args.domain, split="all", with_depth=True, with_flow=True,
                            with_rgb=True, with_spikes=True)
    data = WorldTarget(args.root, cfg)
    picks = np.linspace(0, len(data) - 1, min(args.samples, len(data))).round().astype(int)
    images, titles = [], []
    for i in picks:
        s = data[int(i)]
        hw = min(20, (len(s["spikes"]) - 1) // 2)
        row = [
            (s["rgb"].permute(1, 2, 0).numpy() * 255).astype(np.uint8),
            colorize_labels(s["label"].numpy(), DSEC11_PALETTE),
            colorize_depth(s["depth"].numpy()),
            colorize_flow(s["flow"].numpy()),
            colorize_events(histogram(s["events"])[0]),
            _gray(tfp(s["spikes"], len(s["spikes"]) - 1 - hw, hw).numpy()),
        ]
        images += row
        titles += [f"{s['sequence']} #{s['index']}", "label", "depth", "flow", "events",
                   "spikes (TFP)"]
    legend = (CLASS_NAMES["dsec11"], DSEC11_PALETTE)
    path = save_panel(images, titles, args.out, ncols=6, legend=legend)
    print(f"wrote {path}")
    return 0


def _gray(image):
    """A float image stretched to its own maximum, as uint8 (dark spike textures stay visible)."""
    import numpy as np

    return (255 * image / max(float(image.max()), 1e-9)).astype(np.uint8)
