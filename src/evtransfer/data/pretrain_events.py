"""Unlabeled event windows for self-supervised pre-training, and random views of them.

Sources (any mix):
- `source`: events simulated from the world's unlabeled source video with the E-TartanAir
  recipe (ECDDP's synthetic pre-training set): frames interpolated in time, v2e-style DVS with
  thresholds 0.2 ± 0.03 (mismatch), a 30 Hz photoreceptor cutoff, 0.1 Hz leak and shot noise
  drawn per sequence from U(0, 0.25) Hz, then the events cut per original frame interval;
- `target`: the stored target train windows of the world (`WorldTarget`, events before each
  label time; the labels are never read);
- `recordings`: real recordings in any format `io.open_recording` reads (DSEC h5, AEDAT4,
  EVT2/EVT3 .raw, .dat, …), cut into evenly spaced windows.
Each window becomes a voxel grid (`bins` bins, summed polarity, not normalised: ECDDP's
pre-training input) plus its per-pixel event count; windows are grouped by sensor size and
cached as safetensors (float16). `ViewDataset` serves random square crops of them (the view
x⁺ the teacher sees); a crop holding fewer than `min_events` events becomes all zeros.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset, Subset
from tqdm import tqdm

from evtransfer.data.synthetic import SyntheticConfig, synthesize
from evtransfer.data.world import WorldSource, WorldTarget, WorldTargetConfig
from evtransfer.events import Events
from evtransfer.represent import histogram, voxel_grid
from evtransfer.simulate import DvsConfig, dvs_preset

Group = tuple[torch.Tensor, torch.Tensor | None]
"""Windows of one sensor size: voxels (N, bins, H, W) and event counts (N, 1, H, W) or None."""


@dataclass(frozen=True)
class EtartanairRecipe:
    """The DVS settings of E-TartanAir (v2e flags in ECDDP's generate_data, supp Tab. 1-2)."""

    threshold: float = 0.2  # paper (v2e --pos_thres/--neg_thres 0.2)
    sigma_threshold: float = 0.03  # paper (v2e --sigma_thres 0.03)
    cutoff_hz: float = 30.0  # paper (v2e --cutoff_hz 30)
    leak_rate_hz: float = 0.1  # paper (v2e --leak_rate_hz 0.1)
    shot_noise_max_hz: float = 0.25  # paper (shot noise rate drawn from U(0, 0.25) Hz)
    # unpublished: our choice (ECDDP interpolates x30 with EMA-VFI; the world's source video
    # is rendered at 20 fps, and log-linear interpolation x10 keeps the simulator's steps
    # near 5 ms)
    video_factor: int = 10


def etartanair_dvs(recipe: EtartanairRecipe, shot_noise_hz: float, seed: int) -> DvsConfig:
    """The E-TartanAir DVS: v2e's noisy model with the recipe's thresholds, cutoff, leak and
    this sequence's shot-noise rate; no hot pixels or timestamp jitter (v2e models none)."""
    return dvs_preset("noisy", pos_threshold=recipe.threshold, neg_threshold=recipe.threshold,
                      sigma_threshold=recipe.sigma_threshold, cutoff_hz=recipe.cutoff_hz,
                      leak_rate_hz=recipe.leak_rate_hz, shot_noise_rate_hz=shot_noise_hz,
                      hot_pixel_fraction=0.0, hot_pixel_rate_hz=0.0, jitter_us=0.0, seed=seed)


@dataclass(frozen=True)
class PretrainDataConfig:
    """Which unlabeled windows pre-training sees, and how they become tensors."""

    bins: int = 6  # code: ECDDP config/pretrain/swin_small.yml (event_bins 6)
    min_events: int = 10  # code: ECDDP data/ETartanAir_dataset.py (fewer: an all-zero voxel)
    source: bool = True  # simulate from the world's source video (E-TartanAir recipe)
    recipe: EtartanairRecipe = field(default_factory=EtartanairRecipe)
    target: bool = True  # the world's stored target train windows (unlabeled use)
    target_window_us: int = 50_000  # unpublished: our choice (the world's label windows)
    recordings: tuple[str, ...] = ()  # real recordings (any format open_recording reads)
    recording_window_us: int = 50_000  # unpublished: our choice
    recording_windows: int = 64  # unpublished: our choice (evenly spaced, per recording)
    seed: int = 0


def _voxels(windows: list[Events], bins: int) -> Group:
    """float16 voxels and counts of same-size windows, 32 at a time."""
    vox, cnt = [], []
    for i in range(0, len(windows), 32):
        chunk = windows[i:i + 32]
        vox.append(voxel_grid(chunk, bins).half())
        cnt.append(histogram(chunk).sum(1, keepdim=True).clamp(max=65504).half())
    return torch.cat(vox), torch.cat(cnt)


def simulate_source(world: Path, cfg: PretrainDataConfig, progress: bool) -> list[Events]:
    """E-TartanAir windows from every source sequence of `world` (one per frame interval)."""
    source = WorldSource(world)
    by_seq: dict[str, list[int]] = {}
    for i, (s, _) in enumerate(source.items):
        by_seq.setdefault(source.sequences[s].name, []).append(i)
    rng = np.random.default_rng(cfg.seed)
    windows: list[Events] = []
    for k, (_, idx) in enumerate(tqdm(sorted(by_seq.items()), desc="E-TartanAir events",
                                         disable=not progress)):
        rate = float(rng.uniform(0.0, cfg.recipe.shot_noise_max_hz))
        dvs = etartanair_dvs(cfg.recipe, rate, cfg.seed * 1000 + k)
        syn = SyntheticConfig(mode="video", video_factor=cfg.recipe.video_factor, dvs=dvs,
                              seed=cfg.seed * 1000 + k)
        windows += synthesize(Subset(source, idx), syn, progress=False).events
    return windows


def target_windows(world: Path, cfg: PretrainDataConfig) -> list[Events]:
    """The event windows of the world's target train split (labels unused)."""
    data = WorldTarget(world, WorldTargetConfig(split="train", window_us=cfg.target_window_us))
    return [data.reader(s).read_window(int(data.timestamps[s][k]) - cfg.target_window_us,
                                       int(data.timestamps[s][k])) for s, k in data.items]


def recording_windows(path: str | Path, window_us: int, count: int) -> list[Events]:
    """Up to `count` windows of `window_us` evenly spaced over an event recording."""
    from evtransfer.io import open_recording

    reader = open_recording(path)
    info = reader.info()
    if hasattr(info, "frames"):
        raise ValueError(f"{path}: a spike recording, not events; pre-training needs events")
    span = info.t_end_us - info.t_start_us
    if span < window_us or info.events == 0:
        raise ValueError(f"{path}: shorter than one {window_us} µs window ({span} µs, "
                         f"{info.events} events)")
    n = max(1, min(count, span // window_us))
    starts = info.t_start_us + np.linspace(0, span - window_us, n).astype(np.int64)
    return [reader.read_window(int(t), int(t) + window_us) for t in starts]


def _key(world: Path | None, cfg: PretrainDataConfig) -> str:
    parts = [json.dumps(asdict(cfg), sort_keys=True, default=str)]
    if world is not None:
        parts.append((world / "world.yaml").read_text())
    for rec in cfg.recordings:
        stat = Path(rec).stat()
        parts.append(f"{Path(rec).resolve()}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _gather(world: Path | None, cfg: PretrainDataConfig, progress: bool) -> list[Group]:
    if world is None and (cfg.source or cfg.target):
        raise ValueError("pre-training data: source/target windows need a world; set "
                         "source=false and target=false to use recordings only")
    windows: list[Events] = []
    if cfg.source:
        windows += simulate_source(world, cfg, progress)
    if cfg.target:
        windows += target_windows(world, cfg)
    for rec in cfg.recordings:
        if not Path(rec).exists():
            raise FileNotFoundError(f"pre-training recording {rec} does not exist")
        windows += recording_windows(rec, cfg.recording_window_us, cfg.recording_windows)
    if not windows:
        raise ValueError("pre-training data: no windows (enable source, target or recordings)")
    by_size: dict[tuple[int, int], list[Events]] = {}
    for w in windows:
        by_size.setdefault((w.height, w.width), []).append(w)
    return [_voxels(ws, cfg.bins) for _, ws in sorted(by_size.items())]


def load_pretrain_windows(world: str | Path | None, cfg: PretrainDataConfig, *,
                          cache_dir: str | Path | None = None,
                          progress: bool = True) -> list[Group]:
    """The pre-training windows as groups of (voxels, counts) by sensor size, cached under
    `cache_dir` (default `world/cache`) keyed by the config, the world and the recordings."""
    world = Path(world) if world is not None else None
    if cache_dir is None and world is None:
        raise ValueError("load_pretrain_windows: give cache_dir when there is no world")
    cache = Path(cache_dir) if cache_dir is not None else world / "cache"
    path = cache / f"pretrain_{_key(world, cfg)}.safetensors"
    if path.exists():
        t = load_file(path)
        return [(t[f"voxel_{g}"], t[f"count_{g}"]) for g in range(len(t) // 2)]
    groups = _gather(world, cfg, progress)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({f"{kind}_{g}": t.contiguous() for g, (v, c) in enumerate(groups)
               for kind, t in (("voxel", v), ("count", c))}, tmp)
    tmp.replace(path)
    return groups


class ViewDataset(Dataset):
    """Random `view × view` crops of pre-training windows: item i → `(bins, view, view)`
    float32. The crop of item i in epoch e is drawn from (seed, e, i), so a resumed run sees
    the same crops (set `epoch` before iterating). Windows smaller than the view are
    zero-padded; a crop with fewer than `min_events` events (when counts are known) is
    zeroed."""

    def __init__(self, groups: list[Group], view: int, *, seed: int = 0,
                 min_events: int = 10) -> None:
        if not groups or any(len(v) == 0 for v, _ in groups):
            raise ValueError("ViewDataset needs at least one non-empty group of windows")
        if view < 1:
            raise ValueError(f"view must be >= 1, got {view}")
        self.groups, self.view, self.seed, self.min_events = groups, view, seed, min_events
        self.index = [(g, i) for g, (v, _) in enumerate(groups) for i in range(len(v))]
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> torch.Tensor:
        g, k = self.index[i]
        voxel, count = self.groups[g]
        h, w = voxel.shape[-2:]
        rng = np.random.default_rng([self.seed, self.epoch, i])
        top = int(rng.integers(0, max(h - self.view, 0) + 1))
        left = int(rng.integers(0, max(w - self.view, 0) + 1))
        box = (slice(top, top + self.view), slice(left, left + self.view))
        crop = voxel[k][:, box[0], box[1]].float()
        if count is not None and float(count[k][:, box[0], box[1]].float().sum()) < \
                self.min_events:
            crop = torch.zeros_like(crop)
        pad_h, pad_w = self.view - crop.shape[1], self.view - crop.shape[2]
        return torch.nn.functional.pad(crop, (0, pad_w, 0, pad_h))
