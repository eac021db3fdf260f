"""Prophesee DAT / EVT 2.0 / EVT 3.0 readers: real samples, spec fixtures, streaming, bad input."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from evio_encoders import (
    ENGINES,
    check_streaming,
    encode_dat,
    encode_evt2,
    encode_evt3,
    header,
    random_events,
    ref_decode_evt2,
    ref_decode_evt3,
    table,
)
from hypothesis import event, given, settings
from hypothesis import strategies as st

from evtransfer.events import Events, EventsError
from evtransfer.io.base import FormatError
from evtransfer.io.prophesee import DatReader, Evt2Reader, Evt3Reader, read_evt3, read_header

# "% end" closes the header even when the first data byte happens to be "%" (0x25).
EVT2_HEAD = header("evt 2.0", "geometry 640x480", "end")
EVT3_HEAD = header("evt 3.0", "format EVT3;height=720;width=1280", "end")


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _events(cols, width=1280, height=720) -> Events:
    x, y, t, p = cols
    return Events(x, y, t, p, width, height)


# --- real samples ----------------------------------------------------------------------
def test_evt2_sample_facts(samples, engine):
    reader = Evt2Reader(samples / "expelliarmus" / "evt2_sample.raw", engine=engine)
    info = reader.info()
    assert (info.format, info.width, info.height, info.events) == ("evt2", 640, 480, 539_481)
    ev = reader.read_all()
    assert (ev.x.min(), ev.x.max(), ev.y.min(), ev.y.max()) == (60, 599, 18, 475)
    assert info.t_end_us - info.t_start_us == 50_000 == ev.duration_us
    check_streaming(reader, ev, np.random.default_rng(1))


def test_evt2_sample_matches_peer_and_reference(samples, tmp_path):
    path = samples / "expelliarmus" / "evt2_sample.raw"
    ev = Evt2Reader(path, engine="numpy").read_all()
    head = read_header(path).size
    words = np.fromfile(path, dtype="<u4", offset=head, count=30_000)
    ref = ref_decode_evt2(words)
    np.testing.assert_array_equal(table(ev)[: len(ref)], ref)
    expelliarmus = pytest.importorskip("expelliarmus")
    peer = expelliarmus.Wizard(encoding="evt2").read(str(path))
    for name in "xyt":
        np.testing.assert_array_equal(getattr(ev, name), peer[name])
    np.testing.assert_array_equal(ev.p > 0, peer["p"] == 1)


def test_dat_sample_matches_reference_decode(samples, engine):
    reader = DatReader(samples / "expelliarmus" / "NCARS_obj_004397_td.dat", engine=engine)
    ref = np.load(samples / "expelliarmus" / "dat_sample_reference.npy")
    ev = reader.read_all()
    assert len(ev) == 4407 == reader.info().events
    assert round(ev.duration_us / 1000, 1) == 99.9
    for name in "txy":
        np.testing.assert_array_equal(getattr(ev, name), ref[name])
    np.testing.assert_array_equal(ev.p, np.where(ref["p"] == 1, 1, -1))


# --- spec fixtures ---------------------------------------------------------------------
@pytest.mark.parametrize("chunk_words", [None, 7])
def test_evt3_fixture_roundtrip_and_streaming(tmp_path, engine, chunk_words):
    rng = np.random.default_rng(3)
    x, y, t, p = random_events(rng, 250, 1280, 720, t0=9000)
    path = _write(tmp_path, "a.raw", EVT3_HEAD + encode_evt3(x, y, t, p, rng))
    reader = Evt3Reader(path, engine=engine, chunk_words=chunk_words)
    assert (reader.width, reader.height, len(reader)) == (1280, 720, len(t))
    full = reader.read_all()
    np.testing.assert_array_equal(table(full), table(_events((x, y, t, p))))
    check_streaming(reader, full, rng)


@pytest.mark.parametrize("chunk_words", [None, 5])
def test_evt2_fixture_roundtrip_and_streaming(tmp_path, engine, chunk_words):
    rng = np.random.default_rng(4)
    x, y, t, p = random_events(rng, 250, 640, 480, t0=123)
    path = _write(tmp_path, "a.raw", EVT2_HEAD + encode_evt2(x, y, t, p, rng))
    reader = Evt2Reader(path, engine=engine, chunk_words=chunk_words)
    full = reader.read_all()
    np.testing.assert_array_equal(table(full), table(_events((x, y, t, p), 640, 480)))
    check_streaming(reader, full, rng)


def test_pickled_reader_and_released_pages_read_the_same(tmp_path, engine, monkeypatch):
    import pickle

    from evtransfer.io import _chunked

    rng = np.random.default_rng(8)
    x, y, t, p = random_events(rng, 120, 1280, 720, t0=40)
    path = _write(tmp_path, "a.raw", EVT3_HEAD + encode_evt3(x, y, t, p, rng))
    expected = table(_events((x, y, t, p)))
    monkeypatch.setattr(_chunked, "RELEASE_ABOVE", 0)  # unmap every chunk after use
    reader = Evt3Reader(path, engine=engine, chunk_words=64)
    np.testing.assert_array_equal(table(reader.read_all()), expected)
    clone = pickle.loads(pickle.dumps(reader))
    assert "_mapping" not in clone.__dict__
    np.testing.assert_array_equal(table(clone.read_all()), expected)


def test_window_iterators_cover_the_recording_once(tmp_path):
    from evtransfer.io.base import iter_count_windows, iter_time_windows

    rng = np.random.default_rng(9)
    x, y, t, p = random_events(rng, 150, 640, 480, t0=1000)
    reader = Evt2Reader(_write(tmp_path, "i.raw", EVT2_HEAD + encode_evt2(x, y, t, p)),
                        chunk_words=50)
    for windows in (iter_time_windows(reader, 777), iter_count_windows(reader, 97)):
        parts = list(windows)
        np.testing.assert_array_equal(np.concatenate([w.t for w in parts]), t)
        np.testing.assert_array_equal(np.concatenate([w.x for w in parts]), x)


def test_dat_fixture_roundtrip_and_streaming(tmp_path, engine):
    rng = np.random.default_rng(5)
    x, y, t, p = random_events(rng, 200, 304, 240, t0=0)
    data = encode_dat(t, x, y, p, lines=("Version 2", "Height 240", "Width 304"))
    reader = DatReader(_write(tmp_path, "a.dat", data), chunk_events=16, engine=engine)
    full = reader.read_all()
    np.testing.assert_array_equal(table(full), table(_events((x, y, t, p), 304, 240)))
    check_streaming(reader, full, rng)


def test_evt3_matches_evt3_package(tmp_path):
    evt3 = pytest.importorskip("evt3")
    rng = np.random.default_rng(6)
    x, y, t, p = random_events(rng, 300, 1280, 720, t0=77)
    path = _write(tmp_path, "a.raw", EVT3_HEAD + encode_evt3(x, y, t, p, rng))
    ours, peer = read_evt3(path), evt3.decode_file(str(path))
    np.testing.assert_array_equal(ours.x, peer.x)
    np.testing.assert_array_equal(ours.y, peer.y)
    np.testing.assert_array_equal(ours.p > 0, peer.polarity == 1)
    np.testing.assert_array_equal(ours.t, peer.t.astype(np.int64))


def test_evt3_time_high_wraps_extend_time(tmp_path, engine):
    # TIME_HIGH 4095 -> 0 twice: each fall of the 24-bit base adds 2^24 µs.
    m = 1 << 24
    t = np.array([m - 300, m + 10, m + m // 2, 2 * m - 5, 2 * m + 5, 2 * m + m // 2,
                  3 * m - 1, 3 * m + 4000])
    x, y, p = np.arange(8), np.full(8, 5), np.ones(8)
    path = _write(tmp_path, "w.raw",
                  EVT3_HEAD + encode_evt3(x, y, t, p, np.random.default_rng(0)))
    np.testing.assert_array_equal(Evt3Reader(path, engine=engine).read_all().t, t)


def test_evt2_time_high_wrap_extends_time(tmp_path, engine):
    t = np.array([(1 << 34) - 100, (1 << 34) + 70])
    path = _write(tmp_path, "w.raw", EVT2_HEAD + encode_evt2([1, 2], [3, 4], t, [1, -1]))
    np.testing.assert_array_equal(Evt2Reader(path, engine=engine).read_all().t, t)


def _evt3_words(tmp_path, words) -> Path:
    return _write(tmp_path, "h.raw", EVT3_HEAD + np.array(words, dtype="<u2").tobytes())


def test_evt3_time_low_step_back_never_advances_the_base(tmp_path, engine):
    # TIME_HIGH 1 (4096 µs), TIME_LOW 0x100 -> event at 4352; TIME_LOW steps back to 0x0F0
    # with no event; TIME_LOW 0x200 -> event at 4608. A decoder that adds 4096 on the step
    # back (expelliarmus 1.1.12) would put the second event at 8704.
    words = [0x8001, 0x6100, 0x0005, 0x2003, 0x60F0, 0x6200, 0x2804]
    ev = Evt3Reader(_evt3_words(tmp_path, words), engine=engine).read_all()
    np.testing.assert_array_equal(ev.t, [4352, 4608])
    np.testing.assert_array_equal(ev.x, [3, 4])
    np.testing.assert_array_equal(ev.p, [-1, 1])


def test_evt3_event_after_a_time_low_step_back_is_rejected(tmp_path, engine):
    words = [0x8001, 0x6100, 0x0005, 0x2003, 0x60F0, 0x2004]
    with pytest.raises(FormatError, match="decrease"):
        Evt3Reader(_evt3_words(tmp_path, words), engine=engine)


def test_evt3_words_before_first_time_high_are_skipped(tmp_path, engine):
    # ADDR_Y 5 and ADDR_X 3 come before any time base: skipped, so y stays 0.
    words = [0x0005, 0x2003, 0x8002, 0x6010, 0x2007]
    ev = Evt3Reader(_evt3_words(tmp_path, words), engine=engine).read_all()
    assert (ev.x.tolist(), ev.y.tolist(), ev.t.tolist()) == ([7], [0], [2 * 4096 + 16])


def test_evt3_vectors_expand_validity_bits(tmp_path, engine):
    # VECT_BASE_X 100 pol 1; VECT_12 bits 0 and 11; VECT_8 bit 2 with unused bits set;
    # ADDR_X 50 pol 0 keeps its own polarity.
    words = [0x8000, 0x6001, 0x0009, 0x3800 | 100, 0x4801, 0x5F04, 0x2032]
    ev = Evt3Reader(_evt3_words(tmp_path, words), engine=engine).read_all()
    assert ev.x.tolist() == [100, 111, 114, 50]
    assert ev.p.tolist() == [1, 1, 1, -1]
    assert ev.y.tolist() == [9] * 4 and ev.t.tolist() == [1] * 4


# --- headers ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("lines", "size"),
    [
        (("evt 3.0", "geometry 640x480", "format EVT3;height=720;width=1280"), (640, 480)),
        (("format EVT3;height=320;width=320",), (320, 320)),
        (("evt 3.0", "plugin_name hal_plugin_gen3_fx3"), (640, 480)),
        (("evt 3.0", "plugin_name hal_plugin_gen41_evk3"), (1280, 720)),
        (("evt 3.0", "sensor_generation 3.1"), (640, 480)),
        (("evt 3.0",), (1280, 720)),
    ],
)
def test_header_geometry(tmp_path, lines, size):
    words = np.array([0x8000, 0x6000], dtype="<u2").tobytes()
    reader = Evt3Reader(_write(tmp_path, "g.raw", header(*lines) + words))
    assert (reader.width, reader.height) == size


def test_first_data_byte_may_be_a_percent_sign(tmp_path, engine):
    # TIME_HIGH 0x25 then a CD event: the file's first data byte is "%" (0x25) followed by
    # binary bytes, which no header line holds.
    words = np.array([0x80000025, (1 << 28) | (5 << 22) | (3 << 11) | 4], dtype="<u4")
    path = _write(tmp_path, "pct.raw", header("evt 2.0") + words.tobytes())
    ev = Evt2Reader(path, engine=engine).read_all()
    assert (ev.t.tolist(), ev.x.tolist(), ev.y.tolist()) == ([0x25 * 64 + 5], [3], [4])


def test_header_end_line_and_override(tmp_path):
    data = header("evt 3.0", "end") + b"% geometry 9x9\n"
    head = read_header(_write(tmp_path, "e.raw", data))
    assert head.size == len(header("evt 3.0", "end")) and head.encoding == "evt3"
    reader = Evt3Reader(_write(tmp_path, "o.raw", EVT3_HEAD), width=64, height=32)
    assert (reader.width, reader.height, len(reader)) == (64, 32, 0)
    assert len(reader.read_window(0, 10**9)) == 0


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (header("evt 3.0", "geometry 640by480"), "WxH"),
        (header("evt 3.0", "geometry 640x-4"), "geometry height"),
        (b"% evt 3.0", "not terminated"),
        (header("evt 2.0"), "not 'evt3'"),
        (EVT3_HEAD + b"\x00", "truncated"),
        (EVT3_HEAD + np.array([0x8000, 0x9000], dtype="<u2").tobytes(), "reserved"),
    ],
)
def test_bad_evt3_files(tmp_path, data, problem, engine):
    path = _write(tmp_path, "bad.raw", data)
    with pytest.raises(FormatError, match=problem) as err:
        Evt3Reader(path, engine=engine)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (EVT2_HEAD + b"\x00\x00", "truncated"),
        (EVT2_HEAD + np.array([0x80000000, 0x30000000], "<u4").tobytes(), "reserved"),
        (EVT2_HEAD + encode_evt2([1, 1], [1, 1], [200, 100], [1, 1]), "decrease"),
    ],
)
def test_bad_evt2_files(tmp_path, data, problem, engine):
    with pytest.raises(FormatError, match=problem):
        Evt2Reader(_write(tmp_path, "bad.raw", data), engine=engine)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (encode_dat([1], [1], [1], [1])[:-3], "truncated"),
        (encode_dat([1], [1], [1], [1], ev_size=16), "event size"),
        (encode_dat([1], [1], [1], [1], ev_type=5), "event type"),
        (encode_dat([5, 4], [1, 1], [1, 1], [1, 1]), "decrease"),
        (header("Version 2"), "before the event type"),
    ],
)
def test_bad_dat_files(tmp_path, data, problem, engine):
    with pytest.raises(FormatError, match=problem):
        DatReader(_write(tmp_path, "bad.dat", data), engine=engine)


def test_bad_values_are_named_on_read(tmp_path, engine):
    polarity = encode_dat([1], [1], [1], [1])[:-1] + bytes([0x30])
    with pytest.raises(FormatError, match="polarity field not 0 or 1"):
        DatReader(_write(tmp_path, "p.dat", polarity), engine=engine).read_all()
    wide = EVT2_HEAD + encode_evt2([600], [1], [10], [1])
    with pytest.raises(FormatError, match="x.*outside"):
        Evt2Reader(_write(tmp_path, "x.raw", wide), width=100, height=100,
                   engine=engine).read_all()
    edge = _evt3_words(tmp_path, [0x8000, 0x6000, 0x3000 | 2040, 0x4FFF])
    with pytest.raises(FormatError, match="x.*outside"):
        Evt3Reader(edge, width=2048, height=2048, engine=engine).read_all()
    tall = _evt3_words(tmp_path, [0x8000, 0x6000, 0x0000 | 700, 0x2001])
    with pytest.raises(FormatError, match="y.*outside"):
        Evt3Reader(tall, width=640, height=480, engine=engine).read_all()


def test_bad_reads(tmp_path):
    x, y, t, p = [1, 2], [3, 4], [10, 20], [1, 1]
    reader = Evt2Reader(_write(tmp_path, "r.raw", EVT2_HEAD + encode_evt2(x, y, t, p)))
    with pytest.raises(FormatError, match="window end"):
        reader.read_window(20, 10)
    with pytest.raises(FormatError, match="outside"):
        reader.read_index(0, 3)
    assert len(reader.read_window(11, 20)) == 0 and len(reader.read_window(21, 99)) == 0
    with pytest.raises(FileNotFoundError):
        Evt2Reader(tmp_path / "missing.raw")
    with pytest.raises(ValueError, match="engine"):
        Evt2Reader(tmp_path / "r.raw", engine="fortran")


# --- fuzzing ---------------------------------------------------------------------------
def _outcome(reader_cls, data: bytes, **options):
    """Events read from `data`, or the FormatError / EventsError it raised."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.bin"
        path.write_bytes(data)
        try:
            return reader_cls(path, **options).read_all()
        except (FormatError, EventsError) as exc:
            return exc


