import numpy as np
import pytest
import torch

from evtransfer.events import Spikes
from evtransfer.simulate import (
    SimulationError,
    SpikeConfig,
    SpikeSimulator,
    simulate_spikes,
    spikes_from_image,
)

from .reference import integrate_and_fire


def smooth_image(h: int = 36, w: int = 52) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return 0.5 + 0.4 * np.sin(x / 7.0) * np.cos(y / 9.0)


def test_spike_rate_is_proportional_to_intensity(device):
    levels = np.linspace(0.05, 1.0, 12)
    image = np.tile(levels, (3, 1))
    n = 4000
    spikes = spikes_from_image(image, n, SpikeConfig(seed=3), device=device)
    counts = spikes.unpack().sum(axis=0)
    # gain 1, threshold 2: the accumulator gains I / 2 thresholds per tick
    assert np.abs(counts - n * image / 2.0).max() < 1.0


def test_tfp_of_a_still_image_correlates_with_the_image(device):
    image = smooth_image()
    spikes = spikes_from_image(image, 201, SpikeConfig(seed=1), device=device)
    tfp = spikes.unpack()[80:121].mean(axis=0)  # 41-frame window around the middle
    assert np.corrcoef(tfp.ravel(), image.ravel())[0, 1] > 0.98


@pytest.mark.parametrize("interpolation", ["hold", "linear"])
def test_matches_tick_by_tick_reference(device, interpolation):
    rng = np.random.default_rng(5)
    frames = rng.uniform(0, 1, (4, 5, 11))
    times = np.array([0, 1_000, 1_450, 3_000])
    cfg = SpikeConfig(rate_hz=10_000, gain=0.8, threshold=1.3, dark_current=0.05,
                      random_init=False, interpolation=interpolation)
    got = simulate_spikes(frames, times, cfg, device=device)
    charges = []
    for k in range(1, 31):  # ticks read out at 100 µs × k in (0, 3000]
        t = 100 * k
        i = np.searchsorted(times, t, side="left") - 1  # interval (times[i], times[i + 1]]
        if interpolation == "hold":
            light = frames[i]
        else:
            a = (t - times[i]) / (times[i + 1] - times[i])
            light = frames[i] + a * (frames[i + 1] - frames[i])
        charges.append(0.8 * light + 0.05)
    expected = integrate_and_fire(np.stack(charges), 1.3, np.zeros((5, 11)))
    assert len(got) == 30 and got.t0_us == 100
    assert np.array_equal(got.unpack(), expected)


def test_packing_is_lsb_first_and_matches_unpacked():
    spikes = spikes_from_image(smooth_image(9, 13), 50, SpikeConfig(seed=2))
    assert spikes.packed and spikes.data.shape == (50, 9, 2) and spikes.width == 13
    bits = spikes.unpack()
    assert np.array_equal(np.packbits(bits, axis=-1, bitorder="little"), spikes.data)


def test_streaming_and_chunking_do_not_change_the_output():
    image = smooth_image(8, 10)
    cfg = SpikeConfig(seed=4, threshold_sigma=0.1)
    ref = SpikeSimulator(cfg, 8, 10)
    ref.feed(image, 0)
    joined = ref.feed(image, 5_000)[0]
    split = SpikeSimulator(cfg, 8, 10, max_chunk_elements=7 * 80)
    split.feed(image, 0)
    parts = [split.feed(image, t)[0] for t in (1_230, 1_240, 5_000)]
    assert np.array_equal(np.concatenate([s.data for s in parts]), joined.data)
    assert [len(s) for s in parts] == [24, 0, 76]
    assert [s.t0_us for s in parts] == [50, 1_250, 1_250]


def test_tick_count_follows_the_readout_clock():
    sim = SpikeSimulator(SpikeConfig(rate_hz=20_000), 2, 3)
    assert len(sim.feed(np.zeros((2, 3)), 10)[0]) == 0
    out = [sim.feed(np.full((2, 3), 0.5), t)[0] for t in (1_010, 2_520, 2_529)]
    assert [len(s) for s in out] == [20, 30, 0]
    assert out[1].t0_us == 1_060


