import numpy as np
import pytest
import torch

from evtransfer.world.camera import CameraConfig, intrinsics
from evtransfer.world.domains import preset
from evtransfer.world.render import Lighting, render
from evtransfer.world.scene import CAR, PERSON, ROAD, SceneConfig, generate_scene

STEADY = CameraConfig(yaw_amp_deg=0.0, pitch_amp_deg=0.0, lateral_amp_m=0.0)


def test_scene_is_a_function_of_the_seed():
    a, b, c = (generate_scene(SceneConfig(length_m=120), s) for s in (1, 1, 2))
    assert torch.equal(a.geom, b.geom) and torch.equal(a.albedo, b.albedo)
    assert not (a.geom.shape == c.geom.shape and torch.equal(a.geom, c.geom))


def test_road_depth_matches_the_ground_plane_formula():
    # a level camera at height h sees the ground at row v with z-depth fy * h / (v + 0.5 - cy)
    scene = generate_scene(SceneConfig(length_m=150), 0)
    w, h = 96, 72
    r = render(scene, STEADY, Lighting(), torch.tensor([0.0], dtype=torch.float64), w, h)
    k = intrinsics(STEADY, w, h)
    rows = torch.arange(h, dtype=torch.float64)[:, None].expand(h, w)
    expected = k.fy * STEADY.height_m / (rows + 0.5 - k.cy)
    road = r.label[0] == ROAD
    assert road.sum() > 500
    np.testing.assert_allclose(r.depth[0][road].double(), expected[road], rtol=1e-5)


def test_forward_translation_flow_on_the_road():
    # pure forward motion by d: a ground point at depth z moves to depth z - d, so its pixel
    # offset from the principal point scales by z / (z - d)
    scene = generate_scene(SceneConfig(length_m=150, moving_cars_per_100m=0), 3)
    w, h, dt = 96, 72, 0.05
    r = render(scene, STEADY, Lighting(), torch.tensor([0.0], dtype=torch.float64), w, h,
               flow_dt_s=dt)
    k = intrinsics(STEADY, w, h)
    d = STEADY.speed_mps * dt
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64),
                          torch.arange(w, dtype=torch.float64), indexing="ij")
    z = r.depth[0].double()
    scale = z / (z - d)
    fu = (u + 0.5 - k.cx) * (scale - 1)
    fv = (v + 0.5 - k.cy) * (scale - 1)
    road = r.label[0] == ROAD
    np.testing.assert_allclose(r.flow[0, 0][road].double(), fu[road], atol=1e-3)
    np.testing.assert_allclose(r.flow[0, 1][road].double(), fv[road], atol=1e-3)


def test_flow_and_depth_agree_with_the_next_render():
    # an independent render at t + dt, sampled where the flow says each pixel went, shows the
    # same class and the depth the moved point should have (up to occlusions and edges)
    cfg = preset("tiny")
    scene = generate_scene(cfg.source.scene, 4)
    cam, dt = cfg.source.camera, 0.02
    t = torch.tensor([1.0, 1.0 + dt], dtype=torch.float64)
    r = render(scene, cam, Lighting(), t, 128, 96, flow_dt_s=dt)
    v, u = torch.meshgrid(torch.arange(96), torch.arange(128), indexing="ij")
    u2 = (u + r.flow[0, 0]).round().long()
    v2 = (v + r.flow[0, 1]).round().long()
    inside = (u2 >= 0) & (u2 < 128) & (v2 >= 0) & (v2 < 96)
    same = r.label[1][v2.clamp(0, 95), u2.clamp(0, 127)] == r.label[0]
    assert same[inside].float().mean() > 0.93
    ratio = r.depth[1][v2.clamp(0, 95), u2.clamp(0, 127)] / r.depth[0].clamp_min(1e-6)
    valid = inside & same & (r.depth[0] > 0) & (r.depth[0] < 40)
    # moving forward, every visible point gets nearer, by at most speed × dt
    assert (ratio[valid] < 1.0 + 1e-3).float().mean() > 0.9
    near = r.depth[0][valid] - r.depth[1][v2.clamp(0, 95), u2.clamp(0, 127)][valid]
    assert near.median() == pytest.approx(cam.speed_mps * dt, rel=0.35)


def test_moving_objects_move_between_frames():
    cfg = SceneConfig(length_m=120, moving_cars_per_100m=20, persons_per_100m=40)
    scene = generate_scene(cfg, 5)
    moving = scene.vel.abs().sum(1) > 0
    assert moving.any() and set(scene.cls[moving].tolist()) <= {CAR, PERSON}


@pytest.mark.parametrize("domain", ["source", "target"])
def test_small_world_classes_are_all_present(domain):
    # DSEC-11 view over every sequence of the small preset: no class below 0.5 % of pixels
    from evtransfer.io.images import TRAINID_TO_DSEC11
    from evtransfer.world.build import sequence_setup

    cfg = preset("small")
    dom = getattr(cfg, domain)
    counts = np.zeros(11)
    for i in range(dom.sequences):
        scene, camera, light = sequence_setup(dom, cfg.seed, domain, i)
        t = torch.linspace(0.1, dom.duration_s, 5, dtype=torch.float64)
        r = render(scene, camera, light, t, cfg.width, cfg.height)
        labels = TRAINID_TO_DSEC11[r.label.numpy().astype(np.uint8)]
        counts += np.bincount(labels.ravel(), minlength=256)[:11]
    share = counts / counts.sum()
    assert share.min() >= 0.005, dict(enumerate(np.round(share * 100, 2)))
