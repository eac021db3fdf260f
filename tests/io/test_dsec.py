"""DSEC events.h5 / rectify_map.h5: reader, writer, rectification, failure modes."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evtransfer.events import Events
from evtransfer.io import _h5
from evtransfer.io.base import FormatError, iter_count_windows, iter_time_windows
from evtransfer.io.dsec import (
    DsecEventsReader,
    DsecEventsWriter,
    read_rectify_map,
    rectify_events,
    write_events_h5,
    write_rectify_map,
)

W, H = 640, 480
BLOSC_ID = 32001
_READ = _h5.read


def reference_ms_to_idx(t_rel: np.ndarray) -> np.ndarray:
    """ms_to_idx[ms] = number of events with t < ms·1000, for ms = 0 … ⌊t_last/1000⌋ + 1."""
    last = int(t_rel[-1]) // 1000 + 1 if len(t_rel) else 0
    return np.array([int(np.sum(t_rel < ms * 1000)) for ms in range(last + 1)], dtype=np.uint64)


def write_official(
    path: Path,
    x,
    y,
    p01,
    t_rel,
    *,
    t_offset: int | None = 0,
    scalar_offset: bool = False,
    ms_to_idx=None,
    blosc: bool = True,
    skip: tuple[str, ...] = (),
) -> Path:
    """A file in the official DSEC layout, written with h5py alone (Blosc-zstd via hdf5plugin)."""
    t_rel = np.asarray(t_rel, dtype=np.uint32)
    comp = dict(hdf5plugin.Blosc(cname="zstd", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE))
    comp = comp if blosc else {}
    with h5py.File(path, "w") as f:
        data = {"x": (x, "<u2"), "y": (y, "<u2"), "p": (p01, "u1"), "t": (t_rel, "<u4")}
        for key, (values, dtype) in data.items():
            if f"events/{key}" not in skip:
                arr = np.asarray(values, dtype=dtype)
                f.create_dataset(
                    f"events/{key}", data=arr, chunks=(max(1, min(len(arr), 64)),), **comp
                )
        if "ms_to_idx" not in skip:
            ms = reference_ms_to_idx(t_rel) if ms_to_idx is None else np.asarray(ms_to_idx, "<u8")
            f.create_dataset("ms_to_idx", data=ms, chunks=(max(1, min(len(ms), 16)),), **comp)
        if t_offset is not None:
            value = np.int64(t_offset) if scalar_offset else np.array([t_offset], dtype="<i8")
            f.create_dataset("t_offset", data=value)
    return path


def random_stream(rng: np.random.Generator, n: int, span_us: int, dup: bool = True):
    t = np.sort(rng.integers(0, span_us, n))
    if dup and n > 4:
        t[n // 2 : n // 2 + 3] = t[n // 2]  # equal timestamps on a boundary
    return rng.integers(0, W, n), rng.integers(0, H, n), rng.integers(0, 2, n), t


def mask_window(t_abs, t0, t1) -> np.ndarray:
    return np.nonzero((t_abs >= t0) & (t_abs < t1))[0]


@pytest.fixture()
def official(tmp_path):
    rng = np.random.default_rng(3)
    x, y, p, t = random_stream(rng, 3000, 40_000)
    offset = 1_650_000_000_000
    path = write_official(tmp_path / "events.h5", x, y, p, t, t_offset=offset)
    return path, x, y, p, t.astype(np.int64) + offset, offset


# --- reading ------------------------------------------------------------------------------
def test_official_layout_windows_match_mask_reference(official):
    path, x, y, p, t_abs, offset = official
    with DsecEventsReader(path) as r:
        info = r.info()
        assert (info.width, info.height, info.events) == (W, H, len(t_abs))
        assert (info.t_start_us, info.t_end_us) == (t_abs[0], t_abs[-1])
        assert r.t_offset_us == offset
        edges = [
            offset - 5,
            t_abs[0],
            t_abs[17],
            t_abs[1500],
            t_abs[1501] + 1,
            t_abs[-1],
            t_abs[-1] + 1,
        ]
        for t0 in edges:
            for t1 in edges:
                if t1 < t0:
                    continue
                ev = r.read_window(int(t0), int(t1))
                idx = mask_window(t_abs, t0, t1)
                np.testing.assert_array_equal(ev.t, t_abs[idx])
                np.testing.assert_array_equal(ev.x, x[idx])
                np.testing.assert_array_equal(ev.y, y[idx])
                np.testing.assert_array_equal(ev.p, np.where(p[idx] == 1, 1, -1))
                assert ev.t.dtype == np.int64 and ev.x.dtype == np.int16 and ev.p.dtype == np.int8


def test_window_start_inclusive_end_exclusive_with_offset(tmp_path):
    offset = 7_000
    t = np.array([0, 999, 1000, 1000, 1001, 2000, 5000])
    path = write_official(tmp_path / "e.h5", [0] * 7, [0] * 7, [1] * 7, t, t_offset=offset)
    r = DsecEventsReader(path)
    assert list(r.read_window(offset + 1000, offset + 2000).t - offset) == [1000, 1000, 1001]
    assert list(r.read_window(offset + 999, offset + 1000).t - offset) == [999]
    assert len(r.read_window(offset + 1000, offset + 1000)) == 0
    assert list(r.read_window(offset + 2000, offset + 10_000).t - offset) == [2000, 5000]


@pytest.mark.parametrize("scalar", [True, False])
def test_t_offset_scalar_or_shape_1_and_absent(tmp_path, scalar):
    t = np.array([10, 20, 30])
    path = write_official(
        tmp_path / "a.h5", [1, 2, 3], [4, 5, 6], [0, 1, 0], t, t_offset=500, scalar_offset=scalar
    )
    assert list(DsecEventsReader(path).read_window(0, 10**9).t) == [510, 520, 530]
    bare = write_official(tmp_path / "b.h5", [1, 2, 3], [4, 5, 6], [0, 1, 0], t, t_offset=None)
    assert DsecEventsReader(bare).t_offset_us == 0


def test_read_last_matches_ess_slicing(official):
    path, x, _, _, t_abs, _ = official
    r = DsecEventsReader(path)
    for t_end in (t_abs[0], t_abs[10], t_abs[1500], t_abs[-1] + 50):
        for n in (0, 1, 7, 5000):
            ev = r.read_last(int(t_end), n)
            before = np.nonzero(t_abs < t_end)[0]
            idx = before[max(0, len(before) - n) :]
            np.testing.assert_array_equal(ev.t, t_abs[idx])
            np.testing.assert_array_equal(ev.x, x[idx])


def test_empty_window_is_empty_events_on_the_sensor(official):
    path, *_ = official
    ev = DsecEventsReader(path).read_window(5, 10)
    assert len(ev) == 0 and ev.sensor_size == (W, H)


def test_iterators_cover_the_recording_once(official):
    path, x, _, _, t_abs, _ = official
    r = DsecEventsReader(path)
    by_time = Events.concatenate(list(iter_time_windows(r, 3_000)))
    by_count = Events.concatenate(list(iter_count_windows(r, 700)))
    for ev in (by_time, by_count):
        np.testing.assert_array_equal(ev.t, t_abs)
        np.testing.assert_array_equal(ev.x, x)


def test_reader_pickles_and_reopens(official):
    path, *_ = official
    r = DsecEventsReader(path)
    clone = pickle.loads(pickle.dumps(r))
    np.testing.assert_array_equal(clone.read_index(5, 50).t, r.read_index(5, 50).t)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.integers(0, 400),
    span=st.integers(1, 20_000),
    seed=st.integers(0, 10**6),
    offset=st.integers(0, 10**12),
    windows=st.lists(
        st.tuples(st.integers(-3000, 25_000), st.integers(0, 8000)), min_size=1, max_size=6
    ),
)
def test_property_writer_then_reader_windows(tmp_path, n, span, seed, offset, windows):
    rng = np.random.default_rng(seed)
    x, y, p, t = random_stream(rng, n, span)
    t_abs = t.astype(np.int64) + offset
    ev = Events(x, y, t_abs, np.where(p == 1, 1, -1), W, H)
    path = write_events_h5(tmp_path / f"p{seed}.h5", ev, t_offset_us=offset, chunk_events=37)
    r = DsecEventsReader(path)
    for start, length in windows:
        t0 = offset + start
        got = r.read_window(t0, t0 + length)
        np.testing.assert_array_equal(got.t, t_abs[mask_window(t_abs, t0, t0 + length)])


# --- streaming: only the requested slice is read -------------------------------------------
@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(start=st.integers(0, 199_000), length=st.integers(0, 3000))
def test_window_reads_touch_only_their_slice(big_file, monkeypatch, start, length):
    path, t_abs = big_file
    reads: list[int] = []

    def counting(ds, selection, p):
        out = _READ(ds, selection, p)
        reads.append(out.size)
        return out

    monkeypatch.setattr(_h5, "read", counting)
    r = DsecEventsReader(path)
    reads.clear()
    ev = r.read_window(start, start + length)
    assert len(ev) == len(mask_window(t_abs, start, start + length))
    # 4 arrays of the window, ≤ 2 ms_to_idx blocks, refinement blocks of ~1 ms of events
    assert sum(reads) <= 4 * len(ev) + 2 * 4096 + 4 * 2_000
    assert max(reads) < len(t_abs) // 10


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    n = 200_000
    t = np.sort(rng.integers(0, 200_000, n))
    ev = Events(rng.integers(0, W, n), rng.integers(0, H, n), t, rng.choice([-1, 1], n), W, H)
    path = write_events_h5(tmp_path_factory.mktemp("big") / "events.h5", ev, chunk_events=4096)
    return path, t


def test_bisection_path_when_ms_to_idx_is_short(tmp_path, monkeypatch):
    # A table covering only ms 0 forces the bounded bisection over events/t.
    monkeypatch.setattr(_h5, "SEARCH_BLOCK", 16)
    t = np.arange(0, 50_000, 7)
    n = len(t)
    path = write_official(tmp_path / "s.h5", np.zeros(n), np.zeros(n), np.ones(n), t, ms_to_idx=[0])
    r = DsecEventsReader(path)
    for t0, t1 in [(0, 7), (6, 8), (1234, 40_000), (49_000, 60_000)]:
        np.testing.assert_array_equal(r.read_window(t0, t1).t, t[mask_window(t, t0, t1)])


# --- writer ----------------------------------------------------------------------------------
def test_writer_layout_dtypes_and_ms_to_idx_invariant(tmp_path):
    rng = np.random.default_rng(1)
    x, y, p, t = random_stream(rng, 5000, 123_456)
    offset = 10**12
    ev = Events(x, y, t + offset, np.where(p == 1, 1, -1), W, H)
    path = write_events_h5(tmp_path / "w.h5", ev, t_offset_us=offset, chunk_events=256)
    with h5py.File(path, "r") as f:
        assert {k: f["events"][k].dtype.str for k in "xypt"} == {
            "x": "<u2",
            "y": "<u2",
            "p": "|u1",
            "t": "<u4",
        }
        assert f["ms_to_idx"].dtype.str == "<u8"
        assert f["t_offset"].dtype.str == "<i8" and f["t_offset"].shape == (1,)
        assert int(f["t_offset"][0]) == offset
        plist = f["events/t"].id.get_create_plist()
        assert plist.get_filter(0)[0] == BLOSC_ID
        t_rel = f["events/t"][:].astype(np.int64)
        ms = f["ms_to_idx"][:].astype(np.int64)
    np.testing.assert_array_equal(t_rel, t)
    np.testing.assert_array_equal(ms, reference_ms_to_idx(t))
    for m, idx in enumerate(ms):  # the documented invariant, element by element
        assert idx == len(t) or t_rel[idx] >= m * 1000
        assert idx == 0 or t_rel[idx - 1] < m * 1000


def test_streaming_writer_equals_one_shot(tmp_path):
    rng = np.random.default_rng(2)
    x, y, p, t = random_stream(rng, 3000, 9_000)
    ev = Events(x, y, t, np.where(p == 1, 1, -1), W, H)
    one = write_events_h5(tmp_path / "one.h5", ev, chunk_events=100)
    with DsecEventsWriter(tmp_path / "many.h5", chunk_events=100) as w:
        cuts = np.sort(rng.integers(0, len(ev), 40))
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(ev)], strict=True):
            w.write(ev[int(a) : int(b)])
    with h5py.File(one) as f1, h5py.File(tmp_path / "many.h5") as f2:
        for key in ("events/x", "events/y", "events/p", "events/t", "ms_to_idx", "t_offset"):
            np.testing.assert_array_equal(f1[key][()], f2[key][()])


def test_writer_is_atomic_and_cleans_up_on_error(tmp_path):
    target = tmp_path / "events.h5"
    target.write_bytes(b"previous contents")
    ev = Events([1, 2], [1, 2], [10, 20], [1, -1], W, H)
    with pytest.raises(RuntimeError), DsecEventsWriter(target) as w:
        w.write(ev)
        raise RuntimeError("simulator crashed")
    assert target.read_bytes() == b"previous contents"
    assert sorted(os.listdir(tmp_path)) == ["events.h5"]


def test_writer_rejects_bad_times_and_sensor(tmp_path):
    ev = Events([1, 2], [1, 2], [10, 2**32 + 10], [1, -1], W, H)
    with pytest.raises(ValueError, match="u4"):
        write_events_h5(tmp_path / "a.h5", ev)
    with pytest.raises(ValueError, match="u4"):
        write_events_h5(tmp_path / "b.h5", Events([1], [1], [5], [1], W, H), t_offset_us=6)
    with (
        pytest.raises(ValueError, match="before the last"),
        DsecEventsWriter(tmp_path / "c.h5") as w,
    ):
        w.write(Events([1], [1], [50], [1], W, H))
        w.write(Events([1], [1], [40], [1], W, H))
    with pytest.raises(ValueError, match="346x260"), DsecEventsWriter(tmp_path / "d.h5") as w:
        w.write(Events([1], [1], [50], [1], 346, 260))
    assert not list(tmp_path.iterdir())


def test_writer_keeps_non_dsec_sensor_size(tmp_path):
    ev = Events([345], [259], [3], [1], 346, 260)
    path = write_events_h5(tmp_path / "s.h5", ev, compression="gzip")
    r = DsecEventsReader(path)
    assert r.info().width == 346 and r.read_index(0, 1).x[0] == 345


# --- bad input -------------------------------------------------------------------------------
def test_truncated_and_garbage_files(official, tmp_path):
    path = official[0]
    data = path.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError, match="cut.h5"):
        DsecEventsReader(cut).read_window(0, 2**62)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all" * 10)
    with pytest.raises(FormatError, match="junk.h5.*HDF5"):
        DsecEventsReader(junk)
    with pytest.raises(FileNotFoundError):
        DsecEventsReader(tmp_path / "absent.h5")


@pytest.mark.parametrize("missing", ["events/p", "events/t", "ms_to_idx"])
def test_missing_dataset_is_named(tmp_path, missing):
    path = write_official(tmp_path / "m.h5", [1], [1], [1], [5], skip=(missing,))
    with pytest.raises(FormatError, match=f"m.h5.*{missing.split('/')[-1]}"):
        DsecEventsReader(path)


@pytest.mark.parametrize(
    "x, y, p, t, match",
    [
        ([640, 1], [0, 0], [0, 1], [1, 2], "x = 640"),
        ([0, 1], [0, 480], [0, 1], [1, 2], "y = 480"),
        ([0, 1], [0, 0], [0, 2], [1, 2], "p = 2"),
        ([0, 1, 2], [0, 0, 0], [0, 1, 1], [5, 3, 9], "decrease"),
    ],
)
def test_bad_values_raise_format_error_naming_the_file(tmp_path, x, y, p, t, match):
    path = write_official(tmp_path / "bad.h5", x, y, p, t, ms_to_idx=[0, len(t)])
    with pytest.raises(FormatError, match=f"bad.h5.*{match}"):
        DsecEventsReader(path).read_index(0, len(t))


def test_inconsistent_ms_to_idx_and_bad_arguments(tmp_path):
    t = np.array([100, 1500, 2500, 3500])
    path = write_official(
        tmp_path / "i.h5", [0] * 4, [0] * 4, [1] * 4, t, ms_to_idx=[0, 3, 3, 3, 4]
    )
    r = DsecEventsReader(path)
    with pytest.raises(FormatError, match="i.h5.*ms_to_idx"):
        r.read_window(1200, 1600)
    with pytest.raises(FormatError, match="i.h5.*end"):
        r.read_window(10, 5)
    with pytest.raises(FormatError, match="i.h5.*>= 0"):
        r.read_last(10, -1)
    with pytest.raises(FormatError, match="i.h5.*outside"):
        r.read_index(2, 9)


def test_missing_blosc_filter_gives_install_hint(official):
    path = official[0]
    code = (
        "import sys; sys.modules['hdf5plugin'] = None\n"
        "from evtransfer.io.dsec import DsecEventsReader\n"
        "from evtransfer.io.base import FormatError\n"
        f"try:\n    DsecEventsReader({str(path)!r})\n"
        "except FormatError as e:\n    print(e)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "HDF5_PLUGIN_PATH"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    ).stdout
    assert str(path) in out and "Blosc" in out and "pip install hdf5plugin" in out


# --- rectification ---------------------------------------------------------------------------
def test_rectify_forward_map_rounds_drops_and_counts(tmp_path):
    w, h = 4, 3
    rmap = np.zeros((h, w, 2), np.float32)
    rmap[..., 0] = np.arange(w)[None, :] + 0.6  # x shifts right by 0.6 px
    rmap[..., 1] = np.arange(h)[:, None] - 0.2
    rmap[1, 2] = np.nan
    ev = Events([0, 3, 2, 1], [0, 0, 1, 2], [1, 2, 3, 4], [1, -1, 1, -1], w, h)
    out = rectify_events(ev, rmap)
    # (0,0)→(0.6,-0.2)→(1,0); (3,0)→(3.6,..)→x=4 out; (2,1)→NaN out; (1,2)→(1.6,1.8)→(2,2)
    assert out.dropped == 2
    assert list(out.events.x) == [1, 2] and list(out.events.y) == [0, 2]
    assert list(out.events.t) == [1, 4] and list(out.events.p) == [1, -1]
    np.testing.assert_allclose(out.x, [0.6, 1.6], rtol=1e-6)
    np.testing.assert_allclose(out.y, [-0.2, 1.8], rtol=1e-6)
    path = write_rectify_map(tmp_path / "rectify_map.h5", rmap)
    np.testing.assert_array_equal(read_rectify_map(path, sensor_size=(w, h)), rmap)
    with pytest.raises(FormatError, match="rectify_map.h5.*shape"):
        read_rectify_map(path)
    with pytest.raises(ValueError, match="does not match"):
        rectify_events(Events.empty(5, 5), rmap)
