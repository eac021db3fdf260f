"""DVS simulator settings: `DvsConfig` and the presets `ideal`, `clean` and `noisy`.

Units: thresholds in natural-log intensity, times in µs, rates in Hz per pixel. Every value
names its source: `# code: repo : path` for a public simulator, `# paper`, or
`# unpublished: our choice`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from evtransfer.simulate._checks import SimulationError


@dataclass(frozen=True)
class DvsConfig:
    """Parameters of the DVS pixel model (ESIM's log-intensity crossings plus v2e's non-idealities).

    pos_threshold / neg_threshold: nominal contrast thresholds C+ / C- in log units.
    sigma_threshold: std of the per-pixel Gaussian threshold mismatch (fixed pattern), log units;
    thresholds are clamped at `min_threshold`. refractory_us: a crossing less than this many µs
    after the pixel's previous signal event is not emitted. cutoff_hz: 3 dB cutoff of the
    intensity-dependent first-order photoreceptor low-pass (0 = off). leak_rate_hz: ON events per
    second caused by the reference level drifting down by leak_rate_hz * C+ per second;
    leak_rate_cov_decades spreads it log-normally across pixels. shot_noise_rate_hz: Poisson
    noise events per pixel per second (ON + OFF) at zero intensity, falling linearly to
    shot_noise_bright_factor times that at intensity 1. hot_pixel_fraction of the pixels (a
    fixed seeded set) fire ON events at hot_pixel_rate_hz. jitter_us: std of Gaussian timestamp
    jitter. eps: log(I + eps) offset. seed: seeds all randomness.
    """

    pos_threshold: float = 0.2
    neg_threshold: float = 0.2
    sigma_threshold: float = 0.0
    min_threshold: float = 0.01
    refractory_us: int = 0
    cutoff_hz: float = 0.0
    leak_rate_hz: float = 0.0
    leak_rate_cov_decades: float = 0.0
    shot_noise_rate_hz: float = 0.0
    shot_noise_bright_factor: float = 1.0
    hot_pixel_fraction: float = 0.0
    hot_pixel_rate_hz: float = 0.0
    jitter_us: float = 0.0
    eps: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise SimulationError(f"DvsConfig.{f.name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise SimulationError(f"DvsConfig.{f.name} must be finite, got {value}")
        for name in ("pos_threshold", "neg_threshold", "min_threshold", "eps"):
            if getattr(self, name) <= 0:
                raise SimulationError(f"DvsConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("sigma_threshold", "refractory_us", "cutoff_hz", "leak_rate_hz",
                     "leak_rate_cov_decades", "shot_noise_rate_hz", "shot_noise_bright_factor",
                     "hot_pixel_rate_hz", "jitter_us"):
            if getattr(self, name) < 0:
                raise SimulationError(f"DvsConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.hot_pixel_fraction <= 1:
            raise SimulationError(
                f"DvsConfig.hot_pixel_fraction must be in [0, 1], got {self.hot_pixel_fraction}"
            )
        if int(self.refractory_us) != self.refractory_us or int(self.seed) != self.seed:
            raise SimulationError("DvsConfig.refractory_us and seed must be integers")

    @property
    def is_deterministic(self) -> bool:
        """True when the output does not depend on the seed (no mismatch and no noise)."""
        return (
            self.sigma_threshold == 0
            and self.leak_rate_cov_decades == 0
            and self.shot_noise_rate_hz == 0
            and self.hot_pixel_fraction == 0
            and self.jitter_us == 0
        )

    def to_dict(self) -> dict:
        """The fields as a plain dict (what a YAML file maps onto)."""
        return asdict(self)


# ESIM's pixel with no non-idealities: thresholds as in esim_torch's event generation script.
IDEAL = DvsConfig(
    pos_threshold=0.2,  # code: uzh-rpg/rpg_vid2e : esim_torch/scripts/generate_events.py (-cp 0.2)
    neg_threshold=0.2,  # code: uzh-rpg/rpg_vid2e : esim_torch/scripts/generate_events.py (-cn 0.2)
    eps=1e-3,  # code: uzh-rpg/rpg_esim : event_camera_simulator/esim_ros (log_eps 0.001)
)

# v2e's "clean" model: small mismatch, unlimited bandwidth, no noise.
CLEAN = replace(
    IDEAL,
    sigma_threshold=0.02,  # code: SensorsINI/v2e : v2ecore/emulator.py (set_dvs_params 'clean')
)

# v2e's "noisy" model plus hot pixels and jitter, which v2e does not model.
NOISY = replace(
    IDEAL,
    sigma_threshold=0.05,  # code: SensorsINI/v2e : v2ecore/emulator.py (set_dvs_params 'noisy')
    cutoff_hz=30.0,  # code: SensorsINI/v2e : v2ecore/emulator.py (set_dvs_params 'noisy')
    leak_rate_hz=0.1,  # code: SensorsINI/v2e : v2ecore/emulator.py (set_dvs_params 'noisy')
    # code: SensorsINI/v2e : v2ecore/emulator.py (noise_rate_cov_decades, noisy preset)
    leak_rate_cov_decades=0.1,
    shot_noise_rate_hz=5.0,  # code: SensorsINI/v2e : v2ecore/emulator.py (set_dvs_params 'noisy')
    # code: SensorsINI/v2e : v2ecore/emulator.py (SHOT_NOISE_INTEN_FACTOR)
    shot_noise_bright_factor=0.25,
    hot_pixel_fraction=1e-4,  # unpublished: our choice (about 30 hot pixels on a VGA sensor)
    hot_pixel_rate_hz=100.0,  # unpublished: our choice
    jitter_us=50.0,  # unpublished: our choice (well below a typical 1 ms frame interval)
)

PRESETS: dict[str, DvsConfig] = {"ideal": IDEAL, "clean": CLEAN, "noisy": NOISY}


def dvs_preset(name: str, **overrides) -> DvsConfig:
    """The preset `name` ('ideal', 'clean' or 'noisy') with fields replaced by `overrides`."""
    if name not in PRESETS:
        raise SimulationError(f"unknown DVS preset {name!r}; choose one of {sorted(PRESETS)}")
    try:
        return replace(PRESETS[name], **overrides)
    except TypeError as exc:
        raise SimulationError(f"bad DvsConfig override: {exc}") from None
