"""ESS: event-based semantic segmentation learned from still images (the common baseline).

Sun, Messikommer, Gehrig, Scaramuzza, "ESS: Learning Event-based Semantic Segmentation from
Still Images", ECCV 2022; code: uzh-rpg/ess (training/ess_trainer.py, models/style_networks.py,
utils/loss_functions.py, config/settings_{DSEC,DDD17}.yaml); notes in ../shared/methods/ess.md.

Frozen event encoder: an E2VID-style recurrent U-Net. ESS loads the released
E2VID_lightweight; here it is the shared reconstruction stage (trained on simulated (window,
frame) pairs, `methods._stages.train_reconstruction`, the cache CMESS and the recon_source
baseline use), or a user-supplied E2VID checkpoint. It runs recurrently over the K windows of
a sample (input channels = K × bins; the real loaders give 20 × 5), each window first
normalised as E2VID's inference does (`event_input_norm`), and yields latents at
strides 2, 4, 8 ("latent_real") and the last window's reconstruction. Then two stages (the
CMESS project page: "ESS follows a two-stage training process"):

1. Image-domain initialisation: the image encoder (and here the decoder) supervised on the
   labelled grayscale source images. Not in the public code, which starts the image encoder
   from ImageNet weights; those are loadable, and nothing is downloaded.
2. UDA training, one iteration = three backward passes whose gradients add up, then one step
   of each optimizer (RAdam, β = (0, 0.999), constant rates), exactly as ess_trainer.py:
   - task: Dice + CE of the decoder on the image encoder's latents of a labelled grayscale
     source image (DSEC: the latents are detached, so only the decoder learns from it);
   - alignment (image encoder only, decoder frozen): the image encoder applied to the E2VID
     reconstruction ("latent_fake") matches latent_real (L1 at three scales), its decoder
     features match the no-grad ones of latent_real (L1 at strides 2, 4) and, on DSEC, its
     prediction matches theirs (the symmetric KL the code calls "symJSDivLoss");
   - decoder step (decoder only): the prediction and features from latent_real match the
     no-grad ones from latent_fake; the supervised variant adds Dice + CE on event labels.
   Inference: events → frozen E2VID encoder → task decoder (the image encoder is not used).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils.data import Dataset

from evtransfer.data._common import TensorDict
from evtransfer.data.augment import hflip
from evtransfer.data.transfer import TransferData
from evtransfer.engine.fit import FitConfig, fit, stage_dir
from evtransfer.engine.loop import TrainState
from evtransfer.engine.predict import segment
from evtransfer.losses import segmentation_loss
from evtransfer.methods._stages import (
    StageConfig,
    recon_key,
    source_input,
    source_stage_dir,
    train_reconstruction,
)
from evtransfer.methods.result import MethodResult
from evtransfer.models import create_model, load_pretrained
from evtransfer.models.recurrent import INPUT_NORMS, normalize_windows
from evtransfer.models.segmenters import E2vidSegmenter


def _uda_fit() -> FitConfig:
    # code: uzh-rpg/ess config/settings_DSEC.yaml (lr_back 5e-4, lr_decay 1: constant rate,
    # batch_size_a/b 8); ess_trainer.py (RAdam weight_decay 0, no gradient clipping). The
    # iteration count is a CPU budget (ESS: 50 epochs of DSEC): unpublished: our choice.
    return FitConfig(steps=400, batch=8, lr=5e-4, min_lr=5e-4, weight_decay=0.0,
                     warmup_steps=0, clip_grad=0.0)


@dataclass
class EssConfig:
    """Defaults: ESS's DSEC-Semantic settings (the world is a DSEC-Semantic layout)."""

    stages: StageConfig = field(default_factory=StageConfig)  # the reconstruction stage
    # a local E2VID checkpoint (e.g. E2VID_lightweight saved as .pth) replaces the
    # reconstruction stage; its architecture is stages.reconstructor/recon_base_channels
    event_encoder_weights: str = ""  # code: uzh-rpg/ess (e2vid/pretrained/, user-downloaded)
    event_encoder_prefix: str = "unetrecurrent."  # code: uzh-rpg/rpg_e2vid model/model.py
    # code: uzh-rpg/ess e2vid/image_reconstructor.py update_reconstruction runs
    # EventPreprocessor (e2vid/utils/inference_utils.py, no_normalize False by default) on
    # every window before E2VID, in training and validation: non-zero voxels standardised
    # with statistics pooled over the window's whole batch ("batch"); "sample" takes them
    # per sample (rpg_e2vid's batch-1 inference), "none" feeds the windows as they come
    event_input_norm: str = "batch"
    # torchvision ResNet-18 weights for the image encoder's BN and layers 1-3 (ESS: ImageNet,
    # models/style_networks.py); "" = random init (nothing is downloaded)
    image_encoder_weights: str = ""
    decoder_res_blocks: int = 5  # code: uzh-rpg/ess models/style_networks.py (SemSegE2VID)
    # stage 1, the image-domain initialisation (weigao-3dv.github.io _research/
    # 2023-08-28-cmess.md; its settings are unpublished: our choice, the M_S stage's budget
    # and AdamW); steps 0 skips it (ESS's code starts from ImageNet weights instead)
    init: FitConfig = field(default_factory=FitConfig)
    uda: FitConfig = field(default_factory=_uda_fit)  # uda.lr is the decoder's (lr_back)
    lr_front: float = 5e-4  # code: uzh-rpg/ess config/settings_DSEC.yaml (image encoder)
    weight_task: float = 1.0  # code: settings_DSEC.yaml (weight_task_loss)
    weight_pred: float = 1.0  # code: settings_DSEC.yaml (weight_cycle_pred_loss)
    weight_emb: float = 1.0  # code: settings_DSEC.yaml (weight_cycle_emb_loss)
    weight_feat: float = 1.0  # code: settings_DSEC.yaml (weight_cycle_task_loss)
    align_pred: bool = True  # code: ess_trainer.py trainCycleStep (KL term on DSEC only)
    detach_task_latent: bool = True  # code: ess_trainer.py trainTaskStep (DSEC: detached)
    train_on_event_labels: bool = False  # code: settings_*.yaml (True: the supervised rows)

    def __post_init__(self) -> None:
        if self.event_input_norm not in INPUT_NORMS:
            raise ValueError(f"ess: event_input_norm must be one of {INPUT_NORMS}, got "
                             f"{self.event_input_norm!r}")
        if self.uda.lr <= 0 or self.lr_front < 0:
            raise ValueError(f"ess: uda.lr must be > 0 and lr_front >= 0, got {self.uda.lr}, "
                             f"{self.lr_front}")


