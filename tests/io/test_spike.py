"""Spike-camera `.dat` and array readers/writer: layout, options, real sample, bad input."""

from __future__ import annotations

import pickle
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evtransfer.events import EventsError, Spikes
from evtransfer.io.base import FormatError
from evtransfer.io.spike import (
    SpikeDatReader,
    SpikeNpyReader,
    read_npz_label,
    read_spike_dat,
    read_spike_npy,
    write_spike_dat,
)


def _random_spikes(seed: int, t: int, h: int, w: int, rate: float = 0.3) -> np.ndarray:
    return (np.random.default_rng(seed).random((t, h, w)) < rate).astype(np.uint8)


def test_layout_by_hand(tmp_path):
    # 2x8 frame, one spike at row 0, column 3. Stored upside down, row 0 becomes the second
    # row: pixel 8 + 3 of the frame, i.e. byte 1, bit 3 (LSB-first) -> bytes 00 08.
    frame = np.zeros((1, 2, 8), np.uint8)
    frame[0, 0, 3] = 1
    path = write_spike_dat(tmp_path / "one.dat", Spikes(frame, 20000.0))
    assert path.read_bytes() == bytes([0x00, 0x08])
    assert write_spike_dat(tmp_path / "b.dat", Spikes(frame, 1.0), bitorder="big").read_bytes() \
        == bytes([0x00, 0x10])
    assert write_spike_dat(tmp_path / "u.dat", Spikes(frame, 1.0), flipud=False).read_bytes() \
        == bytes([0x08, 0x00])
    spikes = read_spike_dat(path, 2, 8)
    assert spikes.packed and spikes.unpack().tolist() == frame.tolist()


