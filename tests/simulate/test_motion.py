import math

import numpy as np
import pytest
import torch

from evtransfer.events import Events
from evtransfer.simulate import (
    SimulationError,
    dvs_preset,
    frame_times,
    interpolate_frames,
    pose_homography,
    pseudo_video,
    random_motion,
    simulate_events,
    warp,
)


def blocks_label(h: int = 30, w: int = 40) -> np.ndarray:
    """A label of 5 × 5-pixel blocks with classes 0..6."""
    y, x = np.mgrid[0:h, 0:w]
    return ((y // 5) * 3 + (x // 5)) % 7


def numpy_source(h_mat: np.ndarray, height: int, width: int):
    """Source coordinates of every output pixel under h_mat (frame -> source), in float64."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    pts = np.stack([x.ravel(), y.ravel(), np.ones(x.size)])
    src = h_mat @ pts
    return (src[0] / src[2]).reshape(height, width), (src[1] / src[2]).reshape(height, width)


def test_identity_motion_is_identity(device):
    rng = np.random.default_rng(0)
    img = torch.from_numpy(rng.uniform(0, 1, (3, 12, 17))).to(device)
    label = torch.from_numpy(blocks_label(12, 17).astype(np.uint8)).to(device)
    depth = torch.from_numpy(rng.uniform(1, 50, (12, 17))).to(device)
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(warp(img, eye), img, atol=1e-12)
    assert torch.equal(warp(label, eye, kind="label"), label)
    assert torch.allclose(warp(depth, eye, kind="depth"), depth, atol=1e-9)


def test_label_warp_matches_numpy_nearest_reference():
    label = blocks_label()
    motion = random_motion(30, 40, 5, fps=100.0, generator=3, max_rotation_deg=20,
                           perspective=0.2)
    out = warp(torch.from_numpy(label), motion.homographies, kind="label").numpy()
    for k in range(5):
        sx, sy = numpy_source(motion.homographies[k].numpy(), 30, 40)
        ix, iy = np.rint(sx).astype(int), np.rint(sy).astype(int)
        inside = (ix >= 0) & (ix < 40) & (iy >= 0) & (iy < 30)
        expected = np.where(inside, label[iy.clip(0, 29), ix.clip(0, 39)], 255)
        ties = (np.abs(sx % 1 - 0.5) < 1e-6) | (np.abs(sy % 1 - 0.5) < 1e-6)
        assert np.array_equal(out[k][~ties], expected[~ties])
    assert (out == 255).any()


def test_image_and_label_are_warped_by_the_same_motion():
    label = blocks_label()
    values = np.linspace(0.1, 0.9, 7)
    video = pseudo_video(values[label], label=label.astype(np.uint8),
                         depth=1.0 + label.astype(np.float64), n_frames=6, fps=200.0,
                         generator=5, max_rotation_deg=15)
    lab = video.labels.numpy().astype(int)
    for k in range(6):
        # away from class borders and the view's edge the bilinear image equals the class value
        padded = np.pad(lab[k], 1, constant_values=-1)
        stack = np.stack([padded[1 + dy:31 + dy, 1 + dx:41 + dx]
                          for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
        interior = (stack == lab[k]).all(axis=0) & (lab[k] != 255)
        assert interior.sum() > 300
        frame = video.frames[k].numpy()
        assert np.allclose(frame[interior], values[lab[k][interior]], atol=1e-9)
        depth = video.depths[k].numpy()
        assert np.allclose(depth[interior], 1.0 + lab[k][interior], atol=1e-9)
        assert np.all(depth[lab[k] == 255] == 0)
    assert video.frames.shape == (6, 30, 40) and video.t_us.tolist() == [0, 5_000, 10_000,
                                                                         15_000, 20_000, 25_000]


def test_depth_is_invalid_next_to_holes_and_bilinear_elsewhere():
    rng = np.random.default_rng(1)
    depth = rng.uniform(2, 9, (20, 25))
    depth[8:11, 10:13] = 0.0
    h_mat = pose_homography(20, 25, 1.3, -0.6, 0.05, 1.02)
    out = warp(torch.from_numpy(depth), h_mat, kind="depth").numpy()
    sx, sy = numpy_source(h_mat.numpy(), 20, 25)
    x0, y0 = np.floor(sx).astype(int), np.floor(sy).astype(int)
    fx, fy = sx - x0, sy - y0
    inside = (x0 >= 0) & (x0 + 1 < 25) & (y0 >= 0) & (y0 + 1 < 20)
    xc, yc = x0.clip(0, 23), y0.clip(0, 18)
    corners = [depth[yc, xc], depth[yc, xc + 1], depth[yc + 1, xc], depth[yc + 1, xc + 1]]
    valid = inside & np.all([c > 0 for c in corners], axis=0)
    expected = ((1 - fx) * (1 - fy) * corners[0] + fx * (1 - fy) * corners[1]
                + (1 - fx) * fy * corners[2] + fx * fy * corners[3])
    assert np.allclose(out[valid], expected[valid], atol=1e-9)
    assert np.all(out[~valid] == 0) and (~valid).sum() > 9


def test_random_motion_starts_at_identity_and_moves_linearly():
    motion = random_motion(48, 64, 9, duration_us=80_000, generator=7, max_translation=0.2)
    hs = motion.homographies.numpy()
    assert np.allclose(hs[0], np.eye(3))
    centre = np.array([31.5, 23.5, 1.0])
    shifts = np.array([(h @ centre)[:2] / (h @ centre)[2] - centre[:2] for h in hs])
    assert np.allclose(shifts, np.linspace(0, 1, 9)[:, None] * shifts[-1], atol=1e-9)
    assert abs(shifts[-1, 0]) <= 0.2 * 64 and abs(shifts[-1, 1]) <= 0.2 * 48
    assert motion.t_us.tolist() == [10_000 * k for k in range(9)]
    same = random_motion(48, 64, 9, duration_us=80_000, generator=7, max_translation=0.2)
    other = random_motion(48, 64, 9, duration_us=80_000, generator=8, max_translation=0.2)
    assert torch.equal(same.homographies, motion.homographies)
    assert not torch.equal(other.homographies, motion.homographies)


def test_pose_homography_rotates_about_the_centre():
    h_mat = pose_homography(11, 21, 0.0, 0.0, math.pi / 2, 1.0).numpy()
    centre = h_mat @ np.array([10.0, 5.0, 1.0])
    assert np.allclose(centre, [10.0, 5.0, 1.0])
    assert np.allclose(h_mat @ np.array([11.0, 5.0, 1.0]), [10.0, 6.0, 1.0])


def test_frame_times_and_their_errors():
    assert frame_times(4, fps=3.0, t0_us=5).tolist() == [5, 333_338, 666_672, 1_000_005]
    with pytest.raises(SimulationError, match="exactly one"):
        frame_times(3)
    with pytest.raises(SimulationError, match="repeat"):
        frame_times(10, duration_us=3)
    with pytest.raises(SimulationError, match="positive"):
        frame_times(0, fps=1.0)


def test_interpolation_keeps_originals_and_is_log_linear():
    rng = np.random.default_rng(2)
    frames = torch.from_numpy(rng.uniform(0, 1, (3, 4, 5)))
    t = torch.tensor([0, 1_000, 1_900])
    out, ts = interpolate_frames(frames, t, factor=4)
    assert ts.tolist() == [0, 250, 500, 750, 1_000, 1_225, 1_450, 1_675, 1_900]
    assert torch.equal(out[0], frames[0]) and torch.equal(out[4], frames[1])
    mid = np.exp(0.5 * (np.log(frames[0].numpy() + 1e-3) + np.log(frames[1].numpy() + 1e-3)))
    assert np.allclose(out[2].numpy(), mid - 1e-3, atol=1e-12)
    lin, _ = interpolate_frames(frames, t, factor=4, mode="linear")
    assert np.allclose(lin[1].numpy(), 0.75 * frames[0].numpy() + 0.25 * frames[1].numpy())
    _, by_rate = interpolate_frames(frames, t, target_rate_hz=2_000.0)
    assert by_rate.tolist() == [0, 500, 1_000, 1_450, 1_900]


def test_interpolation_is_pluggable():
    seen = []

    def hold_first(f0, f1, alphas):
        seen.append(alphas.tolist())
        return f0.expand(len(alphas), *f0.shape).clone()

    frames = torch.rand(2, 3, 3, dtype=torch.float64)
    out, ts = interpolate_frames(frames, torch.tensor([0, 30]), factor=3, mode=hold_first)
    assert seen == [[1 / 3, 2 / 3]] and torch.equal(out[2], frames[0]) and len(ts) == 4
    with pytest.raises(SimulationError, match="interpolator returned"):
        interpolate_frames(frames, torch.tensor([0, 30]), factor=3,
                           mode=lambda f0, f1, a: f0)
    with pytest.raises(SimulationError, match="closer than 1 µs"):
        interpolate_frames(frames, torch.tensor([0, 2]), factor=3)
    with pytest.raises(SimulationError, match="mode"):
        interpolate_frames(frames, torch.tensor([0, 30]), factor=3, mode="cubic")


def test_log_linear_interpolation_leaves_ideal_events_unchanged():
    rng = np.random.default_rng(4)
    frames = torch.from_numpy(rng.uniform(0.01, 1, (4, 6, 7)))
    t = torch.tensor([0, 4_000, 8_000, 12_000])
    coarse = simulate_events(frames, t, dvs_preset("ideal"))
    fine_frames, fine_t = interpolate_frames(frames, t, factor=8)
    fine = simulate_events(fine_frames, fine_t, dvs_preset("ideal"))
    assert len(fine) == len(coarse) > 50
    key = lambda e: np.lexsort((e.t, e.y, e.x))  # noqa: E731
    a, b = key(coarse), key(fine)
    assert np.array_equal(coarse.x[a], fine.x[b]) and np.array_equal(coarse.p[a], fine.p[b])
    assert np.abs(coarse.t[a] - fine.t[b]).max() <= 1
    assert isinstance(fine, Events)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: warp(np.zeros((4, 4)), np.eye(2)), "homographies"),
        (lambda: warp(np.zeros((4, 4), np.float32), np.eye(3), kind="label"), "integer"),
        (lambda: warp(np.zeros((4, 4), np.int64), np.eye(3)), "floating"),
        (lambda: warp(np.zeros((2, 4, 4)), np.eye(3), kind="depth"), r"\(H, W\)"),
        (lambda: warp(np.zeros((4, 4)), np.eye(3), kind="flow"), "kind"),
        (lambda: random_motion(4, 4, 3, fps=10.0, max_scale=1.5), "max_scale"),
        (lambda: pseudo_video(np.zeros((4, 4)), np.zeros((3, 3), np.uint8), n_frames=2,
                              fps=10.0), "label shape"),
    ],
)
def test_bad_motion_input_is_refused(call, message):
    with pytest.raises(SimulationError, match=message):
        call()
