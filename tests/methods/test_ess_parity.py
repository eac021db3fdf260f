"""ESS against its authors' code (../shared/refs/uzh-rpg+ess): the image encoder and the task
decoder on the same random weights (loaded through the released-checkpoint key maps), the
losses, the gradient routing of `ESSModel.train_step` itself, the mIoU of
`evaluation/metrics.py` and the `Epoch_N.pt` files written by `utils/saver.py`.

Stubbed here because they do not import in this environment: torchvision (the reference
encoder takes `torchvision.models.resnet18`, stood in for by the torchvision-layout ResNet-18
below; `torchvision.utils`/`transforms` are only used for visualisation), tensorboardX
(`SummaryWriter`, logging only) and albumentations (augmentations, not exercised)."""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from evtransfer.methods.ess import EssConfig, ess_losses, symmetric_kl, task_loss
from evtransfer.metrics import ConfusionMatrix, segmentation_scores
from evtransfer.models import create_model
from evtransfer.models.released.ess import (
    CheckpointLayoutError,
    decoder_state,
    image_encoder_state,
    load_ess_checkpoint,
    read_ess_checkpoint,
)
from tests.models.netref import randomize_
from tests.refs import import_ref, ref_attr, stub_module

REPO = "uzh-rpg+ess"
# where ESS's Dice loss works: its make_one_hot (utils/loss_functions.py:54) puts the one-hot
# on CUDA whenever CUDA exists, so the loss tests run there on a GPU machine
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


# --- the stand-in for torchvision.models.resnet18 (torchvision's module layout) -------------
class _TvBasicBlock(nn.Module):
    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class _TvResNet18(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin, layers = 64, []
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(nn.Sequential(_TvBasicBlock(cin, planes, stride),
                                        _TvBasicBlock(planes, planes, 1)))
            cin = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, 1000)


def _stubs() -> dict[str, types.ModuleType]:
    models = stub_module("torchvision.models", resnet18=lambda pretrained=False: _TvResNet18())
    utils, transforms = stub_module("torchvision.utils"), stub_module("torchvision.transforms")
    tv = stub_module("torchvision", models=models, utils=utils, transforms=transforms)
    return {"torchvision": tv, "torchvision.models": models, "torchvision.utils": utils,
            "torchvision.transforms": transforms,
            "tensorboardX": stub_module("tensorboardX", SummaryWriter=None),
            "albumentations": stub_module("albumentations")}


def _ref(module: str) -> types.ModuleType:
    return import_ref(REPO, module, stubs=_stubs())


def _close(got: torch.Tensor, want: torch.Tensor, what: str, rel: float = 1e-5,
           floor: float = 0.0) -> None:
    """max |got − want| ≤ rel · max(max |want|, floor): relative to the tensor's scale, or to
    `floor` where the exact value is 0 and both sides hold rounding noise."""
    scale = max(float(want.abs().max()), floor) or 1.0
    err = float((got.double() - want.double()).abs().max())
    assert err <= rel * scale, f"{what}: max error {err:.3g} vs scale {scale:.3g}"


def _ref_networks(classes: int, seed: int = 0):
    nets = _ref("models.style_networks")
    encoder = ref_attr(nets, "StyleEncoderE2VID")(1, skip_connect=True)
    decoder = ref_attr(nets, "SemSegE2VID")(input_c=256, output_c=classes, skip_connect=True,
                                            skip_type="concat")
    return randomize_(encoder, seed), randomize_(decoder, seed + 1)


def _our_networks(ref_encoder: nn.Module, ref_decoder: nn.Module, classes: int):
    encoder = create_model("image_latent_encoder", in_chans=1, base_channels=32)
    decoder = create_model("latent_seg_decoder", num_classes=classes, num_res_blocks=5)
    encoder.load_state_dict(image_encoder_state(ref_encoder.state_dict()))
    decoder.load_state_dict(decoder_state(ref_decoder.state_dict()))
    return encoder, decoder


