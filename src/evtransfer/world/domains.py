"""World configuration: domains (city style, lighting, weather, sensors) and the size presets.

The labeled *source* is a daylight city seen by an RGB camera; the unlabeled *target* is another
city, under other lighting, seen by an event camera and a spike camera with their own sensor
profiles. Source and target are different scenes (unpaired). Variants (fog, rain, a second city)
serve BiCross's scenarios. Every value here maps one-to-one onto the world YAML.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from evtransfer.simulate import DvsConfig, SpikeConfig, dvs_preset
from evtransfer.world.camera import CameraConfig
from evtransfer.world.render import Lighting
from evtransfer.world.scene import Palette, SceneConfig


def _day(**kw) -> Lighting:
    return Lighting(**kw)


def _dusk() -> Lighting:
    return Lighting(sun_dir=(-0.8, 0.15, 0.3), ambient=0.22, diffuse=0.55,
                    sky_top=(0.25, 0.22, 0.45), sky_horizon=(0.95, 0.55, 0.30), exposure=0.9,
                    lit_windows=0.2)


def _night() -> Lighting:
    return Lighting(sun_dir=(0.0, 1.0, 0.0), ambient=0.05, diffuse=0.04,
                    sky_top=(0.02, 0.02, 0.06), sky_horizon=(0.08, 0.07, 0.10), exposure=1.0,
                    headlight=1.4, headlight_range_m=10.0, lit_windows=0.35)


def _overexposed() -> Lighting:
    return Lighting(sun_dir=(0.2, 0.9, -0.3), ambient=0.6, diffuse=0.7, exposure=1.9)


def _fog(density: float = 0.045) -> Lighting:
    return Lighting(fog_density=density, ambient=0.55, diffuse=0.35,
                    sky_top=(0.72, 0.73, 0.75), sky_horizon=(0.78, 0.79, 0.80))


def _rain(streaks: int = 40) -> Lighting:
    return Lighting(ambient=0.35, diffuse=0.3, sky_top=(0.45, 0.47, 0.52),
                    sky_horizon=(0.60, 0.62, 0.65), rain_streaks=streaks, fog_density=0.012)


def _target_palette() -> Palette:
    """A second city style: brick and concrete, dark asphalt, paler vegetation, other cars."""
    return Palette(
        road=(0.22, 0.22, 0.24), sidewalk=(0.50, 0.42, 0.40), terrain=(0.52, 0.48, 0.30),
        buildings=[(0.62, 0.30, 0.22), (0.45, 0.45, 0.48), (0.85, 0.82, 0.70), (0.35, 0.38, 0.45)],
        window=(0.55, 0.62, 0.70), wall=(0.40, 0.38, 0.42), fence=(0.25, 0.30, 0.28),
        pole=(0.20, 0.35, 0.25), vegetation=(0.32, 0.45, 0.22),
        cars=[(0.95, 0.85, 0.20), (0.20, 0.55, 0.30), (0.30, 0.30, 0.32), (0.90, 0.45, 0.10)],
        clothes=[(0.70, 0.70, 0.72), (0.10, 0.30, 0.20), (0.50, 0.10, 0.40)],
    )


@dataclass
class DomainConfig:
    """One domain: scene style, camera, and the lighting of each sequence (cycled)."""

    scene: SceneConfig = field(default_factory=SceneConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    lighting: list[Lighting] = field(default_factory=lambda: [_day()])
    sequences: int = 2
    duration_s: float = 4.0  # per sequence
    label_every_s: float = 0.1  # labels, depth and flow every 100 ms


@dataclass
class EventSensor:
    """The target event camera: simulator parameters and the render rate that feeds it."""

    # a different, noisier sensor than the default simulator the methods use on the source
    dvs: DvsConfig = field(default_factory=lambda: dvs_preset(
        "noisy",
        pos_threshold=0.25,  # unpublished: our choice (asymmetric, unlike the source's 0.2)
        neg_threshold=0.3,  # unpublished: our choice
        refractory_us=500,  # unpublished: our choice (v2e's noisy sensors: 0.5 ms)
        shot_noise_rate_hz=1.0,  # unpublished: our choice (v2e's noisy 5 Hz is a dark scene's)
    ))
    render_fps: float = 400.0  # frames rendered per second for the event simulator


@dataclass
class SpikeSensor:
    """The target spike camera and the clip stored per label (ending at the label time)."""

    sim: SpikeConfig = field(default_factory=lambda: SpikeConfig(
        threshold_sigma=0.05,  # unpublished: our choice (mild fixed-pattern mismatch)
        dark_current=0.002,  # unpublished: our choice
        readout_noise=0.01,  # unpublished: our choice
    ))
    frames: int = 64  # spike frames per clip; BiCross stacks T = 128 on KITTI (paper)


@dataclass
class WorldConfig:
    """The whole embedded world: sizes, seeds, domains and sensors."""

    width: int = 128
    height: int = 96
    seed: int = 0  # the source's sequences, and the target's unless target_seed is set
    target_seed: int | None = None  # the target's and its variants' sequences (None: seed)
    source: DomainConfig = field(default_factory=DomainConfig)
    source_fps: float = 20.0  # labeled RGB sequences, like Cityscapes' 17 Hz video
    target: DomainConfig = field(
        default_factory=lambda: DomainConfig(
            scene=SceneConfig(palette=_target_palette(),
                              lot_mix=(0.28, 0.3, 0.24, 0.08, 0.1), persons_per_100m=45.0),
            camera=CameraConfig(fov_deg=70.0, speed_mps=9.0, yaw_amp_deg=3.0),
            lighting=[_dusk(), _night(), _overexposed(), _day(texture_seed=7)],
            sequences=4,
        )
    )
    events: EventSensor = field(default_factory=EventSensor)
    spikes: SpikeSensor = field(default_factory=SpikeSensor)
    variants: list[str] = field(default_factory=list)  # any of: fog, rain, city2

    def __post_init__(self):
        if self.width < 1 or self.height < 1:
            raise ValueError(f"width and height must be >= 1, got {self.width}x{self.height}")
        if self.source_fps <= 0:
            raise ValueError(f"source_fps must be > 0, got {self.source_fps}")

    def domain_seed(self, domain: str) -> int:
        """The seed of the sequences of `domain` ("source", "target" or a variant): worlds
        that share `seed` and the source settings share their source data."""
        if domain == "source" or self.target_seed is None:
            return self.seed
        return self.target_seed


def variant_domain(name: str, base: DomainConfig) -> DomainConfig:
    """A weather or city variant of `base` (BiCross's scenarios), seen by the same sensors."""
    if name == "fog":
        light = [_fog()]
    elif name == "rain":
        light = [_rain()]
    elif name == "city2":
        return DomainConfig(scene=SceneConfig(palette=_target_palette(),
                                              lot_mix=(0.6, 0.1, 0.1, 0.1, 0.1)),
                            camera=base.camera, lighting=[_day(texture_seed=3)],
                            sequences=base.sequences, duration_s=base.duration_s,
                            label_every_s=base.label_every_s)
    else:
        raise ValueError(f"unknown world variant {name!r}; choose from fog, rain, city2")
    return DomainConfig(scene=base.scene, camera=base.camera, lighting=light,
                        sequences=base.sequences, duration_s=base.duration_s,
                        label_every_s=base.label_every_s)


def preset(name: str) -> WorldConfig:
    """The `tiny` (tests: seconds), `small` (demo: minutes on 2 cores) or `full` world."""
    if name == "tiny":
        cfg = WorldConfig(width=64, height=48)
        cfg.source.sequences, cfg.source.duration_s = 1, 1.0
        cfg.target.sequences, cfg.target.duration_s = 2, 0.6
        cfg.events.render_fps = 200.0
        cfg.spikes.frames = 32
        return cfg
    if name == "small":
        cfg = WorldConfig()
        cfg.source.sequences, cfg.source.duration_s = 6, 5.0
        cfg.target.sequences, cfg.target.duration_s = 8, 3.0
        return cfg
    if name == "full":
        cfg = WorldConfig(width=640, height=440, variants=["fog", "rain", "city2"])
        cfg.source.sequences, cfg.source.duration_s = 20, 20.0
        cfg.target.sequences, cfg.target.duration_s = 12, 20.0
        cfg.events.render_fps = 1000.0
        cfg.spikes.frames = 128
        return cfg
    raise ValueError(f"unknown world preset {name!r}; choose from tiny, small, full")


# --- named worlds of the benchmark suites (`world.suites`) -----------------------------------
# Every named world keeps the presets' source (settings and `seed` 0), so all of them share
# their source data at one size; each changes the target and its seed. "small" is the preset
# world itself; the others differ the way deployments differ.
SUITE_SIZES = ("tiny", "small")


def _deep_night() -> Lighting:
    """Darker than `_night`: almost no ambient light, a weaker and shorter headlight."""
    return Lighting(sun_dir=(0.0, 1.0, 0.0), ambient=0.015, diffuse=0.01,  # unpublished
                    sky_top=(0.01, 0.01, 0.03), sky_horizon=(0.03, 0.03, 0.05), exposure=1.0,
                    headlight=1.0, headlight_range_m=7.0, lit_windows=0.15)


def _glare() -> Lighting:
    """Harsher over-exposure than `_overexposed`: most of the facades clip."""
    return Lighting(sun_dir=(-0.3, 0.85, -0.4), ambient=0.7, diffuse=0.8,  # unpublished
                    exposure=2.5)


def _third_palette() -> Palette:
    """A third city style: whitewashed walls, terracotta, pale paving, other cars."""
    return Palette(
        road=(0.40, 0.39, 0.37), sidewalk=(0.78, 0.74, 0.66), terrain=(0.60, 0.55, 0.38),
        buildings=[(0.92, 0.90, 0.84), (0.80, 0.52, 0.36), (0.95, 0.86, 0.62), (0.70, 0.76, 0.80)],
        window=(0.30, 0.38, 0.50), wall=(0.85, 0.82, 0.74), fence=(0.55, 0.30, 0.20),
        pole=(0.15, 0.15, 0.15), vegetation=(0.28, 0.38, 0.18),
        cars=[(0.85, 0.10, 0.10), (0.92, 0.92, 0.90), (0.10, 0.20, 0.55), (0.35, 0.60, 0.70)],
        clothes=[(0.90, 0.60, 0.20), (0.20, 0.20, 0.60), (0.85, 0.85, 0.80)],
    )


def _dev_rain(cfg: WorldConfig) -> None:
    """Dev: rain among dusk, night and glare, a quicker camera, a somewhat noisier sensor."""
    cfg.target_seed = 1
    cfg.target.lighting = [_rain(), _dusk(), _night(), _overexposed()]
    cfg.target.camera = replace(cfg.target.camera, speed_mps=11.0, yaw_amp_deg=4.0)
    cfg.events.dvs = replace(  # unpublished: our choice (between the target's and report's)
        cfg.events.dvs, pos_threshold=0.3, neg_threshold=0.25, sigma_threshold=0.07,
        cutoff_hz=20.0, leak_rate_hz=0.2, shot_noise_rate_hz=2.0, hot_pixel_fraction=3e-4,
        jitter_us=200.0)


def _report_sensor(cfg: WorldConfig) -> None:
    """Report: another event camera; light, motion and city as the presets' target."""
    cfg.target_seed = 101
    cfg.events.dvs = replace(  # unpublished: our choice (a cheaper, noisier sensor)
        cfg.events.dvs,
        pos_threshold=0.4, neg_threshold=0.28,  # ON/OFF asymmetry the other way round
        sigma_threshold=0.12,  # mismatch: 2.4 × v2e's noisy
        refractory_us=1000,
        cutoff_hz=10.0,  # bandwidth: a third of v2e's noisy
        leak_rate_hz=0.5, leak_rate_cov_decades=0.5,
        shot_noise_rate_hz=4.0,
        hot_pixel_fraction=1e-3, hot_pixel_rate_hz=200.0,
        jitter_us=1000.0)


def _report_light(cfg: WorldConfig) -> None:
    """Report: deep night, dense fog, heavy rain and glare; sensor, motion, city as the
    presets' target."""
    cfg.target_seed = 102
    cfg.target.lighting = [_deep_night(), _fog(density=0.07), _rain(streaks=90), _glare()]


def _report_motion(cfg: WorldConfig) -> None:
    """Report: a faster, weaving camera in a third city style; light and sensor as the
    presets' target."""
    cfg.target_seed = 103
    cfg.target.camera = replace(cfg.target.camera, speed_mps=15.0, yaw_amp_deg=9.0,
                                yaw_period_s=3.5, pitch_amp_deg=1.5)
    cfg.target.scene = replace(cfg.target.scene, palette=_third_palette(),
                               lot_mix=(0.45, 0.25, 0.1, 0.1, 0.1), persons_per_100m=60.0,
                               moving_cars_per_100m=4.0)
    cfg.target.lighting = [replace(light, texture_seed=11) for light in cfg.target.lighting]


NAMED_WORLDS: dict[str, Callable[[WorldConfig], None]] = {
    "small": lambda cfg: None,
    "dev-rain": _dev_rain,
    "report-sensor": _report_sensor,
    "report-light": _report_light,
    "report-motion": _report_motion,
}


def named_world(name: str, size: str = "small") -> WorldConfig:
    """The suite world `name` (see `NAMED_WORLDS`) at the preset `size` ("tiny": tests,
    "small": real runs); the named world "small" at size "small" is the small preset."""
    if name not in NAMED_WORLDS:
        raise ValueError(f"unknown suite world {name!r}; choose from {', '.join(NAMED_WORLDS)}")
    if size not in SUITE_SIZES:
        raise ValueError(f"unknown suite size {size!r}; choose from {', '.join(SUITE_SIZES)}")
    cfg = preset(size)
    NAMED_WORLDS[name](cfg)
    return cfg