# Word types, repeated to weight them: mostly events, some state and time, rare reserved.
_EVT3_TYPES = [0x2] * 4 + [0x4, 0x5, 0x3, 0x0] * 2 + [0x6, 0x8, 0x7, 0xA, 0xE, 0xF, 0x9]
_EVT2_TYPES = [0x0, 0x1] * 3 + [0x8, 0xA, 0xE, 0xF, 0x5]
_FUZZ = settings(max_examples=50, deadline=None)


def _expected(ref: np.ndarray, reserved: bool, width: int, height: int) -> np.ndarray | None:
    """The reference decode if the readers must accept it, else None (must raise)."""
    ok = not reserved and bool(np.all(np.diff(ref[:, 3]) >= 0))
    ok = ok and (not len(ref) or (ref[:, 0].max() < width and ref[:, 1].max() < height))
    return ref if ok else None


@_FUZZ
@given(st.integers(0, 4095),
       st.lists(st.tuples(st.sampled_from(_EVT3_TYPES), st.integers(0, 4095)), max_size=60),
       st.sampled_from(ENGINES))
def test_fuzz_evt3_words_follow_the_reference(first_high, words, engine):
    raw = np.array([0x8000 | first_high] + [(k << 12) | v for k, v in words], dtype=np.uint16)
    expected = _expected(ref_decode_evt3(raw), 0x9 in {k for k, _ in words}, 2048, 2048)
    got = _outcome(Evt3Reader, EVT3_HEAD + raw.astype("<u2").tobytes(), engine=engine,
                   width=2048, height=2048)
    event("rejected" if expected is None else f"accepted, {min(len(expected), 3)}+ events")
    if expected is None:
        assert isinstance(got, FormatError)
    else:
        np.testing.assert_array_equal(table(got), expected)