# --- losses ---------------------------------------------------------------------------------
def task_loss(logits: Tensor, label: Tensor) -> Tensor:
    """ESS's task loss: Dice (batch-summed, class-mean) + cross-entropy, ignore 255.
    logits (B, C, H, W), label (B, H, W) int64."""
    return segmentation_loss(logits, label, dice_weight=1.0)


def symmetric_kl(pred: Tensor, target: Tensor, eps: float = 1e-10) -> Tensor:
    """ESS's "symJSDivLoss": ½·KL(q‖p) + ½·KL(p‖q) of p = softmax(pred), q = softmax(target)
    over dim 1, both clamped at `eps`, each KL averaged over all B·C·H·W elements (torch
    KLDivLoss 'mean'). Logits (B, C, H, W); gradients reach whichever input carries them."""
    p = pred.float().softmax(1).clamp_min(eps)
    q = target.float().softmax(1).clamp_min(eps)
    log_p, log_q = p.log(), q.log()
    return 0.5 * (q * (log_q - log_p)).mean() + 0.5 * (p * (log_p - log_q)).mean()


def latent_l1(fake: list[Tensor], real: list[Tensor]) -> Tensor:
    """Σ over scales of the mean absolute difference of two latent lists (strides 2, 4, 8)."""
    return sum(F.l1_loss(f, r) for f, r in zip(fake, real, strict=True))


