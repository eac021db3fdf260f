"""`detect_format` / `open_recording`: every format by magic, header or extension."""

from __future__ import annotations

import numpy as np
import pytest
from evio_encoders import encode_dat, encode_evt2, encode_evt3, encode_nmnist, header

from evtransfer.events import Events, Spikes
from evtransfer.io import EVENT_FORMATS, SPIKE_FORMATS, detect_format, open_recording
from evtransfer.io.base import FormatError
from evtransfer.io.spike import write_spike_dat

X, Y = np.array([1, 5, 9]), np.array([2, 3, 4])
T, P = np.array([10, 70, 4200]), np.array([1, -1, 1])


def _fixtures(tmp_path):
    rng = np.random.default_rng(0)
    files = {
        "evt2": ("a.raw", header("evt 2.0", "geometry 64x48") + encode_evt2(X, Y, T, P)),
        "evt3": ("b.raw", header("format EVT3;height=48;width=64")
                 + encode_evt3(X, Y, T, P, rng)),
        "dat": ("c.dat", encode_dat(T, X, Y, P)),
        "nmnist-bin": ("d.bin", encode_nmnist(X, Y, T, P)),
    }
    out = {}
    for fmt, (name, data) in files.items():
        (tmp_path / name).write_bytes(data)
        out[fmt] = tmp_path / name
    spikes = Spikes((rng.random((3, 4, 8)) < 0.5).astype(np.uint8), 20000.0)
    out["spike-dat"] = write_spike_dat(tmp_path / "e.dat", spikes)
    np.save(tmp_path / "f.npy", spikes.data)
    out["spike-npy"] = tmp_path / "f.npy"
    return out


def test_detects_and_opens_every_binary_format(tmp_path):
    for fmt, path in _fixtures(tmp_path).items():
        assert detect_format(path) == fmt
        opts = {"height": 4, "width": 8} if fmt == "spike-dat" else {}
        reader = open_recording(path, **opts)
        info = reader.info()
        assert info.format == fmt
        if fmt in EVENT_FORMATS:
            assert info.events == 3 and (info.t_start_us, info.t_end_us) == (10, 4200)
            np.testing.assert_array_equal(reader.read_window(0, 100).x, [1, 5])
        else:
            assert fmt in SPIKE_FORMATS and info.frames == 3
            assert len(reader.read_frames(1, 3)) == 2


def test_detects_real_samples(samples):
    expected = {
        "tonic/sample.aedat4": "aedat4",
        "tonic/sample_nmnist.bin": "nmnist-bin",
        "expelliarmus/evt2_sample.raw": "evt2",
        "expelliarmus/NCARS_obj_004397_td.dat": "dat",
        "spike-zoo/data.dat": "spike-dat",
    }
    for name, fmt in expected.items():
        assert detect_format(samples / name) == fmt
    assert open_recording(samples / "spike-zoo/data.dat").info().frames == 301


def test_options_pass_through_and_bad_options(tmp_path):
    path = _fixtures(tmp_path)["evt3"]
    reader = open_recording(path, width=640, height=480, engine="numpy")
    assert (reader.width, reader.height) == (640, 480)
    with pytest.raises(ValueError, match="takes no option stream_id"):
        open_recording(path, stream_id=3)
    with pytest.raises(ValueError, match="unknown format"):
        open_recording(path, format="mp4")


@pytest.mark.parametrize(
    ("name", "data", "problem"),
    [
        ("a.raw", bytes(8), "cannot tell EVT 2.0 from 3.0"),
        ("a.raw", header("evt 2.1"), "unsupported Prophesee encoding 'evt21'"),
        ("a.txt", b"hello", "unknown format"),
        ("a.h5", b"\x89HDF\r\n\x1a\n" + bytes(100), "unreadable HDF5"),
    ],
)
def test_undetectable_files(tmp_path, name, data, problem):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(FormatError, match=problem):
        detect_format(tmp_path / name)


def test_binary_dat_starting_with_percent_is_a_spike_stream(tmp_path):
    path = tmp_path / "s.dat"
    path.write_bytes(bytes([0x25, 0xFF, 0x0A, 0x01]))
    assert detect_format(path) == "spike-dat"
    with pytest.raises(FileNotFoundError):
        detect_format(tmp_path / "missing.raw")
    with pytest.raises(FormatError, match="events.dat.t"):
        detect_format(tmp_path)


def test_dsec_h5_dispatch(tmp_path):
    dsec = pytest.importorskip("evtransfer.io.dsec")
    events = Events(X, Y, T + 1000, P, 64, 48)
    path = dsec.write_events_h5(tmp_path / "events.h5", events, t_offset_us=1000)
    assert detect_format(path) == "dsec-h5"
    reader = open_recording(path, width=640, height=480)
    assert reader.info().events == 3
    np.testing.assert_array_equal(reader.read_window(0, 10**6).t, T + 1000)


def test_mvsec_h5_dispatch(tmp_path):
    pytest.importorskip("evtransfer.io.mvsec")
    import h5py

    path = tmp_path / "outdoor_day1_data.hdf5"
    with h5py.File(path, "w") as f:
        rows = np.stack([X, Y, 1.5e9 + T * 1e-6, P], axis=1).astype(np.float64)
        f.create_dataset("davis/left/events", data=rows)
    assert detect_format(path) == "mvsec-h5"
    assert open_recording(path).info().events == 3


def test_ddd17_folder_dispatch(tmp_path):
    pytest.importorskip("evtransfer.io.ddd17")
    (tmp_path / "events.dat.t").write_bytes((T * 1000).astype("<i8").tobytes())
    xyp = np.stack([X, Y, (P > 0).astype(int)], axis=1).astype("<i2")
    (tmp_path / "events.dat.xyp").write_bytes(xyp.tobytes())
    assert detect_format(tmp_path) == "ddd17-ess"
    np.testing.assert_array_equal(open_recording(tmp_path).read_window(0, 10**6).t, T)
