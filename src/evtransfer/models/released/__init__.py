"""The authors' released checkpoints: one module per codebase reads its official file layout,
maps its keys onto our networks and loads them strictly (nothing here downloads).

This module is the catalogue that ties them together: `CATALOGUE` holds one frozen `Released`
entry per published file (its paper, published name, where its authors publish it, file layout,
our architecture, key map, and the input it expects, each fact citing the reference code),
`models.weights.read_torch_file` reads any of these files without running code from it,
`layout_of` recognises which layout an object has, `load_released(name, path)` builds our
network for an entry and loads the file into it strictly, and `inspect_file(path)` says what a
file is and how its tensors map. `evtransfer weights list|inspect|convert` prints and uses them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from torch import Tensor, nn

from evtransfer.models.released.ecddp import RELEASED as ECDDP_RELEASED
from evtransfer.models.released.ecddp import ecddp_swin_t, load_ecddp_backbone
from evtransfer.models.released.evdistill import CHECKPOINTS as EVDISTILL_CHECKPOINTS
from evtransfer.models.released.evdistill import EvdistillCheckpoint, load_evdistill
from evtransfer.models.weights import read_torch_file

# What `convert` writes for an entry: a model package (engine/package.py) that `predict`,
# `evaluate` and `export` take; a safetensors state dict in our names for the config field
# the entry's `used_by` names; or an encoder checkpoint (`models.weights.save_encoder`) for
# `--init`.
PRODUCTS = ("package", "weights", "encoder")

# code: uzh-rpg/rpg_e2vid (pretrained/E2VID_lightweight.pth.tar's config, README.md:57;
# model/model.py BaseE2VID): 5 bins, 3 encoders of 32 base channels, 2 residual blocks,
# BatchNorm, transposed-conv decoders, sum skips
E2VID_LIGHTWEIGHT = {"in_chans": 5, "skip": "sum", "num_encoders": 3, "base_channels": 32,
                     "num_residual_blocks": 2, "norm": "bn", "decoder": "transposed"}


@dataclass(frozen=True)
class Expects:
    """The input a released network was trained and evaluated on (facts from its code)."""

    representation: str  # e.g. "5-bin voxel grid per window"
    window: str  # events or time per network input
    sensor: tuple[int, int]  # (width, height) px of the training sensor; (0, 0): any
    crop: str  # what is cut before the network
    normalisation: str
    size: tuple[int, int]  # (height, width) of the network input; (0, 0): any
    source: str  # where these facts come from (repo/path:line)


@dataclass(frozen=True)
class Released:
    """One released checkpoint (see the module docstring); `package` holds the
    `engine.package.InputSpec` fields of its input protocol when it converts to a package."""

    name: str  # `--as NAME`
    paper: str
    file_name: str  # the published file name
    published: str  # where its authors publish it (by name; nothing is fetched)
    layout: str  # a key of LAYOUTS
    model: str  # our registry model
    kwargs: Mapping = field(default_factory=dict)  # its architecture ({}: from the file)
    key_map: str = ""  # how the file's names become ours
    expects: Expects | None = None
    product: str = "package"  # one of PRODUCTS
    used_by: str = "evtransfer predict / evaluate / export"  # what takes the converted file
    task: str = "segmentation"  # segmentation | depth | reconstruction | pre-training
    label_space: str = ""
    package: Mapping = field(default_factory=dict)
    figure: str = ""  # the published figure it should reproduce

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS or self.product not in PRODUCTS:
            raise ValueError(f"{self.name}: unknown layout {self.layout!r} or product "
                             f"{self.product!r}")


# layout name → (what the file is, the module under models/released that reads it)
LAYOUTS: dict[str, tuple[str, str]] = {
    "rpg_e2vid": ("rpg_e2vid checkpoint {'arch', 'model' (config), 'state_dict' "
                  "(unetrecurrent.*)}", "e2vid"),
    "ess": ("ESS utils/saver.py checkpoint {front_sensor_a, front_sensor_b, back_end, "
            "optimisers, epoch, step_count, batch_size_a, batch_size_b}", "ess"),
    "evdistill": ("EvDistill state dict of modeling/deeplab.py DeepLab (backbone.*, aspp.*, "
                  "decoder.*; optionally under module.)", "evdistill"),
    "ecddp": ("ECDDP pre-training checkpoint {'model': student.backbone.* / "
              "teacher.backbone.*, 'optimizer', 'current_epoch'}", "ecddp"),
    "bicross": ("BiCross trainer checkpoint {'model_state_dict': DPTDepthModel, "
                "'optimizer_*_state_dict'}", "bicross"),
    "dpt": ("DPT / MiDaS state dict (pretrained.model.*, scratch.*)", "bicross"),
}

_ESS_SPEC = ("code: uzh-rpg/ess config/settings_{DSEC,DDD17}.yaml:6-17 (20 windows, "
             "nr_events_window, 5 bins, normalize_event False); e2vid/image_reconstructor.py:91 "
             "(EventPreprocessor on every window); DSEC/dataset/sequence.py:282 (bottom 40 "
             "rows); datasets/ddd17_events_loader.py:59-61,162-166 (260x346 -> 260x352, bottom "
             "60 rows); training/ess_trainer.py:60-70 (valid input 200x352)")

_EVDISTILL = ("Wang, Chae, Yoon, Kim, Yoon, EvDistill: Asynchronous Events to End-task "
              "Learning via Bidirectional Reconstruction-guided Cross-modal Knowledge "
              "Distillation, CVPR 2021")
_EVDISTILL_SPEC = ("code: addisonwang2013/evdistill event_aps_dataset_v2.py:23,67-81 (halves "
                   "of the side-by-side PNG, bicubic to 256x512, ToTensor), evaluate.py:70-82 "
                   "(one scale, no flip), configs/configurations.py:11,15-16 (6 classes; the "
                   "ImageNet mean/std are not applied on the test path)")


def _evdistill(c: EvdistillCheckpoint) -> Released:
    """The catalogue entry of one of models/released/evdistill.py's CHECKPOINTS."""
    teacher = c.role == "teacher"
    what = "APS frame" if teacher else "event image (events pre-rendered as RGB by the authors)"
    figure = (f"EvDistill on {c.dataset} test: {c.paper_miou} mIoU (nanmean; the paper as "
              "listed in a public benchmark summary)" if c.paper_miou is not None else
              f"the {c.role}'s mIoU printed by test_evdistill.py (no published figure)")
    return Released(
        name=c.name, paper=_EVDISTILL,
        file_name=c.file + (" (unverified: the README names the folder, not the files)"
                            if c.dataset == "MVSEC" else ""),
        published="addisonwang2013/evdistill README 'Download the pretrained models' (a "
                  "Google Drive folder; put under ./res/)",
        layout="evdistill", model="deeplabv3plus_resnet101",
        kwargs={"in_chans": 3, "num_classes": 6, "output_stride": 16},
        key_map="backbone.* -> encoder.*, aspp/decoder renamed (models/released/evdistill.py "
                "rules; a pure rename)",
        expects=Expects(
            representation=f"{what}, RGB in [0, 1]", window="pre-rendered in the release",
            sensor=(346, 260), crop="the PNG half, resized bicubically to 256x512",
            normalisation="none (ToTensor only)", size=(256, 512), source=_EVDISTILL_SPEC),
        label_space="ddd17" if c.dataset == "DDD17" else "",
        package={"modality": "images", "kind": "aps_frame" if teacher else "event_image",
                 "sensor": (346, 260), "size": (256, 512)},
        figure=figure)


