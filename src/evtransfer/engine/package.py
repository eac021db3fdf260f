"""Model packages: a trained inference network and everything needed to run it, in one file.

A package is a single `.safetensors` file: the network's `state_dict` as tensors, and in the
file's metadata `format` = "evtransfer.model" and `spec` = the JSON of a `ModelSpec`:

- `format_version`, `evtransfer_version`, `method`, `task` ("segmentation" | "depth");
- `model` and `kwargs`: `models.create_model(model, **kwargs)` rebuilds the network;
- `output`: what the network returns ("logits" (B, K, h, w) at any stride, or "depth"
  (B, 1, h, w) metres);
- `input` (`InputSpec`): how a recording becomes the network input — the representation
  (voxel grid bins / normalisation, histogram, Ev-SegNet, ±1 spike stack), the window
  (µs, events per chunk, or spike frames; ESS chunks), the training sensor, the bottom crop
  and the network input size;
- `label_space`, `class_names`, `palette` (segmentation) or `depth_range` (depth);
- `provenance`: free-form facts (seed, world, training minutes).

The training code writes packages (`bench.run_transfer` → `OUT/models/<method>-seed<s>
.safetensors`); `inference.load_model` reads them. Nothing here executes code on load.
"""

from __future__ import annotations

import json
import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from evtransfer.io.base import FormatError
from evtransfer.represent import Representation, representation_names, representation_of

PACKAGE_FORMAT = "evtransfer.model"
PACKAGE_VERSION = 1
TASKS = ("segmentation", "depth")
OUTPUTS = {"segmentation": ("logits",), "depth": ("depth",)}
# EvDistill's released side-by-side PNGs: the events pre-rendered as RGB, or the APS frame;
# read from files as they are, so not representations (`represent.REPRESENTATIONS`)
IMAGE_KINDS = ("event_image", "aps_frame")

# Class names of the label spaces the world and the datasets use, in id order.
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    # code: uzh-rpg/ess config/settings.py (DSEC-Semantic 11 classes)
    "dsec11": ("background", "building", "fence", "person", "pole", "road", "sidewalk",
               "vegetation", "car", "wall", "traffic sign"),
    # code: uzh-rpg/ess config/settings.py (DDD17 6 classes, Ev-SegNet's categories)
    "ddd17": ("flat", "background", "object", "vegetation", "human", "vehicle"),
    # code: mcordts/cityscapesScripts labels.py (trainIds 0-18)
    "cityscapes19": ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
                     "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
                     "truck", "bus", "train", "motorcycle", "bicycle"),
}


@dataclass(frozen=True)
class InputSpec:
    """How a recording window becomes the network input (B, channels(), *size) float32.

    `kind` names the representation (`represent.REPRESENTATIONS`; `representation()` gives the
    object). Events: voxel (`bins` channels), histogram (2) or evsegnet (6), `normalize` the
    non-zero entries of each chunk (as `data.transfer.EventInput`); a window is either the
    `window_us` µs before the prediction time or `num_windows` × `window_events` events, and
    is cut into `num_windows` ESS chunks whose channels are concatenated. Spikes: `kind`
    spike_stack, the last `frames` readouts mapped to ±1. `sensor` (width, height) is the
    training sensor; `crop_bottom` rows are cut from the bottom of the representation, which is
    then resized to `size` (H, W) when it differs (`resize`: bilinear with align_corners=True,
    as ESS and ECDDP resize, or nearest, as BiCross resizes spikes). Images: a half of
    EvDistill's released side-by-side PNGs in [0, 1] (3 channels, resized to `size`), `kind`
    event_image (the events pre-rendered by its authors; no window applies) or aps_frame.
    """

    modality: str = "events"  # events | spikes | images
    kind: str = "voxel"
    bins: int = 5
    normalize: bool = True
    num_windows: int = 1
    window_us: int = 0  # events: window length in µs (0: count windows)
    window_events: int = 0  # events: events per chunk (0: time windows)
    frames: int = 0  # spikes: readouts per clip
    sensor: tuple[int, int] = (0, 0)  # (width, height)
    crop_bottom: int = 0
    size: tuple[int, int] = (0, 0)  # (height, width) of the network input
    resize: str = "bilinear"

    def __post_init__(self) -> None:
        object.__setattr__(self, "sensor", tuple(int(v) for v in self.sensor))
        object.__setattr__(self, "size", tuple(int(v) for v in self.size))
        problems = self.problems()
        if problems:
            raise ValueError("invalid input spec: " + "; ".join(problems))

    def problems(self) -> list[str]:
        """What is inconsistent in this spec (empty when it is valid)."""
        out = []
        if self.modality in ("events", "spikes"):
            out += self._representation_problems()
            if self.modality == "events" and (self.window_us > 0) == (self.window_events > 0):
                out.append("exactly one of window_us and window_events must be positive, got "
                           f"{self.window_us} and {self.window_events}")
        elif self.modality == "images":
            if self.kind not in IMAGE_KINDS:
                out.append(f"image kind must be one of {IMAGE_KINDS}, got {self.kind!r}")
        else:
            out.append(f"modality must be 'events', 'spikes' or 'images', got "
                       f"{self.modality!r}")
        if self.num_windows < 1:
            out.append(f"num_windows must be >= 1, got {self.num_windows}")
        if len(self.sensor) != 2 or min(self.sensor) < 1:
            out.append(f"sensor must be (width, height) > 0, got {self.sensor}")
        if len(self.size) != 2 or min(self.size) < 1:
            out.append(f"size must be (height, width) > 0, got {self.size}")
        if len(self.sensor) == 2 and not 0 <= self.crop_bottom < self.sensor[1]:
            out.append(f"crop_bottom {self.crop_bottom} outside [0, sensor height)")
        if self.resize not in ("bilinear", "nearest"):
            out.append(f"resize must be 'bilinear' or 'nearest', got {self.resize!r}")
        return out

    def _representation_problems(self) -> list[str]:
        names = representation_names(self.modality)
        if self.kind not in names:
            return [f"{self.modality[:-1]} kind must be one of {names}, got {self.kind!r}"]
        try:
            self.representation()
        except ValueError as err:
            return [str(err)]
        return []

    def representation(self) -> Representation:
        """The representation object of one chunk (events) or clip (spikes)."""
        if self.modality == "images":
            raise ValueError(f"image inputs ({self.kind}) are read from files, not computed "
                             "by a representation")
        return representation_of(self.kind, self)

    def channels(self) -> int:
        """Input channels of the network: per-chunk channels × num_windows (or frames)."""
        if self.modality == "images":
            return 3
        per = self.representation().channels()
        return per if self.modality == "spikes" else per * self.num_windows

    def window_text(self) -> str:
        """The window in words, e.g. '50000 µs' or '20 × 100000 events'."""
        if self.modality == "spikes":
            return f"{self.frames} spike frames"
        if self.modality == "images":
            return ("one pre-rendered RGB event image" if self.kind == "event_image"
                    else "one APS frame")
        chunks = f"{self.num_windows} × " if self.num_windows > 1 else ""
        if self.window_us:
            return f"{self.window_us} µs" + (f" in {self.num_windows} chunks" if chunks else "")
        return f"{chunks}{self.window_events} events"


