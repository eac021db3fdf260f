import math

import numpy as np
import pytest
import torch

from evtransfer.events import Events
from evtransfer.simulate import (
    DvsConfig,
    DvsSimulator,
    SimulationError,
    dvs_preset,
    simulate_events,
)

from .reference import esim_pixel

EPS = 1e-3


def intensity(log_level):
    """Linear intensity whose log(I + EPS) is `log_level`."""
    return np.exp(np.asarray(log_level, dtype=np.float64)) - EPS


def step(start: float, delta: float, shape) -> np.ndarray:
    """Two uniform frames: intensity `start`, then log intensity raised by `delta`."""
    level = np.log(start + EPS)
    return intensity(np.stack([np.full(shape, level), np.full(shape, level + delta)]))


def by_pixel(ev: Events):
    """{(x, y): [(t, p), ...]} in stream order."""
    out: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for x, y, t, p in zip(ev.x.tolist(), ev.y.tolist(), ev.t.tolist(), ev.p.tolist(), strict=True):
        out.setdefault((x, y), []).append((t, p))
    return out


@pytest.mark.parametrize("delta", [0.73, -0.91, 0.19, 2.05, -0.05])
def test_ideal_ramp_emits_floor_delta_over_c_at_interpolated_times(device, backend, delta):
    c_pos, c_neg = 0.2, 0.3
    cfg = dvs_preset("ideal", pos_threshold=c_pos, neg_threshold=c_neg)
    h, w = 3, 5
    frames = step(0.4, delta, (h, w))
    t0, t1 = 1_000, 3_777
    ev = simulate_events(torch.from_numpy(frames), np.array([t0, t1]), cfg, device=device,
                         backend=backend)
    c = c_pos if delta > 0 else c_neg
    n = math.floor(abs(delta) / c)
    expected_t = [t0 + k * c / abs(delta) * (t1 - t0) for k in range(1, n + 1)]
    assert len(ev) == n * h * w
    for (t_p) in by_pixel(ev).values():
        assert [p for _, p in t_p] == [int(np.sign(delta))] * n
        assert np.abs(np.array([t for t, _ in t_p]) - expected_t).max() <= 1


def test_multi_frame_ramp_crossing_times(device, backend):
    rate = 0.37e-3  # log units per µs
    times = np.array([0, 850, 1_200, 4_000, 4_001, 9_500])
    levels = np.log(0.05 + EPS) + rate * times
    frames = intensity(np.broadcast_to(levels[:, None, None], (len(times), 2, 2)).copy())
    ev = simulate_events(frames, times, dvs_preset("ideal"), device=device, backend=backend)
    n = math.floor(rate * times[-1] / 0.2)
    expected = np.array([k * 0.2 / rate for k in range(1, n + 1)])
    for t_p in by_pixel(ev).values():
        got = np.array([t for t, _ in t_p])
        assert len(got) == n and np.abs(got - expected).max() <= 1
    assert len(by_pixel(ev)) == 4


@pytest.mark.parametrize("leak_hz", [0.0, 40.0])
def test_matches_scalar_reference_with_refractory_and_leak(device, backend, leak_hz):
    if backend == "numba" and leak_hz:
        pytest.skip("leak runs on the torch path")
    rng = np.random.default_rng(3)
    h, w, n_frames = 4, 6, 9
    times = np.cumsum(rng.integers(200, 3_000, n_frames))
    levels = np.log(rng.uniform(0.02, 1.0, (n_frames, h, w)) + EPS)
    cfg = dvs_preset("ideal", pos_threshold=0.17, neg_threshold=0.23, refractory_us=400,
                     leak_rate_hz=leak_hz)
    sim = DvsSimulator(cfg, h, w, device=device, backend=backend)
    got = Events.concatenate([sim.feed(intensity(lv), t)[0] for lv, t in zip(levels, times,
                                                                             strict=True)])
    pixels = by_pixel(got)
    for y in range(h):
        for x in range(w):
            ref = esim_pixel(levels[:, y, x], times, 0.17, 0.23, 400, leak_hz * 0.17 * 1e-6)
            assert pixels.get((x, y), []) == ref or _close(pixels.get((x, y), []), ref)