CATALOGUE: tuple[Released, ...] = (
    Released(
        name="e2vid-lightweight",
        paper="Rebecq, Ranftl, Koltun, Scaramuzza, High Speed and High Dynamic Range Video "
              "with an Event Camera, TPAMI 2019 (E2VID)",
        file_name="E2VID_lightweight.pth.tar",
        published="uzh-rpg/rpg_e2vid README, 'Download the pretrained model' (the RPG data "
                  "server); ESS and CMESS freeze it",
        layout="rpg_e2vid", model="e2vid", kwargs=E2VID_LIGHTWEIGHT,
        key_map="'unetrecurrent.' stripped; every other name is rpg_e2vid's own",
        expects=Expects(
            representation="5-bin voxel grid (bilinear in time, signed polarity)",
            window="N events per window, N = 0.35 x width x height by default (~15 000 on a "
                   "240x180 DAVIS); recurrent over consecutive windows",
            sensor=(0, 0), crop="none (zero/reflection padding to a multiple of 8, cropped "
                                "back)",
            normalisation="non-zero voxels standardised per window (EventPreprocessor)",
            size=(0, 0),
            source="code: uzh-rpg/rpg_e2vid run_reconstruction.py:23-29,60-65; "
                   "utils/inference_utils.py:56 (EventPreprocessor), :310 (CropParameters)"),
        product="weights", task="reconstruction",
        used_by="stages.recon_weights, ess.event_encoder_weights (configs/*/dsec.yaml)",
        figure="E2VID reconstructions (no benchmark number; ESS's E2VID -> image model row: "
               "DDD17 83.24 / 44.77, DSEC 76.67 / 40.70 Acc / mIoU)"),
    Released(
        name="e2vid",
        paper="Rebecq, Ranftl, Koltun, Scaramuzza, Events-to-Video, CVPR 2019 / TPAMI 2019 "
              "(E2VID)",
        file_name="E2VID.pth.tar",
        published="uzh-rpg/rpg_e2vid (the original model on the RPG data server, asked for "
                  "in its issues)",
        layout="rpg_e2vid", model="e2vid",
        key_map="'unetrecurrent.' stripped; the architecture (norm, upsample-and-convolve "
                "decoders, encoders) read from the file's config",
        expects=Expects(
            representation="voxel grid of the file's num_bins", window="as e2vid-lightweight",
            sensor=(0, 0), crop="as e2vid-lightweight",
            normalisation="non-zero voxels standardised per window (EventPreprocessor)",
            size=(0, 0), source="code: uzh-rpg/rpg_e2vid model/model.py (BaseE2VID config)"),
        product="weights", task="reconstruction",
        used_by="stages.recon_weights with the file's architecture (stages.recon_*)",
        figure="E2VID reconstructions"),
    Released(
        name="ess-dsec",
        paper="Sun, Messikommer, Gehrig, Scaramuzza, ESS: Learning Event-based Semantic "
              "Segmentation from Still Images, ECCV 2022",
        file_name="Epoch_N.pt (DSEC-Semantic, UDA)",
        published="uzh-rpg/ess README 'Pre-trained Weights' (a Google Form gives the link)",
        layout="ess", model="e2vid_segmenter",
        kwargs={"in_chans": 100, "num_classes": 11, "bins": 5, **{
            k: v for k, v in E2VID_LIGHTWEIGHT.items() if k != "in_chans"},
            "decoder_res_blocks": 5, "input_norm": "batch"},
        key_map="front_sensor_b -> events ('unetrecurrent.' stripped); back_end "
                "(SemSegE2VID) -> decoder (models/released/ess.py rules); front_sensor_a "
                "and the optimisers are not used at inference",
        expects=Expects(
            representation="20 windows x 5-bin voxel grids (100 channels), sub-pixel "
                           "rectified events", window="20 x 100 000 events before the label",
            sensor=(640, 480), crop="bottom 40 rows (440x640)",
            normalisation="none in the dataset (normalize_event False); E2VID's "
                          "EventPreprocessor per window, pooled over the batch (8)",
            size=(440, 640), source=_ESS_SPEC),
        label_space="dsec11",
        package={"modality": "events", "kind": "voxel", "bins": 5, "normalize": False,
                 "num_windows": 20, "window_events": 100_000, "sensor": (640, 480),
                 "crop_bottom": 40, "size": (440, 640), "resize": "bilinear"},
        figure="ESS UDA on DSEC-Semantic: 84.17 Acc / 45.38 mIoU (the ESS paper; "
               "unverified, see docs/weights.md)"),
    Released(
        name="ess-ddd17",
        paper="Sun, Messikommer, Gehrig, Scaramuzza, ESS: Learning Event-based Semantic "
              "Segmentation from Still Images, ECCV 2022",
        file_name="Epoch_N.pt (DDD17, UDA)",
        published="uzh-rpg/ess README 'Pre-trained Weights' (a Google Form gives the link)",
        layout="ess", model="e2vid_segmenter",
        kwargs={"in_chans": 100, "num_classes": 6, "bins": 5, **{
            k: v for k, v in E2VID_LIGHTWEIGHT.items() if k != "in_chans"},
            "decoder_res_blocks": 5, "input_norm": "batch"},
        key_map="as ess-dsec",
        expects=Expects(
            representation="20 windows x 5-bin voxel grids (100 channels)",
            window="20 x 32 000 events before the label", sensor=(346, 260),
            crop="260x346 resized (bilinear, align_corners) to 260x352, bottom 60 rows cut "
                 "(200x352)",
            normalisation="none in the dataset; E2VID's EventPreprocessor per window, "
                          "pooled over the batch (16)",
            size=(200, 352), source=_ESS_SPEC),
        label_space="ddd17",
        package={"modality": "events", "kind": "voxel", "bins": 5, "normalize": False,
                 "num_windows": 20, "window_events": 32_000, "sensor": (346, 260),
                 "crop_bottom": 60, "size": (200, 352), "resize": "bilinear"},
        figure="ESS UDA on DDD17: 87.86 Acc / 52.46 mIoU (the ESS paper; "
               "unverified, see docs/weights.md)"),
    *(_evdistill(c) for c in EVDISTILL_CHECKPOINTS),
    Released(
        name="ecddp-swin-t", paper=ECDDP_RELEASED["paper"] + " (ECDDP)",
        file_name="the pre-trained swin-t/7 .pt (README's Google Drive link)",
        published="Yan98/Event-Camera-Data-Dense-Pre-training " + ECDDP_RELEASED["published"],
        layout="ecddp", model="ecddp_swin_t (models/released/ecddp.py): "
                              + ECDDP_RELEASED["architecture"].split(": ", 1)[1],
        kwargs={"in_chans": 6},
        key_map="student.backbone.* -> encoder.* (Swin) and fusion.fpns.*; "
                "relative_position_index buffers recomputed",
        expects=Expects(
            representation="pre-training: " + ECDDP_RELEASED["pretraining_input"],
            window="fine-tuning: " + ECDDP_RELEASED["finetuning_input"],
            sensor=(640, 480), crop="see the fine-tuning input", normalisation="none",
            size=(0, 0),
            source="code: Yan98/Event-Camera-Data-Dense-Pre-training "
                   "config/pretrain/swin_small.yml:9-13, config/seg/swin_small.yml:7-14,26,48; "
                   "README.md:47"),
        product="encoder", task="pre-training", used_by="evtransfer train --init",
        figure="fine-tuned on DSEC-Semantic: 61.25 mIoU (paper Tab. 1; a user got < 60)"),
    Released(
        name="bicross",
        paper="Liu et al., Unsupervised Spike Depth Estimation via Cross-modality "
              "Cross-domain Knowledge Transfer, ICRA 2024 (BiCross)",
        file_name="DPTDepthModel_best.pt ({'model_state_dict': ...})",
        published="Theia-4869/BiCross README (checkpoints/… paths in visualization_config.json)",
        layout="bicross", model="dpt_hybrid",
        # code: Theia-4869/BiCross DPT/models.py (inverse depth x -> 1 / max(s x + t, 1e-8),
        # s 6.016e-5, t 0.00579 outdoors); BiCross/Trainer_crossmodality.py:73 (the spike
        # stem, timm's StdConv2dSame: eps 1e-6 as BicrossConfig.spike_stem_eps)
        kwargs={"in_chans": 128, "depth_mode": "inverse_affine", "scale": 6.016e-5,
                "shift": 0.00579, "stem_eps": 1e-6},
        key_map="timm vit_base_resnet50_384 + DPT scratch names -> DPTDepth "
                "(models/released/bicross.py rules)",
        expects=Expects(
            representation="128 binary spike frames mapped to +-1", window="128 frames",
            sensor=(1216, 352), crop="KITTI KB crop 352x1216",
            normalisation="none (2s - 1)", size=(384, 384),
            source="code: Theia-4869/BiCross datasets/*.py (nearest resize to 384x384), "
                   "DPT/models.py (spike stem)"),
        task="depth",
        package={"modality": "spikes", "kind": "spike_stack", "frames": 128,
                 "sensor": (1216, 352), "crop_bottom": 0, "size": (384, 384),
                 "resize": "nearest"},
        figure="VKITTI -> KITTI: AbsRel .128, RMSE 4.581, d1 .817 (README figure)"),
    Released(
        name="dpt-hybrid-midas",
        paper="Ranftl, Bochkovskiy, Koltun, Vision Transformers for Dense Prediction, ICCV "
              "2021 (DPT); BiCross's stage 0 starts from it",
        file_name="dpt_hybrid-midas-501f0c75.pt",
        published="isl-org/DPT and isl-org/MiDaS READMEs (release assets)",
        layout="dpt", model="dpt_hybrid", kwargs={"in_chans": 3},
        key_map="as bicross (no uncertainty head: left as built)",
        expects=Expects(
            representation="RGB", window="one frame", sensor=(0, 0),
            crop="none", normalisation="mean/std 0.5", size=(384, 384),
            source="code: Theia-4869/BiCross datasets/*.py (RGB bilinear to 384x384)"),
        product="weights", task="depth", used_by="bicross.rgb_init",
        figure="BiCross stage 0 (source pre-training), no figure of its own"),
)