@dataclass(frozen=True)
class ModelSpec:
    """Everything but the weights (see the module docstring)."""

    method: str
    task: str
    model: str
    kwargs: dict
    input: InputSpec
    output: str = "logits"
    label_space: str = ""
    class_names: tuple[str, ...] = ()
    palette: tuple[tuple[int, int, int], ...] = ()
    depth_range: tuple[float, float] = (1e-3, 80.0)  # metres (BiCross valid range)
    provenance: dict = field(default_factory=dict)
    format_version: int = PACKAGE_VERSION
    evtransfer_version: str = ""

    def __post_init__(self) -> None:
        problems = []
        if self.task not in TASKS:
            problems.append(f"task must be one of {TASKS}, got {self.task!r}")
        elif self.output not in OUTPUTS[self.task]:
            problems.append(f"a {self.task} network outputs {OUTPUTS[self.task]}, got "
                            f"{self.output!r}")
        in_chans = self.kwargs.get("in_chans")
        if in_chans is not None and in_chans != self.input.channels():
            problems.append(f"the network takes in_chans={in_chans} but the input spec gives "
                            f"{self.input.channels()} channels")
        if self.task == "segmentation":
            k = self.num_classes
            if k < 1:
                problems.append("a segmentation spec needs kwargs num_classes >= 1")
            for name, seq in (("class_names", self.class_names), ("palette", self.palette)):
                if seq and len(seq) != k:
                    problems.append(f"{len(seq)} {name} for {k} classes")
        if problems:
            raise ValueError("invalid model spec: " + "; ".join(problems))

    @property
    def num_classes(self) -> int:
        return int(self.kwargs.get("num_classes", 0))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> ModelSpec:
        """A spec from its JSON dict; unknown or missing fields raise ValueError."""
        _check_fields(cls, data, "model spec")
        _check_fields(InputSpec, data["input"], "input spec")
        values = dict(data)
        values["input"] = InputSpec(**data["input"])
        values["class_names"] = tuple(data.get("class_names", ()))
        values["palette"] = tuple(tuple(int(c) for c in rgb) for rgb in data.get("palette", ()))
        values["depth_range"] = tuple(data.get("depth_range", (1e-3, 80.0)))
        return cls(**values)


def _check_fields(cls, data, what: str) -> None:
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be a JSON object, got {type(data).__name__}")
    names = {f.name for f in fields(cls)}
    required = {f.name for f in fields(cls)
                if f.default is MISSING and f.default_factory is MISSING}
    unknown, missing = sorted(set(data) - names), sorted(required - set(data))
    if unknown or missing:
        raise ValueError(f"{what}: unknown fields {unknown}, missing fields {missing}")