def _close(a, b):
    """Equal polarities and timestamps within 1 µs (float64 rounding at a .5 boundary)."""
    return len(a) == len(b) and all(pa == pb and abs(ta - tb) <= 1
                                    for (ta, pa), (tb, pb) in zip(a, b, strict=True))


def test_refractory_period_is_respected(device, backend):
    cfg = dvs_preset("ideal", refractory_us=250)
    frames = intensity(np.log(0.01 + EPS) + np.array([0.0, 3.1, 0.4, 2.9])[:, None, None]
                       * np.ones((1, 3, 3)))
    ev = simulate_events(frames, np.array([0, 1_000, 1_700, 2_300]), cfg, device=device,
                         backend=backend)
    assert len(ev) > 0
    for t_p in by_pixel(ev).values():
        gaps = np.diff([t for t, _ in t_p])
        assert gaps.min() >= 250
    no_refr = simulate_events(frames, np.array([0, 1_000, 1_700, 2_300]), dvs_preset("ideal"))
    assert len(no_refr) > len(ev)


def test_lowpass_matches_v2e_filter_recurrence(device):
    cutoff = 200.0
    times = np.arange(0, 8) * 500
    lin = np.array([0.1, 0.8, 0.8, 0.8, 0.05, 0.05, 0.6, 0.6])
    cfg = dvs_preset("ideal", cutoff_hz=cutoff)
    frames = np.broadcast_to(lin[:, None, None], (8, 1, 1)).copy()
    ev = simulate_events(frames, times, cfg, device=device)
    # v2e: tau = 1 / (2 pi fc), eps = (I + 20/255) / (275/255) * dt / tau, clamped at 1
    level = [math.log(lin[0] + EPS)]
    for k in range(1, 8):
        frac = min(1.0, (lin[k] * 255 + 20) / 275 * (times[k] - times[k - 1]) * 1e-6
                   * 2 * math.pi * cutoff)
        level.append(level[-1] + frac * (math.log(lin[k] + EPS) - level[-1]))
    assert _close(list(zip(ev.t.tolist(), ev.p.tolist(), strict=True)),
                  esim_pixel(level, times, 0.2, 0.2))
    unfiltered = simulate_events(frames, times, dvs_preset("ideal"))
    assert len(ev) < len(unfiltered)


def test_leak_events_come_at_the_leak_rate():
    cfg = dvs_preset("ideal", leak_rate_hz=2.0)
    sim = DvsSimulator(cfg, 4, 4)
    frame = np.full((4, 4), 0.3)
    streams = [sim.feed(frame, k * 104_000) for k in range(51)]  # 5.304 s
    ev = Events.concatenate([s[0] for s in streams])
    assert np.all(ev.p == 1)
    for t_p in by_pixel(ev).values():
        t = np.array([t for t, _ in t_p])
        assert np.abs(t - 500_000 * np.arange(1, 11)).max() <= 1


def test_shot_noise_rate_matches_config_within_10_percent(device):
    rate, h, w = 40.0, 32, 32
    cfg = dvs_preset("ideal", shot_noise_rate_hz=rate, seed=7)
    sim = DvsSimulator(cfg, h, w, batch=2, device=device)
    frame = np.full((2, h, w), 0.5)
    out = [sim.feed(frame, k * 20_000) for k in range(51)]  # 1 s
    n = sum(len(o[b]) for o in out for b in range(2))
    expected = rate * 1.0 * h * w * 2
    assert abs(n - expected) < 0.1 * expected
    on = sum(int((o[b].p == 1).sum()) for o in out for b in range(2))
    assert abs(on / n - 0.5) < 0.05


def test_shot_noise_falls_with_brightness():
    cfg = dvs_preset("ideal", shot_noise_rate_hz=40.0, shot_noise_bright_factor=0.25, seed=1)
    sim = DvsSimulator(cfg, 32, 32)
    frame = np.zeros((32, 32))
    frame[:, 16:] = 1.0
    ev = Events.concatenate([sim.feed(frame, k * 20_000)[0] for k in range(51)])
    dark, bright = int((ev.x < 16).sum()), int((ev.x >= 16).sum())
    expected_dark = 40.0 * 512
    assert abs(dark - expected_dark) < 0.1 * expected_dark
    assert abs(bright - 0.25 * expected_dark) < 0.15 * 0.25 * expected_dark