def feature_l1(fake: dict[int, Tensor], real: dict[int, Tensor]) -> Tensor:
    """L1 between two sets of decoder features at strides 2 and 4 (summed)."""
    return F.l1_loss(fake[2], real[2]) + F.l1_loss(fake[4], real[4])


# --- the frozen recurrent event encoder ------------------------------------------------------
def event_latents(encoder: nn.Module, x: Tensor, with_image: bool = False,
                  input_norm: str = "none") -> tuple[Tensor | None, list[Tensor]]:
    """Run a recurrent E2VID (`in_chans` = bins) over the K windows of x (B, K·bins, H, W),
    oldest first, from a fresh state, each window first normalised by `input_norm` ("batch":
    `e2vid_input_norm` pooled over the batch, as ESS's code; "sample"; "none"). Returns the
    last window's reconstruction (B, 1, H, W) in [0, 1] (None unless `with_image`) and its
    latents at strides 2, 4, 8."""
    last, state = encoder.history(normalize_windows(x, encoder.in_chans, input_norm))
    if with_image:
        out = encoder.forward_all(last, state)
        return out.image, out.features
    latents, _ = encoder.encode(last, state)
    return None, latents


def event_encoder(data: TransferData, cfg: EssConfig, root: Path, seed: int, device,
                  progress: bool) -> tuple[nn.Module, dict[str, float]]:
    """The frozen E2VID: user weights, or the shared reconstruction stage; (model, minutes)."""
    stages = cfg.stages
    if cfg.event_encoder_weights:
        stages = replace(stages, recon_weights=cfg.event_encoder_weights,
                         recon_weights_prefix=cfg.event_encoder_prefix)
    model, t = train_reconstruction(data, stages, root, seed, device, progress)
    minutes = {} if cfg.event_encoder_weights else {"recon": t}
    model.requires_grad_(False)
    return model.eval(), minutes


# --- the image side ---------------------------------------------------------------------------
def _resnet18_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """torchvision ResNet-18 names → `ImageLatentEncoder` (bn1 and layers 1-3; ESS replaces
    conv1 by a fresh conv on its grayscale input and drops layer4/fc)."""
    out = {}
    for key, value in state.items():
        if key.startswith("bn1."):
            out["stem.1." + key[4:]] = value
        elif key[:7] in ("layer1.", "layer2.", "layer3."):
            out[f"layers.{int(key[5]) - 1}.{key[7:]}"] = value
    return out


def load_image_encoder_weights(encoder: nn.Module, path: str | Path) -> None:
    """Load a torchvision ResNet-18 weights file into ESS's image encoder (b = 32) in place;
    everything but the first conv must load, else ValueError naming the file."""
    report = load_pretrained(encoder, path, key_map=_resnet18_keys, strict=False)
    if report.missing != ("stem.0.weight",) or report.mismatched or report.unexpected:
        raise ValueError(f"{path}: not ResNet-18 weights for ESS's image encoder:\n"
                         f"{report.summary()}")


class SourceTargetPairs(Dataset):
    """Unpaired samples of both domains (ESS zips two shuffled loaders): item i = source image
    i mod N (`img` (1, H, W), `y`) and target window perm[i] mod K (`x`, and `y_t` when target
    labels are given); length max(N, K)."""

    def __init__(self, image: Tensor, label: Tensor, target_x: Tensor, seed: int,
                 target_label: Tensor | None = None) -> None:
        if target_label is not None and len(target_label) != len(target_x):
            raise ValueError(f"target labels ({len(target_label)}) must match the target "
                             f"windows ({len(target_x)})")
        self.image, self.label, self.x, self.y_t = image, label, target_x, target_label
        n = max(len(image), len(target_x))
        self.perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return len(self.perm)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        s, t = i % len(self.image), int(self.perm[i]) % len(self.x)
        item = {"img": self.image[s], "y": self.label[s], "x": self.x[t]}
        if self.y_t is not None:
            item["y_t"] = self.y_t[t]
        return item


