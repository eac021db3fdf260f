"""SegFormer-B0 training step and inference latency: ours against `transformers`.

Both models get the same configuration (SegformerConfig defaults = B0, 19 classes,
LayerNorm eps 1e-5 as `transformers` uses) and the same weights: a seeded `transformers`
model is saved to a temporary safetensors file, loaded as is by the `transformers` worker
and through `load_pretrained(..., key_map="hf_segformer")` by ours. Before timing, the
main process checks that both give the same logits on one full-size frame (eval mode).

Each variant is timed in a fresh process (`--worker`), alternating variants, `--runs`
times; each process reports the median over its steps, and the summary is the median
over runs. A training step is forward + cross-entropy on logits upsampled to the input
size + backward, at `--height`×`--width` (default 440×640) with batch 8 on CUDA and 2 on
CPU. Inference latency is one frame (batch 1) in eval mode under `torch.inference_mode`.
Peak memory: CUDA `max_memory_allocated` during the timed steps; CPU the growth of peak
RSS over the process's RSS once the model is built.

Last line: one JSON object with `train_vs_transformers` and `infer_vs_transformers`
(transformers' time / ours: > 1 means ours is faster) and `device`.

    python benchmarks/train_step.py [--device cpu|cuda] [--batch N] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

NUM_CLASSES = 19


def build(variant: str, weights: str, device: str) -> torch.nn.Module:
    if variant == "ours":
        from evtransfer.models import create_model, load_pretrained

        model = create_model("segformer_b0", num_classes=NUM_CLASSES, norm_eps=1e-5)
        load_pretrained(model, weights, key_map="hf_segformer")
    else:
        from safetensors.torch import load_file
        from transformers import SegformerConfig, SegformerForSemanticSegmentation

        model = SegformerForSemanticSegmentation(SegformerConfig(num_labels=NUM_CLASSES))
        model.load_state_dict(load_file(weights))
    return model.to(device)


def logits_of(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out if isinstance(out, torch.Tensor) else out.logits


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def time_steps(fn, device: str, warmup: int, steps: int) -> float:
    """Median seconds per call of `fn` after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def worker(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    device = args.device
    model = build(args.worker, args.weights, device).train()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, 3, args.height, args.width, generator=gen).to(device)
    labels = torch.randint(0, NUM_CLASSES, (args.batch, args.height, args.width),
                           generator=gen).to(device)

    def train_step() -> None:
        logits = logits_of(model, x)
        up = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        F.cross_entropy(up, labels, ignore_index=255).backward()
        model.zero_grad(set_to_none=True)

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    base = _rss_mb()
    train_s = time_steps(train_step, device, args.warmup, args.steps)
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    model.eval()
    frame = x[:1]
    with torch.inference_mode():
        infer_s = time_steps(lambda: logits_of(model, frame), device, args.warmup,
                             args.infer_steps)
    print(json.dumps({"train_step_s": train_s, "infer_s": infer_s, "peak_mem_mb": peak}))


def check_equal(weights: str, args: argparse.Namespace) -> float:
    """Max |logit difference| of the two models on one full-size frame, eval mode."""
    x = torch.randn(1, 3, args.height, args.width,
                    generator=torch.Generator().manual_seed(2)).to(args.device)
    with torch.inference_mode():
        ours, theirs = (logits_of(build(v, weights, args.device).eval(), x)
                        for v in ("ours", "transformers"))
        diff = (ours - theirs).abs().max().item()
    if diff > 1e-3:
        raise SystemExit(f"outputs differ (max |diff| {diff:.3g}); not timing")
    return diff


def run_worker(variant: str, weights: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", variant, "--weights", weights,
           "--device", args.device, "--batch", str(args.batch), "--height", str(args.height),
           "--width", str(args.width), "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--infer-steps", str(args.infer_steps)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(args: argparse.Namespace) -> None:
    from safetensors.torch import save_file
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    torch.manual_seed(0)
    reference = SegformerForSemanticSegmentation(SegformerConfig(num_labels=NUM_CLASSES))
    with tempfile.TemporaryDirectory() as tmp:
        weights = str(Path(tmp) / "segformer_b0.safetensors")
        save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, weights)
        diff = check_equal(weights, args)
        results: dict[str, list[dict]] = {"ours": [], "transformers": []}
        for run in range(args.runs):
            order = ("ours", "transformers") if run % 2 == 0 else ("transformers", "ours")
            for variant in order:
                results[variant].append(run_worker(variant, weights, args))
    summary = {v: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
               for v, rs in results.items()}
    for v, s in summary.items():
        print(f"{v:>12}: train {1 / s['train_step_s']:.3f} steps/s, peak {s['peak_mem_mb']:.0f}"
              f" MB, inference {1000 * s['infer_s']:.1f} ms/frame")
    print(json.dumps({
        "benchmark": "segformer_b0_train_step",
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "threads": torch.get_num_threads(),
        "batch": args.batch, "size": [args.height, args.width], "runs": args.runs,
        "max_abs_logit_diff": diff,
        "ours": summary["ours"], "transformers": summary["transformers"],
        "train_vs_transformers": summary["transformers"]["train_step_s"]
        / summary["ours"]["train_step_s"],
        "infer_vs_transformers": summary["transformers"]["infer_s"] / summary["ours"]["infer_s"],
        "peak_mem_ratio": summary["ours"]["peak_mem_mb"]
        / summary["transformers"]["peak_mem_mb"],
    }))


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=None, help="8 on CUDA, 2 on CPU")
    p.add_argument("--height", type=int, default=440)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--infer-steps", type=int, default=10)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--worker", choices=("ours", "transformers"), help=argparse.SUPPRESS)
    p.add_argument("--weights", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.batch is None:
        args.batch = 8 if args.device.startswith("cuda") else 2
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


if __name__ == "__main__":
    arguments = parse()
    if arguments.worker:
        worker(arguments)
    else:
        main(arguments)
