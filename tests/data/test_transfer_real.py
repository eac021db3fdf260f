"""The real-data transfer tensors (Cityscapes -> DSEC-Semantic / DDD17) on tiny fixtures in the
official layouts."""

import numpy as np
import pytest
import torch

from evtransfer.data.cityscapes import CityscapesConfig
from evtransfer.data.ddd17 import Ddd17Config
from evtransfer.data.dsec_semantic import DsecSemanticConfig
from evtransfer.data.firewall import EVALUATION, TARGET_SUPERVISED
from evtransfer.data.synthetic import SyntheticConfig
from evtransfer.data.transfer import (
    EventInput,
    RealTransferConfig,
    TransferDataConfig,
    build_real_transfer_data,
    load_real_transfer_data,
)
from evtransfer.events import Events
from tests.data._layouts import cityscapes_split, ddd17_recording, dsec_sequence

SEQ = "zurich_city_00_a"


def _stream(seed: int, n: int = 6000) -> Events:
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, 1_500_000, n))
    return Events(rng.integers(0, 640, n), rng.integers(0, 480, n), t, rng.choice([-1, 1], n),
                  640, 480)


def dsec_real_roots(tmp_path):
    """(Cityscapes root, DSEC-Semantic root) with one train and one test sequence."""
    cs = cityscapes_split(tmp_path / "cityscapes", "train", 4, size=(64, 128))
    dsec = tmp_path / "dsec"
    for split, seed in (("train", 0), ("test", 1)):
        dsec_sequence(dsec / split / SEQ, _stream(seed), 100_000 * np.arange(1, 15))
    return cs, dsec


def dsec_scenario(cs, dsec, **kw) -> tuple[RealTransferConfig, TransferDataConfig]:
    real = RealTransferConfig(
        target="dsec_semantic", target_root=str(dsec),
        source=CityscapesConfig(str(cs), resize_to=(44, 64)),
        dsec=DsecSemanticConfig(num_windows=1, events_per_window=400, sequences=(SEQ,),
                                resize_to=(44, 64)), **kw)
    data = TransferDataConfig(synthetic=SyntheticConfig(frames=5, batch=3))
    return real, data


@pytest.fixture(scope="module")
def dsec_roots(tmp_path_factory):
    return dsec_real_roots(tmp_path_factory.mktemp("real"))


def test_dsec_scenario_tensors(dsec_roots, tmp_path):
    real, cfg = dsec_scenario(*dsec_roots)
    data = load_real_transfer_data(real, cfg, tmp_path, progress=False)
    # 14 labels per sequence, 6 dropped (250 ms), every 2nd: 4 windows per split
    assert data.source_rgb.shape == (4, 3, 44, 64) and data.source_label.dtype == torch.uint8
    assert data.synth_x.shape == (4, 5, 44, 64) and data.synth_gray.shape == (4, 44, 64)
    assert data.target_x.shape == (4, 5, 44, 64) and data.test_x.shape == (4, 5, 44, 64)
    test_label = data.test_label.read(EVALUATION)
    assert test_label.shape == (4, 44, 64) and data.num_classes == 11
    assert float(data.target_x.abs().sum()) > 0 and float(data.synth_x.abs().sum()) > 0
    # fixture label k is filled with k % 11; labels 6, 8, 10, 12 are used
    assert test_label[:, 0, 0].tolist() == [6, 8, 10, 1]
    assert set(data.source_label.unique().tolist()) <= {0, 1, 3, 5, 7, 8, 255}
    assert torch.equal(data.target_label.read(TARGET_SUPERVISED)[:, 0, 0],
                       torch.tensor([6, 8, 10, 1], dtype=torch.uint8))
    # memory-mapped from the cache; a second load rebuilds nothing
    folder = next(tmp_path.glob("real_*"))
    assert (folder / "done").exists() and not list(folder.glob("*.part"))
    stamp = (folder / "target_x.npy").stat().st_mtime_ns
    again = load_real_transfer_data(real, cfg, tmp_path, progress=False)
    assert torch.equal(again.target_x, data.target_x)
    assert (folder / "target_x.npy").stat().st_mtime_ns == stamp


