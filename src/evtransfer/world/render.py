"""Vectorised ray casting of a `Scene`: RGB, semantic label, metric depth and optical flow.

Every pixel ray is intersected with every primitive near the camera (boxes by the slab method,
vertical cylinders and spheres in closed form, the ground plane), the nearest hit wins, so
occlusion is exact. Moving objects are handled in their own frame (ray origin minus velocity ×
time). Colours come from procedural textures in object-local coordinates, lit by a `Lighting`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from evtransfer.world.camera import CameraConfig, Intrinsics, intrinsics, pose, project
from evtransfer.world.scene import (
    BOX,
    BUILDING,
    CAR,
    CYLINDER,
    FENCE,
    LIGHT,
    PERSON,
    ROAD,
    SIDEWALK,
    SIGN,
    SKY,
    SPHERE,
    TERRAIN,
    VEGETATION,
    WALL,
    Scene,
)

_INF = float("inf")
_NEAR_M, _FAR_M = 0.05, 150.0  # primitives beyond _FAR_M are not drawn
_FRAMES_PER_CAST = 8  # frames cast together: amortises per-op overhead, bounds memory


@dataclass
class Lighting:
    """Illumination of a domain. Colours are RGB in [0, 1]; distances in metres."""

    sun_dir: tuple[float, float, float] = (0.4, 0.8, -0.45)  # towards the sun
    ambient: float = 0.45
    diffuse: float = 0.65
    sky_top: tuple[float, float, float] = (0.35, 0.55, 0.90)
    sky_horizon: tuple[float, float, float] = (0.80, 0.85, 0.92)
    exposure: float = 1.0  # > 1 over-exposes: bright regions clip and lose contrast
    headlight: float = 0.0  # night: light from the camera, falling off with distance
    headlight_range_m: float = 12.0
    lit_windows: float = 0.0  # fraction of windows lit from inside (night)
    fog_density: float = 0.0  # 1/m; transmittance exp(-density × depth)
    fog_colour: tuple[float, float, float] = (0.75, 0.76, 0.78)
    rain_streaks: int = 0  # streaks per frame across the image
    texture_seed: int = 0  # changes procedural texture detail between cities


@dataclass
class Render:
    """One batch of frames: rgb (F, 3, H, W) float32 in [0, 1]; label (F, H, W) int64 trainId
    (sky = 10); depth (F, H, W) float32 camera z in metres (0 = sky, invalid); flow (F, 2, H, W)
    float32 forward flow in pixels over `flow_dt_s` (x then y)."""

    rgb: torch.Tensor
    label: torch.Tensor
    depth: torch.Tensor
    flow: torch.Tensor


def _hash(ix: torch.Tensor, iy: torch.Tensor, seed: int) -> torch.Tensor:
    """Uniform [0, 1) values from integer lattice coordinates (int64 wrap-around arithmetic)."""
    h = ix * 73856093 ^ iy * 19349663 ^ (seed * 83492791 + 1)
    h = (h ^ (h >> 13)) * 1274126177
    h = h ^ (h >> 16)
    return (h & 0xFFFF).to(torch.float32) / 65536.0


def _noise(u: torch.Tensor, v: torch.Tensor, seed: int) -> torch.Tensor:
    """Bilinear value noise in [0, 1) with unit lattice spacing."""
    iu, iv = torch.floor(u), torch.floor(v)
    fu, fv = u - iu, v - iv
    fu, fv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)
    iu, iv = iu.to(torch.int64), iv.to(torch.int64)
    a, b = _hash(iu, iv, seed), _hash(iu + 1, iv, seed)
    c, d = _hash(iu, iv + 1, seed), _hash(iu + 1, iv + 1, seed)
    return (a + (b - a) * fu) * (1 - fv) + (c + (d - c) * fu) * fv


def _rays(k: Intrinsics, rot: torch.Tensor) -> torch.Tensor:
    """World ray directions (F, H·W, 3) float64 whose camera z-component is 1."""
    dev = rot.device
    v, u = torch.meshgrid(torch.arange(k.height, device=dev, dtype=torch.float64),
                          torch.arange(k.width, device=dev, dtype=torch.float64), indexing="ij")
    cam = torch.stack([(u + 0.5 - k.cx) / k.fx, -(v + 0.5 - k.cy) / k.fy,
                       torch.ones_like(u)], -1).view(-1, 3)
    return torch.einsum("fij,pj->fpi", rot, cam)


_EDGES = [(a, a | bit) for a in range(8) for bit in (1, 2, 4) if not a & bit]  # 12 box edges


def _screen_rects(sc: Scene, t, centre, rot, k: Intrinsics) -> torch.Tensor:
    """(F, N, 4) int64 pixel rectangles [u0, u1) × [v0, v1) bounding each primitive in each
    frame (times t (F,), camera centre (F, 3) and rotation (F, 3, 3)).

    Each bounding box is clipped by the near plane (its corners in front of the camera plus the
    points where its edges cross the plane), so boxes beside or behind the camera bound only
    what can be seen; those entirely behind it or beyond _FAR_M get an empty rectangle.
    """
    shift = sc.vel.double()[None] * t[:, None, None]
    lo, hi = sc.lo.double()[None] + shift, sc.hi.double()[None] + shift  # (F, N, 3)
    sel = torch.tensor([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)], device=lo.device)
    corners = torch.where(sel.bool(), hi[:, :, None, :], lo[:, :, None, :])  # (F, N, 8, 3)
    q = (corners - centre[:, None, None, :]) @ rot[:, None]  # camera frame, y up
    a, b = (torch.tensor(i, device=q.device) for i in zip(*_EDGES, strict=True))
    qa, qb = q[:, :, a], q[:, :, b]
    za, zb = qa[..., 2], qb[..., 2]
    cross = (za - _NEAR_M) * (zb - _NEAR_M) < 0
    frac = ((_NEAR_M - za) / torch.where(cross, zb - za, torch.ones_like(za))).clamp(0, 1)
    points = torch.cat([q, qa + frac[..., None] * (qb - qa)], 2)  # (F, N, 20, 3)
    valid = torch.cat([q[..., 2] >= _NEAR_M, cross], 2)
    z = points[..., 2].clamp_min(_NEAR_M)
    u = k.fx * points[..., 0] / z + k.cx - 0.5
    v = -k.fy * points[..., 1] / z + k.cy - 0.5
    big = torch.full_like(u, _INF)
    rect = torch.stack([torch.where(valid, u, big).amin(2).floor(),
                        torch.where(valid, u, -big).amax(2).ceil() + 1,
                        torch.where(valid, v, big).amin(2).floor(),
                        torch.where(valid, v, -big).amax(2).ceil() + 1], 2)
    hidden = ~valid.any(2) | (q[..., 2].amin(2) > _FAR_M)
    rect = torch.where(hidden[..., None], torch.zeros_like(rect), rect)
    rect[..., :2] = rect[..., :2].clamp(0, k.width)
    rect[..., 2:] = rect[..., 2:].clamp(0, k.height)
    return rect.long()


def _pairs(rect: torch.Tensor, k: Intrinsics) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All (frame, primitive, pixel) triples inside the rectangles (F, N, 4): the primitive
    index, the frame index and the flat pixel index over all frames."""
    n = rect.shape[1]
    rect = rect.reshape(-1, 4)
    w = (rect[:, 1] - rect[:, 0]).clamp_min(0)
    h = (rect[:, 3] - rect[:, 2]).clamp_min(0)
    area = w * h
    which = torch.repeat_interleave(torch.arange(len(rect), device=rect.device), area)
    start = torch.cumsum(area, 0) - area
    off = torch.arange(len(which), device=rect.device) - start[which]
    px = rect[which, 0] + off % w[which]
    py = rect[which, 2] + off // w[which]
    frame = which // n
    return which % n, frame, frame * (k.width * k.height) + py * k.width + px


