"""Stages that several image → event transfer methods share, each cached in a stage folder
keyed by its settings and seed (`stage_dir`), so a benchmark trains them once per seed:

- the source model M_S: a segmenter supervised on labeled source images (RGB or grayscale);
- the synthetic-event model M_T': initialised from M_S (stem adapted to the event channels)
  and supervised on events simulated from the source (the VID2E baseline, CMESS's SPI);
- an E2VID-style reconstruction network trained on simulated (window, frame) pairs, and the
  reconstruct-then-segment path (the E2VID baseline, CMESS's T→S labeling path).

These depend on the source alone: with `StageConfig.source_cache` set (the world suites of
`bench_suite`) they are cached in one folder for every target world of a source, keyed also
by the source data's content.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from evtransfer.data.transfer import TransferData
from evtransfer.engine.fit import FitConfig, stage_dir
from evtransfer.engine.predict import reconstruct_images, segment
from evtransfer.engine.trainers import train_reconstructor, train_segmenter
from evtransfer.models import create_model
from evtransfer.models.released.e2vid import e2vid_from_checkpoint, is_e2vid_layout
from evtransfer.models.weights import load_adapted, load_pretrained, read_torch_file
from evtransfer.simulate import luminance


@dataclass
class StageConfig:
    """Networks and budgets of the shared stages."""

    segmenter: str = "segformer_b0"  # CMESS: SegFormer-B0 (3.71 M parameters)
    reconstructor: str = "e2vid"  # CMESS / ESS: E2VID, frozen at labeling time
    recon_base_channels: int = 16  # unpublished: our choice (E2VID uses 32; CPU budget)
    # code: uzh-rpg/rpg_e2vid E2VID_lightweight has BN and transposed-conv decoders ("bn",
    # "transposed", the real-data presets); the world presets train the network from scratch
    # on CPU without norm and with upsampling decoders: unpublished: our choice (their
    # tables were measured so)
    recon_norm: str = "none"
    recon_decoder: str = "upsample"
    # a local checkpoint instead of training the stage: rpg_e2vid's own .pth.tar (the
    # architecture is the file's config; models.released.e2vid), or a state dict of the
    # network above (keys under `recon_weights_prefix`, e.g. unetrecurrent.)
    recon_weights: str = ""
    recon_weights_prefix: str = ""
    # K: consecutive windows per sample (its channels = K × bins), run recurrently by the
    # reconstruction network (ESS: 20 windows of 5 bins); 1 = one window from a fresh state
    recon_windows: int = 1
    source_gray: bool = True  # unpublished: our choice (reconstructions are gray, as in ESS)
    source: FitConfig = field(default_factory=FitConfig)  # M_S
    synthetic: FitConfig = field(default_factory=lambda: FitConfig(lr=5e-4))  # M_T' from M_S
    recon: FitConfig = field(default_factory=FitConfig)
    dice_weight: float = 0.0  # unpublished: our choice (CE only)
    # a folder shared by the worlds of one source (`bench_suite`): M_S, M_T' and the
    # reconstruction network are cached there, keyed also by the content of the source data
    # they train on, so a suite trains them once per seed for all its target worlds; "": the
    # method's own folder. A location, not a setting: no stage key holds it
    # (`engine.fit._NOT_IDENTITY`)
    source_cache: str = ""


def source_input(rgb: torch.Tensor, gray: bool) -> torch.Tensor:
    """The source model's input: RGB (N, 3, H, W), or its luminance (N, 1, H, W)."""
    if not gray:
        return rgb
    return luminance(rgb).unsqueeze(1)


def source_fingerprint(data: TransferData) -> str:
    """A content hash (sha256 of shapes, dtypes and bytes) of what the source-side stages
    train on: the source images and labels, the synthetic windows, their labels and frames."""
    h = hashlib.sha256()
    for t in (data.source_rgb, data.source_label, data.synth_x, data.synth_label,
              data.synth_gray):
        h.update(f"{tuple(t.shape)} {t.dtype}".encode())
        h.update(t.detach().cpu().contiguous().numpy())
    return h.hexdigest()[:16]


def source_stage_dir(root: Path, name: str, data: TransferData, cfg: StageConfig,
                     *key) -> Path:
    """The folder of the source-side stage `name`: `root/name-<hash of key>`, or with
    `cfg.source_cache` set `source_cache/name-<hash of key and source_fingerprint(data)>`."""
    if not cfg.source_cache:
        return stage_dir(root, name, *key)
    return stage_dir(cfg.source_cache, name, *key, source_fingerprint(data))


