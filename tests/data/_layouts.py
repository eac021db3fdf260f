"""Tiny on-disk datasets in the official layouts, for the dataset tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from evtransfer.events import Events
from evtransfer.io.dsec import write_events_h5, write_rectify_map
from evtransfer.io.images import write_label_png


def dsec_sequence(
    seq_dir: Path,
    events: Events,
    label_times: np.ndarray,
    *,
    t_offset: int = 0,
    left: bool = False,
    rectify_map: np.ndarray | None = None,
    label_shape: tuple[int, int] = (440, 640),
) -> Path:
    """A DSEC-Semantic sequence folder; label k is filled with the value k % 11."""
    ev_dir = seq_dir / "events" / "left"
    ev_dir.mkdir(parents=True)
    write_events_h5(ev_dir / "events.h5", events, t_offset_us=t_offset, chunk_events=512)
    if rectify_map is None:
        grid = np.stack(np.meshgrid(np.arange(640), np.arange(480)), axis=-1)
        rectify_map = grid.astype(np.float32)
    write_rectify_map(ev_dir / "rectify_map.h5", rectify_map)
    sem = seq_dir / "semantic"
    label_dir = (sem / "left" if left else sem) / "11classes" / "data"
    label_dir.mkdir(parents=True)
    for k in range(len(label_times)):
        write_label_png(label_dir / f"{k:06d}.png", np.full(label_shape, k % 11, np.uint8))
    np.savetxt(sem / "timestamps.txt", np.asarray(label_times, np.int64), fmt="%d")
    return seq_dir


def ddd17_recording(folder: Path, t_ns, x, y, p01, index_rows, mask_numbers) -> Path:
    """A DDD17 recording in the ESS layout; mask number m is filled with m % 6."""
    folder.mkdir(parents=True)
    np.asarray(t_ns, "<i8").tofile(folder / "events.dat.t")
    np.stack([x, y, p01], axis=1).astype("<i2").tofile(folder / "events.dat.xyp")
    (folder / "index").mkdir()
    for ms in (10, 50, 250):
        np.save(folder / "index" / f"index_{ms}ms.npy", np.asarray(index_rows, np.int64))
    (folder / "segmentation_masks").mkdir()
    for m in mask_numbers:
        label = np.tile((np.arange(346) % 6).astype(np.uint8), (200, 1))
        label[0, 0] = m % 6
        write_label_png(folder / "segmentation_masks" / f"segmentation_{m:08d}.png", label)
    return folder


def mvsec_pair(folder: Path, sequence: str, t_us, x, y, p, depth_ts_us, *, empty_depth=False):
    """`<sequence>_data.hdf5` + `_gt.hdf5` in the MVSEC layout (times in µs → float64 s)."""
    import h5py

    folder.mkdir(parents=True, exist_ok=True)
    rows = np.stack([x, y, np.asarray(t_us) / 1e6, p], axis=1).astype(np.float64)
    with h5py.File(folder / f"{sequence}_data.hdf5", "w") as f:
        f.create_dataset("davis/left/events", data=rows, chunks=(max(1, min(len(rows), 128)), 4))
    m = len(depth_ts_us)
    with h5py.File(folder / f"{sequence}_gt.hdf5", "w") as f:
        if empty_depth:  # unwritten chunks: nothing stored, reads give the fill value
            f.create_dataset(
                "davis/left/depth_image_rect",
                shape=(m, 260, 346),
                dtype="f4",
                chunks=(1, 260, 346),
                fillvalue=np.nan,
            )
        else:
            depth = np.arange(m, dtype=np.float32)[:, None, None] + np.zeros((1, 260, 346), "f4")
            depth[:, 0, 0] = np.nan
            f.create_dataset("davis/left/depth_image_rect", data=depth)
        f.create_dataset("davis/left/depth_image_rect_ts", data=np.asarray(depth_ts_us) / 1e6)


# labelIds of road, building, vegetation, sky, person, car and 0 (unlabeled -> ignore)
CITYSCAPES_IDS = (7, 11, 21, 23, 24, 26, 0)


def cityscapes_split(root: Path, split: str, n: int, size: tuple[int, int] = (64, 128),
                     seed: int = 0) -> Path:
    """Cityscapes `leftImg8bit/<split>/<city>/` images with `gtFine` labelIds: image i has
    vertical stripes of CITYSCAPES_IDS (rolled by i) and a random RGB texture."""
    rng = np.random.default_rng(seed)
    h, w = size
    for i in range(n):
        city = ("aachen", "bochum")[i % 2]
        stem = f"{city}_{i:06d}_000019"
        img_dir, gt_dir = root / "leftImg8bit" / split / city, root / "gtFine" / split / city
        img_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        stripes = np.roll(np.repeat(np.array(CITYSCAPES_IDS, np.uint8), -(-w // 7))[:w], i)
        write_label_png(gt_dir / f"{stem}_gtFine_labelIds.png", np.tile(stripes, (h, 1)))
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(img_dir / f"{stem}_leftImg8bit.png")
    return root