def test_hot_pixels_are_a_fixed_set_firing_at_their_rate():
    cfg = dvs_preset("ideal", hot_pixel_fraction=0.01, hot_pixel_rate_hz=500.0, seed=5)
    sim = DvsSimulator(cfg, 40, 50)
    frame = np.full((40, 50), 0.5)
    ev = Events.concatenate([sim.feed(frame, k * 10_000)[0] for k in range(41)])
    pixels = set(zip(ev.x.tolist(), ev.y.tolist(), strict=True))
    assert len(pixels) == 20 and np.all(ev.p == 1)
    expected = 500.0 * 0.4 * 20
    assert abs(len(ev) - expected) < 0.1 * expected
    sim.reset()
    again = Events.concatenate([sim.feed(frame, k * 10_000)[0] for k in range(41)])
    assert set(zip(again.x.tolist(), again.y.tolist(), strict=True)) == pixels


def test_jitter_spreads_timestamps_with_the_configured_std():
    delta, jitter = 0.3, 20.0
    h, w = 40, 40
    frames = step(0.3, delta, (h, w))
    cfg = dvs_preset("ideal", jitter_us=jitter, seed=2)
    ev = simulate_events(frames, np.array([0, 10_000]), cfg)
    ideal_t = round(0.2 / delta * 10_000)
    assert len(ev) == h * w
    assert np.all(np.diff(ev.t) >= 0) and ev.t.min() >= 0 and ev.t.max() <= 10_000
    assert abs(np.std(ev.t - ideal_t) - jitter) < 0.1 * jitter


def test_threshold_mismatch_varies_counts_and_is_seeded(backend):
    frames = step(0.2, 2.0, (30, 30))
    t = np.array([0, 1_000])
    a, b, c = (simulate_events(frames, t, dvs_preset("clean", seed=seed), backend=backend)
               for seed in (4, 4, 5))
    counts = np.bincount(a.y.astype(int) * 30 + a.x, minlength=900)
    # C ~ N(0.2, 0.02): every count lies within floor(2 / (0.2 ± 5 sigma)), and they differ
    assert counts.min() >= math.floor(2 / 0.3) and counts.max() <= math.floor(2 / 0.1)
    assert len(np.unique(counts)) > 1
    assert np.array_equal(a.t, b.t) and np.array_equal(a.x, b.x)
    assert not (len(a) == len(c) and np.array_equal(a.x, c.x) and np.array_equal(a.t, c.t))


def test_noisy_preset_is_deterministic_and_reset_replays(device):
    rng = np.random.default_rng(0)
    frames = rng.uniform(0, 1, (6, 2, 12, 16))

    def run(sim):
        return [sim.feed(f, 1_000 * k) for k, f in enumerate(frames)]

    sim = DvsSimulator(dvs_preset("noisy", seed=11), 12, 16, batch=2, device=device)
    first = run(sim)
    sim.reset()
    second = run(sim)
    third = run(DvsSimulator(dvs_preset("noisy", seed=12), 12, 16, 2, device))
    for a, b in zip(first, second, strict=True):
        for ea, eb in zip(a, b, strict=True):
            assert all(np.array_equal(getattr(ea, k), getattr(eb, k)) for k in "xytp")
    flat = [e.t.tolist() for o in first for e in o]
    assert flat != [e.t.tolist() for o in third for e in o]


@pytest.mark.parametrize("preset", ["ideal", "clean"])
def test_batch_equals_single_runs(device, backend, preset):
    rng = np.random.default_rng(1)
    frames = rng.uniform(0, 1, (5, 3, 9, 11))
    cfg = dvs_preset(preset, refractory_us=100)
    batched = DvsSimulator(cfg, 9, 11, batch=3, device=device, backend=backend)
    out = [batched.feed(f, 500 * k) for k, f in enumerate(frames)]
    for b in range(3):
        single = DvsSimulator(cfg, 9, 11, device=device, backend=backend)
        for k, f in enumerate(frames):
            one = single.feed(f[b], 500 * k)[0]
            assert all(np.array_equal(getattr(one, a), getattr(out[k][b], a)) for a in "xytp")


