import torch

from evtransfer.data.synthetic import SyntheticConfig, synthesize
from evtransfer.data.world import WorldSource
from evtransfer.simulate import luminance


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
