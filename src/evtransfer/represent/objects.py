"""Representations as objects: a frozen dataclass per representation over its pure function.

Each object holds its parameters (`bins`, `normalize`, `frames`), says how many channels it
gives (`channels()`), and turns a window into a tensor when called. `REPRESENTATIONS` maps the
names that configs and model packages store ("voxel", "histogram", "evsegnet", "spike_stack")
to the classes; `get_representation(name, **params)` builds one, and an unknown name raises a
single error listing the known ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import ClassVar

import torch

from evtransfer.represent.batch import EventsLike
from evtransfer.represent.histogram import histogram
from evtransfer.represent.spikes import SpikesLike, spike_stack
from evtransfer.represent.surface import evsegnet_encoding
from evtransfer.represent.voxel import normalize_nonzero, voxel_grid


@dataclass(frozen=True)
class VoxelGrid:
    """`voxel_grid`: `bins` time bins of summed polarity (B, bins, H, W) float32; `normalize`
    standardises the non-zero entries (`normalize_nonzero`). The only event representation
    that splats sub-pixel coordinates bilinearly."""

    name: ClassVar[str] = "voxel"
    modality: ClassVar[str] = "events"
    splats_subpixel: ClassVar[bool] = True
    bins: int = 5
    normalize: bool = True

    def __post_init__(self) -> None:
        if self.bins < 1:
            raise ValueError(f"bins must be >= 1, got {self.bins}")

    def channels(self) -> int:
        return self.bins

    def __call__(self, events: EventsLike) -> torch.Tensor:
        """(B, bins, H, W) float32 of one window or a batch of windows."""
        return voxel_grid(events, self.bins, normalize=self.normalize)

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        """The normalisation `normalize=True` applies, on an un-normalised (B, bins, H, W)."""
        return normalize_nonzero(x)

    def describe(self) -> str:
        return f"voxel ({self.bins} bins{', normalised' if self.normalize else ''})"


@dataclass(frozen=True)
class _Counts:
    """A representation whose first two channels are (neg, pos) counts: `normalize`
    standardises their non-zero entries (`normalize_nonzero`); other channels stay as they are."""

    modality: ClassVar[str] = "events"
    splats_subpixel: ClassVar[bool] = False
    width: ClassVar[int]
    normalize: bool = True

    def channels(self) -> int:
        return self.width

    def __call__(self, events: EventsLike) -> torch.Tensor:
        """(B, channels, H, W) float32 of one window or a batch of windows."""
        x = self.encode(events)
        return self.standardize(x) if self.normalize else x

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        """The normalisation `normalize=True` applies, on an un-normalised (B, channels, H, W)."""
        return torch.cat([normalize_nonzero(x[:, :2]), x[:, 2:]], 1)

    def describe(self) -> str:
        return self.name


@dataclass(frozen=True)
class Histogram(_Counts):
    """`histogram`: (neg, pos) counts (B, 2, H, W) float32 (EvDistill's 2-channel student)."""

    name: ClassVar[str] = "histogram"
    width: ClassVar[int] = 2
    encode = staticmethod(histogram)


@dataclass(frozen=True)
class EvSegNet(_Counts):
    """`evsegnet_encoding`: Ev-SegNet's 6 channels (B, 6, H, W) float32, counts first."""

    name: ClassVar[str] = "evsegnet"
    width: ClassVar[int] = 6
    encode = staticmethod(evsegnet_encoding)


@dataclass(frozen=True)
class SpikeStack:
    """`spike_stack`: `frames` raw spike readouts mapped to ±1 (BiCross's input)."""

    name: ClassVar[str] = "spike_stack"
    modality: ClassVar[str] = "spikes"
    splats_subpixel: ClassVar[bool] = False
    frames: int = 128  # code: BiCross feeds 128 frames to its spike stem

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ValueError(f"spike input needs frames >= 1, got {self.frames}")

    def channels(self) -> int:
        return self.frames

    def __call__(self, spikes: SpikesLike, center: int | Sequence[int]) -> torch.Tensor:
        """(frames, H, W) float32 around key frame `center` (or (K, frames, H, W))."""
        return spike_stack(spikes, center, self.frames)

    def last(self, spikes: SpikesLike, total: int) -> torch.Tensor:
        """(frames, H, W) float32 of the last `frames` readouts of a `total`-frame stream."""
        return self(spikes, total - self.frames + self.frames // 2)

    def describe(self) -> str:
        return self.name


Representation = VoxelGrid | Histogram | EvSegNet | SpikeStack
REPRESENTATIONS: dict[str, type[Representation]] = {
    cls.name: cls for cls in (VoxelGrid, Histogram, EvSegNet, SpikeStack)}


def representation_names(modality: str | None = None) -> tuple[str, ...]:
    """The registered names, in order, of one modality ("events" | "spikes") or of all."""
    return tuple(n for n, cls in REPRESENTATIONS.items()
                 if modality is None or cls.modality == modality)


def representation_type(name: str) -> type[Representation]:
    """The class registered as `name`; ValueError listing the known names otherwise."""
    if name not in REPRESENTATIONS:
        raise ValueError(f"unknown representation {name!r}; known: "
                         f"{', '.join(REPRESENTATIONS)}")
    return REPRESENTATIONS[name]


def get_representation(name: str, **params) -> Representation:
    """The representation `name` with `params` (its dataclass fields; others are a
    TypeError naming the representation)."""
    cls = representation_type(name)
    try:
        return cls(**params)
    except TypeError as err:
        raise TypeError(f"representation {name!r}: {err}") from None


def representation_of(name: str, settings: object) -> Representation:
    """The representation `name`, its parameters read from the same-named attributes of
    `settings` (a config or package spec holding more fields than the representation takes)."""
    cls = representation_type(name)
    return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})