def entry(name: str) -> Released:
    """The catalogue entry `name`; ValueError listing the names otherwise."""
    for item in CATALOGUE:
        if item.name == name:
            return item
    raise ValueError(f"unknown released checkpoint {name!r}; choose from "
                     f"{', '.join(e.name for e in CATALOGUE)}")


def _tensor_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, Tensor)
                                                          for v in obj.values())


def _unwrapped(obj: Mapping) -> Mapping | None:
    """The state dict of tensors in `obj` or under its state_dict / model / module entry."""
    for inner in (obj, *(obj.get(k) for k in ("state_dict", "model", "module"))):
        if _tensor_dict(inner):
            return inner
    return None


def layout_of(obj: object) -> str | None:
    """The `LAYOUTS` name of a checkpoint object (`models.weights.read_torch_file`), or None."""
    from evtransfer.models.released.e2vid import is_e2vid_layout

    if not isinstance(obj, Mapping):
        return None
    if is_e2vid_layout(obj):
        return "rpg_e2vid"
    if all(k in obj for k in ("front_sensor_b", "back_end", "epoch")):
        return "ess"
    if isinstance(obj.get("model_state_dict"), Mapping):
        return "bicross"
    state = _unwrapped(obj)
    if state is not None and {str(k).removeprefix("module.").split(".")[0] for k in state} >= {
            "backbone", "aspp", "decoder"}:
        return "evdistill"
    model = obj.get("model")
    if isinstance(model, Mapping) and any(str(k).startswith(("student.backbone.",
                                                             "teacher.backbone."))
                                          for k in model):
        return "ecddp"
    if _tensor_dict(obj) and any(str(k).startswith(("pretrained.model.", "scratch."))
                                 for k in obj):
        return "dpt"
    return None


