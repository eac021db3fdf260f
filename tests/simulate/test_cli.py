"""The `evtransfer simulate` subcommand, end to end on tiny inputs."""

import numpy as np
from PIL import Image

from evtransfer.cli import main
from evtransfer.io.dsec import DsecEventsReader
from evtransfer.io.spike import read_spike_dat
from evtransfer.simulate import dvs_preset, simulate_events, spikes_from_image
from evtransfer.simulate.sources import load_gray


def make_image(path, h=16, w=24):
    y, x = np.mgrid[0:h, 0:w]
    img = (127 + 100 * np.sin(x / 3.0) * np.cos(y / 4.0)).astype(np.uint8)
    Image.fromarray(img).save(path)
    return path


def test_events_from_a_frame_folder_match_the_library(tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (4, 10, 14), dtype=np.uint8)
    for k, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{k}.png")
    (folder / "timestamps_us.txt").write_text("100\n1100\n2100\n3100\n")
    out = tmp_path / "events.h5"
    assert main(["simulate", "events", str(folder), "-o", str(out), "--preset", "ideal"]) == 0
    expected = simulate_events(frames / 255.0, np.array([100, 1100, 2100, 3100]),
                               dvs_preset("ideal"))
    with DsecEventsReader(out) as reader:
        got = reader.read_index(0, len(reader))
    assert len(got) == len(expected) > 0
    assert np.array_equal(got.t, expected.t) and np.array_equal(got.x, expected.x)
    assert got.sensor_size == (14, 10)


def test_events_from_one_image_with_random_motion(tmp_path, capsys):
    image = make_image(tmp_path / "img.png")
    out = tmp_path / "moving.h5"
    code = main(["simulate", "events", str(image), "-o", str(out), "--motion", "random",
                 "--frames", "5", "--fps", "500", "--preset", "noisy", "--seed", "3"])
    assert code == 0 and "events" in capsys.readouterr().out
    with DsecEventsReader(out) as reader:
        assert len(reader) > 0 and reader.info().width == 24


def test_still_image_events_is_a_clean_error(tmp_path, capsys):
    image = make_image(tmp_path / "img.png")
    code = main(["simulate", "events", str(image), "-o", str(tmp_path / "x.h5")])
    assert code == 2 and "--motion random" in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists()
    code = main(["simulate", "events", str(tmp_path / "none"), "-o", str(tmp_path / "x.h5")])
    assert code == 2 and "no such file" in capsys.readouterr().err


def test_spikes_from_a_still_image(tmp_path):
    image = make_image(tmp_path / "img.png")
    out = tmp_path / "spikes.dat"
    assert main(["simulate", "spikes", str(image), "-o", str(out), "--ticks", "60"]) == 0
    got = read_spike_dat(out, 16, 24)
    expected = spikes_from_image(load_gray(image), 60)
    assert out.stat().st_size == 60 * 16 * 24 // 8
    assert np.array_equal(got.unpack(), expected.unpack())


def test_spikes_from_a_pseudo_video(tmp_path):
    image = make_image(tmp_path / "img.png")
    out = tmp_path / "moving.dat"
    code = main(["simulate", "spikes", str(image), "-o", str(out), "--motion", "random",
                 "--frames", "3", "--fps", "1000", "--rate-hz", "10000"])
    assert code == 0
    assert out.stat().st_size == 20 * 16 * 24 // 8


def test_every_dvs_parameter_is_an_option_and_a_preview_gif(tmp_path, capsys):
    """Issue 21: `simulate events` takes every DvsConfig field on the command line (the CLI's
    list must match the dataclass) and writes a preview GIF on request."""
    from dataclasses import fields

    from evtransfer.cli.simulate import DVS_FIELDS
    from evtransfer.simulate.dvs_config import DvsConfig

    assert {f.name: f.type for f in fields(DvsConfig) if f.name != "seed"} == {
        k: v.__name__ for k, v in DVS_FIELDS.items()}
    image = make_image(tmp_path / "img.png")
    args = ["simulate", "events", str(image), "--motion", "random", "--frames", "6", "--fps",
            "500", "--preset", "ideal"]
    assert main([*args, "-o", str(tmp_path / "a.h5")]) == 0
    assert main([*args, "-o", str(tmp_path / "b.h5"), "--pos-threshold", "0.6",
                 "--neg-threshold", "0.6", "--refractory-us", "1000",
                 "--preview", str(tmp_path / "p.gif"), "--preview-frames", "3"]) == 0
    with DsecEventsReader(tmp_path / "a.h5") as a, DsecEventsReader(tmp_path / "b.h5") as b:
        assert 0 < len(b) < len(a)  # higher thresholds and a refractory period: fewer events
    gif = Image.open(tmp_path / "p.gif")
    assert (gif.n_frames, gif.size) == (3, (24, 16))
    assert "wrote 3 preview images" in capsys.readouterr().out
