"""A packaged model made callable on events, spikes or tensors: `load_model(path)` → `Model`.

The model applies its own input representation (from the package's `InputSpec`): a window of
`Events` (cut into the spec's ESS chunks) or a list of chunks becomes the voxel grid /
histogram / Ev-SegNet tensor, a `Spikes` clip its ±1 stack of the last `frames` readouts;
the bottom crop and the resize to the network size follow. A recording whose sensor differs
from the training sensor is refused unless `resize=True`: then the un-normalised
representation is cropped (the crop scaled to the recording), resized with an antialiasing
bilinear filter (nearest for spikes) to the network size and normalised there, so its
statistics match training; the predictions are resized back to the recording. Outputs:
class probabilities (B, K, H, W) or depth (B, H, W) metres, at the (cropped) recording size.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from evtransfer.data._common import ess_chunks
from evtransfer.engine.package import (
    CLASS_NAMES,
    InputSpec,
    ModelSpec,
    build_network,
    read_package,
)
from evtransfer.events import Events, Spikes
from evtransfer.viz import PALETTES

Window = Events | Sequence[Events] | Spikes


class Prepared(NamedTuple):
    """A network input batch `x` (B, C, H, W) float32 and the output size (h, w) that maps it
    back onto the recording (sensor minus the bottom crop)."""

    x: torch.Tensor
    out_size: tuple[int, int]


class InferenceHead(nn.Module):
    """The network and its output mapping: class probabilities (B, K, H, W) (logits resized
    bilinearly, then softmax) or depth (B, H, W) metres (resized bicubically, as BiCross
    resizes predictions), at the input's size (`forward`) or any size (`run`)."""

    def __init__(self, network: nn.Module, task: str):
        super().__init__()
        self.network, self.task = network, task

    def run(self, x: torch.Tensor, size: tuple[int, int], logits: bool = False) -> torch.Tensor:
        y = self.network(x)
        if isinstance(y, tuple | list):
            y = y[0]
        if self.task == "segmentation":
            if tuple(y.shape[-2:]) != tuple(size):
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            return y.float() if logits else y.float().softmax(1)
        if tuple(y.shape[-2:]) != tuple(size):
            y = F.interpolate(y, size=size, mode="bicubic", align_corners=False)
        return y[:, 0].float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x, (int(x.shape[-2]), int(x.shape[-1])))


def _palette(spec: ModelSpec) -> np.ndarray:
    if spec.palette:
        return np.array(spec.palette, dtype=np.uint8)
    known = PALETTES.get(spec.label_space)
    if known is not None and len(known) == spec.num_classes:
        return np.array(known)
    return np.random.default_rng(0).integers(0, 256, (spec.num_classes, 3), dtype=np.uint8)


