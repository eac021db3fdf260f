"""Baselines of the transfer table, on the same stages and budgets as the methods.

- `source_only`: M_T', the segmenter trained on events simulated from the labeled source
  (initialised from the source model) and applied to real target events: the VID2E-style
  baseline (Gehrig et al., CVPR 2020) and CMESS's stage-1 model.
- `recon_source`: real target events → E2VID-style reconstruction → the source model M_S
  (the "E2VID → image model" row of ESS's table).
- `oracle`: the segmenter supervised on the target's own labels (train split), from the same
  source-model initialisation: the upper bound no transfer method can use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from evtransfer.data.transfer import TransferData
from evtransfer.engine.fit import FitConfig, stage_dir
from evtransfer.engine.predict import segment
from evtransfer.engine.trainers import train_segmenter
from evtransfer.methods._stages import (
    StageConfig,
    recon_then_segment,
    train_reconstruction,
    train_source_model,
    train_synthetic_model,
)
from evtransfer.methods.result import MethodResult, segmentation_spec
from evtransfer.models import create_model
from evtransfer.models.weights import load_adapted


@dataclass
class BaselineConfig:
    """The shared stages, and the oracle's supervised run."""

    stages: StageConfig = field(default_factory=StageConfig)
    oracle: FitConfig = field(default_factory=FitConfig)


def source_only(data: TransferData, cfg: BaselineConfig, root: str | Path, *, seed: int = 0,
                device: str | torch.device = "cpu", progress: bool = True) -> MethodResult:
    """M_T' on real target events."""
    device, root = torch.device(device), Path(root)
    m_s, t_s = train_source_model(data, cfg.stages, root, seed, device, progress)
    m_t, t_t = train_synthetic_model(m_s, data, cfg.stages, root, seed, device, progress)
    spec = segmentation_spec(cfg.stages.segmenter, data.synth_x.shape[1], data.num_classes)
    return MethodResult(lambda x: segment(m_t, x, device=device), m_t,
                        {"M_S": t_s, "M_T": t_t}, spec)


def recon_source(data: TransferData, cfg: BaselineConfig, root: str | Path, *, seed: int = 0,
                 device: str | torch.device = "cpu", progress: bool = True) -> MethodResult:
    """Reconstruction network then the source model M_S."""
    device, root = torch.device(device), Path(root)
    m_s, t_s = train_source_model(data, cfg.stages, root, seed, device, progress)
    recon, t_r = train_reconstruction(data, cfg.stages, root, seed, device, progress)
    return MethodResult(lambda x: recon_then_segment(recon, m_s, x, cfg.stages, device),
                        torch.nn.ModuleList([recon, m_s]), {"M_S": t_s, "recon": t_r})


def oracle(data: TransferData, cfg: BaselineConfig, root: str | Path, *, seed: int = 0,
           device: str | torch.device = "cpu", progress: bool = True,
           labels: torch.Tensor | None = None) -> MethodResult:
    """The segmenter supervised on target labels (`labels`: the train split's, (K, H, W)),
    initialised from the source model M_S like every method (our stand-in for the ImageNet
    initialisation of the papers' supervised rows)."""
    if labels is None:
        raise ValueError("the oracle needs the target train labels")
    device, root = torch.device(device), Path(root)
    m_s, t_s = train_source_model(data, cfg.stages, root, seed, device, progress)
    model = create_model(cfg.stages.segmenter, in_chans=data.target_x.shape[1],
                         num_classes=data.num_classes, seed=seed).to(device)
    load_adapted(model, m_s.state_dict())
    run = stage_dir(root, "oracle", cfg.stages.segmenter, cfg.stages.source_gray,
                    cfg.stages.source, cfg.oracle, seed)
    minutes = train_segmenter(model, data.target_x, labels, cfg.oracle, run_dir=run, seed=seed,
                              device=device, progress=progress,
                              dice_weight=cfg.stages.dice_weight)
    spec = segmentation_spec(cfg.stages.segmenter, data.target_x.shape[1], data.num_classes)
    return MethodResult(lambda x: segment(model, x, device=device), model,
                        {"M_S": t_s, "oracle": minutes}, spec)
