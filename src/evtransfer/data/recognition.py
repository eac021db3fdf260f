"""Recognition benchmarks: N-Caltech101 (events) and UHSR-style spike-camera recognition.

**N-Caltech101**: `root/<class>/image_<n>.bin` in the N-MNIST 5-byte format (read through
`evtransfer.io.nmnist.read_nmnist`, imported when a sample is read) on one fixed sensor size
so that samples batch. Classes are the sorted folder names (minus `exclude`); the train/test
split is stratified per class and seeded, because EvDistill publishes none. A sample is
`{"events": Events, "label": int, "path": str}`.

**UHSR** (chenkang455/Spike-Zoo : spikezoo/datasets/uhsr_dataset.py): `root/<split>/**/*.npz`
(sorted), each holding `spk` (T, 250, 250) uint8 in {0, 1} and `label` (int); the spikes are
cropped to [13:237, 13:237] → 224 × 224. A sample is `{"spikes": Spikes, "label": int,
"path": str}`.

Both accept a `transform` over the sample dict.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from evtransfer.data._common import Sample, Transform, finish, require_dir
from evtransfer.events import Spikes
from evtransfer.io.base import FormatError


@dataclass(frozen=True)
class NCaltech101Config:
    """Split choices (EvDistill's own split is unpublished)."""

    train_fraction: float = 0.8  # unpublished: our choice
    seed: int = 0  # unpublished: our choice
    exclude: tuple[str, ...] = ("BACKGROUND_Google",)  # unpublished: our choice (101 classes)
    # code: uzh-rpg/rpg_event_representation_learning (N-Caltech101 at 180 × 240); unverified
    sensor_size: tuple[int, int] = (240, 180)


def stratified_split(
    counts: list[int], train_fraction: float, seed: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per class, the indices of its files in train and in test (seeded, stratified).

    Class c's n files are permuted by one `np.random.Generator(seed)` drawn class by class in
    order; the first round(train_fraction · n) go to train.
    """
    if not 0.0 <= train_fraction <= 1.0:
        raise ValueError(f"train_fraction must be in [0, 1], got {train_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for n in counts:
        order = rng.permutation(n)
        k = int(round(train_fraction * n))
        train.append(np.sort(order[:k]))
        test.append(np.sort(order[k:]))
    return train, test


class NCaltech101(Dataset):
    """N-Caltech101 event streams with a seeded stratified split (see the module docstring)."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        config: NCaltech101Config | None = None,
        *,
        transform: Transform | None = None,
    ):
        config = config or NCaltech101Config()
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        root = require_dir(Path(root), "N-Caltech101 class folders")
        class_dirs = sorted(
            p for p in root.iterdir() if p.is_dir() and p.name not in config.exclude
        )
        if not class_dirs:
            raise FileNotFoundError(f"{root}: no class folders")
        self.classes = [p.name for p in class_dirs]
        files = [sorted(p.glob("*.bin")) for p in class_dirs]
        train, test = stratified_split([len(f) for f in files], config.train_fraction, config.seed)
        chosen = train if split == "train" else test
        self.samples = [(files[c][i], c) for c, idx in enumerate(chosen) for i in idx.tolist()]
        self.root, self.split, self.config, self.transform = root, split, config, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        from evtransfer.io.nmnist import read_nmnist

        path, label = self.samples[index]
        width, height = self.config.sensor_size
        events = read_nmnist(path, width=width, height=height)
        return finish({"events": events, "label": label, "path": str(path)}, self.transform)


@dataclass(frozen=True)
class UhsrConfig:
    """UHSR crop and readout rate."""

    crop: tuple[int, int, int, int] = (
        13,
        237,
        13,
        237,
    )  # code: Spike-Zoo uhsr_dataset.py (r0, r1, c0, c1)
    rate_hz: float = 20_000.0  # unverified: the npz files carry no rate


def read_uhsr_npz(path: str | Path) -> tuple[np.ndarray, int]:
    """`spk` ((T, H, W) uint8 in {0, 1}) and `label` of a UHSR .npz file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = {"spk", "label"} - set(npz.files)
            if missing:
                raise FormatError(path, f"missing keys {sorted(missing)} (has {npz.files})")
            spk, label = npz["spk"], npz["label"]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise FormatError(path, f"not a readable .npz archive (truncated?): {err}") from err
    if spk.ndim != 3 or spk.dtype.kind not in "biu":
        raise FormatError(path, f"spk must be (T, H, W) integer, got {spk.dtype} {spk.shape}")
    if spk.size and spk.max() > 1:
        raise FormatError(path, f"spk must hold 0/1 spikes, found {spk.max()}")
    if label.size != 1 or label.dtype.kind not in "iu":
        raise FormatError(path, f"label must be one integer, got {label.dtype} {label.shape}")
    return spk.astype(np.uint8), int(label.reshape(-1)[0])


class UhsrRecognition(Dataset):
    """UHSR spike-camera recognition samples, cropped to 224 × 224 (see the module docstring)."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        config: UhsrConfig | None = None,
        *,
        transform: Transform | None = None,
    ):
        self.config = config or UhsrConfig()
        split_dir = require_dir(Path(root) / split, "UHSR split folder")
        self.files = sorted(split_dir.glob("**/*.npz"))
        if not self.files:
            raise FileNotFoundError(f"{split_dir}: no .npz files")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Sample:
        path = self.files[index]
        spk, label = read_uhsr_npz(path)
        r0, r1, c0, c1 = self.config.crop
        if spk.shape[1] < r1 or spk.shape[2] < c1:
            raise FormatError(
                path, f"spikes {spk.shape[1:]} are smaller than the crop {self.config.crop}"
            )
        spikes = Spikes(np.ascontiguousarray(spk[:, r0:r1, c0:c1]), self.config.rate_hz)
        return finish({"spikes": spikes, "label": label, "path": str(path)}, self.transform)