def test_a_killed_build_redoes_only_unfinished_arrays(dsec_roots, tmp_path):
    real, cfg = dsec_scenario(*dsec_roots, max_source=2, max_test=2)
    folder = build_real_transfer_data(real, cfg, tmp_path, progress=False)
    assert np.load(folder / "source_rgb.npy").shape[0] == 2
    assert np.load(folder / "test_x.npy").shape[0] == 2
    (folder / "done").unlink()
    (folder / "test_x.npy").rename(folder / "test_x.npy.part")
    stamp = (folder / "source_rgb.npy").stat().st_mtime_ns
    assert build_real_transfer_data(real, cfg, tmp_path, progress=False) == folder
    assert (folder / "test_x.npy").exists() and (folder / "done").exists()
    assert (folder / "source_rgb.npy").stat().st_mtime_ns == stamp


def test_mismatched_geometry_and_bad_config_are_refused(dsec_roots, tmp_path):
    cs, dsec = dsec_roots
    real, cfg = dsec_scenario(cs, dsec)
    wrong = RealTransferConfig(**{**real.__dict__, "source": CityscapesConfig(str(cs))})
    with pytest.raises(ValueError, match=r"source's size \(440, 640\) .* \(44, 64\)"):
        build_real_transfer_data(wrong, cfg, tmp_path, progress=False)
    with pytest.raises(ValueError, match="gives 11 classes .* 'ddd17' and num_classes 6"):
        build_real_transfer_data(real, TransferDataConfig(label_space="ddd17", num_classes=6),
                                 tmp_path)
    with pytest.raises(ValueError, match="set real.dsec.subpixel: false"):
        build_real_transfer_data(real, TransferDataConfig(events=EventInput(kind="histogram")),
                                 tmp_path)
    with pytest.raises(ValueError, match="real.target must be one of"):
        RealTransferConfig(target="kitti")
    with pytest.raises(ValueError, match="runs on the world"):
        build_real_transfer_data(RealTransferConfig(), cfg, tmp_path)


def test_ddd17_scenario_uses_the_ess_geometry(tmp_path):
    cs = cityscapes_split(tmp_path / "cityscapes", "train", 2, size=(64, 128))
    rng = np.random.default_rng(0)
    for i in range(7):
        n = 3000
        t_ns = np.sort(rng.integers(0, 10**9, n)) + 10**15
        rows = [[t_ns[j * 400], j * 400, max(0, j * 400 - 50)] for j in range(6)]
        ddd17_recording(tmp_path / "ddd17" / f"dir{i}", t_ns, rng.integers(0, 346, n),
                        rng.integers(0, 260, n), rng.integers(0, 2, n), rows,
                        mask_numbers=(2, 4, 5))
    real = RealTransferConfig(
        target="ddd17", target_root=str(tmp_path / "ddd17"),
        source=CityscapesConfig(str(cs), resize_to=(32, 64), keep_top=20, crop_width=44),
        ddd17=Ddd17Config(num_windows=2, events_per_window=300, resize_to=(26, 44),
                          crop_bottom=6, label_size=(20, 44)))
    cfg = TransferDataConfig(label_space="ddd17", num_classes=6,
                             events=EventInput(normalize=False),
                             synthetic=SyntheticConfig(frames=5, batch=2))
    data = load_real_transfer_data(real, cfg, tmp_path / "cache", progress=False)
    assert data.source_rgb.shape == (2, 3, 20, 44) and data.synth_x.shape == (2, 5, 20, 44)
    # five train recordings x 3 masks; ESS chunks: 2 windows x 5 bins = 10 channels
    assert data.target_x.shape == (15, 10, 20, 44) and data.test_x.shape == (3, 10, 20, 44)
    assert int(data.source_label[data.source_label != 255].max()) <= 5