def describe(obj: object) -> str:
    """A short description of a checkpoint object: its type, first keys, tensor count."""
    if not isinstance(obj, Mapping):
        return f"a {type(obj).__name__}"
    tensors = sum(isinstance(v, Tensor) for v in obj.values())
    nested = {k: len(v) for k, v in obj.items() if isinstance(v, Mapping)}
    return (f"a dict of {len(obj)} entries (first keys {[str(k) for k in list(obj)[:6]]}; "
            f"{tensors} tensors at the top"
            + (f"; nested dicts {dict(list(nested.items())[:4])}" if nested else "") + ")")


class Loaded(NamedTuple):
    """A released file loaded into our network: the network (eval mode, CPU), the registry
    kwargs that rebuild it, and the number of the file's tensors it took."""

    network: nn.Module
    kwargs: dict
    tensors: int


def _load_e2vid(item: Released, path: Path) -> Loaded:
    from evtransfer.models.released.e2vid import e2vid_from_checkpoint, e2vid_kwargs

    obj = read_torch_file(path)
    network = e2vid_from_checkpoint(obj, path)
    config = obj["model"] if isinstance(obj.get("model"), Mapping) else obj["config"]["model"]
    kwargs = e2vid_kwargs(config, path)
    if item.kwargs and kwargs != dict(item.kwargs):
        raise ValueError(f"{path}: an E2VID {kwargs}, not {item.name} ({dict(item.kwargs)}); "
                         "convert it --as e2vid")
    return Loaded(network, kwargs, len(obj["state_dict"]))


