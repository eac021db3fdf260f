"""Frame sources for the simulators: a folder of frames with timestamps, a video, one image.

Every source yields grayscale frames as (H, W) float32 linear intensity in [0, 1] with int64 µs
timestamps, one frame at a time, so long videos stream. Image reading uses Pillow; video reading
imports OpenCV only when a video is opened.

A frame folder holds images (sorted by file name, optionally inside an `imgs/` subfolder, the
VID2E layout) and either `timestamps_us.txt` (one integer µs per line) or `timestamps.txt` (one
time in seconds per line, the ESIM/VID2E convention).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from evtransfer.simulate._checks import SimulationError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".ppm", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


@dataclass
class FrameSource:
    """A stream of (frame (H, W) float32 in [0, 1], t_us int) pairs and its size.

    n_frames may be None when a video container does not tell its length.
    """

    height: int
    width: int
    n_frames: int | None
    frames: Iterator[tuple[np.ndarray, int]]


LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's "L" conversion


def luminance(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) RGB → (..., H, W) intensity with the BT.601 weights of `load_gray`."""
    if rgb.ndim < 3 or rgb.shape[-3] != 3:
        raise ValueError(f"rgb must be (..., 3, H, W), got shape {tuple(rgb.shape)}")
    weights = torch.tensor(LUMA, device=rgb.device, dtype=rgb.dtype)
    return torch.einsum("...chw,c->...hw", rgb, weights)


def load_gray(path: str | Path) -> np.ndarray:
    """An image file as (H, W) float32 grayscale in [0, 1] (16-bit images keep their depth)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image")
    try:
        with Image.open(path) as im:
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float64)
                if arr.size and (arr.min() < 0 or arr.max() > 65535):
                    raise SimulationError(f"{path}: integer image outside the 16-bit range")
                return (arr / 65535.0).astype(np.float32)
            return np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as exc:
        raise SimulationError(f"{path}: cannot read image ({exc})") from None


def read_timestamps(path: str | Path) -> np.ndarray:
    """(N,) int64 µs from `timestamps_us.txt` (integers) or any other name (seconds, floats)."""
    path = Path(path)
    try:
        values = np.loadtxt(path, dtype=np.float64, comments="#", ndmin=1)
    except ValueError as exc:
        raise SimulationError(f"{path}: not one number per line ({exc})") from None
    if values.ndim != 1:
        raise SimulationError(f"{path}: expected one timestamp per line, got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise SimulationError(f"{path}: timestamps must be finite")
    if path.name.endswith("_us.txt"):
        if np.any(values != np.round(values)):
            raise SimulationError(f"{path}: µs timestamps must be integers")
        t = values.astype(np.int64)
    else:
        t = np.rint(values * 1e6).astype(np.int64)
    if t.size > 1 and np.any(np.diff(t) <= 0):
        i = int(np.argmax(np.diff(t) <= 0))
        raise SimulationError(
            f"{path}: timestamps must increase (line {i + 2}: {t[i]} -> {t[i + 1]} µs)"
        )
    return t


def frame_folder(folder: str | Path) -> FrameSource:
    """The frames of a folder (or its `imgs/` subfolder) with their timestamps file."""
    folder = Path(folder)
    image_dir = folder / "imgs" if (folder / "imgs").is_dir() else folder
    files = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SimulationError(f"{image_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
    names = ("timestamps_us.txt", "timestamps.txt")
    stamp_files = [folder / n for n in names if (folder / n).is_file()]
    if not stamp_files:
        raise FileNotFoundError(f"{folder}: needs timestamps_us.txt (µs) or timestamps.txt (s)")
    t = read_timestamps(stamp_files[0])
    if len(t) != len(files):
        raise SimulationError(f"{stamp_files[0]}: {len(t)} timestamps for {len(files)} images")
    first = load_gray(files[0])

    def frames() -> Iterator[tuple[np.ndarray, int]]:
        for path, stamp in zip(files, t.tolist(), strict=True):
            img = first if path == files[0] else load_gray(path)
            if img.shape != first.shape:
                raise SimulationError(f"{path}: size {img.shape} differs from {first.shape}")
            yield img, stamp

    return FrameSource(first.shape[0], first.shape[1], len(files), frames())


def video_file(path: str | Path, fps: float | None = None) -> FrameSource:
    """Grayscale frames of a video via OpenCV, stamped round(k × 10^6 / fps) µs (the container's
    frame rate unless `fps` is given)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such video")
    try:
        import cv2
    except ImportError:
        raise SimulationError(
            f"{path}: reading videos needs OpenCV (pip install opencv-python-headless)"
        ) from None
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise SimulationError(f"{path}: OpenCV cannot open this video")
    rate = fps or cap.get(cv2.CAP_PROP_FPS)
    if not rate or rate <= 0:
        cap.release()
        raise SimulationError(f"{path}: the video has no frame rate; pass fps")
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))

    def frames() -> Iterator[tuple[np.ndarray, int]]:
        k = 0
        try:
            while True:
                ok, bgr = cap.read()
                if not ok:
                    return
                gray = bgr if bgr.ndim == 2 else cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
                yield gray.astype(np.float32) / 255.0, round(k * 1e6 / rate)
                k += 1
        finally:
            cap.release()

    return FrameSource(height, width, count, frames())


def image_motion(path: str | Path, n_frames: int, fps: float, seed: int, **motion) -> FrameSource:
    """A pseudo-video of one image under a random camera path (`motion.random_motion` options),
    warped one frame at a time so long videos stay small in memory."""
    import torch

    from evtransfer.simulate.motion import random_motion, warp

    image = load_gray(path)
    path_ = random_motion(image.shape[0], image.shape[1], n_frames, fps=fps, generator=seed,
                          **motion)
    source = torch.from_numpy(image)

    def frames() -> Iterator[tuple[np.ndarray, int]]:
        for h, t in zip(path_.homographies, path_.t_us.tolist(), strict=True):
            yield warp(source, h).numpy(), t

    return FrameSource(image.shape[0], image.shape[1], n_frames, frames())


def image_still(path: str | Path, n_frames: int, fps: float) -> FrameSource:
    """One image repeated as `n_frames` identical frames at `fps`."""
    from evtransfer.simulate.motion import frame_times

    image = load_gray(path)
    stamps = frame_times(n_frames, fps=fps).tolist()
    return FrameSource(image.shape[0], image.shape[1], n_frames, ((image, t) for t in stamps))


def open_frames(path: str | Path, *, motion: str = "none", n_frames: int = 100,
                fps: float = 1000.0, seed: int = 0) -> FrameSource:
    """A frame folder, a video file, or one image (still, or with motion="random")."""
    path = Path(path)
    if motion not in ("none", "random"):
        raise SimulationError(f"motion must be 'none' or 'random', got {motion!r}")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    suffix = path.suffix.lower()
    if motion == "random" and (path.is_dir() or suffix not in IMAGE_SUFFIXES):
        raise SimulationError(f"{path}: --motion random needs a single image")
    if path.is_dir():
        return frame_folder(path)
    if suffix in VIDEO_SUFFIXES:
        return video_file(path)
    if suffix in IMAGE_SUFFIXES:
        if motion == "random":
            return image_motion(path, n_frames, fps, seed)
        return image_still(path, n_frames, fps)
    raise SimulationError(
        f"{path}: expected a frame folder, a video ({', '.join(VIDEO_SUFFIXES)}) "
        f"or an image ({', '.join(IMAGE_SUFFIXES)})"
    )
