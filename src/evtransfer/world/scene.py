"""Procedural street scenes: a long straight street lined with lots, street furniture and traffic.

A scene is a set of primitives in world coordinates (metres; X right, Y up, Z along the street):
axis-aligned boxes, vertical cylinders and spheres, each with a class (a Cityscapes trainId), an
albedo, a velocity (m/s; zero for static objects) and an id for per-object texture variation.
The ground plane Y = 0 (road, sidewalk, terrain) and the sky are implicit. Everything is a pure
function of the config and seed, and objects move linearly, so the scene is exact at any time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

# Cityscapes trainIds used by the world (the 19-class label space; DSEC-11 / DDD17-6 are views).
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN = 0, 1, 2, 3, 4, 5, 6, 7
VEGETATION, TERRAIN, SKY, PERSON, CAR = 8, 9, 10, 11, 13


@dataclass
class Palette:
    """Base albedos (RGB in [0, 1]) of a city style; each object jitters around its class colour."""

    road: tuple[float, float, float] = (0.33, 0.33, 0.35)  # unpublished: our choice (all colours)
    sidewalk: tuple[float, float, float] = (0.62, 0.60, 0.56)
    terrain: tuple[float, float, float] = (0.45, 0.52, 0.25)
    marking: tuple[float, float, float] = (0.92, 0.92, 0.88)
    buildings: list[tuple[float, float, float]] = field(
        default_factory=lambda: [(0.72, 0.62, 0.50), (0.55, 0.50, 0.48), (0.80, 0.78, 0.72),
                                 (0.60, 0.40, 0.32)]
    )
    window: tuple[float, float, float] = (0.18, 0.22, 0.28)
    wall: tuple[float, float, float] = (0.58, 0.56, 0.52)
    fence: tuple[float, float, float] = (0.45, 0.36, 0.26)
    pole: tuple[float, float, float] = (0.40, 0.41, 0.43)
    sign: list[tuple[float, float, float]] = field(
        default_factory=lambda: [(0.80, 0.10, 0.10), (0.10, 0.25, 0.75), (0.90, 0.75, 0.10)]
    )
    light: tuple[float, float, float] = (0.12, 0.12, 0.12)
    vegetation: tuple[float, float, float] = (0.20, 0.42, 0.15)
    cars: list[tuple[float, float, float]] = field(
        default_factory=lambda: [(0.75, 0.10, 0.10), (0.15, 0.20, 0.60), (0.85, 0.85, 0.85),
                                 (0.10, 0.10, 0.10), (0.55, 0.55, 0.58)]
    )
    clothes: list[tuple[float, float, float]] = field(
        default_factory=lambda: [(0.20, 0.20, 0.45), (0.60, 0.15, 0.15), (0.15, 0.15, 0.15),
                                 (0.80, 0.70, 0.40)]
    )


@dataclass
class SceneConfig:
    """Street layout and object mix. Lengths in metres, speeds in m/s, densities per metre."""

    length_m: float = 400.0  # street length generated ahead of the start
    road_half_width: float = 5.0  # two lanes each way would be wider; one lane each way here
    sidewalk_width: float = 3.0
    lot_length: tuple[float, float] = (8.0, 22.0)
    # probabilities of a lot's type: building, wall, fence, hedge, park (terrain + trees)
    lot_mix: tuple[float, float, float, float, float] = (0.3, 0.27, 0.22, 0.08, 0.13)
    building_setback: tuple[float, float] = (0.5, 3.0)  # beyond the sidewalk
    building_height: tuple[float, float] = (7.0, 24.0)
    pole_spacing: tuple[float, float] = (7.0, 14.0)
    pole_radius: float = 0.18
    sign_prob: float = 0.55  # a pole carries a sign
    light_prob: float = 0.25  # a pole carries a traffic light
    tree_spacing: tuple[float, float] = (9.0, 20.0)
    parked_car_prob: float = 0.25  # per 6 m slot along each kerb
    moving_cars_per_100m: float = 2.0
    car_speed: tuple[float, float] = (4.0, 12.0)
    persons_per_100m: float = 36.0
    walking_fraction: float = 0.6
    walk_speed: tuple[float, float] = (0.8, 1.8)
    palette: Palette = field(default_factory=Palette)
    colour_jitter: float = 0.08


BOX, CYLINDER, SPHERE = 0, 1, 2


@dataclass
class Scene:
    """Primitives as one table of N rows (float32 unless noted; positions at t = 0, metres).

    geom per kind: BOX (x0, y0, z0, x1, y1, z1); CYLINDER (cx, cz, radius, y0, y1, 0), vertical;
    SPHERE (cx, cy, cz, radius, 0, 0). lo/hi is each primitive's axis-aligned bounding box.
    """

    kind: torch.Tensor  # (N,) int64: BOX, CYLINDER or SPHERE
    geom: torch.Tensor  # (N, 6)
    lo: torch.Tensor  # (N, 3)
    hi: torch.Tensor  # (N, 3)
    cls: torch.Tensor  # (N,) int64 trainId
    albedo: torch.Tensor  # (N, 3) RGB in [0, 1]
    vel: torch.Tensor  # (N, 3) m/s
    config: SceneConfig

    def __len__(self) -> int:
        return len(self.kind)

    def to(self, device: torch.device | str) -> Scene:
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v)
                 for k, v in self.__dict__.items()}
        return Scene(**moved)


class _Builder:
    """Collects primitives while the layout is generated; `build` freezes them into a Scene."""

    def __init__(self, cfg: SceneConfig, rng: np.random.Generator):
        self.cfg, self.rng = cfg, rng
        self.rows: list[tuple] = []

    def colour(self, base) -> tuple:
        if isinstance(base, list):
            base = base[self.rng.integers(len(base))]
        c = np.asarray(base) + self.rng.normal(0, self.cfg.colour_jitter, 3)
        return tuple(np.clip(c, 0.02, 0.98))

    def add(self, kind: int, geom, cls: int, colour, vel=(0.0, 0.0, 0.0)) -> None:
        self.rows.append((kind, tuple(geom) + (0.0,) * (6 - len(geom)), cls, colour, vel))

    def box(self, lo, hi, cls, base, vel=(0.0, 0.0, 0.0)) -> None:
        self.add(BOX, (*lo, *hi), cls, self.colour(base), vel)

    def cyl(self, cx, cz, r, y0, y1, cls, base, vel=(0.0, 0.0, 0.0)) -> None:
        self.add(CYLINDER, (cx, cz, r, y0, y1), cls, self.colour(base), vel)

    def sph(self, c, r, cls, base, vel=(0.0, 0.0, 0.0)) -> None:
        self.add(SPHERE, (*c, r), cls, self.colour(base), vel)

    def build(self) -> Scene:
        kind = torch.tensor([r[0] for r in self.rows], dtype=torch.int64)
        geom = torch.tensor(np.array([r[1] for r in self.rows], dtype=np.float32))
        g = geom
        box_lo, box_hi = g[:, :3], g[:, 3:]
        cyl_lo = torch.stack([g[:, 0] - g[:, 2], g[:, 3], g[:, 1] - g[:, 2]], 1)
        cyl_hi = torch.stack([g[:, 0] + g[:, 2], g[:, 4], g[:, 1] + g[:, 2]], 1)
        sph_lo, sph_hi = g[:, :3] - g[:, 3:4], g[:, :3] + g[:, 3:4]
        pick = lambda b, c, s: torch.where(  # noqa: E731
            (kind == BOX)[:, None], b, torch.where((kind == CYLINDER)[:, None], c, s))
        return Scene(
            kind=kind, geom=geom, lo=pick(box_lo, cyl_lo, sph_lo), hi=pick(box_hi, cyl_hi, sph_hi),
            cls=torch.tensor([r[2] for r in self.rows], dtype=torch.int64),
            albedo=torch.tensor(np.array([r[3] for r in self.rows], dtype=np.float32)),
            vel=torch.tensor(np.array([r[4] for r in self.rows], dtype=np.float32)),
            config=self.cfg,
        )


def _lots(bld: _Builder, side: int) -> None:
    """Fill one side of the street (side = -1 left, +1 right) with lots from z = -20 m on."""
    cfg, rng, pal = bld.cfg, bld.rng, bld.cfg.palette
    kerb = cfg.road_half_width + cfg.sidewalk_width
    z = -20.0
    # lot types come from a shuffled bag (refilled when empty) rather than independent draws,
    # so every stretch of street shows the mix and rare classes are not left to chance
    share = np.asarray(cfg.lot_mix) / np.sum(cfg.lot_mix)
    bag = np.repeat(np.arange(5), np.rint(20 * share).astype(np.int64))
    kinds: list[int] = []
    while z < cfg.length_m:
        length = rng.uniform(*cfg.lot_length)
        if not kinds:
            kinds = list(rng.permutation(bag))
        kind = kinds.pop()
        setback = kerb + rng.uniform(*cfg.building_setback)
        front, z1 = side * setback, z + length
        if kind == 0:  # building: the façade faces the street
            height = rng.uniform(*cfg.building_height)
            xs = sorted((front, front + side * 12.0))
            bld.box((xs[0], 0.0, z), (xs[1], height, z1 - 0.3), BUILDING, pal.buildings)
        elif kind in (1, 2, 3):  # a wall, fence or hedge along the lot, a building behind
            cls, base, h = [(WALL, pal.wall, (2.0, 3.5)), (FENCE, pal.fence, (2.0, 3.0)),
                            (VEGETATION, pal.vegetation, (1.0, 2.0))][kind - 1]
            xs = sorted((front, front + side * (0.3 if kind < 3 else 1.0)))
            bld.box((xs[0], 0.0, z), (xs[1], rng.uniform(*h), z1), cls, base)
            back = front + side * rng.uniform(6.0, 12.0)
            xb = sorted((back, back + side * 12.0))
            bld.box((xb[0], 0.0, z), (xb[1], rng.uniform(*cfg.building_height), z1 - 0.3),
                    BUILDING, pal.buildings)
        else:  # park: a railing, then terrain with trees (the ground beyond the kerb is terrain)
            xs = sorted((front, front + side * 0.1))
            bld.box((xs[0], 0.0, z), (xs[1], rng.uniform(1.2, 1.8), z1), FENCE, pal.fence)
            for tz in np.arange(z + 2.0, z1 - 1.0, rng.uniform(3.0, 6.0)):
                _tree(bld, side * (setback + rng.uniform(1.0, 6.0)), tz)
        z = z1


def _tree(bld: _Builder, x: float, z: float) -> None:
    rng, pal = bld.rng, bld.cfg.palette
    trunk_h = rng.uniform(2.5, 3.5)
    bld.cyl(x, z, rng.uniform(0.15, 0.25), 0.0, trunk_h, VEGETATION, (0.35, 0.25, 0.15))
    r = rng.uniform(1.4, 2.4)
    bld.sph((x, trunk_h + 0.7 * r, z), r, VEGETATION, pal.vegetation)


def _street_furniture(bld: _Builder, side: int) -> None:
    """Poles with signs and lights on the kerb, trees on the sidewalk."""
    cfg, rng, pal = bld.cfg, bld.rng, bld.cfg.palette
    x = side * (cfg.road_half_width + 0.5)
    z = rng.uniform(0.0, cfg.pole_spacing[1])
    while z < cfg.length_m:
        h = rng.uniform(4.5, 7.0)
        bld.cyl(x, z, cfg.pole_radius, 0.0, h, POLE, pal.pole)
        if rng.random() < cfg.sign_prob:
            y0, w = rng.uniform(2.2, 3.2), rng.uniform(0.7, 1.1)
            bld.box((x - w / 2, y0, z - 0.25), (x + w / 2, y0 + w, z - 0.2), SIGN, pal.sign)
        if rng.random() < cfg.light_prob:
            arm = -side * rng.uniform(0.0, 2.0)
            bld.box((x + arm - 0.2, h - 1.1, z - 0.45), (x + arm + 0.2, h, z - 0.2), LIGHT,
                    pal.light)
        z += rng.uniform(*cfg.pole_spacing)
    z = rng.uniform(0.0, cfg.tree_spacing[1])
    while z < cfg.length_m:
        _tree(bld, side * (cfg.road_half_width + cfg.sidewalk_width - 0.8), z)
        z += rng.uniform(*cfg.tree_spacing)


def _car(bld: _Builder, x: float, z: float, speed: float) -> None:
    pal = bld.cfg.palette
    colour = bld.colour(pal.cars)
    vel = (0.0, 0.0, speed)
    bld.add(BOX, (x - 0.9, 0.25, z - 2.2, x + 0.9, 1.05, z + 2.2), CAR, colour, vel)
    cabin = tuple(0.6 * np.asarray(colour) + 0.1)
    bld.add(BOX, (x - 0.8, 1.05, z - 1.2, x + 0.8, 1.55, z + 0.9), CAR, cabin, vel)


def _traffic(bld: _Builder) -> None:
    cfg, rng, pal = bld.cfg, bld.rng, bld.cfg.palette
    for side in (-1, 1):
        kerb_x = side * (cfg.road_half_width - 1.1)
        for z in np.arange(-10.0, cfg.length_m, 6.0):
            if rng.random() < cfg.parked_car_prob:
                _car(bld, kerb_x, z + rng.uniform(-0.5, 0.5), 0.0)
    n_moving = rng.poisson(cfg.moving_cars_per_100m * cfg.length_m / 100.0)
    for _ in range(n_moving):
        lane = rng.choice([-1, 1])
        speed = lane * rng.uniform(*cfg.car_speed)  # right lane drives with the camera
        _car(bld, lane * cfg.road_half_width * 0.45, rng.uniform(0, cfg.length_m), speed)
    n_persons = rng.poisson(cfg.persons_per_100m * cfg.length_m / 100.0)
    for _ in range(n_persons):
        side = rng.choice([-1, 1])
        x = side * (cfg.road_half_width + rng.uniform(0.8, cfg.sidewalk_width - 0.4))
        z = rng.uniform(0, cfg.length_m)
        speed = rng.uniform(*cfg.walk_speed) * rng.choice([-1, 1])
        vel = (0.0, 0.0, speed if rng.random() < cfg.walking_fraction else 0.0)
        h = rng.uniform(1.55, 1.9)
        body = bld.colour(pal.clothes)
        bld.add(CYLINDER, (x, z, 0.22, 0.0, h - 0.25), PERSON, body, vel)
        bld.add(SPHERE, (x, h - 0.13, z, 0.13), PERSON, bld.colour((0.80, 0.62, 0.50)), vel)


def generate_scene(cfg: SceneConfig, seed: int) -> Scene:
    """A street scene drawn from `cfg` with a seeded generator (same seed, same scene)."""
    bld = _Builder(cfg, np.random.default_rng(seed))
    for side in (-1, 1):
        _lots(bld, side)
        _street_furniture(bld, side)
    _traffic(bld)
    return bld.build()
