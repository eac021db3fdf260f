"""`io.convert` and its writers: every readable format to DSEC .h5 and EVT 2.0 .raw (and
spikes to .dat), checked against the test-only encoders and a peer reader."""

from __future__ import annotations

import numpy as np
import pytest
from evio_encoders import (
    encode_dat,
    encode_evt2,
    encode_evt3,
    encode_nmnist,
    header,
    random_events,
)

from evtransfer.events import Events, Spikes
from evtransfer.io import open_recording
from evtransfer.io.convert import convert
from evtransfer.io.dsec import write_events_h5
from evtransfer.io.prophesee import Evt2Writer, read_header
from evtransfer.io.spike import write_spike_dat


def _all(path, **options) -> Events:
    reader = open_recording(path, **options)
    return reader.read_index(0, reader.info().events)


def _fixtures(tmp_path, rng):
    """(path, reader options, expected Events) per event format, written by the encoders."""
    x, y, t, p = random_events(rng, 300, 640, 480, t0=5)
    ev = Events(x, y, t, p, 640, 480)
    small = Events(x % 34, y % 34, t, p, 34, 34)
    files = {
        "rec.raw": (header("evt 2.0", "geometry 640x480", "end") + encode_evt2(x, y, t, p, rng),
                    {}, ev),
        "rec3.raw": (header("evt 3.0", "format EVT3;height=480;width=640", "end")
                     + encode_evt3(x, y, t, p, rng), {}, ev),
        "rec.dat": (encode_dat(t, x, y, p, lines=("Version 2", "Height 480", "Width 640")),
                    {}, ev),
        "rec.bin": (encode_nmnist(small.x, small.y, t, p), {}, small),
    }
    out = []
    for name, (data, options, expected) in files.items():
        (tmp_path / name).write_bytes(data)
        out.append((tmp_path / name, options, expected))
    out.append((write_events_h5(tmp_path / "rec.h5", ev, t_offset_us=3), {}, ev))
    return out


@pytest.mark.parametrize("suffix", [".h5", ".raw"])
def test_every_event_format_converts_losslessly(tmp_path, suffix):
    rng = np.random.default_rng(0)
    for src, options, expected in _fixtures(tmp_path, rng):
        dst = tmp_path / f"out_{src.stem}_{src.suffix[1:]}{suffix}"
        result = convert(src, dst, window_us=700, reader_options=options)
        got = _all(dst)
        assert result["events"] == len(expected) == len(got), src.name
        for name in "xytp":
            np.testing.assert_array_equal(getattr(got, name), getattr(expected, name), src.name)
        assert got.sensor_size == expected.sensor_size


def test_evt2_writer_matches_the_test_encoder_and_expelliarmus(tmp_path):
    """Written in several batches, the words equal `encode_evt2`'s (TIME_HIGH on change)."""
    rng = np.random.default_rng(1)
    x, y, t, p = random_events(rng, 400, 1280, 720, t0=60, max_gap=200)
    ev = Events(x, y, t, p, 1280, 720)
    writer = Evt2Writer(tmp_path / "w.raw", 1280, 720)
    for part in np.array_split(np.arange(len(ev)), 5):
        writer.write(Events(x[part], y[part], t[part], p[part], 1280, 720))
    path = writer.close()
    body = path.read_bytes()[read_header(path).size:]
    assert body == encode_evt2(x, y, t, p)
    expelliarmus = pytest.importorskip("expelliarmus")
    peer = expelliarmus.Wizard(encoding="evt2").read(str(path))
    np.testing.assert_array_equal(peer["t"], t)
    np.testing.assert_array_equal(peer["x"], x)
    np.testing.assert_array_equal(peer["p"] == 1, p > 0)


def test_evt2_limits_and_a_failed_convert_leaves_nothing(tmp_path):
    ev = Events([1], [1], [1 << 35], [1], 4, 4)
    src = write_events_h5(tmp_path / "late.h5", ev, t_offset_us=1 << 35)
    with pytest.raises(ValueError, match="2\\^34"):
        convert(src, tmp_path / "late.raw")
    assert not (tmp_path / "late.raw").exists()
    convert(src, tmp_path / "late.raw", relative=True)
    assert _all(tmp_path / "late.raw").t.tolist() == [0]
    with pytest.raises(ValueError, match="spike"):
        convert(src, tmp_path / "x.dat")


def test_spikes_convert_to_dat_with_a_sidecar(tmp_path):
    rng = np.random.default_rng(2)
    data = (rng.random((37, 6, 10)) < 0.2).astype(np.uint8)
    np.save(tmp_path / "s.npy", data)
    result = convert(tmp_path / "s.npy", tmp_path / "s.dat")
    assert result["frames"] == 37
    got = open_recording(tmp_path / "s.dat").read_frames(0, 37)
    np.testing.assert_array_equal(got.unpack(), data)
    src = write_spike_dat(tmp_path / "a.dat", Spikes(data, 4000.0, t0_us=500), sidecar=True)
    convert(src, tmp_path / "b.dat")
    info = open_recording(tmp_path / "b.dat").info()
    assert (info.width, info.height, info.rate_hz, info.t_start_us) == (10, 6, 4000.0, 500)