class Model:
    """A packaged network on `device` with its representation (see the module docstring).

    `model(window_or_windows, resize=False)` predicts; `represent` + `forward` split the two
    steps (for batching and timing); `fit_input` maps a representation computed elsewhere
    (a benchmark dataset's protocol tensor) to the network input.
    """

    def __init__(self, spec: ModelSpec, network: nn.Module, device: str | torch.device = "cpu",
                 path: str | Path | None = None):
        self.spec, self.device = spec, torch.device(device)
        self.path = Path(path) if path is not None else None
        self.network = network.to(self.device).eval()
        self.head = InferenceHead(self.network, spec.task).eval()
        self._warned = False

    # --- facts --------------------------------------------------------------------------
    @property
    def task(self) -> str:
        return self.spec.task

    @property
    def input(self) -> InputSpec:
        return self.spec.input

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    @property
    def palette(self) -> np.ndarray:
        """(K, 3) uint8 colours of the classes (segmentation)."""
        return _palette(self.spec)

    @property
    def class_names(self) -> tuple[str, ...]:
        names = self.spec.class_names or CLASS_NAMES.get(self.spec.label_space, ())
        if len(names) == self.num_classes:
            return tuple(names)
        return tuple(f"class {k}" for k in range(self.num_classes))

    def describe(self) -> str:
        """One paragraph: method, task, input tensor and what it represents."""
        s, i = self.spec, self.spec.input
        if i.modality == "images":
            return (f"{s.method} {s.task} model ({s.model}); input float32 (N, 3, {i.size[0]}, "
                    f"{i.size[1]}) in [0, 1]: {i.window_text()} (EvDistill's PNG half, resized "
                    f"bicubically); output class probabilities (N, {s.num_classes}, "
                    f"{i.size[0]}, {i.size[1]})")
        out = (f"class probabilities (N, {s.num_classes}, {i.size[0]}, {i.size[1]})"
               if s.task == "segmentation" else f"depth in metres (N, {i.size[0]}, {i.size[1]})")
        rep = i.representation().describe()
        return (f"{s.method} {s.task} model ({s.model}); input float32 (N, {i.channels()}, "
                f"{i.size[0]}, {i.size[1]}): {rep} of {i.window_text()}, trained on a "
                f"{i.sensor[0]}x{i.sensor[1]} sensor, bottom {i.crop_bottom} rows cropped; "
                f"output {out}")

    # --- sensor policy ------------------------------------------------------------------
    def sensor_message(self, sensor: tuple[int, int], resize: bool, where: str = "") -> str:
        """'' when `sensor` (width, height) is the training sensor; the warning text when it
        differs and `resize`; raises ValueError when it differs and not `resize`."""
        trained = tuple(self.input.sensor)
        if tuple(sensor) == trained:
            return ""
        what = (f"{where + ': ' if where else ''}sensor {sensor[0]}x{sensor[1]} differs from "
                f"the model's training sensor {trained[0]}x{trained[1]}")
        if not resize:
            raise ValueError(f"{what}; pass --resize (resize=True) to resize the "
                             f"representation to the network input {self.input.size[1]}x"
                             f"{self.input.size[0]}, or use a model trained at this size")
        return f"{what}: the representation is resized to {self.input.size[1]}x" \
               f"{self.input.size[0]} and predictions back (accuracy may drop)"

    # --- representation -----------------------------------------------------------------
    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Standardise each chunk as the representation's `normalize=True` does."""
        i = self.input
        if i.modality != "events" or not i.normalize:
            return x
        b, c, h, w = x.shape
        chunks = x.reshape(b * i.num_windows, c // i.num_windows, h, w)
        return i.representation().standardize(chunks).reshape(b, c, h, w)

    def fit_input(self, x: torch.Tensor, *, raw: bool) -> torch.Tensor:
        """Network input (B, C, *size) from a representation (B, C, H, W) already cropped.

        `raw=False`: the representation is normalised as in training and the protocol's
        resize (spec `resize`) brings it to `size`. `raw=True` (another sensor): an
        un-normalised representation is resized with antialiasing (nearest for spikes) and
        then normalised.
        """
        i = self.input
        if x.ndim != 4 or x.shape[1] != i.channels():
            raise ValueError(f"representation must be (B, {i.channels()}, H, W), got "
                             f"{tuple(x.shape)}")
        size = tuple(i.size)
        if tuple(x.shape[-2:]) != size:
            if i.modality == "spikes" or i.resize == "nearest":
                x = F.interpolate(x, size=size, mode="nearest")
            elif raw:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False,
                                  antialias=True)
            else:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return self._normalize(x) if raw else x

    def _event_items(self, windows) -> list[list[Events]]:
        items = [windows] if isinstance(windows, Events) else list(windows)
        k = self.input.num_windows
        out = []
        for n, item in enumerate(items):
            if isinstance(item, Events):
                out.append(ess_chunks(item, k))
            elif (isinstance(item, Sequence) and len(item) == k
                  and all(isinstance(c, Events) for c in item)):
                out.append(list(item))
            else:
                raise ValueError(f"window {n}: expected Events or a list of {k} Events chunks, "
                                 f"got {type(item).__name__}")
        return out

    def _represent_events(self, windows, allow_empty: bool) -> tuple[torch.Tensor, tuple]:
        items = self._event_items(windows)
        if not items:
            raise ValueError("no windows to represent")
        sensors = {c.sensor_size for item in items for c in item}
        if len(sensors) != 1:
            raise ValueError(f"windows come from different sensors: {sorted(sensors)}")
        for n, item in enumerate(items):
            if not allow_empty and not sum(len(c) for c in item):
                raise ValueError(f"window {n} has no events: a prediction from an empty window "
                                 "would be meaningless")
        rep = replace(self.input.representation(), normalize=False)
        raw = rep([c for it in items for c in it])
        b, (h, w) = len(items), raw.shape[-2:]
        return raw.reshape(b, -1, h, w), sensors.pop()

    def _represent_spikes(self, windows, allow_empty: bool) -> tuple[torch.Tensor, tuple]:
        items = [windows] if isinstance(windows, Spikes) else list(windows)
        rep, t = self.input.representation(), self.input.frames
        clips = []
        for n, s in enumerate(items):
            if not isinstance(s, Spikes):
                raise ValueError(f"window {n}: expected Spikes, got {type(s).__name__}")
            if len(s) < t:
                raise ValueError(f"window {n} has {len(s)} spike frames; the model needs {t}")
            clip = rep.last(s, len(s))
            if not allow_empty and not (clip > 0).any():
                raise ValueError(f"window {n} has no spikes: a prediction from it would be "
                                 "meaningless")
            clips.append(clip)
        sensors = {(s.width, s.height) for s in items}
        if len(sensors) != 1:
            raise ValueError(f"clips come from different sensors: {sorted(sensors)}")
        return torch.stack(clips), sensors.pop()

    def represent(self, windows: Window | Sequence[Window], *, resize: bool = False,
                  allow_empty: bool = False, warn: bool = True) -> Prepared:
        """The network input of one window or a list of windows (`Events`, a list of
        `num_windows` chunk `Events`, or `Spikes` for spike models), and their output size.
        Empty windows raise ValueError unless `allow_empty`; a resized sensor warns once per
        model (`warnings.warn`) unless `warn` is False."""
        if self.input.modality == "images":
            raise ValueError(f"{self.spec.method} takes the images of EvDistill's side-by-side "
                             "PNGs (events pre-rendered by its authors, or APS frames), not "
                             "recordings: evaluate "
                             "it on that layout (`evtransfer evaluate --dataset ddd17`) or call "
                             "it on the (N, 3, H, W) image tensor")
        if self.input.modality == "events":
            raw, sensor = self._represent_events(windows, allow_empty)
        else:
            raw, sensor = self._represent_spikes(windows, allow_empty)
        width, height = sensor
        message = self.sensor_message(sensor, resize)
        if message and warn and not self._warned:
            warnings.warn(message, stacklevel=2)
            self._warned = True
        crop = self.input.crop_bottom
        if message:
            crop = round(crop * height / self.input.sensor[1])
            x = self.fit_input(raw[..., : height - crop, :], raw=True)
        else:
            x = self.fit_input(self._normalize(raw)[..., : height - crop, :], raw=False)
        return Prepared(x, (height - crop, width))

    # --- prediction ---------------------------------------------------------------------
    @torch.inference_mode()
    def forward(self, x: torch.Tensor, out_size: tuple[int, int] | None = None, *,
                logits: bool = False) -> torch.Tensor:
        """Probabilities (B, K, *out_size) (with `logits`: the resized logits, whose argmax is
        the same and which skip the softmax) or depth (B, *out_size) of a network input batch
        (B, C, H, W); `out_size` defaults to (H, W)."""
        if x.ndim != 4 or x.shape[1] != self.input.channels():
            raise ValueError(f"network input must be (B, {self.input.channels()}, H, W), got "
                             f"{tuple(x.shape)}")
        size = tuple(out_size) if out_size is not None else tuple(x.shape[-2:])
        return self.head.run(x.to(self.device, torch.float32), size, logits)

    def __call__(self, windows: Window | Sequence[Window] | torch.Tensor, *,
                 resize: bool = False) -> torch.Tensor:
        """Predict: a tensor is taken as the network input itself (B, C, H, W); windows are
        represented first (see `represent`) and predicted at the recording's size."""
        if isinstance(windows, torch.Tensor):
            return self.forward(windows)
        prepared = self.represent(windows, resize=resize)
        return self.forward(prepared.x, prepared.out_size)


def load_model(path: str | Path, *, device: str | torch.device | None = None) -> Model:
    """The model package at `path` (a `.safetensors` package, or a training output folder
    holding one in `models/`) as a callable `Model` on `device` (default: CPU)."""
    spec, state, file = read_package(path)
    device = torch.device(device) if device is not None else torch.device("cpu")
    return Model(spec, build_network(spec, state, file=file, device=device), device, file)
