import importlib.util

import numpy as np
import pytest
from PIL import Image

from evtransfer.simulate import SimulationError, open_frames
from evtransfer.simulate.sources import load_gray, read_timestamps


def write_frames(folder, n=3, h=6, w=8, sub=None):
    target = folder / sub if sub else folder
    target.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, h, w), dtype=np.uint8)
    for k, img in enumerate(images):
        Image.fromarray(img).save(target / f"frame_{k:04d}.png")
    return images


def test_frame_folder_with_seconds_timestamps(tmp_path):
    images = write_frames(tmp_path, sub="imgs")
    (tmp_path / "timestamps.txt").write_text("# seconds\n0.0\n0.0015\n0.003\n")
    source = open_frames(tmp_path)
    frames = list(source.frames)
    assert (source.height, source.width, source.n_frames) == (6, 8, 3)
    assert [t for _, t in frames] == [0, 1_500, 3_000]
    assert np.allclose(frames[1][0], images[1] / 255.0)
    assert frames[0][0].dtype == np.float32


def test_frame_folder_with_us_timestamps_and_errors(tmp_path):
    write_frames(tmp_path)
    with pytest.raises(FileNotFoundError, match="timestamps"):
        open_frames(tmp_path)
    (tmp_path / "timestamps_us.txt").write_text("10\n20\n")
    with pytest.raises(SimulationError, match="2 timestamps for 3 images"):
        open_frames(tmp_path)
    (tmp_path / "timestamps_us.txt").write_text("10\n20\n20\n")
    with pytest.raises(SimulationError, match="must increase \\(line 3"):
        open_frames(tmp_path)
    (tmp_path / "timestamps_us.txt").write_text("10\n20\n35\n")
    assert [t for _, t in open_frames(tmp_path).frames] == [10, 20, 35]


def test_read_timestamps_refuses_fractional_us(tmp_path):
    path = tmp_path / "timestamps_us.txt"
    path.write_text("1.5\n2\n")
    with pytest.raises(SimulationError, match="integers"):
        read_timestamps(path)


def test_sixteen_bit_images_keep_their_depth(tmp_path):
    values = np.array([[0, 1000], [40000, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "d.png")
    assert np.allclose(load_gray(tmp_path / "d.png"), values / 65535.0, atol=1e-7)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(SimulationError, match="cannot read image"):
        load_gray(tmp_path / "bad.png")


def test_one_image_still_or_with_random_motion(tmp_path):
    write_frames(tmp_path, n=1, h=10, w=12)
    image = tmp_path / "frame_0000.png"
    still = list(open_frames(image, n_frames=3, fps=100.0).frames)
    assert [t for _, t in still] == [0, 10_000, 20_000]
    moving = open_frames(image, motion="random", n_frames=4, fps=100.0, seed=1)
    frames = [f for f, _ in moving.frames]
    assert len(frames) == 4 and np.allclose(frames[0], still[0][0], atol=1e-6)
    assert not np.allclose(frames[-1], frames[0])
    with pytest.raises(SimulationError, match="single image"):
        open_frames(tmp_path, motion="random")
    with pytest.raises(FileNotFoundError):
        open_frames(tmp_path / "missing.png")


@pytest.mark.skipif(importlib.util.find_spec("cv2") is None, reason="needs opencv")
def test_video_file(tmp_path):
    import cv2

    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (16, 12))
    for k in range(5):
        writer.write(np.full((12, 16, 3), 40 * k, np.uint8))
    writer.release()
    source = open_frames(path)
    frames = list(source.frames)
    assert (source.height, source.width) == (12, 16) and len(frames) == 5
    assert [t for _, t in frames] == [0, 40_000, 80_000, 120_000, 160_000]
    assert abs(float(frames[2][0].mean()) - 80 / 255) < 0.03
