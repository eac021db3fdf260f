"""AEDAT4 reader: the real sample, a file written by dv-processing, bad input, fuzzing."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from evio_encoders import check_streaming
from hypothesis import given, settings
from hypothesis import strategies as st

from evtransfer.events import Events, EventsError
from evtransfer.io.aedat4 import Aedat4Reader, read_aedat4
from evtransfer.io.base import FormatError

pytest.importorskip("aedat")


def test_sample_facts(samples):
    reader = Aedat4Reader(samples / "tonic" / "sample.aedat4")
    info = reader.info()
    assert (info.format, info.width, info.height, info.events) == ("aedat4", 320, 240, 111_954)
    assert round((info.t_end_us - info.t_start_us) / 1e6, 2) == 0.59
    ev = reader.read_all()
    assert (ev.x.min(), ev.x.max(), ev.y.min(), ev.y.max()) == (0, 319, 0, 239)
    assert (int((ev.p > 0).sum()), int((ev.p < 0).sum())) == (55_023, 56_931)
    check_streaming(reader, ev, np.random.default_rng(0))


def test_sample_matches_packets_read_directly(samples):
    import aedat

    path = samples / "tonic" / "sample.aedat4"
    packets = [p["events"] for p in aedat.Decoder(str(path)) if "events" in p]
    ref = np.concatenate(packets)
    ev = read_aedat4(path)
    np.testing.assert_array_equal(ev.t, ref["t"].astype(np.int64))
    np.testing.assert_array_equal(ev.x, ref["x"])
    np.testing.assert_array_equal(ev.p > 0, ref["on"])


def test_file_written_by_dv_processing(tmp_path):
    dv = pytest.importorskip("dv_processing")
    rng = np.random.default_rng(3)
    n = 300
    t = 5000 + np.cumsum(rng.integers(0, 40, n))
    x, y, on = rng.integers(0, 48, n), rng.integers(0, 36, n), rng.random(n) < 0.5
    store = dv.EventStore()
    for i in range(n):
        store.push_back(int(t[i]), int(x[i]), int(y[i]), bool(on[i]))
    path = tmp_path / "dv.aedat4"
    writer = dv.io.MonoCameraWriter(str(path), dv.io.MonoCameraWriter.EventOnlyConfig(
        "DVXplorer_test", (48, 36)))
    writer.writeEvents(store)
    del writer
    ev = read_aedat4(path)
    assert (ev.width, ev.height) == (48, 36)
    np.testing.assert_array_equal(ev.t, t)
    np.testing.assert_array_equal(ev.x, x)
    np.testing.assert_array_equal(ev.y, y)
    np.testing.assert_array_equal(ev.p, np.where(on, 1, -1))


def test_bad_files(tmp_path, samples):
    path = tmp_path / "bad.aedat4"
    path.write_bytes(b"#!AER-DAT3.1\r\n" + bytes(100))
    with pytest.raises(FormatError, match="magic"):
        Aedat4Reader(path)
    blob = (samples / "tonic" / "sample.aedat4").read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(FormatError, match="corrupt AEDAT4 packet"):
        Aedat4Reader(path)
    with pytest.raises(FormatError, match="no events stream 7"):
        Aedat4Reader(samples / "tonic" / "sample.aedat4", stream_id=7)


def test_header_is_checked_before_aedat_sees_it(samples, tmp_path):
    # aedat 2.3 aborts the process on a description that is not UTF-8; we refuse it first.
    blob = bytearray((samples / "tonic" / "sample.aedat4").read_bytes())
    at = blob.index(b"<dv version")
    path = tmp_path / "bad.aedat4"
    path.write_bytes(bytes(blob[:at + 1]) + b"\xff" + bytes(blob[at + 2 :]))
    with pytest.raises(FormatError, match="not UTF-8"):
        Aedat4Reader(path)
    path.write_bytes(bytes(blob[:100]))
    with pytest.raises(FormatError, match="ends inside the AEDAT4 header"):
        Aedat4Reader(path)


def test_missing_package_is_a_clear_import_error(samples, monkeypatch):
    monkeypatch.setitem(sys.modules, "aedat", None)
    with pytest.raises(ImportError, match="pip install aedat"):
        Aedat4Reader(samples / "tonic" / "sample.aedat4")


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 949_253 * 8 - 1), min_size=1, max_size=4), st.booleans())
def test_fuzz_bit_flips_and_truncation(samples, flips, truncate):
    blob = bytearray((samples / "tonic" / "sample.aedat4").read_bytes())
    for i in flips:
        blob[i // 8] ^= 1 << (i % 8)
    if truncate:
        blob = blob[: flips[0] // 8]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f.aedat4"
        path.write_bytes(bytes(blob))
        try:
            got = Aedat4Reader(path).read_all()
        except (FormatError, EventsError) as exc:
            got = exc
    assert isinstance(got, Events | FormatError | EventsError)
