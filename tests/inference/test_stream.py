import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from evtransfer.data.transfer import EventInput
from evtransfer.events import Events, Spikes
from evtransfer.inference import load_model
from evtransfer.inference.stream import (
    Every,
    PredictOptions,
    parse_every,
    predict_path,
    predict_recording,
)
from evtransfer.io.dsec import write_events_h5
from evtransfer.io.images import read_png16
from evtransfer.io.spike import write_spike_dat
from evtransfer.viz import DSEC11_PALETTE

from ._packages import depth_package, segmenter_package

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "data" / "samples"


def _quiet(**kw):
    return PredictOptions(progress=False, **kw)


@pytest.fixture()
def gap_recording(tmp_path):
    """64×48 events over [0, 200 ms) with nothing in [100, 150) ms; 1000 events per 50 ms."""
    rng = np.random.default_rng(0)
    t = np.concatenate([np.arange(0, 100_000, 50), np.arange(150_049, 200_000, 50)])
    n = len(t)
    ev = Events(rng.integers(0, 64, n), rng.integers(0, 48, n), t, rng.choice([-1, 1], n), 64, 48)
    return write_events_h5(tmp_path / "rec.h5", ev), ev


@pytest.fixture()
def model(tmp_path):
    return load_model(segmenter_package(tmp_path / "m.safetensors", window_us=50_000,
                                        sensor=(64, 48), size=(48, 64)))


def test_parse_every():
    assert parse_every("50ms") == Every(50_000, "us")
    assert parse_every("0.1s") == Every(100_000, "us")
    assert parse_every("2500us") == Every(2500, "us")
    assert parse_every("100000ev") == Every(100_000, "ev")
    assert parse_every("32fr") == Every(32, "fr")
    for bad in ("50", "fast", "0ms", "-5ms"):
        with pytest.raises(ValueError, match="--every"):
            parse_every(bad)


def test_time_windows_labels_and_empty_window(gap_recording, model, tmp_path):
    path, ev = gap_recording
    out = tmp_path / "out"
    summary = predict_recording(model, path, out, _quiet(batch=3), log=lambda _: None)
    statuses = [r["status"] for r in summary["records"]]
    assert statuses == ["predicted", "predicted", "empty", "predicted"]
    assert [r["t_end_us"] for r in summary["records"]] == [50_000, 100_000, 150_000, 200_000]
    assert [r["count"] for r in summary["records"]] == [1000, 1000, 0, 1000]
    assert not (out / "labels" / "000002.png").exists()
    saved = json.loads((out / "windows.json").read_text())
    assert saved["predicted"] == 3 and saved["empty"] == 1
    assert set(saved["seconds"]) == {"read", "represent", "model", "write", "total"}
    image = Image.open(out / "labels" / "000001.png")
    assert image.mode == "P"
    assert np.array_equal(np.array(image.getpalette()[:33]).reshape(11, 3), DSEC11_PALETTE)
    window = ev.time_window(50_000, 100_000)
    with torch.no_grad():
        logits = model.network(EventInput().representation()(window))
    want = F.interpolate(logits, size=(48, 64), mode="bilinear").argmax(1)[0].numpy()
    assert np.array_equal(np.array(image), want)
    assert (out / "overlay.gif").is_file()


def test_event_count_stride_and_overlays(gap_recording, model, tmp_path):
    path, ev = gap_recording
    summary = predict_recording(model, path, tmp_path / "o", _quiet(every=Every(1000, "ev"),
                                                                    overlays=True),
                                log=lambda _: None)
    ends = [r["t_end_us"] for r in summary["records"]]
    assert ends == [int(ev.t[k - 1]) + 1 for k in range(1000, 3001, 1000)]
    # the first 1000 events span 49 951 µs: a 50 ms window before them starts too early
    assert [r["status"] for r in summary["records"]] == ["partial", "predicted", "predicted"]
    assert len(list((tmp_path / "o" / "overlay").glob("*.png"))) == 2
    gif = Image.open(tmp_path / "o" / "overlay.gif")
    assert gif.n_frames == 2 and gif.size == (64, 48)