def train_source_model(data: TransferData, cfg: StageConfig, root: Path, seed: int, device,
                       progress: bool) -> tuple[nn.Module, float]:
    """M_S: the segmenter supervised on the labeled source images; (model, minutes)."""
    x = source_input(data.source_rgb, cfg.source_gray)
    model = create_model(cfg.segmenter, in_chans=x.shape[1], num_classes=data.num_classes,
                         seed=seed).to(device)
    run = source_stage_dir(root, "M_S", data, cfg, cfg.segmenter, cfg.source_gray, cfg.source,
                           cfg.dice_weight, seed)
    minutes = train_segmenter(model, x, data.source_label, cfg.source, run_dir=run, seed=seed,
                              device=device, progress=progress, dice_weight=cfg.dice_weight)
    return model, minutes


def train_synthetic_model(m_s: nn.Module, data: TransferData, cfg: StageConfig, root: Path,
                          seed: int, device, progress: bool) -> tuple[nn.Module, float]:
    """M_T': initialised from M_S, supervised on synthetic windows E'_k; (model, minutes)."""
    model = create_model(cfg.segmenter, in_chans=data.synth_x.shape[1],
                         num_classes=data.num_classes, seed=seed).to(device)
    load_adapted(model, m_s.state_dict())
    run = source_stage_dir(root, "M_T", data, cfg, cfg.segmenter, cfg.source_gray, cfg.source,
                           cfg.synthetic, cfg.dice_weight, seed)
    minutes = train_segmenter(model, data.synth_x, data.synth_label, cfg.synthetic, run_dir=run,
                              seed=seed, device=device, progress=progress,
                              dice_weight=cfg.dice_weight)
    return model, minutes


def recon_key(cfg: StageConfig) -> tuple:
    """What identifies a trained reconstruction stage (K = 1, no norm and upsampling decoders
    keep the key of runs made before `recon_windows`, `recon_norm`, `recon_decoder` existed)."""
    windows = () if cfg.recon_windows == 1 else (cfg.recon_windows,)
    arch = (() if (cfg.recon_norm, cfg.recon_decoder) == ("none", "upsample")
            else (cfg.recon_norm, cfg.recon_decoder))
    return (cfg.reconstructor, cfg.recon_base_channels, cfg.recon, *windows, *arch)


def reconstruction_network(cfg: StageConfig, in_chans: int) -> nn.Module:
    """The reconstruction network for windows of `in_chans` channels: loaded from
    `cfg.recon_weights` when set (strictly: every tensor the network needs, else ValueError
    naming the file), else freshly initialised (`cfg.reconstructor`, width, norm, decoders)."""
    path = cfg.recon_weights
    if path and not path.endswith(".safetensors"):
        obj = read_torch_file(path)
        if is_e2vid_layout(obj):
            model = e2vid_from_checkpoint(obj, path)
            if (model.in_chans, model.feature_channels[0]) != (in_chans,
                                                               2 * cfg.recon_base_channels):
                raise ValueError(f"{path}: the E2VID takes {model.in_chans} bins at "
                                 f"{model.feature_channels[0] // 2} base channels; the data "
                                 f"gives {in_chans} per window and stages.recon_base_channels "
                                 f"is {cfg.recon_base_channels}")
            return model
    model = create_model(cfg.reconstructor, in_chans=in_chans,
                         base_channels=cfg.recon_base_channels, norm=cfg.recon_norm,
                         decoder=cfg.recon_decoder)
    if path:
        load_pretrained(model, path, prefix=cfg.recon_weights_prefix, adapt_in_chans=False)
    return model


def train_reconstruction(data: TransferData, cfg: StageConfig, root: Path, seed: int, device,
                         progress: bool) -> tuple[nn.Module, float]:
    """The E2VID-style network on simulated (window, frame) pairs, or loaded from
    `cfg.recon_weights` (0 minutes); (model, minutes)."""
    channels, k = data.synth_x.shape[1], cfg.recon_windows
    if k < 1 or channels % k:
        raise ValueError(f"stages.recon_windows must divide the event input's {channels} "
                         f"channels into windows, got {k}")
    model = reconstruction_network(cfg, channels // k).to(device)
    if cfg.recon_weights:
        return model, 0.0
    run = source_stage_dir(root, "recon", data, cfg, *recon_key(cfg), seed)
    minutes = train_reconstructor(model, data.synth_x, data.synth_gray, cfg.recon, run_dir=run,
                                  seed=seed, device=device, progress=progress)
    return model, minutes


def recon_then_segment(recon: nn.Module, m_s: nn.Module, x: torch.Tensor, cfg: StageConfig,
                       device) -> torch.Tensor:
    """Class probabilities (N, C, H, W) of M_S on images reconstructed from windows x."""
    images = reconstruct_images(recon, x, device)
    return segment(m_s, images if cfg.source_gray else images.expand(-1, 3, -1, -1),
                   device=device)