# --- one UDA iteration ---------------------------------------------------------------------
def _frozen(module: nn.Module, *args):
    """`module(*args)` with its parameters detached: gradients pass through to the inputs
    only (ESS sets requires_grad False on the decoder for the alignment backward)."""
    params = {n: p.detach() for n, p in module.named_parameters()}
    return functional_call(module, params, args)


def ess_losses(image_encoder: nn.Module, decoder: nn.Module, events: nn.Module, batch: dict,
               cfg: EssConfig) -> dict[str, Tensor]:
    """The three losses of one ESS iteration with the code's gradient routing, summed in
    `loss` (one backward of the sum gives the gradients of ESS's three backward passes)."""
    size = batch["img"].shape[-2:]
    latents = image_encoder(batch["img"])
    if cfg.detach_task_latent:
        latents = [t.detach() for t in latents]
    l_task = cfg.weight_task * task_loss(decoder(latents, size).logits, batch["y"])

    with torch.no_grad():
        recon, real = event_latents(events, batch["x"], with_image=True,
                                    input_norm=cfg.event_input_norm)
    fake = image_encoder(recon)
    pred_fake = _frozen(decoder, fake, size)  # alignment: grad → image encoder only
    pred_real = decoder(real, size)  # decoder step: grad → decoder only (real is constant)
    # the other branch's no-grad outputs are the targets (same weights, so no re-run needed)
    fake_logits, fake_feats = pred_fake.logits.detach(), _detach(pred_fake.features)
    real_logits, real_feats = pred_real.logits.detach(), _detach(pred_real.features)

    l_emb = cfg.weight_emb * latent_l1(fake, real)
    l_align = l_emb + cfg.weight_feat * feature_l1(pred_fake.features, real_feats)
    if cfg.align_pred:
        l_align = l_align + symmetric_kl(pred_fake.logits, real_logits)
    l_pred = cfg.weight_pred * symmetric_kl(pred_real.logits, fake_logits)
    l_dec = l_pred + cfg.weight_feat * feature_l1(pred_real.features, fake_feats)
    out = {"l_task": l_task.detach(), "l_emb": l_emb.detach(), "l_pred": l_pred.detach()}
    if cfg.train_on_event_labels:
        l_event = cfg.weight_task * task_loss(pred_real.logits, batch["y_t"])
        l_dec = l_dec + l_event
        out["l_event"] = l_event.detach()
    return {"loss": l_task + l_align + l_dec, **out}


def _detach(features: dict[int, Tensor]) -> dict[int, Tensor]:
    return {k: v.detach() for k, v in features.items()}


# --- the UDA stage and the entry points ---------------------------------------------------------
def _radam(cfg: EssConfig):
    # code: uzh-rpg/ess training/ess_trainer.py (RAdam, betas (0, 0.999), weight decay 0)
    return lambda groups: torch.optim.RAdam(groups, lr=cfg.uda.lr, betas=(0.0, 0.999),
                                            weight_decay=cfg.uda.weight_decay)


def image_networks(data: TransferData, cfg: EssConfig, seed: int, device
                   ) -> tuple[nn.Module, nn.Module]:
    """ESS's trainable pair: the image encoder (latents with the event encoder's channels;
    ResNet-18 weights when given) and the task decoder."""
    image_encoder = create_model("image_latent_encoder", in_chans=1,
                                 base_channels=cfg.stages.recon_base_channels, seed=seed)
    if cfg.image_encoder_weights:
        load_image_encoder_weights(image_encoder, cfg.image_encoder_weights)
    decoder = create_model("latent_seg_decoder", num_classes=data.num_classes,
                           in_channels=image_encoder.feature_channels,
                           num_res_blocks=cfg.decoder_res_blocks, seed=seed)
    return image_encoder.to(device), decoder.to(device)