def _hit_boxes(g, o, d):
    """Ray/box slab test. g (Q, 6), o, d (Q, 3) -> distance (inf = miss), normal, local."""
    inv = 1.0 / torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
    t0, t1 = (g[:, :3] - o) * inv, (g[:, 3:] - o) * inv
    near, axis = torch.minimum(t0, t1).max(1)
    far = torch.maximum(t0, t1).min(1).values
    s = torch.where((near <= far) & (near > 1e-3), near, torch.full_like(near, _INF))
    normal = torch.zeros_like(o)
    normal.scatter_(1, axis[:, None], -torch.sign(d.gather(1, axis[:, None])))
    return s, normal, o + s.clamp_max(1e6)[:, None] * d - g[:, :3]


def _hit_cylinders(g, o, d):
    """Ray/vertical-cylinder test (side surface only); local = (arc length, height, arc)."""
    px, pz, r = o[:, 0] - g[:, 0], o[:, 2] - g[:, 1], g[:, 2]
    a = d[:, 0] ** 2 + d[:, 2] ** 2
    b = 2 * (px * d[:, 0] + pz * d[:, 2])
    disc = b * b - 4 * a * (px * px + pz * pz - r * r)
    s = (-b - torch.sqrt(disc.clamp_min(0))) / (2 * a.clamp_min(1e-12))
    y = o[:, 1] + s * d[:, 1]
    hit = (disc > 0) & (s > 1e-3) & (y >= g[:, 3]) & (y <= g[:, 4])
    s = torch.where(hit, s, torch.full_like(s, _INF))
    nx, nz = px + s.clamp_max(1e6) * d[:, 0], pz + s.clamp_max(1e6) * d[:, 2]
    normal = torch.stack([nx, torch.zeros_like(nx), nz], 1) / r[:, None]
    arc = torch.atan2(nz, nx) * r
    return s, normal, torch.stack([arc, y, arc], 1)