def _load_ess(item: Released, path: Path) -> Loaded:
    from evtransfer.models import create_model
    from evtransfer.models.released.ess import load_ess_checkpoint, read_ess_checkpoint

    ckpt = read_ess_checkpoint(path)
    if ckpt.num_classes != item.kwargs["num_classes"]:
        other = [e.name for e in CATALOGUE if e.layout == "ess"
                 and e.kwargs["num_classes"] == ckpt.num_classes]
        raise ValueError(f"{path}: an ESS checkpoint of {ckpt.num_classes} classes, not "
                         f"{item.name} ({item.kwargs['num_classes']})"
                         + (f"; convert it --as {other[0]}" if other else ""))
    kwargs = {**item.kwargs, "decoder_res_blocks": ckpt.decoder_res_blocks}
    network = create_model(item.model, **kwargs)
    load_ess_checkpoint(path, None, network.decoder, network.events)
    return Loaded(network.eval(), kwargs,
                  len(ckpt.decoder) + len(ckpt.event_encoder))


def _load_ecddp(item: Released, path: Path) -> Loaded:
    network = ecddp_swin_t(**item.kwargs)
    count = load_ecddp_backbone(network, path)
    return Loaded(network.eval(), dict(item.kwargs), count)


def _load_dpt(item: Released, path: Path) -> Loaded:
    from evtransfer.models import create_model
    from evtransfer.models.released.bicross import load_bicross, read_bicross_checkpoint

    layout, state = read_bicross_checkpoint(path)
    want = "bicross" if item.layout == "bicross" else "dpt"
    if layout != want:
        raise ValueError(f"{path}: a {layout} checkpoint, not {item.name} ({want})")
    network = create_model(item.model, **item.kwargs)
    load_bicross(network, path)
    return Loaded(network.eval(), dict(item.kwargs), len(state))


