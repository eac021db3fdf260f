"""HDF5 plumbing shared by the DSEC and MVSEC readers: opening, guarded reads, bounded search.

h5py reports a missing compression filter, a truncated file or a corrupt chunk as a bare
`OSError` from deep inside HDF5; every read here goes through `read` so that the user sees a
`FormatError` that names the file, the dataset and, for filters, the fix (`pip install
hdf5plugin`). Searches over sorted on-disk arrays never load more than `SEARCH_BLOCK`
elements at once, so a window lookup costs O(log N) small reads whatever the file size.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from evtransfer.io.base import FormatError

SEARCH_BLOCK = 1 << 16
"""Largest slice a bounded search reads in one go (elements)."""


def load_filters() -> bool:
    """Register the Blosc/Zstd/LZ4 HDF5 filters by importing hdf5plugin; False if absent."""
    try:
        import hdf5plugin  # noqa: F401  (import registers the filters with HDF5)
    except ImportError:
        return False
    return True


def open_h5(path: str | Path) -> h5py.File:
    """Open `path` read-only; a missing file is FileNotFoundError, a non-HDF5 one FormatError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    load_filters()
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise FormatError(path, f"not a readable HDF5 file (truncated or corrupt?): {err}") from err


def require(f: h5py.File | h5py.Group, name: str, path: str | Path, ndim: int | None = None):
    """Dataset `name` of `f`, checked to exist (and to have `ndim` dimensions)."""
    obj = f.get(name)
    if not isinstance(obj, h5py.Dataset):
        found = sorted(f.keys()) if isinstance(f, h5py.Group) else []
        raise FormatError(path, f"missing dataset '{name}' (top-level keys: {found})")
    if ndim is not None and obj.ndim != ndim:
        raise FormatError(path, f"dataset '{name}' must be {ndim}-D, got shape {obj.shape}")
    return obj


_FILTER_NAMES = {32001: "Blosc", 32026: "Blosc2", 32015: "Zstd", 32004: "LZ4", 307: "bzip2"}
_FIX = "run `pip install hdf5plugin` (the reader imports it) or set HDF5_PLUGIN_PATH"


def check_filters(ds: h5py.Dataset, path: str | Path) -> None:
    """FormatError naming the filter if `ds` is compressed with one HDF5 cannot load."""
    plist = ds.id.get_create_plist()
    for i in range(plist.get_nfilters()):
        code = plist.get_filter(i)[0]
        if not h5py.h5z.filter_avail(code):
            name = _FILTER_NAMES.get(code, f"id {code}")
            raise FormatError(
                path,
                f"dataset '{ds.name}' needs the {name} HDF5 filter, not registered; {_FIX}",
            )


def _filter_missing(err: Exception) -> bool:
    text = str(err).lower()
    return "filter" in text or "blosc" in text or "can't open directory" in text


def read(ds: h5py.Dataset, selection, path: str | Path) -> np.ndarray:
    """`ds[selection]` as a NumPy array; HDF5 errors become FormatError naming file and dataset."""
    try:
        return np.asarray(ds[selection])
    except OSError as err:
        if _filter_missing(err):
            raise FormatError(
                path,
                f"dataset '{ds.name}' uses an HDF5 filter that is not registered ({err}); {_FIX}",
            ) from err
        raise FormatError(
            path, f"cannot read dataset '{ds.name}' (truncated or corrupt?): {err}"
        ) from err


def first_at_least(values: Callable[[int, int], np.ndarray], target: int, lo: int, hi: int) -> int:
    """First index i in [lo, hi] with values(i, i+1)[0] >= target (hi if none).

    `values(i0, i1)` returns the sorted int64 values of indices [i0, i1) read from disk. The
    range is first narrowed by bisection on single elements until it holds at most
    `SEARCH_BLOCK` values, then that block is read once and searched.
    """
    while hi - lo > SEARCH_BLOCK:
        mid = (lo + hi) // 2
        if int(values(mid, mid + 1)[0]) < target:
            lo = mid + 1
        else:
            hi = mid
    block = values(lo, hi)
    return lo + int(np.searchsorted(block, np.int64(target), side="left"))


def check_sorted(t: np.ndarray, offset: int, path: str | Path) -> None:
    """FormatError if `t` (file indices offset + k) ever decreases."""
    if t.size > 1:
        steps = np.diff(t)
        if steps.min() < 0:
            k = int(np.argmax(steps < 0))
            raise FormatError(
                path,
                f"timestamps decrease at event {offset + k + 1} ({t[k]} -> {t[k + 1]}); "
                "the file is not sorted by time",
            )


def check_range(name: str, values: np.ndarray, limit: int, offset: int, path: str | Path) -> None:
    """FormatError if any of `values` (file indices offset + k) lies outside [0, limit)."""
    if values.size:
        bad = (values < 0) | (values >= limit)
        if bad.any():
            k = int(np.argmax(bad))
            raise FormatError(
                path,
                f"{name} = {values[k]} at event {offset + k} is outside the sensor "
                f"[0, {limit}); {int(bad.sum())} such events in the read slice",
            )