@_FUZZ
@given(st.integers(0, (1 << 28) - 1),
       st.lists(st.tuples(st.sampled_from(_EVT2_TYPES), st.integers(0, (1 << 28) - 1)),
                max_size=40), st.booleans(), st.sampled_from(ENGINES))
def test_fuzz_evt2_words_follow_the_reference(first_high, words, sort_low, engine):
    raw = np.array([0x80000000 | first_high] + [(k << 28) | v for k, v in words], np.uint32)
    if sort_low:  # CD time bits in rising order, so that more streams are valid
        cd = (raw >> 28) <= 1
        low = np.sort((raw[cd] >> 22) & 0x3F)
        raw[cd] = (raw[cd] & ~np.uint32(0x3F << 22)) | (low << 22).astype(np.uint32)
    expected = _expected(ref_decode_evt2(raw), 0x5 in {k for k, _ in words}, 2048, 2048)
    got = _outcome(Evt2Reader, EVT2_HEAD + raw.astype("<u4").tobytes(), engine=engine,
                   width=2048, height=2048)
    event("rejected" if expected is None else f"accepted, {min(len(expected), 3)}+ events")
    if expected is None:
        assert isinstance(got, FormatError)
    else:
        np.testing.assert_array_equal(table(got), expected)


def _valid_file(kind: str) -> bytes:
    rng = np.random.default_rng(11)
    x, y, t, p = random_events(rng, 30, 304, 240, t0=50)
    if kind == "evt2":
        return EVT2_HEAD + encode_evt2(x, y, t, p, rng)
    if kind == "evt3":
        return EVT3_HEAD + encode_evt3(x, y, t, p, rng)
    return encode_dat(t, x, y, p)


_READERS = {"evt2": Evt2Reader, "evt3": Evt3Reader, "dat": DatReader}


@_FUZZ
@given(st.sampled_from(sorted(_READERS)), st.data())
def test_fuzz_bit_flips_and_truncations(kind, data):
    blob = bytearray(_valid_file(kind))
    for i in data.draw(st.lists(st.integers(0, len(blob) * 8 - 1), max_size=4)):
        blob[i // 8] ^= 1 << (i % 8)
    cut = data.draw(st.integers(0, len(blob)))
    got = _outcome(_READERS[kind], bytes(blob[:cut]))
    assert isinstance(got, Events | FormatError | EventsError)


@_FUZZ
@given(st.sampled_from(sorted(_READERS)), st.binary(max_size=300), st.booleans())
def test_fuzz_random_bytes(kind, blob, with_header):
    head = {"evt2": EVT2_HEAD, "evt3": EVT3_HEAD, "dat": b"% Version 2\n"}[kind]
    got = _outcome(_READERS[kind], (head if with_header else b"") + blob)
    assert isinstance(got, Events | FormatError | EventsError)