def test_dark_current_fires_in_darkness_and_noise_is_seeded():
    cfg = SpikeConfig(dark_current=0.1, seed=1)
    dark = spikes_from_image(np.zeros((4, 4)), 1000, cfg)
    assert abs(dark.firing_rate() - 0.05) < 0.002
    noisy = SpikeConfig(readout_noise=0.3, threshold_sigma=0.2, seed=8)
    a = spikes_from_image(smooth_image(6, 8), 300, noisy)
    b = spikes_from_image(smooth_image(6, 8), 300, noisy)
    c = spikes_from_image(smooth_image(6, 8), 300, SpikeConfig(readout_noise=0.3,
                                                               threshold_sigma=0.2, seed=9))
    assert np.array_equal(a.data, b.data) and not np.array_equal(a.data, c.data)


def test_saturated_pixels_fire_every_tick():
    spikes = spikes_from_image(np.full((2, 2), 5.0), 40, SpikeConfig(random_init=False))
    assert spikes.unpack().all()


def test_batch_equals_single_runs():
    rng = np.random.default_rng(0)
    frames = rng.uniform(0, 1, (3, 2, 5, 9))
    cfg = SpikeConfig(random_init=False, interpolation="linear")
    batched = SpikeSimulator(cfg, 5, 9, batch=2)
    out = [batched.feed(f, 700 * k) for k, f in enumerate(frames)]
    for b in range(2):
        single = simulate_spikes(frames[:, b], 700 * np.arange(3), cfg)
        assert np.array_equal(np.concatenate([o[b].data for o in out[1:]]), single.data)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(rate_hz=0), "rate_hz must be > 0"),
        (dict(threshold=-1.0), "threshold must be > 0"),
        (dict(readout_noise=-0.1), "readout_noise must be >= 0"),
        (dict(interpolation="cubic"), "interpolation"),
        (dict(gain=float("inf")), "finite"),
    ],
)
def test_bad_config_is_refused(kwargs, message):
    with pytest.raises(SimulationError, match=message):
        SpikeConfig(**kwargs)


def test_bad_frames_and_times_are_refused():
    sim = SpikeSimulator(SpikeConfig(), 3, 4)
    with pytest.raises(SimulationError, match="floating point"):
        sim.feed(np.zeros((3, 4), np.uint8), 0)
    sim.feed(np.zeros((3, 4)), 0)
    with pytest.raises(SimulationError, match="must increase"):
        sim.feed(np.zeros((3, 4)), 0)
    with pytest.raises(SimulationError, match="shape"):
        sim.feed(np.zeros((4, 3)), 10)
    with pytest.raises(SimulationError, match="negative"):
        sim.feed(np.full((3, 4), -1.0), 10)
    with pytest.raises(SimulationError, match="at least two frames"):
        simulate_spikes(np.zeros((1, 3, 4)), [0])
    with pytest.raises(SimulationError, match="n_ticks"):
        spikes_from_image(np.zeros((3, 4)), 0)


def test_output_is_a_spikes_stream():
    spikes = spikes_from_image(smooth_image(4, 8), 10)
    assert isinstance(spikes, Spikes) and spikes.rate_hz == 20_000 and spikes.t0_us == 50


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_and_cuda_agree():
    rng = np.random.default_rng(4)
    frames = rng.uniform(0, 1, (3, 20, 30))
    cfg = SpikeConfig(random_init=False, interpolation="linear", dark_current=0.01)
    cpu = simulate_spikes(frames, [0, 900, 2_000], cfg, device="cpu")
    gpu = simulate_spikes(frames, [0, 900, 2_000], cfg, device="cuda")
    assert np.array_equal(cpu.data, gpu.data)
