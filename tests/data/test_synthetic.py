import torch

from evtransfer.data.synthetic import SensorRandomization, SyntheticConfig, synthesize
from evtransfer.data.world import WorldSource
from evtransfer.simulate import dvs_preset, luminance


def test_motion_windows_are_labeled_and_inside_the_window(tiny_world):
    source = WorldSource(tiny_world)
    cfg = SyntheticConfig(frames=9, window_us=40_000)
    subset = torch.utils.data.Subset(source, range(6))
    syn = synthesize(subset, cfg, progress=False)
    assert len(syn) == 6 and syn.labels.shape == (6, *source[0]["label"].shape)
    for ev in syn.events:
        assert len(ev) > 0 and ev.t.min() > 0 and ev.t.max() <= 40_000
    # the window's last frame is the still warped by the end pose; with motion some pixels
    # leave the view (ignore) but most keep their class
    kept = (syn.labels != 255).float().mean()
    assert 0.5 < kept < 1.0
    again = synthesize(subset, cfg, progress=False)
    assert all(torch.equal(torch.from_numpy(a.t), torch.from_numpy(b.t))
               for a, b in zip(syn.events, again.events, strict=True))


def test_video_windows_lie_between_consecutive_frames(tiny_world):
    source = WorldSource(tiny_world)
    syn = synthesize(source, SyntheticConfig(mode="video", video_factor=4), progress=False)
    assert len(syn) == len(source) - 1  # one sequence in the tiny world
    t = [source[i]["t_us"] for i in range(len(source))]
    for k, ev in enumerate(syn.events[:5], start=1):
        assert len(ev) == 0 or (ev.t.min() > t[k - 1] and ev.t.max() <= t[k])
    torch.testing.assert_close(syn.images[0], luminance(source[1]["rgb"]))


def test_randomised_sensor_draws_inside_its_ranges_and_leaves_zero_ranges_alone():
    rand = SensorRandomization(enabled=True, cutoff_hz=(0.0, 0.0), brightness=(0.2, 0.5))
    base = dvs_preset("clean", cutoff_hz=7.0)
    draws = [rand.sample(base, torch.Generator().manual_seed(s)) for s in range(20)]
    for dvs, brightness in draws:
        assert 0.15 <= dvs.pos_threshold <= 0.5 and 0.15 <= dvs.neg_threshold <= 0.5
        assert 0 <= dvs.shot_noise_rate_hz <= 5 and isinstance(dvs.refractory_us, int)
        assert dvs.cutoff_hz == 7.0 and 0.2 <= brightness <= 0.5
    assert len({d.pos_threshold for d, _ in draws}) == 20
    assert any(d.pos_threshold != d.neg_threshold for d, _ in draws)  # drawn independently


def test_randomised_windows_differ_per_batch_and_repeat_per_seed(tiny_world):
    subset = torch.utils.data.Subset(WorldSource(tiny_world), range(4))
    fixed = SyntheticConfig(frames=9, batch=2)
    rand = SyntheticConfig(frames=9, batch=2, randomize=SensorRandomization(
        enabled=True, threshold=(0.1, 0.6), brightness=(1.0, 1.0)))
    a, b = (synthesize(subset, c, progress=False) for c in (fixed, rand))
    ratios = [len(r) / len(f) for f, r in zip(a.events, b.events, strict=True)]
    assert abs(ratios[1] / ratios[2] - 1) > 0.1  # items 1 and 2 lie in two batches
    torch.testing.assert_close(a.images, b.images)  # the stored intensity is the scene's own
    again = synthesize(subset, rand, progress=False)
    assert [len(e) for e in again.events] == [len(e) for e in b.events]
