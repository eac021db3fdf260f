"""Synthetic event windows from a labeled RGB source: the S→T path of the transfer methods.

Two recipes, as in the papers:
- `motion`: every source frame is a still image moved by a random camera path (a pseudo-video
  of `frames` frames over `window_us`); its label is warped by the same path, so the window's
  last frame is labeled exactly (the still-image route of ESS / random-motion VID2E);
- `video`: consecutive frames of a source sequence are interpolated in log intensity (VID2E's
  upsampling step with a pluggable interpolator) and the events between frame k-1 and frame k
  are labeled with frame k.
Either way the frames go through the DVS simulator (`dvs`: by default the `clean` preset, the
simulator a user would run on their own images), and each sample keeps the window's events,
its label, and the grayscale intensity at the window's end (pairs for reconstruction networks).
`randomize` draws the sensor (and the scene's brightness) anew for every batch of pseudo-videos:
the domain randomisation E2VID's training data uses, widened as in Stoffregen et al., "Reducing
the Sim-to-Real Gap for Event Cameras" (ECCV 2020), so that networks trained on these windows
meet an unknown real sensor with its statistics already seen.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import torch
from tqdm import tqdm

from evtransfer.events import Events
from evtransfer.simulate import (
    DvsConfig,
    DvsSimulator,
    dvs_preset,
    interpolate_frames,
    luminance,
    warp,
)
from evtransfer.simulate.motion import random_motion


@dataclass(frozen=True)
class SensorRandomization:
    """Ranges (lo, hi), sampled uniformly once per batch of videos, that replace fields of
    `SyntheticConfig.dvs`; a range with lo == hi == 0 leaves the field as it is. Thresholds in
    log units (C+ and C- drawn independently), rates in Hz, times in µs; `brightness` scales the
    frames (the simulator sees a darker or brighter scene, the stored intensity is unchanged)."""

    enabled: bool = False
    threshold: tuple[float, float] = (0.15, 0.5)  # E2VID: N(0.18, 0.03); Stoffregen: [0.2, 1.5]
    sigma_threshold: tuple[float, float] = (0.0, 0.06)  # unpublished: our choice (v2e: 0.02-0.05)
    refractory_us: tuple[float, float] = (0.0, 1000.0)  # unpublished: our choice
    cutoff_hz: tuple[float, float] = (0.0, 0.0)  # unpublished: our choice (off)
    leak_rate_hz: tuple[float, float] = (0.0, 0.2)  # unpublished: our choice (v2e noisy: 0.1)
    shot_noise_rate_hz: tuple[float, float] = (0.0, 5.0)  # unpublished: our choice (v2e: 5 Hz)
    brightness: tuple[float, float] = (0.1, 1.0)  # unpublished: our choice

    def sample(self, dvs: DvsConfig, generator: torch.Generator) -> tuple[DvsConfig, float]:
        """`dvs` with the randomised fields replaced, and the brightness factor."""
        def draw(lo: float, hi: float) -> float:
            return lo + (hi - lo) * float(torch.rand((), generator=generator))

        fields = {"pos_threshold": self.threshold, "neg_threshold": self.threshold,
                  "sigma_threshold": self.sigma_threshold, "refractory_us": self.refractory_us,
                  "cutoff_hz": self.cutoff_hz, "leak_rate_hz": self.leak_rate_hz,
                  "shot_noise_rate_hz": self.shot_noise_rate_hz}
        values = {k: draw(*r) for k, r in fields.items() if tuple(r) != (0.0, 0.0)}
        if "refractory_us" in values:
            values["refractory_us"] = round(values["refractory_us"])
        return replace(dvs, **values), draw(*self.brightness)


@dataclass(frozen=True)
class SyntheticConfig:
    """How source frames become event windows. Times in µs."""

    mode: str = "motion"  # motion | video
    window_us: int = 50_000  # unpublished: our choice (matches the target windows)
    frames: int = 21  # motion mode: rendered frames per window (2.5 ms steps over 50 ms)
    max_translation: float = 0.06  # fraction of the image size over one window
    max_rotation_deg: float = 2.0
    max_scale: float = 0.08  # zoom: the forward motion of a driving camera
    video_factor: int = 20  # video mode: interpolated steps per source frame interval
    dvs: DvsConfig = field(default_factory=lambda: dvs_preset("clean"))
    randomize: SensorRandomization = field(default_factory=SensorRandomization)
    variants: int = 1  # pseudo-videos per source frame (motion mode)
    batch: int = 16  # videos simulated together
    seed: int = 0


@dataclass
class SyntheticSet:
    """Synthetic windows: events[i] (an `Events` window), labels (N, H, W) int64, and the
    grayscale intensity at each window's end, images (N, H, W) float32 in [0, 1]."""

    events: list[Events]
    labels: torch.Tensor
    images: torch.Tensor

    def __len__(self) -> int:
        return len(self.events)


