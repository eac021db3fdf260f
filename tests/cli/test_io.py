"""`info`, `render` and `simulate` through a subprocess: issue 21's problems 1, 2, 8 and 9."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evtransfer.events import Events, Spikes
from evtransfer.io.dsec import write_events_h5
from tests.cli._run import one_line_error, run_cli
from tests.io.evio_encoders import encode_dat

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / ".." / "shared" / "data" / "samples"


def test_aedat_and_numba_are_default_dependencies():
    """Problems 1 and 10: `make install` (the default dependencies) reads AEDAT4 and runs the
    numba kernels where their wheels exist; elsewhere the pure paths run."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    marker = "; platform_machine in 'x86_64 AMD64 aarch64 arm64'"
    assert {"aedat>=2.0" + marker, "numba>=0.59" + marker} <= set(deps)


def test_aedat4_without_the_package_is_one_line():
    """Problem 1: the ImportError traceback is now one line naming the package."""
    sample = SAMPLES / "tonic" / "sample.aedat4"
    if not sample.is_file():
        pytest.skip("the AEDAT4 sample is absent")
    proc = run_cli("info", sample, prelude="import sys; sys.modules['aedat'] = None")
    assert "pip install aedat" in one_line_error(proc)


def test_a_simulated_spike_file_reads_back_at_its_own_size(tmp_path):
    """Problem 2: `simulate spikes ... -o f.dat && info f.dat` at a size other than 250x400;
    `-o x.h5` is refused instead of writing a headerless spike file named .h5."""
    image = tmp_path / "img.png"
    Image.fromarray(np.full((12, 20), 200, np.uint8)).save(image)
    out = tmp_path / "f.dat"
    assert run_cli("simulate", "spikes", image, "-o", out, "--ticks", "30").returncode == 0
    proc = run_cli("info", out, "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert (info["width"], info["height"], info["frames"]) == (20, 12, 30)
    assert info["spikes"] > 0
    err = one_line_error(run_cli("simulate", "spikes", image, "-o", tmp_path / "x.h5"))
    assert "name it *.dat" in err and not (tmp_path / "x.h5").exists()


def test_a_damaged_ncars_header_is_not_called_a_spike_file(tmp_path):
    """Problem 8: an N-CARS / Prophesee .dat whose header bytes are damaged."""
    data = bytearray(encode_dat([1, 2], [1, 2], [1, 1], [1, -1]))
    data[5] = 0x00  # inside the first header line
    path = tmp_path / "car.dat"
    path.write_bytes(bytes(data))
    err = one_line_error(run_cli("info", path))
    assert "Prophesee DAT header" in err and "250x400" not in err


def test_info_with_a_size_override_says_what_the_file_says(tmp_path):
    """Problem 8: `info --width 100 --height 100` on a 640x480 file no longer reports only
    100x100; and the new statistics: ON/OFF counts, x/y ranges, rate over time."""
    ev = Events([3, 50, 60, 7], [4, 9, 5, 40], [0, 1000, 3000, 9999], [1, -1, 1, 1], 640, 480)
    path = write_events_h5(tmp_path / "r.h5", ev)
    info = json.loads(run_cli("info", path, "--width", "100", "--height", "100", "--json",
                              "--bins", "2").stdout)
    assert (info["width"], info["file_size"]) == (100, "640x480")
    assert (info["on"], info["off"], info["x_range"], info["y_range"]) == (3, 1, [3, 60], [4, 40])
    assert info["rate_ev_per_s_over_time"] == [3 / 5000e-6, 1 / 5000e-6]


@pytest.mark.parametrize("name", ["empty.bin", "empty.dat", "empty.raw"])
def test_an_empty_file_is_an_error(tmp_path, name):
    """Problem 9: empty .bin / .dat files read silently as 0 events."""
    (tmp_path / name).write_bytes(b"")
    assert "empty file" in one_line_error(run_cli("info", tmp_path / name))


def test_render_times_relative_to_the_recording_start(tmp_path):
    """Problem 8: a Unix-µs clock (AEDAT4) makes `--t0 0 --t1 50000` miss every event;
    `--relative` counts from the first timestamp, and the error says where the events are."""
    t0 = 1_700_000_000_000_000
    ev = Events([1, 2], [1, 2], [t0, t0 + 10], [1, 1], 4, 3)
    path = write_events_h5(tmp_path / "unix.h5", ev, t_offset_us=t0)
    out = tmp_path / "r.png"
    err = one_line_error(run_cli("render", path, "--t0", "0", "--t1", "50000", "-o", out))
    assert f"spans [{t0}, {t0 + 10}]" in err and "--relative" in err
    proc = run_cli("render", path, "--t0", "0", "--t1", "50000", "--relative", "-o", out,
                   "--scale", "3")
    assert proc.returncode == 0, proc.stderr
    assert np.asarray(Image.open(out)).shape == (9, 12, 3)


def test_render_stretches_a_dim_tfp(tmp_path):
    """A sparse spike texture is stretched to white; a small recording keeps its size."""
    from evtransfer.io.spike import write_spike_dat

    data = np.zeros((9, 4, 8), np.uint8)
    data[::4, 1, 2] = 1  # 2 of the 7 frames in the window: TFP 2/7
    path = write_spike_dat(tmp_path / "s.dat", Spikes(data, 20000.0), sidecar=True)
    out = tmp_path / "tfp.png"
    assert run_cli("render", path, "--half-window", "3", "-o", out).returncode == 0
    image = np.asarray(Image.open(out))
    assert image.shape == (4, 8) and image[1, 2] == 255 and image.sum() == 255


def test_convert_the_aedat4_sample_to_evt2_and_back_to_h5(tmp_path):
    sample = SAMPLES / "tonic" / "sample.aedat4"
    if not sample.is_file():
        pytest.skip("the AEDAT4 sample is absent")
    raw, h5 = tmp_path / "s.raw", tmp_path / "s.h5"
    err = one_line_error(run_cli("convert", sample, "-o", raw))  # a Unix-time clock
    assert "2^34" in err and not raw.exists()
    assert run_cli("convert", sample, "-o", raw, "--relative").returncode == 0
    proc = run_cli("convert", raw, "-o", h5)
    assert proc.returncode == 0 and "111954 events (evt2 -> dsec-h5)" in proc.stdout
    info = json.loads(run_cli("info", h5, "--json").stdout)
    assert (info["events"], info["width"], info["t_start_us"]) == (111_954, 320, 0)
