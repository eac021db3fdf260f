"""N-MNIST / N-Caltech101 `.bin` reader: the real sample, spec fixtures, bad input, fuzzing."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from evio_encoders import check_streaming, encode_nmnist, random_events
from hypothesis import given, settings
from hypothesis import strategies as st

from evtransfer.events import Events, EventsError
from evtransfer.io.base import FormatError
from evtransfer.io.nmnist import NmnistReader, read_nmnist


def test_sample_facts(samples):
    reader = NmnistReader(samples / "tonic" / "sample_nmnist.bin")
    info = reader.info()
    assert (info.width, info.height, info.events) == (34, 34, 4325)
    assert (info.t_start_us, info.t_end_us) == (654, 311_175)
    ev = reader.read_all()
    assert ev.x.min() >= 0 and ev.x.max() <= 33 and ev.y.min() >= 0 and ev.y.max() <= 33
    assert sorted([int((ev.p > 0).sum()), int((ev.p < 0).sum())]) == [2145, 2180]


def test_sample_matches_byte_level_decode(samples):
    path = samples / "tonic" / "sample_nmnist.bin"
    raw = np.fromfile(path, dtype=np.uint8).reshape(-1, 5).astype(np.int64)
    ev = read_nmnist(path)
    np.testing.assert_array_equal(ev.x, raw[:, 0])
    np.testing.assert_array_equal(ev.y, raw[:, 1])
    np.testing.assert_array_equal(ev.p, np.where(raw[:, 2] >= 128, 1, -1))
    np.testing.assert_array_equal(ev.t, (raw[:, 2] % 128) * 65536 + raw[:, 3] * 256 + raw[:, 4])


def test_overflow_markers_add_2_pow_13_and_are_dropped(tmp_path):
    x, y, p = [1, 2, 3, 4], [5, 6, 7, 8], [1, -1, 1, -1]
    t = [100, 8000, 8292, 17_000]
    path = tmp_path / "o.bin"
    path.write_bytes(encode_nmnist(x, y, t, p, overflow_before={2, 3}))
    ev = read_nmnist(path)
    assert ev.t.tolist() == t and ev.x.tolist() == x and ev.y.tolist() == y
    # the stored timestamps really were smaller: 8292 - 8192 and 17000 - 2 * 8192
    raw = np.frombuffer(path.read_bytes(), np.uint8).reshape(-1, 5).astype(int)
    assert raw[3, 4] == 100 and raw[5, 3] * 256 + raw[5, 4] == 17_000 - 16_384


@pytest.mark.parametrize("chunk", [None, 3])
def test_streaming_and_size_inference(tmp_path, chunk):
    rng = np.random.default_rng(2)
    x, y, t, p = random_events(rng, 80, 240, 180, max_gap=1500)
    marks = set(np.searchsorted(t, [8192, 16384]).tolist())  # first events past each wrap
    path = tmp_path / "caltech.bin"
    path.write_bytes(encode_nmnist(x, y, t, p, overflow_before=marks))
    reader = NmnistReader(path, chunk_events=chunk or 1 << 20)
    assert (reader.width, reader.height) == (x.max() + 1, y.max() + 1)
    full = reader.read_all()
    np.testing.assert_array_equal(full.t, t)
    check_streaming(reader, full, rng)
    assert (NmnistReader(path, width=304, height=240).width) == 304


@pytest.mark.parametrize(
    ("data", "options", "problem"),
    [
        (encode_nmnist([1], [1], [5], [1]) + b"\x00", {}, "multiple of the 5-byte"),
        (encode_nmnist([1, 1], [1, 1], [9, 5], [1, 1]), {}, "decrease"),
        (encode_nmnist([40], [1], [5], [1]), {"width": 34, "height": 34}, "outside"),
        (encode_nmnist([4], [1], [5], [1]), {"width": 34}, "both width and height"),
    ],
)
def test_bad_files(tmp_path, data, options, problem):
    path = tmp_path / "bad.bin"
    path.write_bytes(data)
    with pytest.raises(FormatError, match=problem) as err:
        NmnistReader(path, **options)
    assert str(path) in str(err.value)


def test_empty_file_has_no_events(tmp_path):
    path = tmp_path / "empty.bin"
    path.write_bytes(b"")
    reader = NmnistReader(path)
    assert len(reader) == 0 and len(reader.read_window(0, 10)) == 0
    assert reader.info().events == 0


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes_follow_a_byte_level_decode(blob):
    raw = np.frombuffer(blob[: len(blob) - len(blob) % 5], np.uint8).reshape(-1, 5).astype(int)
    markers = raw[:, 1] == 240
    t = (raw[:, 2] % 128) * 65536 + raw[:, 3] * 256 + raw[:, 4] + 8192 * np.cumsum(markers)
    t = t[~markers]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f.bin"
        path.write_bytes(blob)
        try:
            got = NmnistReader(path).read_all()
        except (FormatError, EventsError) as exc:
            got = exc
    if len(blob) % 5 or np.any(np.diff(t) < 0):
        assert isinstance(got, FormatError)
    else:
        assert isinstance(got, Events)
        np.testing.assert_array_equal(got.t, t)