def _hit_spheres(g, o, d):
    pc = o - g[:, :3]
    a = (d * d).sum(1)
    b = 2 * (pc * d).sum(1)
    disc = b * b - 4 * a * ((pc * pc).sum(1) - g[:, 3] ** 2)
    s = (-b - torch.sqrt(disc.clamp_min(0))) / (2 * a)
    s = torch.where((disc > 0) & (s > 1e-3), s, torch.full_like(s, _INF))
    local = pc + s.clamp_max(1e6)[:, None] * d
    return s, local / g[:, 3:4], local


def _cast_objects(sc: Scene, t, centre, d, prim, frame, pix):
    """Nearest object hit per pixel: distance (P,) and the winning pair's fields."""
    n_pix = len(d)
    g = sc.geom.double()[prim]
    o = centre[frame] - sc.vel.double()[prim] * t[frame, None]  # ray origin in the object frame
    dd = d[pix]
    s = torch.full((len(prim),), _INF, dtype=torch.float64, device=d.device)
    normal = torch.zeros_like(dd)
    local = torch.zeros_like(dd)
    kind = sc.kind[prim]
    for code, fn in ((BOX, _hit_boxes), (CYLINDER, _hit_cylinders), (SPHERE, _hit_spheres)):
        m = (kind == code).nonzero().squeeze(1)
        if len(m):
            s[m], normal[m], local[m] = fn(g[m], o[m], dd[m])
    s_min = torch.full((n_pix,), _INF, dtype=torch.float64, device=d.device)
    s_min = s_min.scatter_reduce(0, pix, s, "amin")
    cand = torch.isfinite(s) & (s == s_min[pix])
    win = torch.full((n_pix,), -1, dtype=torch.int64, device=d.device)
    win = win.scatter_reduce(0, pix[cand], cand.nonzero().squeeze(1), "amax")
    return s_min, win, normal, local


def _cast(sc: Scene, t, centre, rot, d, k: Intrinsics) -> dict:
    """Hit records of the F·P rays of F frames (directions d (F, P, 3)): the ground plane,
    then the nearest object."""
    n_frames, n_px = d.shape[:2]
    dev = d.device
    o = centre.repeat_interleave(n_px, 0)
    d = d.reshape(-1, 3)
    s = torch.where(d[:, 1] < -1e-9, -o[:, 1] / d[:, 1], torch.full_like(d[:, 1], _INF))
    p = o + s.clamp_max(1e6)[:, None] * d
    ax = p[:, 0].abs()
    cfg = sc.config
    ground = torch.where(ax < cfg.road_half_width, 0,
                         torch.where(ax < cfg.road_half_width + cfg.sidewalk_width, 1, 2))
    pal = cfg.palette
    colours = torch.tensor([pal.road, pal.sidewalk, pal.terrain], device=dev)
    best = {
        "s": s,
        "cls": torch.tensor([ROAD, SIDEWALK, TERRAIN], device=dev)[ground],
        "alb": colours[ground],
        "obj": torch.full((len(d),), -1, dtype=torch.int64, device=dev),
        "vel": torch.zeros_like(d),
        "normal": torch.zeros_like(d).index_fill_(1, torch.tensor([1], device=dev), 1.0),
        "local": p,
    }
    best["cls"] = torch.where(torch.isinf(s), SKY, best["cls"])
    if len(sc):
        prim, frame, pix = _pairs(_screen_rects(sc, t, centre, rot, k), k)
        s_obj, win, normal, local = _cast_objects(sc, t, centre, d, prim, frame, pix)
        take = (win >= 0) & (s_obj < s)
        rows, w = take.nonzero().squeeze(1), win[take]
        n = prim[w]
        best["s"] = torch.where(take, s_obj, s)
        best["cls"][rows] = sc.cls[n]
        best["alb"][rows] = sc.albedo[n]
        best["obj"][rows] = n
        best["vel"][rows] = sc.vel.double()[n]
        best["normal"][rows] = normal[w]
        best["local"][rows] = local[w]
    return best


