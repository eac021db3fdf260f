"""DDD17: ESS memmap layout reader, index files, masks, Ev-SegNet arrays."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from evtransfer.io.base import FormatError
from evtransfer.io.ddd17 import (
    Ddd17EventsReader,
    list_evsegnet,
    read_evsegnet_events,
    read_frame_index,
    segmentation_masks,
)
from evtransfer.io.images import write_label_png


def write_ess_recording(folder: Path, t_ns, x, y, p01, index_rows=None, masks=()) -> Path:
    """A recording folder in the ESS DDD17 layout: raw memmaps, index npy files, mask PNGs."""
    folder.mkdir(parents=True, exist_ok=True)
    np.asarray(t_ns, dtype="<i8").tofile(folder / "events.dat.t")
    np.stack([x, y, p01], axis=1).astype("<i2").tofile(folder / "events.dat.xyp")
    (folder / "index").mkdir(exist_ok=True)
    rows = np.zeros((0, 3), np.int64) if index_rows is None else np.asarray(index_rows, np.int64)
    for ms in (10, 50, 250):
        np.save(folder / "index" / f"index_{ms}ms.npy", rows)
    (folder / "segmentation_masks").mkdir(exist_ok=True)
    for number in masks:
        label = np.full((200, 346), number % 6, np.uint8)
        write_label_png(folder / "segmentation_masks" / f"segmentation_{number:08d}.png", label)
    return folder


@pytest.fixture()
def recording(tmp_path):
    rng = np.random.default_rng(5)
    n = 2000
    t_ns = np.sort(rng.integers(10**15, 10**15 + 50_000_000, n))
    t_ns[100:104] = t_ns[100]
    x, y, p = rng.integers(0, 346, n), rng.integers(0, 260, n), rng.integers(0, 2, n)
    write_ess_recording(tmp_path / "dir0", t_ns, x, y, p)
    return tmp_path / "dir0", t_ns, x, y, p


def test_windows_floor_ns_to_us_and_match_mask(recording):
    folder, t_ns, x, y, p = recording
    r = Ddd17EventsReader(folder)
    t_us = t_ns // 1000
    info = r.info()
    assert (info.width, info.height, info.events) == (346, 260, len(t_ns))
    assert (info.t_start_us, info.t_end_us) == (t_us[0], t_us[-1])
    edges = [t_us[0] - 1, t_us[0], t_us[100], t_us[100] + 1, t_us[1999], t_us[-1] + 1]
    for t0 in edges:
        for t1 in edges:
            if t1 >= t0:
                ev = r.read_window(int(t0), int(t1))
                idx = np.nonzero((t_us >= t0) & (t_us < t1))[0]
                np.testing.assert_array_equal(ev.t, t_us[idx])
                np.testing.assert_array_equal(ev.x, x[idx])
                np.testing.assert_array_equal(ev.y, y[idx])
                np.testing.assert_array_equal(ev.p, 2 * p[idx] - 1)


def test_sub_microsecond_boundary(tmp_path):
    folder = write_ess_recording(tmp_path / "d", [999, 1000, 1999, 2000], [0] * 4, [0] * 4, [1] * 4)
    r = Ddd17EventsReader(folder)
    assert list(r.read_window(1, 2).t) == [1, 1]
    assert list(r.read_window(0, 1).t) == [0]


def test_read_last_and_before_index(recording):
    folder, t_ns, x, *_ = recording
    r = Ddd17EventsReader(folder)
    t_us = t_ns // 1000
    ev = r.read_last(int(t_us[500]), 30)
    before = np.nonzero(t_us < t_us[500])[0][-30:]
    np.testing.assert_array_equal(ev.x, x[before])
    np.testing.assert_array_equal(r.read_before_index(700, 50).x, x[650:700])
    np.testing.assert_array_equal(r.read_before_index(20, 50).x, x[:20])


def test_window_read_allocates_only_the_slice(tmp_path):
    n = 1_000_000
    t_ns = np.arange(n, dtype=np.int64) * 1000
    zeros = np.zeros(n, np.int16)
    folder = write_ess_recording(tmp_path / "big", t_ns, zeros, zeros, zeros + 1)
    del t_ns, zeros
    r = Ddd17EventsReader(folder)
    tracemalloc.start()
    ev = r.read_window(500_000, 501_000)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(ev) == 1000
    assert peak < 200_000  # the whole t memmap alone is 8 MB


def test_index_files_and_masks(tmp_path):
    rows = [[10, 0, 0], [20, 5, 0], [30, 9, 5]]
    folder = write_ess_recording(
        tmp_path / "d", [1, 2], [0, 0], [0, 0], [0, 1], rows, masks=(3, 1, 2)
    )
    (folder / "segmentation_masks" / "notes.txt").write_text("x")
    np.testing.assert_array_equal(read_frame_index(folder, 50), np.array(rows))
    assert [i for i, _ in segmentation_masks(folder)] == [0, 1, 2]
    assert segmentation_masks(folder)[0][1].name == "segmentation_00000001.png"
    with pytest.raises(ValueError, match="interval_ms"):
        read_frame_index(folder, 20)
    np.save(folder / "index" / "index_50ms.npy", np.zeros((3, 2), np.int64))
    with pytest.raises(FormatError, match="index_50ms.npy.*\\(M, 3\\)"):
        read_frame_index(folder, 50)
    (folder / "index" / "index_10ms.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(FormatError, match="index_10ms.npy"):
        read_frame_index(folder, 10)


@pytest.mark.parametrize(
    "t, x, y, p, match",
    [
        ([1000, 2000], [346, 0], [0, 0], [0, 1], "x = 346"),
        ([1000, 2000], [0, 0], [-1, 0], [0, 1], "y = -1"),
        ([1000, 2000], [0, 0], [0, 0], [0, 3], "p = 3"),
        ([3000, 2000], [0, 0], [0, 0], [0, 1], "decrease"),
    ],
)
def test_bad_values(tmp_path, t, x, y, p, match):
    folder = write_ess_recording(tmp_path / "bad", t, x, y, p)
    with pytest.raises(FormatError, match=f"bad.*{match}"):
        Ddd17EventsReader(folder).read_index(0, 2)


def test_truncated_and_missing_files(recording):
    folder = recording[0]
    data = (folder / "events.dat.xyp").read_bytes()
    (folder / "events.dat.xyp").write_bytes(data[:-6])
    with pytest.raises(FormatError, match="events.dat.xyp.*truncated"):
        Ddd17EventsReader(folder)
    (folder / "events.dat.t").write_bytes((folder / "events.dat.t").read_bytes()[:-3])
    with pytest.raises(FormatError, match="events.dat.t.*multiple of 8"):
        Ddd17EventsReader(folder)
    (folder / "events.dat.t").unlink()
    with pytest.raises(FormatError, match="events.dat.t"):
        Ddd17EventsReader(folder)
    with pytest.raises(FileNotFoundError):
        Ddd17EventsReader(folder / "nope")


def test_empty_recording_and_bad_arguments(tmp_path):
    folder = write_ess_recording(tmp_path / "e", [], [], [], [])
    r = Ddd17EventsReader(folder)
    assert len(r) == 0 and len(r.read_window(0, 10)) == 0
    with pytest.raises(FormatError, match="end"):
        r.read_window(5, 1)
    with pytest.raises(FormatError, match="outside"):
        r.read_index(0, 1)


def test_evsegnet_layout(tmp_path):
    for split in ("train", "test"):
        for d in ("events", "labels", "images"):
            (tmp_path / d / split).mkdir(parents=True)
    arr = np.random.default_rng(0).random((200, 346, 6))
    np.save(tmp_path / "events" / "test" / "rec1487417411_export_10.npy", arr)
    write_label_png(
        tmp_path / "labels" / "test" / "rec1487417411_export_10.png", np.zeros((200, 346), np.uint8)
    )
    samples = list_evsegnet(tmp_path, "test")
    assert [s.name for s in samples] == ["rec1487417411_export_10"] and samples[0].image is None
    np.testing.assert_array_equal(read_evsegnet_events(samples[0].events), arr.astype(np.float32))
    np.save(tmp_path / "events" / "train" / "rec1_export_1.npy", np.zeros((200, 346, 5)))
    with pytest.raises(FormatError, match="rec1_export_1.npy.*label"):
        list_evsegnet(tmp_path, "train")
    write_label_png(tmp_path / "labels" / "train" / "rec1_export_1.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(FormatError, match="rec1_export_1.npy.*shape"):
        read_evsegnet_events(list_evsegnet(tmp_path, "train")[0].events)