@pytest.mark.parametrize(("h", "w"), [(6, 16), (5, 13)])
@pytest.mark.parametrize("bitorder", ["little", "big"])
@pytest.mark.parametrize("flipud", [True, False])
@pytest.mark.parametrize("packed", [True, False])
def test_write_read_roundtrip(tmp_path, h, w, bitorder, flipud, packed):
    data = _random_spikes(1, 9, h, w)
    spikes = Spikes(data, 40000.0).pack() if packed else Spikes(data, 40000.0)
    path = write_spike_dat(tmp_path / "s.dat", spikes, bitorder=bitorder, flipud=flipud)
    assert path.stat().st_size == 9 * ((h * w + 7) // 8)
    back = read_spike_dat(path, h, w, bitorder=bitorder, flipud=flipud, rate_hz=40000.0)
    np.testing.assert_array_equal(back.unpack(), data)
    part = read_spike_dat(path, h, w, bitorder=bitorder, flipud=flipud, rate_hz=40000.0,
                          frames=(3, 7))
    np.testing.assert_array_equal(part.unpack(), data[3:7])
    assert part.t0_us == 75 and part.timestamps_us().tolist() == [75, 100, 125, 150]


def test_head_columns_are_stripped_on_the_right(tmp_path):
    data = _random_spikes(2, 4, 10, 416)
    path = write_spike_dat(tmp_path / "head.dat", Spikes(data, 20000.0))
    spikes = read_spike_dat(path, 10, 416, remove_head=True)
    assert spikes.width == 400
    np.testing.assert_array_equal(spikes.unpack(), data[:, :, :400])
    assert SpikeDatReader(path, 10, 416, remove_head=True).info().width == 400


def test_reader_windows_and_info(tmp_path):
    data = _random_spikes(3, 20, 4, 8)
    path = write_spike_dat(tmp_path / "w.dat", Spikes(data, 1000.0))
    reader = SpikeDatReader(path, 4, 8, rate_hz=1000.0, t0_us=500)
    info = reader.info()
    assert (info.frames, info.t_start_us, info.t_end_us) == (20, 500, 500 + 19_000)
    window = reader.read_window(2500, 5500)  # frames at 2500, 3500, 4500
    assert window.t0_us == 2500 and len(window) == 3
    np.testing.assert_array_equal(window.unpack(), data[2:5])
    assert len(reader.read_window(100, 200)) == 0


def test_real_stream_orientation_and_rate(samples):
    from PIL import Image

    path = samples / "spike-zoo" / "data.dat"
    reader = SpikeDatReader(path)
    assert (len(reader), path.stat().st_size) == (301, 301 * 12_500)
    assert abs(read_spike_dat(path, 250, 400).firing_rate() - 0.288) < 0.001
    image = np.asarray(Image.open(samples / "spike-zoo" / "data.png").convert("L"), np.float64)

    def tfp_corr(flipud: bool) -> float:
        frames = read_spike_dat(path, 250, 400, flipud=flipud, frames=(130, 171))
        tfp = frames.unpack().astype(np.float64).mean(axis=0)
        return float(np.corrcoef(tfp.ravel(), image.ravel())[0, 1])

    assert tfp_corr(True) > 0.98
    assert tfp_corr(False) < 0.0


def test_arrays_npy_npz(tmp_path):
    data = _random_spikes(4, 6, 5, 16)
    np.save(tmp_path / "s.npy", data)
    np.testing.assert_array_equal(read_spike_npy(tmp_path / "s.npy").data, data)
    # a Respike-style array: stored upside down with every 8-column block mirrored
    stored = data[:, ::-1].reshape(6, 5, 2, 8)[..., ::-1].reshape(6, 5, 16)
    np.save(tmp_path / "r.npy", stored)
    back = read_spike_npy(tmp_path / "r.npy", flipud=True, bitorder="big", frames=(1, 4))
    np.testing.assert_array_equal(back.data, data[1:4])
    np.savez(tmp_path / "u.npz", spk=data.astype(bool), label=np.int64(47),
             label_name=np.array("owl"))
    np.testing.assert_array_equal(read_spike_npy(tmp_path / "u.npz").data, data)
    assert read_npz_label(tmp_path / "u.npz") == (47, "owl")
    reader = pickle.loads(pickle.dumps(SpikeNpyReader(tmp_path / "s.npy")))
    np.testing.assert_array_equal(reader.read_frames(2, 5).data, data[2:5])


@pytest.mark.parametrize(
    ("maker", "problem"),
    [
        (lambda d: np.save(d / "a.npy", np.zeros((2, 3), np.uint8)), "(T, H, W)"),
        (lambda d: np.save(d / "a.npy", np.full((2, 3, 4), 2, np.uint8)), "0 or 1"),
        (lambda d: np.savez(d / "a.npz", a=np.zeros((1, 2, 2)), b=np.zeros(1)), "key="),
        (lambda d: (d / "a.npy").write_bytes(b"\x93NUMPY garbage"), "unreadable"),
    ],
)
def test_bad_arrays(tmp_path, maker, problem):
    maker(tmp_path)
    path = next(tmp_path.iterdir())
    with pytest.raises(FormatError, match=problem):
        read_spike_npy(path)


def test_bad_dat_files(tmp_path):
    path = tmp_path / "bad.dat"
    path.write_bytes(bytes(12_501))
    with pytest.raises(FormatError, match="not a whole number of 250x400 frames") as err:
        read_spike_dat(path, 250, 400)
    assert str(path) in str(err.value)
    path.write_bytes(bytes(8))
    with pytest.raises(FormatError, match="frame range"):
        read_spike_dat(path, 2, 8, frames=(2, 5))
    with pytest.raises(FormatError, match="remove_head"):
        read_spike_dat(path, 2, 8, remove_head=True)
    with pytest.raises(ValueError, match="bitorder"):
        read_spike_dat(path, 2, 8, bitorder="middle")
    with pytest.raises(TypeError):
        write_spike_dat(tmp_path / "x.dat", np.zeros((1, 2, 8), np.uint8))


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=64), st.integers(1, 9), st.integers(1, 20))
def test_fuzz_random_bytes(blob, h, w):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f.dat"
        path.write_bytes(blob)
        try:
            spikes = read_spike_dat(path, h, w)
        except (FormatError, EventsError):
            assert len(blob) % ((h * w + 7) // 8)
            return
    frame_bytes = (h * w + 7) // 8
    raw = np.frombuffer(blob, np.uint8).reshape(len(blob) // frame_bytes, frame_bytes)
    bits = np.unpackbits(raw, axis=1,
                         bitorder="little")[:, : h * w].reshape(-1, h, w)[:, ::-1]
    np.testing.assert_array_equal(spikes.unpack(), bits)