def _sensor(cfg: SyntheticConfig, frames: torch.Tensor,
            seed: int) -> tuple[DvsConfig, torch.Tensor]:
    """The simulator settings for one batch of videos, and the frames it sees."""
    if not cfg.randomize.enabled:
        return replace(cfg.dvs, seed=seed), frames
    dvs, brightness = cfg.randomize.sample(cfg.dvs, torch.Generator().manual_seed(seed))
    return replace(dvs, seed=seed), frames * brightness


def _simulate(frames: torch.Tensor, t_us: torch.Tensor, cfg: SyntheticConfig, seed: int,
              device) -> list[Events]:
    """Events of B videos, frames (T, B, H, W) at t_us (T,) µs, through one simulator (a
    randomised one when `cfg.randomize.enabled`)."""
    _, b, h, w = frames.shape
    dvs, frames = _sensor(cfg, frames, seed)
    sim = DvsSimulator(dvs, h, w, b, device)
    streams: list[list[Events]] = [[] for _ in range(b)]
    for frame, t in zip(frames, t_us.tolist(), strict=True):
        for i, ev in enumerate(sim.feed(frame.to(device), t)):
            streams[i].append(ev)
    return [Events.concatenate(s) for s in streams]


def synthesize(source, cfg: SyntheticConfig, *, device: str | torch.device = "cpu",
               progress: bool = True) -> SyntheticSet:
    """Synthetic event windows for every item of `source` (a dataset of dicts with `rgb`
    (3, H, W) in [0, 1] and `label` (H, W); `video` mode also needs `sequence`, `frame` and
    `t_us`)."""
    if cfg.mode == "motion":
        return _motion(source, cfg, device, progress)
    if cfg.mode == "video":
        return _video(source, cfg, device, progress)
    raise ValueError(f"synthetic mode must be 'motion' or 'video', got {cfg.mode!r}")


def motion_chunks(source, cfg: SyntheticConfig, *, device: str | torch.device = "cpu",
                  progress: bool = True) -> Iterator[SyntheticSet]:
    """The `motion` recipe of `synthesize`, `cfg.batch` pseudo-videos at a time, so a large
    source (Cityscapes) streams to disk instead of being held in memory."""
    items = [(i, v) for i in range(len(source)) for v in range(cfg.variants)]
    for start in tqdm(range(0, len(items), cfg.batch), desc="synthetic events",
                      disable=not progress):
        chunk = items[start:start + cfg.batch]
        gray, hs, labels = [], [], []
        for i, v in chunk:
            sample = source[i]
            h, w = sample["label"].shape
            path = random_motion(h, w, cfg.frames, duration_us=cfg.window_us,
                                 generator=cfg.seed * 1_000_003 + i * 101 + v,
                                 max_translation=cfg.max_translation,
                                 max_rotation_deg=cfg.max_rotation_deg, max_scale=cfg.max_scale)
            gray.append(warp(luminance(sample["rgb"]), path.homographies, kind="image"))
            labels.append(warp(sample["label"], path.homographies[-1:], kind="label")[0])
            hs.append(path)
        frames = torch.stack(gray, 1)  # (T, B, H, W)
        events = _simulate(frames, hs[0].t_us, cfg, cfg.seed + start, device)
        yield SyntheticSet(events, torch.stack(labels).long(), frames[-1].float())


def _motion(source, cfg: SyntheticConfig, device, progress: bool) -> SyntheticSet:
    parts = list(motion_chunks(source, cfg, device=device, progress=progress))
    return SyntheticSet([e for p in parts for e in p.events], torch.cat([p.labels for p in parts]),
                        torch.cat([p.images for p in parts]))


def _video(source, cfg: SyntheticConfig, device, progress: bool) -> SyntheticSet:
    """Events between consecutive frames of each sequence, labeled with the later frame."""
    by_seq: dict[str, list[int]] = {}
    for i in range(len(source)):
        by_seq.setdefault(source[i]["sequence"], []).append(i)
    events, labels, images = [], [], []
    for idx in tqdm(by_seq.values(), desc="synthetic events", disable=not progress):
        samples = [source[i] for i in idx]
        gray = torch.stack([luminance(s["rgb"]) for s in samples])
        t = torch.tensor([s["t_us"] for s in samples], dtype=torch.int64)
        frames, t_up = interpolate_frames(gray, t, factor=cfg.video_factor)
        dvs, frames = _sensor(cfg, frames, cfg.seed + len(events))
        sim = DvsSimulator(dvs, *gray.shape[1:], 1, device)
        ev = Events.concatenate([sim.feed(f[None].to(device), int(tt))[0]
                                 for f, tt in zip(frames, t_up.tolist(), strict=True)])
        for k in range(1, len(samples)):
            events.append(ev.time_window(int(t[k - 1]) + 1, int(t[k]) + 1))
            labels.append(samples[k]["label"])
            images.append(gray[k])
    return SyntheticSet(events, torch.stack(labels).long(), torch.stack(images).float())