def _texture(best, sc: Scene, light: Lighting) -> torch.Tensor:
    """Albedo (R, 3) with procedural detail per class, in object-local coordinates."""
    cls, loc, n, alb = best["cls"], best["local"].float(), best["normal"].float(), best["alb"]
    seed = light.texture_seed
    # surface coordinates: the two axes orthogonal to the dominant normal direction
    along = torch.where(n[:, 0].abs() > 0.5, loc[:, 2], loc[:, 0])
    up = torch.where(n[:, 1].abs() > 0.5, loc[:, 2], loc[:, 1])
    obj = best["obj"].clamp_min(0)
    f = torch.ones_like(along)
    fine = _noise(along * 6, up * 6, seed)
    coarse = _noise(along * 0.7, up * 0.7, seed + 1)
    road = cls == ROAD
    x, z = loc[:, 0], loc[:, 2]
    hw = sc.config.road_half_width
    marking = road & (((x.abs() < 0.08) & (torch.frac(z / 9.0) < 0.45))
                      | ((x.abs() - (hw - 0.35)).abs() < 0.08))
    f = torch.where(road, 0.85 + 0.18 * fine + 0.12 * coarse, f)
    side = cls == SIDEWALK
    tiles = (torch.frac(x / 0.6).abs() < 0.06) | (torch.frac(z / 0.6).abs() < 0.06)
    f = torch.where(side, torch.where(tiles, 0.8, 0.92 + 0.12 * fine), f)
    f = torch.where(cls == TERRAIN, 0.6 + 0.5 * fine + 0.3 * coarse, f)
    f = torch.where(cls == VEGETATION, 0.6 + 0.6 * _noise(along * 9, up * 9, seed + 2), f)
    f = torch.where(cls == WALL, torch.where(torch.frac(up / 0.5) < 0.06, 0.7, 0.9 + 0.2 * fine), f)
    f = torch.where(cls == FENCE, torch.where(torch.frac(along / 0.25) < 0.3, 0.55, 1.0), f)
    f = torch.where(cls == PERSON, torch.where(loc[:, 1] < 0.9, 0.55, 1.0), f)
    f = torch.where((cls == SIGN) & ((up - up.floor() - 0.5).abs() < 0.08), 2.5, f)
    f = torch.where(cls == LIGHT, torch.where(torch.frac(up / 0.33) < 0.45, 3.0, 1.0), f)
    out = alb * f[:, None]
    # façade windows on building faces that look along X or Z
    building = (cls == BUILDING) & (n[:, 1].abs() < 0.5)
    win = building & (torch.frac(along / 3.0) > 0.25) & (torch.frac(along / 3.0) < 0.7) & (
        torch.frac(up / 3.2) > 0.3) & (torch.frac(up / 3.2) < 0.8) & (up > 1.5)
    win_colour = torch.tensor(sc.config.palette.window, device=out.device)
    lit = _hash(torch.floor(along / 3.0).long() + 7919 * obj, torch.floor(up / 3.2).long(), seed)
    lit = (lit < light.lit_windows)[:, None]
    window = torch.where(lit, torch.tensor([1.0, 0.85, 0.5], device=out.device), win_colour)
    out = torch.where(win[:, None], window * (0.85 + 0.3 * fine[:, None]), out)
    out = torch.where(building[:, None] & ~win[:, None], out * (0.9 + 0.2 * coarse[:, None]), out)
    mark = torch.tensor(sc.config.palette.marking, device=out.device)
    out = torch.where(marking[:, None], mark, out)
    car = cls == CAR
    return torch.where(car[:, None], out * (0.92 + 0.16 * fine[:, None]), out).clamp(0, 1), lit