def image_domain_init(image_encoder: nn.Module, decoder: nn.Module, data: TransferData,
                      cfg: EssConfig, run_dir: Path, seed: int, device, progress: bool) -> float:
    """Stage 1: the image encoder and the decoder supervised (Dice + CE) on the labelled
    grayscale source images, in place; minutes."""
    def step(batch: dict, state: TrainState) -> dict:
        batch = hflip(batch, state.generators["aug"])
        latents = state.modules["image_encoder"](batch["img"])
        logits = state.modules["decoder"](latents, batch["img"].shape[-2:]).logits
        return {"loss": task_loss(logits, batch["y"])}

    images = TensorDict(img=source_input(data.source_rgb, gray=True), y=data.source_label)
    return fit({"image_encoder": image_encoder, "decoder": decoder}, images, step, cfg.init,
               run_dir=run_dir, seed=seed, device=device, progress=progress)


def uda_stage(events: nn.Module, image_encoder: nn.Module, decoder: nn.Module,
              data: TransferData, cfg: EssConfig, run_dir: Path, seed: int, device,
              progress: bool, labels: Tensor | None) -> float:
    """Stage 2: ESS's UDA training of the image encoder and the decoder, in place; minutes."""
    pairs = SourceTargetPairs(source_input(data.source_rgb, gray=True), data.source_label,
                              data.target_x, seed, labels)
    groups = [{"params": list(image_encoder.parameters()), "lr_scale": cfg.lr_front / cfg.uda.lr},
              {"params": list(decoder.parameters())}]

    def step(batch: dict, state: TrainState) -> dict:
        batch = hflip(batch, state.generators["aug"])  # one flip per pair: both are unaligned
        return ess_losses(state.modules["image_encoder"], state.modules["decoder"], events,
                          batch, cfg)

    return fit({"image_encoder": image_encoder, "decoder": decoder}, pairs, step, cfg.uda,
               run_dir=run_dir, seed=seed, device=device, progress=progress,
               param_groups=groups, optimizer=_radam(cfg))


def train_ess(data: TransferData, cfg: EssConfig, root: str | Path, *, seed: int = 0,
              device: str | torch.device = "cpu", progress: bool = True,
              labels: Tensor | None = None) -> MethodResult:
    """ESS in `root` (the reconstruction, initialisation and UDA stages are cached and
    resume). `labels` (K, H, W): the target train labels, needed only with
    `cfg.train_on_event_labels`. The result predicts from events alone; its network is what
    runs at inference: the E2VID head and recurrent encoders, and the task decoder."""
    if cfg.train_on_event_labels and labels is None:
        raise ValueError("ess: train_on_event_labels needs the target train labels")
    root, device = Path(root), torch.device(device)
    events, minutes = event_encoder(data, cfg, root, seed, device, progress)
    image_encoder, decoder = image_networks(data, cfg, seed, device)
    if cfg.init.steps:
        # the source images alone: shared by every target world (`stages.source_cache`)
        init = source_stage_dir(root, "ESS_init", data, cfg.stages,
                                cfg.stages.recon_base_channels, cfg.decoder_res_blocks,
                                cfg.image_encoder_weights, cfg.init, data.num_classes, seed)
        minutes["ESS_init"] = image_domain_init(image_encoder, decoder, data, cfg, init, seed,
                                                device, progress)
    own = {k: v for k, v in asdict(cfg).items() if k != "stages"}
    run = stage_dir(root, "ESS", own, cfg.event_encoder_weights or recon_key(cfg.stages), seed)
    minutes["ESS"] = uda_stage(events, image_encoder, decoder, data, cfg, run, seed, device,
                               progress, labels if cfg.train_on_event_labels else None)
    segmenter = E2vidSegmenter(events, decoder.eval(), cfg.event_input_norm).eval()
    network = nn.ModuleList([events.head, events.encoders, decoder])
    return MethodResult(lambda x: segment(segmenter, x, device=device), network, minutes)


def train_ess_supervised(data: TransferData, cfg: EssConfig, root: str | Path, *,
                         seed: int = 0, device: str | torch.device = "cpu",
                         progress: bool = True, labels: Tensor | None = None) -> MethodResult:
    """ESS with event labels added (the "events + frames labels" upper-bound row)."""
    return train_ess(data, replace(cfg, train_on_event_labels=True), root, seed=seed,
                     device=device, progress=progress, labels=labels)
