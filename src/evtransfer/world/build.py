"""Build the embedded world on disk, in the layouts of the real datasets.

```
DIR/world.yaml                      the resolved WorldConfig
DIR/source/seq_XXX/                 labeled daylight RGB video (Cityscapes-like source)
    images/000000.png               RGB frames at source_fps
    labels/19classes/000000.png     Cityscapes trainIds (255 = ignore)
    labels/11classes/000000.png     DSEC-11 ids
    depth/000000.png                uint16, metres × 256, 0 = invalid (KITTI convention)
    flow/000000.npy                 (2, H, W) float32 forward flow to the next frame, pixels
    timestamps.txt                  µs, one line per frame
DIR/target/seq_XXX/                 DSEC-Semantic layout, read by the real loaders
    events/left/events.h5           the event camera (DSEC format, Blosc)
    semantic/timestamps.txt         label times, µs on the events' clock
    semantic/{11,19}classes/data/000000.png
    depth/000000.png, flow/000000.npy  evaluation-only ground truth at the label times
    images/000000.png               the scene in RGB at the label times (evaluation only)
    spikes/000000.dat               spike-camera clip ending at each label time (PKU .dat)
    spikes/meta.json                height, width, rate_hz, frames
DIR/<variant>/seq_XXX/              same layout as target for fog / rain / city2
```
A sequence is written to a temporary folder and renamed when complete, so an interrupted
build resumes by redoing only unfinished sequences.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image
from tqdm import tqdm

from evtransfer.config import to_dict
from evtransfer.io.dsec import DsecEventsWriter
from evtransfer.io.images import TRAINID_TO_DSEC11, write_label_png, write_png16
from evtransfer.io.spike import write_spike_dat
from evtransfer.simulate import DvsSimulator, luminance, spikes_from_image
from evtransfer.world.domains import DomainConfig, WorldConfig, variant_domain
from evtransfer.world.render import Render, render
from evtransfer.world.scene import generate_scene


def _seed(*parts: int | str) -> int:
    """A stable 31-bit seed from parts (Python's hash() is salted per process)."""
    h = 2166136261
    for byte in "/".join(map(str, parts)).encode():
        h = ((h ^ byte) * 16777619) & 0xFFFFFFFF
    return h & 0x7FFFFFFF


def sequence_setup(dom: DomainConfig, world_seed: int, name: str, i: int):
    """Scene, camera and lighting of sequence i of a domain (deterministic)."""
    scene = generate_scene(dom.scene, _seed(world_seed, name, i, "scene"))
    rng = np.random.default_rng(_seed(world_seed, name, i, "camera"))
    camera = type(dom.camera)(**{**asdict(dom.camera), "phase": float(rng.uniform(0, 2 * np.pi)),
                                 "start_z": float(rng.uniform(0, 40))})
    return scene, camera, dom.lighting[i % len(dom.lighting)]


def _to_uint8(rgb: torch.Tensor) -> np.ndarray:
    return (rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def _write_gt(folder: Path, k: int, frame: Render, j: int, label_dir: str) -> None:
    """RGB, labels (19 and 11 classes), depth and flow of render index j as file k."""
    name = f"{k:06d}"
    Image.fromarray(_to_uint8(frame.rgb[j])).save(folder / "images" / f"{name}.png")
    label = frame.label[j].cpu().numpy().astype(np.uint8)
    write_label_png(folder / label_dir.format(n=19) / f"{name}.png", label)
    write_label_png(folder / label_dir.format(n=11) / f"{name}.png", TRAINID_TO_DSEC11[label])
    depth = np.clip(frame.depth[j].cpu().numpy() * 256.0 + 0.5, 0, 65535).astype(np.uint16)
    write_png16(folder / "depth" / f"{name}.png", depth)
    np.save(folder / "flow" / f"{name}.npy", frame.flow[j].cpu().numpy().astype(np.float32))


def _make_dirs(folder: Path, label_dir: str, extra: tuple[str, ...] = ()) -> None:
    for sub in ("images", "depth", "flow", label_dir.format(n=19), label_dir.format(n=11), *extra):
        (folder / sub).mkdir(parents=True, exist_ok=True)


def build_source_sequence(cfg: WorldConfig, i: int, folder: Path, device, bar) -> None:
    """Labeled RGB video at source_fps with labels, depth and flow for every frame."""
    dom = cfg.source
    scene, camera, light = sequence_setup(dom, cfg.domain_seed("source"), "source", i)
    scene = scene.to(device)
    label_dir = "labels/{n}classes"
    _make_dirs(folder, label_dir)
    n = int(round(dom.duration_s * cfg.source_fps))
    t_us = np.rint(np.arange(n) * 1e6 / cfg.source_fps).astype(np.int64)
    for k0 in range(0, n, 16):
        ts = torch.tensor(t_us[k0:k0 + 16] * 1e-6, dtype=torch.float64, device=device)
        frame = render(scene, camera, light, ts, cfg.width, cfg.height,
                       flow_dt_s=1.0 / cfg.source_fps)
        for j in range(len(ts)):
            _write_gt(folder, k0 + j, frame, j, label_dir)
        bar.update(len(ts))
    np.savetxt(folder / "timestamps.txt", t_us, fmt="%d")


def build_target_sequence(cfg: WorldConfig, dom: DomainConfig, name: str, i: int, folder: Path,
                          device, bar) -> None:
    """Event stream over the whole sequence, spike clips and ground truth at the label times."""
    seed = cfg.domain_seed(name)
    scene, camera, light = sequence_setup(dom, seed, name, i)
    scene = scene.to(device)
    label_dir = "semantic/{n}classes/data"
    _make_dirs(folder, label_dir, ("events/left", "spikes"))
    fps, h, w = cfg.events.render_fps, cfg.height, cfg.width
    n_frames = int(round(dom.duration_s * fps)) + 1
    t_render = np.rint(np.arange(n_frames) * 1e6 / fps).astype(np.int64)
    # labels every label_every_s after the first, so every label has history behind it
    t_labels = np.arange(dom.label_every_s, dom.duration_s + 1e-9, dom.label_every_s)
    t_labels = np.rint(t_labels * 1e6).astype(np.int64)
    label_frame = {int(np.argmin(np.abs(t_render - t))): k for k, t in enumerate(t_labels)}
    t_labels = np.array([t_render[f] for f in sorted(label_frame)], dtype=np.int64)
    dvs = DvsSimulator(replace(cfg.events.dvs, seed=_seed(seed, name, i, "dvs")), h, w, 1,
                       device)
    spike_cfg = cfg.spikes.sim
    batch = 16
    with DsecEventsWriter(folder / "events/left/events.h5", width=w, height=h) as writer:
        for k0 in range(0, n_frames, batch):
            ts = torch.tensor(t_render[k0:k0 + batch] * 1e-6, dtype=torch.float64, device=device)
            frame = render(scene, camera, light, ts, w, h, flow_dt_s=dom.label_every_s)
            luma = luminance(frame.rgb)
            for j in range(len(ts)):
                writer.write(dvs.feed(luma[j:j + 1], int(t_render[k0 + j]))[0])
                k = label_frame.get(k0 + j)
                if k is None:
                    continue
                _write_gt(folder, k, frame, j, label_dir)
                # the spike clip integrates the scene as it is at the label time (a clip of a
                # few ms: the light is held constant over it)
                clip = spikes_from_image(luma[j], cfg.spikes.frames, replace(
                    spike_cfg, seed=_seed(seed, name, i, "spikes", k)), device=device)
                write_spike_dat(folder / "spikes" / f"{k:06d}.dat", clip)
            bar.update(len(ts))
    np.savetxt(folder / "semantic/timestamps.txt", t_labels, fmt="%d")
    meta = {"height": h, "width": w, "rate_hz": spike_cfg.rate_hz,
            "frames": cfg.spikes.frames, "bitorder": "little", "flipud": True}
    (folder / "spikes/meta.json").write_text(json.dumps(meta, indent=1))


def world_yaml(cfg: WorldConfig) -> str:
    """The `world.yaml` text of `cfg`. An unset `target_seed` is left out, so every world
    built before the field existed keeps its file byte for byte (data caches and benchmark
    work folders are keyed by this text)."""
    data = to_dict(cfg)
    if cfg.target_seed is None:
        del data["target_seed"]
    return yaml.safe_dump(data, sort_keys=False)


def build_world(cfg: WorldConfig, out: str | Path, *, device: str = "cpu",
                progress: bool = True) -> Path:
    """Render and simulate every domain of `cfg` into `out` (resumable; see module docstring)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    resolved = world_yaml(cfg)
    config_file = out / "world.yaml"
    if config_file.exists():
        if config_file.read_text() != resolved:
            raise ValueError(f"{out} holds a world built from another config; use a new folder")
    else:  # written whole or not at all: processes sharing a world read it while one builds
        tmp = config_file.with_name(f"world.yaml.{os.getpid()}.partial")
        tmp.write_text(resolved)
        tmp.replace(config_file)
    jobs = [("source", cfg.source, i) for i in range(cfg.source.sequences)]
    jobs += [("target", cfg.target, i) for i in range(cfg.target.sequences)]
    for variant in cfg.variants:
        dom = variant_domain(variant, cfg.target)
        jobs += [(variant, dom, i) for i in range(dom.sequences)]
    todo = [j for j in jobs if not (out / j[0] / f"seq_{j[2]:03d}").is_dir()]
    frames = sum(_frames(cfg, name, dom) for name, dom, _ in todo)
    with tqdm(total=frames, desc="world", unit="frame", disable=not progress) as bar:
        for name, dom, i in todo:
            final = out / name / f"seq_{i:03d}"
            tmp = final.with_name(final.name + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            if name == "source":
                build_source_sequence(cfg, i, tmp, device, bar)
            else:
                build_target_sequence(cfg, dom, name, i, tmp, device, bar)
            tmp.rename(final)
    return out


def _frames(cfg: WorldConfig, name: str, dom: DomainConfig) -> int:
    if name == "source":
        return int(round(dom.duration_s * cfg.source_fps))
    return int(round(dom.duration_s * cfg.events.render_fps)) + 1