def _load_evdistill(item: Released, path: Path) -> Loaded:
    network = load_evdistill(path, item.kwargs["num_classes"])
    state = network.state_dict()
    kwargs = {**item.kwargs, "in_chans": int(state["encoder.conv1.weight"].shape[1])}
    for key, arg in (("recon.up.4.weight", "recon_channels"),
                     ("affinity.0.weight", "affinity_channels")):
        if key in state:  # a training-time DeepLab_Dual file keeps its extra heads
            kwargs[arg] = int(state[key].shape[0])
    return Loaded(network, kwargs, len(state))


_LOADERS = {"rpg_e2vid": _load_e2vid, "ess": _load_ess, "evdistill": _load_evdistill,
            "ecddp": _load_ecddp,
            "bicross": _load_dpt, "dpt": _load_dpt}


def load_released(name: str, path: str | Path) -> Loaded:
    """Build our network for catalogue entry `name` and load the released file `path` into
    it strictly. ValueError naming the file when it is unreadable, would run code, has
    another layout (saying what it looks like), or holds tensors that do not map (the
    first named)."""
    item, path = entry(name), Path(path)
    obj = read_torch_file(path)
    layout = layout_of(obj)
    if layout != item.layout:
        found = f"a {LAYOUTS[layout][0]}" if layout else describe(obj)
        raise ValueError(f"{path}: not {item.name}'s layout ({LAYOUTS[item.layout][0]}); "
                         f"found {found}")
    return _LOADERS[layout](item, path)


class Inspection(NamedTuple):
    """What `inspect_file` found: the layout (None: unknown), a description of the file, and
    one (entry name, Loaded or the refusal message) per catalogue entry of that layout."""

    layout: str | None
    description: str
    results: list[tuple[str, Loaded | str]]


def inspect_file(path: str | Path) -> Inspection:
    """Recognise a released file and try every catalogue entry of its layout on it."""
    path = Path(path)
    obj = read_torch_file(path)
    layout = layout_of(obj)
    text = LAYOUTS[layout][0] if layout else describe(obj)
    results: list[tuple[str, Loaded | str]] = []
    for item in CATALOGUE:
        if item.layout == layout:
            try:
                results.append((item.name, _LOADERS[layout](item, path)))
            except ValueError as err:
                results.append((item.name, " ".join(str(err).split())))
    return Inspection(layout, text, results)