def test_chunked_expansion_equals_one_chunk():
    rng = np.random.default_rng(2)
    frames = rng.uniform(0, 1, (4, 10, 10))
    cfg = dvs_preset("ideal", refractory_us=30)
    runs = []
    for chunk in (1 << 22, 7, 1):
        sim = DvsSimulator(cfg, 10, 10, max_chunk_events=chunk, backend="torch")
        runs.append(Events.concatenate([sim.feed(f, 300 * k)[0] for k, f in enumerate(frames)]))
    for r in runs[1:]:
        assert all(np.array_equal(getattr(r, a), getattr(runs[0], a)) for a in "xytp")


@pytest.mark.parametrize("dt", [900, 70_000, 10**10])
def test_output_sorted_typed_and_exact_at_large_times(dt):
    rng = np.random.default_rng(dt % 97)
    t0 = 10**15
    frames = rng.uniform(0, 1, (3, 2, 8, 8))
    sim = DvsSimulator(dvs_preset("noisy", jitter_us=5.0), 8, 8, batch=2)
    out = [sim.feed(f, t0 + k * dt) for k, f in enumerate(frames)]
    for b in range(2):
        ev = Events.concatenate([o[b] for o in out])
        assert len(ev) > 0 and np.all(np.diff(ev.t) >= 0)
        assert ev.t.min() > t0 and ev.t.max() <= t0 + 2 * dt
        assert (ev.x.dtype, ev.y.dtype, ev.t.dtype, ev.p.dtype) == (
            np.int16, np.int16, np.int64, np.int8)


def test_events_at_the_first_frame_time_are_kept(backend):
    # the first crossing sits at s = 0.0004 of a 1000 µs interval: it rounds to t = 0
    frames = step(0.5, 500.0, (1, 1))
    ev = simulate_events(frames, np.array([0, 1_000]), dvs_preset("ideal"), backend=backend)
    assert ev.t[0] == 0 and len(ev) == 2500


def test_first_feed_only_initialises():
    sim = DvsSimulator(dvs_preset("ideal"), 4, 5, batch=2)
    out = sim.feed(np.full((2, 4, 5), 0.5), 0)
    assert [len(e) for e in out] == [0, 0] and out[0].sensor_size == (5, 4)
    assert sim.time_us == 0


@pytest.mark.parametrize(
    "frames, t, message",
    [
        (np.zeros((3, 4)), 10, "shape"),
        (np.zeros((1, 4, 5), np.uint8), 10, "floating point"),
        (np.full((1, 4, 5), np.nan), 10, "NaN"),
        (np.full((1, 4, 5), -0.1), 10, "negative"),
        (np.zeros((1, 4, 5)), 5, "must increase"),
        (np.zeros((1, 4, 5)), 0, "must increase"),
        (np.zeros((1, 4, 5)), 12.5, "integer"),
        ([[0.0]], 20, "torch tensor or numpy"),
    ],
)
def test_bad_input_is_refused_clearly(backend, frames, t, message):
    sim = DvsSimulator(dvs_preset("ideal"), 4, 5, backend=backend)
    sim.feed(np.zeros((4, 5)), 5)
    with pytest.raises(SimulationError, match=message):
        sim.feed(frames, t)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, -0.1])
def test_bad_values_found_by_the_kernels_stop_the_simulator_until_reset(backend, bad):
    sim = DvsSimulator(dvs_preset("ideal"), 4, 5, backend=backend)
    sim.feed(np.full((4, 5), 0.5), 0)
    frame = np.full((4, 5), 0.9)
    frame[2, 3] = bad
    message = "negative" if bad < 0 and np.isfinite(bad) else "NaN or infinite"
    with pytest.raises(SimulationError, match=f"{message}.*t_us=10" if backend == "numba"
                       else message):
        sim.feed(frame, 10)
    if backend == "numba":  # part-way through the frame: refused until reset
        with pytest.raises(SimulationError, match="call reset"):
            sim.feed(np.full((4, 5), 0.9), 20)
        sim.reset()
        sim.feed(np.full((4, 5), 0.5), 0)
    assert len(sim.feed(np.full((4, 5), 0.9), 20)[0]) == 4 * 5 * 2  # ln(0.901/0.501) = 2.9 C


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(pos_threshold=0.0), "pos_threshold must be > 0"),
        (dict(refractory_us=-1), "refractory_us must be >= 0"),
        (dict(hot_pixel_fraction=1.5), "hot_pixel_fraction"),
        (dict(cutoff_hz=float("nan")), "finite"),
        (dict(seed=1.5), "integers"),
    ],
)
def test_bad_config_is_refused(kwargs, message):
    with pytest.raises(SimulationError, match=message):
        DvsConfig(**kwargs)