def _shade(best, d, sc: Scene, light: Lighting) -> torch.Tensor:
    dev = d.device
    albedo, lit = _texture(best, sc, light)
    sun = torch.tensor(light.sun_dir, device=dev)
    sun = sun / sun.norm()
    lam = (best["normal"].float() * sun).sum(-1).clamp_min(0)
    s = best["s"].float()
    head = light.headlight / (1 + (s / light.headlight_range_m) ** 2)
    rgb = albedo * (light.ambient + light.diffuse * lam + head)[:, None]
    if light.lit_windows > 0:
        rgb = torch.where(lit & (best["cls"] == BUILDING)[:, None], albedo, rgb)
    dn = (d * torch.rsqrt((d * d).sum(-1, keepdim=True))).float()
    elev = dn[:, 1].clamp(0, 1)[:, None] ** 0.5
    top, hor = torch.tensor(light.sky_top, device=dev), torch.tensor(light.sky_horizon, device=dev)
    sky = hor + (top - hor) * elev
    is_sky = torch.isinf(s)
    rgb = torch.where(is_sky[:, None], sky, rgb)
    if light.fog_density > 0:
        trans = torch.exp(-light.fog_density * torch.where(is_sky, torch.full_like(s, 1e4), s))
        fog = torch.tensor(light.fog_colour, device=dev)
        rgb = rgb * trans[:, None] + fog * (1 - trans[:, None])
    return (rgb * light.exposure).clamp(0, 1)


def _rain(rgb: torch.Tensor, t_s: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Bright slanted streaks, re-drawn every 10 ms and falling fast, added to (F, 3, H, W)."""
    f, _, h, w = rgb.shape
    dev = rgb.device
    slot = torch.floor(t_s * 100).long()
    k = torch.arange(n, device=dev)
    cx = _hash(slot[:, None], k[None], seed + 11) * w
    cy = _hash(slot[:, None], k[None], seed + 12) * h
    length = 0.06 * h
    v, u = torch.meshgrid(torch.arange(h, device=dev), torch.arange(w, device=dev), indexing="ij")
    du = u[None, None].float() - cx[..., None, None] - 0.15 * (v[None, None] - cy[..., None, None])
    dv = v[None, None].float() - cy[..., None, None]
    on = ((du.abs() < 0.6) & (dv.abs() < length)).any(1)
    return torch.where(on[:, None], (rgb * 0.6 + 0.45).clamp(0, 1), rgb)


def render(scene: Scene, camera: CameraConfig, light: Lighting, t_s: torch.Tensor,
           width: int, height: int, flow_dt_s: float = 0.05) -> Render:
    """Render frames at times t_s (F,) float64 seconds at `width` × `height` pixels.

    The scene's tensors must be on the device of `t_s`. Flow is the forward displacement of
    each visible surface point from t to t + flow_dt_s (moving objects included).
    """
    if t_s.dim() != 1:
        raise ValueError(f"t_s must be (F,), got shape {tuple(t_s.shape)}")
    k = intrinsics(camera, width, height)
    t_s = t_s.to(torch.float64)
    centre, rot = pose(camera, t_s)
    centre2, rot2 = pose(camera, t_s + flow_dt_s)
    dirs = _rays(k, rot)
    dev = t_s.device
    v, u = torch.meshgrid(torch.arange(height, device=dev, dtype=torch.float64),
                          torch.arange(width, device=dev, dtype=torch.float64), indexing="ij")
    grid = torch.stack([u, v], -1)
    rgbs, labels, depths, flows = [], [], [], []
    for f0 in range(0, len(t_s), _FRAMES_PER_CAST):
        sl = slice(f0, f0 + _FRAMES_PER_CAST)
        n = len(t_s[sl])
        d = dirs[sl]
        best = _cast(scene, t_s[sl], centre[sl], rot[sl], d, k)
        d = d.reshape(-1, 3)
        rgbs.append(_shade(best, d, scene, light).view(n, height, width, 3))
        labels.append(best["cls"].view(n, height, width))
        s = best["s"]
        sky = torch.isinf(s)
        depths.append(torch.where(sky, torch.zeros_like(s), s).view(n, height, width))
        # forward flow: move each hit point with its object, project at t + dt; the sky is at
        # infinity, so only the rotation moves it
        c1 = centre[sl].repeat_interleave(width * height, 0)
        c2 = centre2[sl].repeat_interleave(width * height, 0)
        point = c1 + s.clamp_max(1e6)[:, None] * d + best["vel"] * flow_dt_s
        far = c2 + 1e7 * d * torch.rsqrt((d * d).sum(-1, keepdim=True))
        target = torch.where(sky[:, None], far, point).view(n, -1, 3)
        uv, _ = project(target, centre2[sl], rot2[sl], k)
        flows.append(uv.view(n, height, width, 2) - grid)
    rgb = torch.cat(rgbs).permute(0, 3, 1, 2).contiguous()
    if light.rain_streaks:
        rgb = _rain(rgb, t_s, light.rain_streaks, light.texture_seed)
    return Render(rgb.float(), torch.cat(labels), torch.cat(depths).float(),
                  torch.cat(flows).permute(0, 3, 1, 2).float().contiguous())
