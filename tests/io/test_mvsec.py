"""MVSEC data/GT HDF5: events, APS frames, depth; precision and failure modes."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from evtransfer.io import _h5
from evtransfer.io.base import FormatError
from evtransfer.io.mvsec import MvsecDepthReader, MvsecEventsReader, seconds_to_us

EPOCH_US = 1_506_117_000_000_000  # a 2017 ROS time, where float64 resolves ~0.24 µs


def write_data_file(path: Path, x, y, t_us, p, frames: int = 3, camera: str = "left") -> Path:
    """An MVSEC-layout data file: (N, 4) float64 events [x, y, t_s, p±1], LZF APS frames."""
    t_s = (EPOCH_US + np.asarray(t_us, dtype=np.int64)) / 1e6
    rows = np.stack([x, y, t_s, p], axis=1).astype(np.float64)
    with h5py.File(path, "w") as f:
        g = f.create_group(f"davis/{camera}")
        g.create_dataset("events", data=rows, chunks=(max(1, min(len(rows), 256)), 4))
        images = np.arange(frames * 260 * 346, dtype=np.int64).reshape(frames, 260, 346) % 251
        g.create_dataset(
            "image_raw", data=images.astype(np.uint8), chunks=(1, 260, 346), compression="lzf"
        )
        g.create_dataset("image_raw_ts", data=(EPOCH_US + 1000 * np.arange(frames)) / 1e6)
        g.create_dataset("image_raw_event_inds", data=np.arange(frames, dtype=np.int64) * 10)
    return path


def write_gt_file(path: Path, depth: np.ndarray, ts_us) -> Path:
    with h5py.File(path, "w") as f:
        g = f.create_group("davis/left")
        g.create_dataset("depth_image_rect", data=depth.astype(np.float32))
        g.create_dataset("depth_image_rect_ts", data=(EPOCH_US + np.asarray(ts_us)) / 1e6)
    return path


@pytest.fixture()
def stream(tmp_path):
    rng = np.random.default_rng(4)
    n = 3000
    t_us = np.sort(rng.integers(0, 2_000_000, n))
    t_us[10:13] = t_us[10]
    x, y, p = rng.integers(0, 346, n), rng.integers(0, 260, n), rng.choice([-1, 1], n)
    return write_data_file(tmp_path / "s_data.hdf5", x, y, t_us, p), x, y, EPOCH_US + t_us, p


def test_seconds_to_us_recovers_integer_microseconds():
    t_us = EPOCH_US + np.arange(0, 10**7, 997)
    np.testing.assert_array_equal(seconds_to_us(t_us / 1e6), t_us)


def test_windows_match_mask_and_times_are_exact(stream):
    path, x, y, t_abs, p = stream
    r = MvsecEventsReader(path)
    info = r.info()
    assert (info.width, info.height, info.events) == (346, 260, len(t_abs))
    assert (info.t_start_us, info.t_end_us) == (t_abs[0], t_abs[-1])
    edges = [t_abs[0] - 1, t_abs[0], t_abs[10], t_abs[13], t_abs[2999], t_abs[-1] + 1]
    for t0 in edges:
        for t1 in edges:
            if t1 >= t0:
                ev = r.read_window(int(t0), int(t1))
                idx = np.nonzero((t_abs >= t0) & (t_abs < t1))[0]
                np.testing.assert_array_equal(ev.t, t_abs[idx])
                np.testing.assert_array_equal(ev.x, x[idx])
                np.testing.assert_array_equal(ev.y, y[idx])
                np.testing.assert_array_equal(ev.p, p[idx])
    last = r.read_last(int(t_abs[100]), 7)
    np.testing.assert_array_equal(last.t, t_abs[np.nonzero(t_abs < t_abs[100])[0][-7:]])
    clone = pickle.loads(pickle.dumps(r))
    np.testing.assert_array_equal(clone.read_index(0, 5).t, t_abs[:5])


def test_frames_and_depth(tmp_path, stream):
    path = stream[0]
    r = MvsecEventsReader(path)
    assert r.num_frames() == 3
    np.testing.assert_array_equal(r.frame_timestamps_us(), EPOCH_US + np.array([0, 1000, 2000]))
    np.testing.assert_array_equal(r.frame_event_indices(), [0, 10, 20])
    expected = (np.arange(260 * 346).reshape(260, 346) + 260 * 346) % 251
    np.testing.assert_array_equal(r.read_frame(1), expected.astype(np.uint8))
    with pytest.raises(IndexError):
        r.read_frame(3)
    depth = np.random.default_rng(0).random((2, 260, 346)).astype(np.float32) * 80
    depth[0, 5, 7] = np.nan
    gt = write_gt_file(tmp_path / "s_gt.hdf5", depth, [50_000, 100_000])
    with MvsecDepthReader(gt) as d:
        assert len(d) == 2
        np.testing.assert_array_equal(d.timestamps_us(), EPOCH_US + np.array([50_000, 100_000]))
        got = d.read(0)
        assert got.dtype == np.float32 and np.isnan(got[5, 7])
        np.testing.assert_array_equal(got, depth[0])
    with pytest.raises(FormatError, match="s_gt.hdf5.*depth_image_raw"):
        MvsecDepthReader(gt, rectified=False)


@pytest.mark.parametrize(
    "x, y, p, match",
    [
        ([1.5, 2], [0, 0], [1, 1], "x = 1.5 .*not an integer"),
        ([1, 2], [0, 260], [1, 1], "y = 260"),
        ([1, 2], [0, 0], [0, 1], "p = 0"),
        ([1, np.nan], [0, 0], [1, 1], "x = nan"),
    ],
)
def test_bad_event_values(tmp_path, x, y, p, match):
    path = write_data_file(tmp_path / "bad_data.hdf5", x, y, [1, 2], p)
    with pytest.raises(FormatError, match=f"bad_data.hdf5.*{match}"):
        MvsecEventsReader(path).read_index(0, 2)


def test_decreasing_time_and_layout_errors(tmp_path):
    path = write_data_file(tmp_path / "dec_data.hdf5", [1, 2, 3], [0, 0, 0], [5, 3, 9], [1, 1, 1])
    with pytest.raises(FormatError, match="dec_data.hdf5.*decrease"):
        MvsecEventsReader(path).read_index(0, 3)
    with pytest.raises(FormatError, match="dec_data.hdf5.*davis/right/events"):
        MvsecEventsReader(path, camera="right")
    with pytest.raises(ValueError, match="camera"):
        MvsecEventsReader(path, camera="middle")
    with h5py.File(tmp_path / "three_data.hdf5", "w") as f:
        f.create_dataset("davis/left/events", data=np.zeros((4, 3)))
    with pytest.raises(FormatError, match="three_data.hdf5.*\\(N, 4\\)"):
        MvsecEventsReader(tmp_path / "three_data.hdf5")
    (tmp_path / "cut_data.hdf5").write_bytes(path.read_bytes()[:900])
    with pytest.raises(FormatError, match="cut_data.hdf5"):
        MvsecEventsReader(tmp_path / "cut_data.hdf5").read_index(0, 3)


def test_window_reads_only_a_bounded_slice(tmp_path, monkeypatch):
    n = 20_000
    t_us = np.arange(n) * 3
    zeros = np.zeros(n)
    path = write_data_file(tmp_path / "l_data.hdf5", zeros, zeros, t_us, zeros + 1)
    monkeypatch.setattr(_h5, "SEARCH_BLOCK", 64)
    reads: list[int] = []
    read = _h5.read

    def counting(ds, selection, p):
        out = read(ds, selection, p)
        reads.append(out.size)
        return out

    monkeypatch.setattr(_h5, "read", counting)
    ev = MvsecEventsReader(path).read_window(EPOCH_US + 30_000, EPOCH_US + 30_300)
    assert len(ev) == 100
    assert max(reads) <= 4 * 100 and sum(reads) < 4 * 100 + 2 * (64 + 40)