def test_numba_and_torch_backends_agree():
    pytest.importorskip("numba")
    rng = np.random.default_rng(12)
    frames = rng.uniform(0, 1, (7, 2, 20, 24))
    # 16- and 32-bit sort keys, and an interval too long for the numba counting sort
    times = [0, 300, 1_000, 1_001, 5_000, 70_000, 20_070_000]
    cfg = dvs_preset("clean", refractory_us=150, seed=3)
    sims = [DvsSimulator(cfg, 20, 24, batch=2, backend=b) for b in ("torch", "numba")]
    total = 0
    for f, t in zip(frames, times, strict=True):
        a, b = (s.feed(f, t) for s in sims)
        for ea, eb in zip(a, b, strict=True):
            assert all(np.array_equal(getattr(ea, k), getattr(eb, k)) for k in "xytp")
            total += len(ea)
    assert total > 1000
    with pytest.raises(SimulationError, match="backend 'numba' runs on the CPU without"):
        DvsSimulator(dvs_preset("noisy"), 4, 4, backend="numba")
    with pytest.raises(SimulationError, match="backend must be"):
        DvsSimulator(cfg, 4, 4, backend="cuda")


def test_caller_buffers_are_not_aliased(backend):
    buffer = np.full((3, 4), 0.2)
    sims = [DvsSimulator(dvs_preset("ideal"), 3, 4, backend=backend) for _ in range(2)]
    sims[0].feed(buffer, 0)
    sims[1].feed(buffer.copy(), 0)
    buffer[:] = 0.9  # the caller reuses its buffer for the next frame
    a = sims[0].feed(buffer, 100)[0]
    b = sims[1].feed(buffer.copy(), 100)[0]
    assert len(a) == len(b) == 12 * math.floor(math.log(0.901 / 0.201) / 0.2)
    assert np.array_equal(a.t, b.t)


def test_presets_and_overrides():
    assert dvs_preset("ideal").is_deterministic
    assert not dvs_preset("noisy").is_deterministic
    assert dvs_preset("noisy").cutoff_hz == 30.0 and dvs_preset("clean").sigma_threshold == 0.02
    assert dvs_preset("clean", seed=3).seed == 3
    with pytest.raises(SimulationError, match="unknown DVS preset"):
        dvs_preset("fancy")
    with pytest.raises(SimulationError, match="override"):
        dvs_preset("ideal", colour=1)
    with pytest.raises(SimulationError, match="height"):
        DvsSimulator(dvs_preset("ideal"), 0, 4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_and_cuda_agree_on_the_ideal_preset():
    rng = np.random.default_rng(9)
    frames = rng.uniform(0, 1, (5, 2, 30, 40))
    cfg = dvs_preset("ideal", refractory_us=80, leak_rate_hz=3.0)
    cpu = DvsSimulator(cfg, 30, 40, batch=2, device="cpu")
    gpu = DvsSimulator(cfg, 30, 40, batch=2, device="cuda")
    for k, f in enumerate(frames):
        for a, b in zip(cpu.feed(f, 700 * k), gpu.feed(f, 700 * k), strict=True):
            assert len(a) == len(b)
            assert np.array_equal(a.x, b.x) and np.array_equal(a.p, b.p)
            assert np.abs(a.t - b.t).max(initial=0) <= 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_and_cuda_noise_statistics_agree():
    counts = []
    for device in ("cpu", "cuda"):
        sim = DvsSimulator(dvs_preset("ideal", shot_noise_rate_hz=30.0), 32, 32, device=device)
        counts.append(sum(len(sim.feed(np.full((32, 32), 0.4), 25_000 * k)[0]) for k in range(41)))
    expected = 30.0 * 1024
    assert all(abs(c - expected) < 0.1 * expected for c in counts)