def save_package(path: str | Path, network: nn.Module, spec: ModelSpec) -> Path:
    """Write `network`'s weights and `spec` to the package file `path` (atomically)."""
    from evtransfer import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not spec.evtransfer_version:
        spec = ModelSpec.from_dict({**json.loads(spec.to_json()),
                                    "evtransfer_version": __version__})
    tensors = {k: v.detach().to("cpu").contiguous().clone()
               for k, v in network.state_dict().items()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata={"format": PACKAGE_FORMAT, "spec": spec.to_json()})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def find_package(path: str | Path) -> Path:
    """The package file `path` names: the file itself, or the single package in a folder,
    its `models/` subfolder (a `evtransfer train` / `bench transfer` output folder)."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if (path / "checkpoints").is_dir() or (path / "model.safetensors").is_file():
        raise FormatError(path, "a training stage or checkpoint folder, not a model package; "
                          "packages are written to OUT/models/ by `evtransfer train`")
    for folder in (path, path / "models"):
        found = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            names = ", ".join(p.name for p in found[:8])
            raise FormatError(folder, f"holds {len(found)} model packages ({names}); name one")
    raise FormatError(path, "no model package (*.safetensors) here or in models/; train one "
                      "with `evtransfer train METHOD --out DIR`")


def read_package(path: str | Path) -> tuple[ModelSpec, dict[str, torch.Tensor], Path]:
    """(spec, state_dict, file) of a package file or folder; a training checkpoint, another
    file type, a newer format or a broken spec raises FormatError naming the file."""
    file = find_package(path)
    try:
        with safe_open(str(file), "pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise FormatError(file, f"not a readable safetensors model package: {err}") from None
    fmt = meta.get("format")
    if fmt == "evtransfer.checkpoint":
        raise FormatError(file, "a training checkpoint (the weights of one training stage), "
                          "not a model package; packages are written to OUT/models/ by "
                          "`evtransfer train`")
    if fmt != PACKAGE_FORMAT or "spec" not in meta:
        raise FormatError(file, f"not an evtransfer model package (metadata format {fmt!r})")
    try:
        data = json.loads(meta["spec"])
    except json.JSONDecodeError as err:
        raise FormatError(file, f"its spec is not valid JSON: {err}") from None
    version = data.get("format_version") if isinstance(data, dict) else None
    if not isinstance(version, int) or version > PACKAGE_VERSION:
        raise FormatError(file, f"package format version {version!r} is not supported by this "
                          f"evtransfer (reads versions 1..{PACKAGE_VERSION}); upgrade evtransfer")
    try:
        spec = ModelSpec.from_dict(data)
    except (ValueError, TypeError) as err:
        raise FormatError(file, f"invalid package spec: {err}") from None
    return spec, state, file


def build_network(spec: ModelSpec, state: dict[str, torch.Tensor], *, file: str | Path = "",
                  device: str | torch.device = "cpu") -> nn.Module:
    """The spec's registry network with the package weights loaded (strict), in eval mode."""
    from evtransfer.models import create_model

    try:
        network = create_model(spec.model, **spec.kwargs)
    except ValueError as err:
        raise FormatError(file, f"cannot build the package's network: {err}") from None
    try:
        result = network.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise FormatError(file, f"weights do not fit {spec.model}({spec.kwargs}): "
                          f"{str(err).splitlines()[-1].strip()}") from None
    if result.missing_keys or result.unexpected_keys:
        raise FormatError(file, f"weights do not fit {spec.model}({spec.kwargs}): missing "
                          f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]} "
                          f"(a package from another method or version?)")
    return network.to(device).eval()


def method_spec(network: dict, *, method: str, inputs: InputSpec, label_space: str = "",
                depth_range: tuple[float, float] = (1e-3, 80.0),
                provenance: dict | None = None) -> ModelSpec:
    """The `ModelSpec` of a method's network description (`MethodResult.spec`: model, kwargs,
    task, output, optional input overrides) on the benchmark's `inputs`; class names and
    palette are filled from `label_space` when it is a known one."""
    from dataclasses import replace

    from evtransfer.viz import PALETTES

    unknown = sorted(set(network) - {"model", "kwargs", "task", "output", "input"})
    if unknown:
        raise ValueError(f"{method}: unknown MethodResult.spec keys {unknown}")
    inputs = replace(inputs, **network.get("input", {}))
    k = int(network["kwargs"].get("num_classes", 0))
    names = CLASS_NAMES.get(label_space, ())
    palette = PALETTES.get(label_space)
    segmentation = network["task"] == "segmentation"
    return ModelSpec(
        method=method, task=network["task"], model=network["model"],
        kwargs=dict(network["kwargs"]), input=inputs, output=network["output"],
        label_space=label_space if segmentation else "",
        class_names=tuple(names) if segmentation and len(names) == k else (),
        palette=(tuple(tuple(int(c) for c in rgb) for rgb in palette)
                 if segmentation and palette is not None and len(palette) == k else ()),
        depth_range=tuple(float(v) for v in depth_range),
        provenance=dict(provenance or {}))
