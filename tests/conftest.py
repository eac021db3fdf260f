import numpy as np
import pytest
from PIL import Image

from evtransfer.io.images import write_png16
from evtransfer.world.build import build_world
from evtransfer.world.domains import preset


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """The tiny preset built once per test session (a few seconds)."""
    return build_world(preset("tiny"), tmp_path_factory.mktemp("world") / "tiny", progress=False)


def _depth_frame(folder, rgb_name, depth_name, spike_name, size, seed, units_per_metre):
    rng = np.random.default_rng(seed)
    for sub in ("rgb", "depth", "spike/npy"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(
        folder / "rgb" / rgb_name)
    write_png16(folder / "depth" / depth_name,
                (rng.uniform(2, 60, size) * units_per_metre).astype(np.uint16))
    spikes = (rng.random((6, *size)) < 0.3).astype(np.float32)
    np.save(folder / "spike" / "npy" / spike_name, spikes)


@pytest.fixture()
def bicross_real_roots(tmp_path):
    """BiCross's real layouts in miniature: a VKITTI 2 root (one 9 x 14 frame per train scene)
    and a KITTI root (2 train frames of 9 x 14; test frames of 9 x 14 and 10 x 16), every
    frame with a 6-frame spike/npy array. Returns (vkitti_root, kitti_root)."""
    for i, scene in enumerate(("Scene01", "Scene02", "Scene06", "Scene20")):
        _depth_frame(tmp_path / "vkitti" / "input" / scene, "rgb_00000.jpg",
                     "depth_00000.png", "spike_00000.npy", (9, 14), i, 100)
    kitti, lines = tmp_path / "kitti", {"train": [], "test": []}
    for k, (split, size) in enumerate([("train", (9, 14)), ("train", (9, 14)),
                                       ("test", (9, 14)), ("test", (10, 16))]):
        name = f"{k:010d}.png"
        _depth_frame(kitti / "input" / "2011_09_26" / f"drive_{k}", name, name,
                     name.replace(".png", ".npy"), size, 10 + k, 256)
        lines[split].append(f"2011_09_26/drive_{k}/image_02/data/{name} x\n")
    for split, rows in lines.items():
        (kitti / f"kitti_eigen_{split}.txt").write_text("".join(rows))
    return tmp_path / "vkitti", kitti
