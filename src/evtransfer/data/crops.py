"""Object recognition on the embedded world: square crops located with the label maps.

The world has no object-centred recordings like N-Caltech101, so recognition samples are cut
from the transfer tensors (`data.transfer`): a `size` × `size` window on a `stride` grid is an
object crop of class c when c covers at least `min_share` (≥ 0.5: the majority) of it.
Label maps only *locate* the crops; the target train crops' classes stay hidden from the
methods (as their segmentation labels do) and only the test crops carry labels. Sources:

- source: crops of the labeled RGB frames (the teacher's images) with their classes;
- synthetic: crops of the simulated windows, of their grayscale frames and their classes;
- target train: crops of real target windows (class withheld); test: with classes, withheld
  from the methods like the segmentation test labels (`test_y.read(EVALUATION)`).

Each class keeps at most `max_per_class` crops per split, drawn with a seeded generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from evtransfer.data.firewall import EVALUATION, Withheld, withhold
from evtransfer.data.transfer import TransferDataConfig, load_transfer_data, target_train_labels

DSEC11_NAMES = ("background", "building", "fence", "person", "pole", "road", "sidewalk",
                "vegetation", "car", "wall", "traffic sign")


@dataclass(frozen=True)
class CropConfig:
    """Which classes (ids of the transfer label space) and how crops are cut."""

    classes: tuple[int, ...] = (1, 5, 7, 8)  # building, road, vegetation, car: enough crops
    size: int = 32  # pixels
    stride: int = 16
    min_share: float = 0.5  # of the crop's pixels
    max_per_class: int = 300
    seed: int = 0


@dataclass
class RecognitionData:
    """Crops (N, C, size, size) float32 and classes (N,) int64 in 0..len(classes)-1. `test_y`
    is withheld (a tensor given is wrapped): `test_y.read(EVALUATION)`."""

    class_names: tuple[str, ...]
    source_rgb: torch.Tensor
    source_y: torch.Tensor
    synth_x: torch.Tensor
    synth_gray: torch.Tensor
    synth_y: torch.Tensor
    target_x: torch.Tensor
    test_x: torch.Tensor
    test_y: Withheld

    def __post_init__(self) -> None:
        self.test_y = withhold(self.test_y, "target test crop classes (RecognitionData.test_y)",
                               (EVALUATION,))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def crop_sites(label: torch.Tensor, cfg: CropConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop sites of label maps (N, H, W) int64 (255 ignored): rows (M, 3) of (frame, grid row,
    grid column) and their class index (M,) into `cfg.classes`, at most `max_per_class` per
    class, drawn with `cfg.seed`."""
    if label.ndim != 3:
        raise ValueError(f"label must be (N, H, W), got {tuple(label.shape)}")
    if cfg.size < 1 or cfg.stride < 1 or min(label.shape[1:]) < cfg.size:
        raise ValueError(f"crop size {cfg.size} / stride {cfg.stride} do not fit labels of "
                         f"size {tuple(label.shape[1:])}")
    if not cfg.classes:
        raise ValueError("crops.classes is empty")
    if not 0.5 <= cfg.min_share <= 1:
        raise ValueError(f"crops.min_share must be in [0.5, 1] (a majority), got {cfg.min_share}")
    wanted = torch.tensor(cfg.classes, dtype=torch.int64)
    onehot = (label.unsqueeze(1) == wanted.view(1, -1, 1, 1)).float()
    share = F.avg_pool2d(onehot, cfg.size, cfg.stride)  # (N, K, gh, gw)
    best, cls = share.max(1)
    keep = best >= cfg.min_share
    gen = torch.Generator().manual_seed(cfg.seed)
    sites, classes = [], []
    for k in range(len(cfg.classes)):
        found = torch.nonzero(keep & (cls == k))
        chosen = found[torch.randperm(len(found), generator=gen)[: cfg.max_per_class]]
        sites.append(chosen)
        classes.append(torch.full((len(chosen),), k, dtype=torch.int64))
    return torch.cat(sites), torch.cat(classes)


def cut(x: torch.Tensor, sites: torch.Tensor, cfg: CropConfig) -> torch.Tensor:
    """Crops (M, C, size, size) of x (N, C, H, W) (or (N, H, W) → (M, size, size)) at `sites`
    from `crop_sites`."""
    windows = x.unfold(-2, cfg.size, cfg.stride).unfold(-2, cfg.size, cfg.stride)
    n, r, c = sites.unbind(1)
    if x.ndim == 4:  # (N, C, gh, gw, s, s) → index frame and grid cell, keep channels
        return windows.permute(0, 2, 3, 1, 4, 5)[n, r, c].contiguous()
    return windows[n, r, c].contiguous()


def load_recognition_data(world: str | Path, data_cfg: TransferDataConfig, cfg: CropConfig, *,
                          cache_dir: str | Path | None = None,
                          progress: bool = True) -> RecognitionData:
    """Object crops of a built world's transfer tensors (see the module docstring). Class
    names come from the DSEC-11 names when `data_cfg.label_space` is dsec11."""
    if data_cfg.label_space != "dsec11":
        names = tuple(str(c) for c in cfg.classes)
    else:
        names = tuple(DSEC11_NAMES[c] for c in cfg.classes)
    data = load_transfer_data(world, data_cfg, cache_dir=cache_dir, progress=progress)
    hidden = target_train_labels(world, data_cfg, cache_dir=cache_dir)
    s_sites, s_y = crop_sites(data.source_label, cfg)
    m_sites, m_y = crop_sites(data.synth_label, cfg)
    t_sites, _ = crop_sites(hidden, cfg)
    e_sites, e_y = crop_sites(data.test_label.read(EVALUATION), cfg)
    for what, sites in (("source", s_sites), ("synthetic", m_sites), ("target", t_sites),
                        ("test", e_sites)):
        if len(sites) == 0:
            raise ValueError(f"no {what} crop of classes {cfg.classes} covers "
                             f"{cfg.min_share:.0%} of a {cfg.size}-pixel window")
    return RecognitionData(names, cut(data.source_rgb, s_sites, cfg), s_y,
                           cut(data.synth_x, m_sites, cfg), cut(data.synth_gray, m_sites, cfg),
                           m_y, cut(data.target_x, t_sites, cfg), cut(data.test_x, e_sites, cfg),
                           e_y)
