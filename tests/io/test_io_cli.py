"""`evtransfer info` and `evtransfer render` on small fixtures."""

from __future__ import annotations

import json

import numpy as np
from evio_encoders import encode_evt2, header
from PIL import Image

from evtransfer.cli import main
from evtransfer.events import Spikes
from evtransfer.io.spike import write_spike_dat


def _evt2(tmp_path):
    x, y, t, p = [1, 1, 5, 6], [2, 2, 3, 0], [100, 150, 20_000, 90_000], [1, 1, -1, 1]
    path = tmp_path / "rec.raw"
    path.write_bytes(header("evt 2.0", "geometry 8x6") + encode_evt2(x, y, t, p))
    return path


def test_info_json_and_text(tmp_path, capsys):
    path = _evt2(tmp_path)
    assert main(["info", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {k: out[k] for k in ("format", "width", "height", "events", "t_start_us",
                                "t_end_us")} == {"format": "evt2", "width": 8, "height": 6,
                                                 "events": 4, "t_start_us": 100,
                                                 "t_end_us": 90_000}
    assert out["rate_ev_per_s"] == 4 / (89_900 * 1e-6)
    assert main(["info", str(path)]) == 0
    lines = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert lines["format"] == "evt2" and lines["events"] == "4"


def test_info_spikes(tmp_path, capsys):
    spikes = Spikes(np.ones((5, 4, 8), np.uint8), 20000.0)
    path = write_spike_dat(tmp_path / "s.dat", spikes)
    assert main(["info", str(path), "--height", "4", "--width", "8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["format"], out["frames"], out["t_end_us"], out["rate_hz"]) == (
        "spike-dat", 5, 200, 20000.0)


def test_render_events(tmp_path):
    out = tmp_path / "ev.png"
    assert main(["render", str(_evt2(tmp_path)), "--t1", "30000", "-o", str(out)]) == 0
    image = np.asarray(Image.open(out))
    assert image.shape == (6, 8, 3)
    r, g, b = (int(v) for v in image[2, 1])
    assert b > r and b > g  # two positive events
    r, g, b = (int(v) for v in image[3, 5])
    assert r > b and r > g  # one negative event
    assert image[0, 6].tolist() == [255, 255, 255]  # its event is after t1
    assert image[5, 7].tolist() == [255, 255, 255]


def test_render_spikes_tfp(tmp_path):
    data = np.zeros((9, 4, 8), np.uint8)
    data[:, 1, 2] = 1  # always firing
    data[::3, 0, 0] = 1  # every third frame
    path = write_spike_dat(tmp_path / "s.dat", Spikes(data, 20000.0))
    out = tmp_path / "tfp.png"
    args = ["render", str(path), "--height", "4", "--width", "8", "--half-window", "3",
            "--no-stretch"]
    assert main([*args, "-o", str(out)]) == 0
    image = np.asarray(Image.open(out))
    assert image.shape == (4, 8) and image[1, 2] == 255 and image[3, 3] == 0
    # centre frame 4, window frames 1..7: spikes at 3 and 6 -> 2/7
    assert image[0, 0] == round(255 * 2 / 7)


def test_errors_are_one_line(tmp_path, capsys):
    path = _evt2(tmp_path)
    assert main(["render", str(path), "--t0", "95000", "-o", str(tmp_path / "x.png")]) == 2
    assert "no events in [95000, 145000)" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "missing.raw")]) == 2
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.raw"
    bad.write_bytes(header("evt 2.0") + b"\x00\x00")
    assert main(["info", str(bad)]) == 2
    assert "truncated" in capsys.readouterr().err