def test_partial_windows_of_count_models(gap_recording, tmp_path):
    model = load_model(segmenter_package(tmp_path / "c.safetensors", window_events=1500,
                                         sensor=(64, 48), size=(48, 64)))
    path, _ = gap_recording
    opts = _quiet(every=Every(25_000, "us"))
    statuses = [r["status"] for r in predict_recording(model, path, tmp_path / "a", opts,
                                                       log=lambda _: None)["records"]]
    # ends every 25 ms; 500 and 1000 events exist before the first two, 1500 are needed
    assert statuses == ["partial"] * 2 + ["predicted"] * 6
    opts = _quiet(every=Every(25_000, "us"), partial=True)
    again = predict_recording(model, path, tmp_path / "b", opts)
    assert again["partial"] == 0 and again["predicted"] == len(statuses)


def test_spike_recording_with_depth_model(tmp_path):
    rng = np.random.default_rng(2)
    write_spike_dat(tmp_path / "s.dat", Spikes((rng.random((40, 12, 20)) < 0.2)
                                               .astype(np.uint8), 20_000.0))
    model = load_model(depth_package(tmp_path / "d.safetensors", constant=7.5,
                                     modality="spikes", kind="spike_stack", frames=8,
                                     sensor=(20, 12), size=(32, 32), resize="nearest"))
    opts = _quiet(reader_options={"height": 12, "width": 20})
    summary = predict_recording(model, tmp_path / "s.dat", tmp_path / "out", opts)
    assert summary["predicted"] == 5 and summary["records"][-1]["count"] == 8
    depth = read_png16(tmp_path / "out" / "depth" / "000004.png")
    assert depth.shape == (12, 20) and (depth == round(7.5 * 256)).all()
    assert (tmp_path / "out" / "depth_color" / "000004.png").is_file()
    with pytest.raises(ValueError, match="'ev' does not apply"):
        predict_recording(model, tmp_path / "s.dat", tmp_path / "x",
                          _quiet(every=Every(10, "ev"), reader_options=opts.reader_options))


def test_folder_input_and_bad_inputs(gap_recording, model, tmp_path):
    path, _ = gap_recording
    folder = tmp_path / "recs"
    folder.mkdir()
    path.rename(folder / "a.h5")
    (folder / "notes.txt").write_text("not a recording")
    notes = []
    summaries = predict_path(model, folder, tmp_path / "out", _quiet(), log=notes.append)
    assert len(summaries) == 1 and (tmp_path / "out" / "a_h5" / "windows.json").is_file()
    assert any("notes.txt" in n for n in notes)
    with pytest.raises(FileNotFoundError):
        predict_path(model, tmp_path / "missing", tmp_path / "o")
    with pytest.raises(ValueError, match="too short"):
        predict_recording(model, folder / "a.h5", tmp_path / "o",
                          _quiet(t1_us=40_000))


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="real sample recordings not present")
def test_real_samples_with_a_world_model(tiny_package, tmp_path):
    model = load_model(tiny_package)
    evt2 = SAMPLES / "expelliarmus" / "evt2_sample.raw"
    with pytest.raises(ValueError, match="640x480 differs .* --resize"):
        predict_recording(model, evt2, tmp_path / "evt2", _quiet())
    warnings = []
    summary = predict_recording(model, SAMPLES / "tonic" / "sample.aedat4", tmp_path / "aedat",
                                _quiet(resize=True, every=Every(100_000, "us")),
                                log=warnings.append)
    # 0.590 s of events (samples README): window ends at 50, 150, ..., 550 ms
    assert summary["predicted"] == 6 and "320x240 differs" in warnings[0]
    labels = np.array(Image.open(tmp_path / "aedat" / "labels" / "000000.png"))
    assert labels.shape == (240, 320) and labels.max() < 11
    with pytest.raises(ValueError, match="a spike recording, but the model takes events"):
        predict_recording(model, SAMPLES / "spike-zoo" / "data.dat", tmp_path / "s", _quiet())
