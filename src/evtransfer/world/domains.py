"""World configuration: domains (city style, lighting, weather, sensors) and the size presets.

The labeled *source* is a daylight city seen by an RGB camera; the unlabeled *target* is another
city, under other lighting, seen by an event camera and a spike camera with their own sensor
profiles. Source and target are different scenes (unpaired). Variants (fog, rain, a second city)
serve BiCross's scenarios. Every value here maps one-to-one onto the world YAML.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    seed: int = 0
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


def variant_domain(name: str, base: DomainConfig) -> DomainConfig:
    """A weather or city variant of `base` (BiCross's scenarios), seen by the same sensors."""
    if name == "fog":
        light = [Lighting(fog_density=0.045, ambient=0.55, diffuse=0.35,
                          sky_top=(0.72, 0.73, 0.75), sky_horizon=(0.78, 0.79, 0.80))]
    elif name == "rain":
        light = [Lighting(ambient=0.35, diffuse=0.3, sky_top=(0.45, 0.47, 0.52),
                          sky_horizon=(0.60, 0.62, 0.65), rain_streaks=40, fog_density=0.012)]
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