def _latents(gen: torch.Generator, b: int = 2, h: int = 32, w: int = 48) -> dict:
    return {1: torch.rand(b, 1, h, w, generator=gen),
            2: torch.randn(b, 64, h // 2, w // 2, generator=gen),
            4: torch.randn(b, 128, h // 4, w // 4, generator=gen),
            8: torch.randn(b, 256, h // 8, w // 8, generator=gen)}


# --- networks -----------------------------------------------------------------------------
def test_image_encoder_matches_style_encoder_e2vid():
    ref_enc, ref_dec = _ref_networks(11)
    enc, _ = _our_networks(ref_enc, ref_dec, 11)
    ref_enc.eval(), enc.eval()
    x = torch.rand(2, 1, 32, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = ref_enc(x), enc(x)
    assert sorted(want) == [1, 2, 4, 8]
    for scale, g in zip((2, 4, 8), got, strict=True):
        _close(g, want[scale], f"latent at stride {scale}")


@pytest.mark.parametrize("classes", [11, 6])
def test_task_decoder_matches_semseg_e2vid(classes):
    ref_enc, ref_dec = _ref_networks(classes)
    _, dec = _our_networks(ref_enc, ref_dec, classes)
    latents = _latents(torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = ref_dec(dict(latents))
        got = dec([latents[2], latents[4], latents[8]], latents[1].shape[-2:])
    _close(got.logits, want[1], "logits")
    assert torch.equal(got.logits.argmax(1), want[1].argmax(1))
    for scale in (2, 4):
        _close(got.features[scale], want[scale], f"decoder features at stride {scale}")


# --- losses ---------------------------------------------------------------------------------
def test_task_loss_matches_dice_plus_cross_entropy_of_the_code():
    losses = _ref("utils.loss_functions")
    ref = ref_attr(losses, "TaskLoss")(losses=["dice", "cross_entropy"], gamma=2.0,
                                       num_classes=5, ignore_index=255, reduction="mean")
    gen = torch.Generator().manual_seed(2)
    logits = (torch.randn(3, 5, 8, 12, generator=gen) * 2).to(DEVICE)
    label = torch.randint(0, 4, (3, 8, 12), generator=gen)  # class 4 absent
    label[0, :3] = 255
    label = label.to(DEVICE)
    ours, theirs = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    got, want = task_loss(ours, label), ref(theirs, label)
    got.backward(), want.backward()
    _close(got.detach(), want.detach(), "task loss")
    _close(ours.grad, theirs.grad, "task loss gradient")


def test_symmetric_kl_matches_sym_js_div_loss_values_and_gradients():
    ref = ref_attr(_ref("utils.loss_functions"), "symJSDivLoss")()
    gen = torch.Generator().manual_seed(3)
    a, b = torch.randn(2, 6, 5, 7, generator=gen), torch.randn(2, 6, 5, 7, generator=gen) * 3
    a[0, 0, 0, 0] = -40.0  # below the 1e-10 clamp on both sides' softmax
    pairs = [t.clone().requires_grad_() for t in (a, b, a, b)]
    got, want = symmetric_kl(pairs[0], pairs[1]), ref(pairs[2], pairs[3])
    (got + 0).backward(), want.backward()
    _close(got.detach(), want.detach(), "symmetric KL")
    _close(pairs[0].grad, pairs[2].grad, "d KL / d pred")
    _close(pairs[1].grad, pairs[3].grad, "d KL / d target")


class _Reconstructor:
    """Stands in for ESS's ImageReconstructor (E2VID parity is test_recurrent's): returns the
    same reconstruction and latents as the `_FixedEvents` our side gets."""

    def __init__(self, image, latents):
        self.image, self.latents = image, latents
        self.last_states_for_each_channel = {}

    def update_reconstruction(self, event_tensor):
        return self.image.clone(), None, {k: v.clone() for k, v in self.latents.items()}


class _FixedEvents(nn.Module):
    """Our side's frozen E2VID with the same fixed outputs (`history` / `forward_all`); the
    batch's x holds 2 windows of `in_chans` = 2 bins."""

    in_chans = 2

    def __init__(self, image, latents):
        super().__init__()
        self.image, self.latents = image, latents

    def history(self, x):
        return x, None

    def forward_all(self, last, state):
        return types.SimpleNamespace(image=self.image.clone(),
                                     features=[self.latents[s].clone() for s in (2, 4, 8)])


# (dataset_name_b, train_on_event_labels, weights (task, emb, task features, KL)):
# the DSEC and DDD17 settings files, and the supervised ESS row
ROUTES = {"dsec": ("DSEC_events", False, (1.0, 1.0, 1.0, 1.0)),
          "ddd17": ("DDD17_events", False, (1.0, 0.01, 0.01, 1.0)),
          "dsec_supervised": ("DSEC_events", True, (1.0, 1.0, 1.0, 1.0))}


def _ref_train_step(trainer_cls, enc, dec, batch, events, route):
    """Run the reference `ESSModel.train_step` (its three backward passes and requires_grad
    switches) on the given networks; optimisers at lr 0 leave the gradients to read."""
    name, supervised, (w_task, w_emb, w_feat, w_kl) = route
    losses = _ref("utils.loss_functions")
    self = object.__new__(trainer_cls)
    self.settings = types.SimpleNamespace(
        dataset_name_b=name, weight_task_loss=w_task, weight_cycle_loss=w_emb,
        weight_cycle_task_loss=w_feat, weight_KL_loss=w_kl, skip_connect_encoder=True,
        require_paired_data_train_a=False, require_paired_data_train_b=False,
        nr_events_data_b=2, input_channels_b=2, train_on_event_labels=supervised)
    self.models_dict = {"front_sensor_a": enc, "front_sensor_b": nn.Identity(), "back_end": dec}
    self.optimizers_dict = {"optimizer_back": torch.optim.SGD(dec.parameters(), lr=0.0),
                            "optimizer_front_sensor_a": torch.optim.SGD(enc.parameters(), lr=0.0)}
    self.cycle_content_loss = nn.L1Loss()
    self.cycle_pred_loss = ref_attr(losses, "symJSDivLoss")()
    self.task_loss = ref_attr(losses, "TaskLoss")(losses=["dice", "cross_entropy"],
                                                  num_classes=4, ignore_index=255)
    self.reconstructor = _Reconstructor(*events)
    self.visualize_epoch = lambda: False
    batch_a, batch_b = [batch["img"], batch["y"]], [batch["x"], batch["y_t"]]
    out, _, total = trainer_cls.train_step(self, [batch_a, batch_b])
    return out, total


@pytest.mark.parametrize("route", list(ROUTES))
def test_losses_and_gradient_routing_match_ess_train_step(route):
    """Values of every loss and the gradient of every parameter after one iteration equal
    those of the reference trainer's own train_step (DSEC: detached task latents, KL in the
    alignment; DDD17: neither, 0.01 weights; supervised: event labels on the decoder)."""
    trainer = ref_attr(_ref("training.ess_trainer"), "ESSModel")
    name, supervised, (w_task, w_emb, w_feat, w_kl) = ROUTES[route]
    classes, gen = 4, torch.Generator().manual_seed(4)
    ref_enc, ref_dec = _ref_networks(classes, seed=5)
    enc, dec = _our_networks(ref_enc, ref_dec, classes)
    batch = {"img": torch.rand(2, 1, 32, 48, generator=gen),
             "y": torch.randint(0, classes, (2, 32, 48), generator=gen),
             "x": torch.randn(2, 4, 32, 48, generator=gen),
             "y_t": torch.randint(0, classes, (2, 32, 48), generator=gen)}
    batch["y"][0, :4] = 255
    batch = {k: v.to(DEVICE) for k, v in batch.items()}
    latents = {k: v.to(DEVICE) for k, v in _latents(gen).items()}
    events = (torch.rand(2, 1, 32, 48, generator=gen).to(DEVICE), latents)
    for net in (ref_enc, ref_dec, enc, dec):
        net.to(DEVICE)
    want_losses, want_total = _ref_train_step(trainer, ref_enc, ref_dec, batch, events,
                                              ROUTES[route])

    cfg = EssConfig(weight_task=w_task, weight_emb=w_emb, weight_feat=w_feat, weight_pred=w_kl,
                    align_pred=name == "DSEC_events", detach_task_latent=name == "DSEC_events",
                    train_on_event_labels=supervised)
    enc.train(), dec.train()
    got = ess_losses(enc, dec, _FixedEvents(*events), batch, cfg)
    got["loss"].backward()

    _close(got["loss"].detach(), want_total.detach(), "total loss")
    _close(got["l_task"], want_losses["semseg_sensor_a_loss"], "task loss")
    emb = sum(want_losses[f"cycle_latent_{s}x_sensor_b_to_sensor_a_loss"] for s in (2, 4, 8))
    _close(got["l_emb"], emb, "latent L1")
    kl = want_losses["cycle_pred_1x_sensor_b_to_sensor_a_loss"]
    _close(got["l_pred"], kl * w_kl, "decoder-side symmetric KL")
    if supervised:
        _close(got["l_event"], want_losses["semseg_sensor_b_loss"], "event-label task loss")
    for ours, ref, to_ref in ((enc, ref_enc, image_encoder_state),
                              (dec, ref_dec, decoder_state)):
        ref_grads = to_ref({n: p.grad for n, p in ref.named_parameters() if p.grad is not None})
        our_grads = {n: p.grad for n, p in ours.named_parameters() if p.grad is not None}
        assert sorted(our_grads) == sorted(ref_grads)  # the same parameters receive gradients
        # a conv bias right before an InstanceNorm has gradient 0: rounding noise on both sides
        floor = 1e-2 * max(float(g.abs().max()) for g in ref_grads.values())
        for n, g in our_grads.items():
            _close(g, ref_grads[n], f"gradient of {n}", floor=floor)
    assert float(enc.stem[0].weight.grad.abs().sum()) > 0  # the alignment reaches the encoder


# --- metrics --------------------------------------------------------------------------------
def test_ess_miou_matches_metrics_semseg_with_an_absent_class():
    """ESS averages over every class (an absent one scores 0); `nanmean` would skip it."""
    metrics = _ref("evaluation.metrics")
    classes, gen = 6, torch.Generator().manual_seed(6)
    ref = ref_attr(metrics, "MetricsSemseg")(classes, 255, [str(c) for c in range(classes)])
    ours = ConfusionMatrix(classes, 255)
    for _ in range(3):
        label = torch.randint(0, 4, (2, 10, 14), generator=gen)  # 4 only predicted, 5 absent
        label[:, :2] = 255
        pred = torch.randint(0, 5, (2, 10, 14), generator=gen)
        ref.update_batch(pred, label)
        ours.update(pred, label)
    want, got = ref.get_metrics_summary(), ours.scores("ess")
    assert torch.equal(ours.matrix, want["cm"])
    assert got["miou"] == pytest.approx(float(want["mean_iou"]), rel=1e-12)
    assert got["acc"] == pytest.approx(float(want["acc"]), rel=1e-12)
    assert got["iou"] == pytest.approx([float(want[str(c)]) for c in range(classes)], rel=1e-12)
    nanmean = segmentation_scores(ours.matrix, "nanmean")["miou"]
    assert nanmean == pytest.approx(got["miou"] * classes / (classes - 1), rel=1e-12)


# --- released checkpoints ----------------------------------------------------------------
# E2VID_lightweight's configuration (code: rpg_e2vid README) at base 8 instead of 32 to stay
# fast: the file layout, not the width, is under test here
E2VID_CONFIG = {"num_bins": 5, "skip_type": "sum", "recurrent_block_type": "convlstm",
                "num_encoders": 3, "base_num_channels": 8, "num_residual_blocks": 2,
                "use_upsample_conv": False, "norm": "BN"}


def _save_official(tmp_path, classes: int, decoder: nn.Module | None = None):
    """An `Epoch_3.pt` written by ESS's own CheckpointSaver from reference networks (with
    one RAdam step taken, so the optimiser states hold tensors)."""
    enc, dec = _ref_networks(classes, seed=7)
    dec = decoder if decoder is not None else dec
    e2vid = ref_attr(_ref("e2vid.model.model"), "E2VIDRecurrent")(E2VID_CONFIG)
    radam = ref_attr(_ref("utils.radam"), "RAdam")
    optims = {"optimizer_front_sensor_a": radam(enc.parameters(), lr=1e-5, betas=(0., 0.999)),
              "optimizer_back": radam(dec.parameters(), lr=1e-4, betas=(0., 0.999))}
    x = torch.rand(1, 1, 32, 48)
    out = dec(enc(x))
    out[1].mean().backward()
    for opt in optims.values():
        opt.step()
    saver = ref_attr(_ref("utils.saver"), "CheckpointSaver")(str(tmp_path))
    saver.save_checkpoint({"front_sensor_a": enc, "front_sensor_b": e2vid, "back_end": dec},
                          optims, 3, 1234, 16, 16)
    return tmp_path / "Epoch_3.pt", enc.eval(), dec.eval(), e2vid


@pytest.mark.parametrize("classes", [11, 6])
def test_released_checkpoint_loads_strictly_and_predicts_as_the_reference(tmp_path, classes):
    path, ref_enc, ref_dec, e2vid = _save_official(tmp_path, classes)
    enc = create_model("image_latent_encoder", in_chans=1, base_channels=32)
    dec = create_model("latent_seg_decoder", num_classes=classes, num_res_blocks=5)
    ckpt = load_ess_checkpoint(path, enc, dec)
    assert (ckpt.epoch, ckpt.step_count, ckpt.batch_size_a, ckpt.batch_size_b) == (3, 1234, 16, 16)
    assert (ckpt.num_classes, ckpt.decoder_res_blocks) == (classes, 5)
    x = torch.rand(2, 1, 32, 48, generator=torch.Generator().manual_seed(8))
    enc.eval(), dec.eval()
    with torch.no_grad():
        want = ref_dec(ref_enc(x))
        got = dec(enc(x), x.shape[-2:])
    _close(got.logits, want[1], "logits from the loaded checkpoint")
    assert torch.equal(got.logits.argmax(1), want[1].argmax(1))
    # front_sensor_b goes through the E2VID key map the caller plugs in (here the identity
    # onto the reference's own UNetRecurrent, since ours lands from the e2vid branch)
    target = ref_attr(_ref("e2vid.model.model"), "E2VIDRecurrent")(E2VID_CONFIG)
    load_ess_checkpoint(path, None, dec, target.unetrecurrent)
    for k, v in e2vid.unetrecurrent.state_dict().items():
        assert torch.equal(target.unetrecurrent.state_dict()[k], v), k


def test_checkpoints_of_another_architecture_are_refused(tmp_path):
    nets = _ref("models.style_networks")
    plain = ref_attr(nets, "SemSegE2VID")(input_c=256, output_c=6, skip_connect=False)
    path, *_ = _save_official(tmp_path, 6, decoder=plain)
    with pytest.raises(CheckpointLayoutError, match=r"Epoch_3\.pt: back_end .*decoder_scale_4\.1"):
        read_ess_checkpoint(path)
    (tmp_path / "b").mkdir()
    path, *_ = _save_official(tmp_path / "b", 11)
    dec = create_model("latent_seg_decoder", num_classes=6, num_res_blocks=5)
    with pytest.raises(CheckpointLayoutError, match=r"back_end does not fit .*classifier\.weight"):
        load_ess_checkpoint(path, None, dec)
    torch.save({"front_sensor_a": {}, "epoch": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointLayoutError, match="not an ESS checkpoint"):
        read_ess_checkpoint(tmp_path / "other.pt")
    torch.save({"front_sensor_a": types.SimpleNamespace(a=1)}, tmp_path / "code.pt")
    with pytest.raises(ValueError, match="code.pt: refused.*run code"):
        read_ess_checkpoint(tmp_path / "code.pt")
    (tmp_path / "cut.pt").write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="cut.pt: not a (readable )?torch checkpoint"):
        read_ess_checkpoint(tmp_path / "cut.pt")
