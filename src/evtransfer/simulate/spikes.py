"""A streaming spike-camera simulator (integrate-and-fire, the PKU Vidar model) in torch.

Every readout tick (default 20 kHz) each pixel adds charge gain × I + dark_current (plus
Gaussian readout noise, clipped so charge never decreases) to its accumulator; when the
accumulator reaches the pixel's threshold the pixel fires (bit 1 in that tick) and the threshold
is subtracted. A pixel fires at most once per tick: charge beyond that saturates and the
accumulator keeps only its remainder modulo the threshold. Thresholds have log-normal per-pixel
mismatch; the accumulators start uniform in [0, threshold) as in Spike-Zoo's simulator
(chenkang455/Spike-Zoo : spikezoo/utils/spike_utils.py, video2spike_simulation), so a still image
does not fire in lockstep.

Timing: tick k >= 1 is read out at t_start + k × 10^6 / rate_hz µs, t_start being the first
frame's timestamp. Feeding a frame at t simulates the ticks read out in (t_prev, t]: with
interpolation "hold" the light during those ticks is the previous frame (a frame lasts until the
next one), with "linear" it is interpolated between the two frames at each tick's readout time.
Fire ticks are computed in closed form over chunks of ticks, vectorised over (ticks, B, H, W):
tick k fires iff floor(c_k / θ) > floor(c_{k-1} / θ), c_k being the accumulated charge; no
Python loop runs per tick. Output is bit-packed `Spikes` (LSB-first rows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from fractions import Fraction

import numpy as np
import torch

from evtransfer.events import Spikes
from evtransfer.simulate._checks import (
    SimulationError,
    as_frames,
    as_time_us,
    check_shape,
    make_generator,
)


@dataclass(frozen=True)
class SpikeConfig:
    """Integrate-and-fire spike camera parameters.

    rate_hz: readout ticks per second. gain: charge per tick per unit linear intensity.
    threshold: charge that fires a spike. threshold_sigma: relative std of the log-normal
    per-pixel threshold mismatch. dark_current: charge per tick without light. readout_noise:
    std of Gaussian charge noise per tick. random_init: start accumulators uniform in
    [0, threshold) instead of 0. interpolation: "hold" or "linear" light between frames.
    seed: seeds all randomness.
    """

    rate_hz: float = 20000.0  # code: Zyj061/SpikeCV : SpikeCV config.yaml (recVidarReal2019)
    # code: chenkang455/Spike-Zoo : spikezoo/utils/spike_utils.py (adds I in [0, 1] per tick)
    gain: float = 1.0
    threshold: float = 2.0  # code: chenkang455/Spike-Zoo : spikezoo/utils/spike_utils.py
    threshold_sigma: float = 0.0  # unpublished: our choice (ideal sensor by default)
    dark_current: float = 0.0  # unpublished: our choice (ideal sensor by default)
    readout_noise: float = 0.0  # unpublished: our choice (ideal sensor by default)
    random_init: bool = True  # code: chenkang455/Spike-Zoo : spikezoo/utils/spike_utils.py
    interpolation: str = "hold"  # unpublished: our choice (Spike-Zoo holds each frame for one tick)
    seed: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("random_init", "interpolation"):
                continue
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not number or not math.isfinite(value):
                raise SimulationError(f"SpikeConfig.{f.name} must be a finite number: {value!r}")
        for name in ("rate_hz", "gain", "threshold"):
            if getattr(self, name) <= 0:
                raise SimulationError(f"SpikeConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("threshold_sigma", "dark_current", "readout_noise"):
            if getattr(self, name) < 0:
                raise SimulationError(f"SpikeConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not isinstance(self.random_init, bool):
            raise SimulationError(f"SpikeConfig.random_init must be a bool: {self.random_init!r}")
        if self.interpolation not in ("hold", "linear"):
            raise SimulationError(
                f"SpikeConfig.interpolation must be 'hold' or 'linear', got {self.interpolation!r}"
            )
        if int(self.seed) != self.seed:
            raise SimulationError(f"SpikeConfig.seed must be an integer, got {self.seed}")


class SpikeSimulator:
    """Streaming spike-camera simulator for `batch` videos of `height` × `width` on `device`.

    `feed(frames, t_us)`: frames (batch, H, W) linear intensity (floats >= 0), t_us increasing
    int µs. The first call sets the state and returns empty streams; each later call returns one
    packed `Spikes` per video holding the ticks read out in (t_prev, t_us]. `reset()` forgets the
    state and reseeds. `max_chunk_elements` bounds ticks × pixels processed at once.
    """

    def __init__(
        self,
        config: SpikeConfig | None = None,
        height: int = 250,
        width: int = 400,
        batch: int = 1,
        device: str | torch.device = "cpu",
        *,
        max_chunk_elements: int = 1 << 23,
    ):
        config = SpikeConfig() if config is None else config
        if not isinstance(config, SpikeConfig):
            raise SimulationError(f"config must be a SpikeConfig, got {type(config)}")
        check_shape(height, width, batch)
        if max_chunk_elements < 1:
            raise SimulationError(f"max_chunk_elements must be >= 1, got {max_chunk_elements}")
        self.config = config
        self.height, self.width, self.batch = int(height), int(width), int(batch)
        self.device = torch.device(device)
        self.max_chunk_elements = int(max_chunk_elements)
        self._rate = Fraction(config.rate_hz)
        self.reset()

    def reset(self) -> None:
        """Forget the accumulators and frames; redraw thresholds and start levels from the seed."""
        cfg = self.config
        self._gen = make_generator(cfg.seed, self.device)
        shape = (self.height, self.width)
        self._theta: float | torch.Tensor = cfg.threshold
        if cfg.threshold_sigma > 0:
            z = torch.randn(shape, generator=self._gen, device=self.device, dtype=torch.float64)
            self._theta = cfg.threshold * torch.exp(cfg.threshold_sigma * z)
        self._acc: torch.Tensor | None = None
        self._frame: torch.Tensor | None = None
        self._t_start: int | None = None
        self._t: int | None = None
        self._ticks_done = 0

    @property
    def period_us(self) -> float:
        """Readout period in µs."""
        return 1e6 / self.config.rate_hz

    def _ticks_until(self, t: int) -> int:
        """Number of ticks read out in (t_start, t], exactly (rate as a binary fraction)."""
        return int((t - self._t_start) * self._rate // 10**6)

    def _empty(self, t0_us: int) -> list[Spikes]:
        data = np.zeros((0, self.height, (self.width + 7) // 8), np.uint8)
        return [
            Spikes(data, self.config.rate_hz, width=self.width, packed=True, t0_us=t0_us)
            for _ in range(self.batch)
        ]

    def feed(self, frames, t_us) -> list[Spikes]:
        """Advance to `frames` (batch, H, W) at `t_us` µs; one packed `Spikes` per video."""
        intensity = as_frames(frames, self.batch, self.height, self.width, self.device)
        t = as_time_us(t_us, self._t)
        if self._t is None:
            self._t_start, self._t, self._frame = t, t, intensity
            acc = torch.zeros_like(intensity)
            if self.config.random_init:
                acc = torch.rand(acc.shape, generator=self._gen, device=self.device,
                                 dtype=torch.float64) * self._theta
            self._acc = acc
            return self._empty(t)
        k0, k1 = self._ticks_done, self._ticks_until(t)
        chunk = max(1, self.max_chunk_elements // (self.batch * self.height * self.width))
        packed = [self._simulate(k, min(k + chunk, k1), intensity, t) for k in range(k0, k1, chunk)]
        t_first = self._t_start + round((k0 + 1) * 1e6 / self.config.rate_hz)
        self._frame, self._t, self._ticks_done = intensity, t, k1
        if not packed:
            return self._empty(t_first)
        data = torch.cat(packed, dim=1).cpu().numpy()
        return [
            Spikes(data[b], self.config.rate_hz, width=self.width, packed=True, t0_us=t_first)
            for b in range(self.batch)
        ]

    def _charge(self, k0: int, k1: int, intensity: torch.Tensor, t: int) -> torch.Tensor:
        """(K, B, H, W) charge of ticks k0+1 .. k1, or (1, B, H, W) if the same every tick."""
        cfg = self.config
        light = self._frame.unsqueeze(0)
        if cfg.interpolation == "linear":
            ticks = torch.arange(k0 + 1, k1 + 1, device=self.device, dtype=torch.float64)
            t_tick = self._t_start + ticks * (1e6 / cfg.rate_hz)
            alpha = ((t_tick - self._t) / (t - self._t)).view(-1, 1, 1, 1)
            light = light + alpha * (intensity - self._frame).unsqueeze(0)
        charge = light * cfg.gain + cfg.dark_current
        if cfg.readout_noise > 0:
            noise = torch.randn((k1 - k0, *self._frame.shape), generator=self._gen,
                                device=self.device, dtype=torch.float64)
            charge = (charge + cfg.readout_noise * noise).clamp_(min=0.0)
        return charge

    def _simulate(self, k0: int, k1: int, intensity: torch.Tensor, t: int) -> torch.Tensor:
        """Bit-packed (B, K, H, ceil(W/8)) uint8 fire bits of ticks k0+1 .. k1."""
        charge = self._charge(k0, k1, intensity, t)
        if charge.shape[0] == 1:
            steps = torch.arange(1, k1 - k0 + 1, device=self.device, dtype=torch.float64)
            total = self._acc + steps.view(-1, 1, 1, 1) * charge
        else:
            total = self._acc + torch.cumsum(charge, dim=0)
        crossings = torch.floor(total / self._theta)
        # the accumulator starts in [0, θ), so crossings before the first tick are 0
        fired = torch.diff(crossings, dim=0, prepend=torch.zeros_like(crossings[:1])) > 0
        self._acc = total[-1] - crossings[-1] * self._theta
        return _pack_bits(fired.transpose(0, 1))


def _pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """(..., W) bool -> (..., ceil(W/8)) uint8, bit b of byte j = pixel 8j + b (LSB-first)."""
    width = bits.shape[-1]
    pad = (-width) % 8
    if pad:
        bits = torch.nn.functional.pad(bits, (0, pad))
    groups = bits.reshape(*bits.shape[:-1], -1, 8).to(torch.uint8)
    weights = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8, device=bits.device)
    return (groups * weights).sum(dim=-1, dtype=torch.uint8)


def simulate_spikes(frames, t_us, config: SpikeConfig | None = None, *,
                    device: str | torch.device = "cpu") -> Spikes:
    """Spikes of one video: frames (T, H, W) linear intensity at t_us (T,) increasing int µs.

    A fresh `SpikeSimulator` is fed every frame; the ticks of all intervals are concatenated
    (the last frame only closes the previous interval).
    """
    t_list = torch.as_tensor(t_us).flatten().tolist() if len(t_us) else []
    if len(frames) != len(t_list) or len(t_list) < 2:
        raise SimulationError(
            f"need at least two frames with one timestamp each, got {len(frames)} frames and "
            f"{len(t_list)} timestamps"
        )
    height, width = frames[0].shape[-2:]
    sim = SpikeSimulator(config, int(height), int(width), 1, device)
    streams = [sim.feed(frame, t)[0] for frame, t in zip(frames, t_list, strict=True)]
    first = streams[1].t0_us
    data = np.concatenate([s.data for s in streams[1:]])
    return Spikes(data, sim.config.rate_hz, width=int(width), packed=True, t0_us=first)


def spikes_from_image(image, n_ticks: int, config: SpikeConfig | None = None, *,
                      device: str | torch.device = "cpu") -> Spikes:
    """`n_ticks` readouts of a still image (H, W) linear intensity, starting at t = 0."""
    config = SpikeConfig() if config is None else config
    if n_ticks < 1:
        raise SimulationError(f"n_ticks must be >= 1, got {n_ticks}")
    end = math.ceil(n_ticks * Fraction(10**6) / Fraction(config.rate_hz))
    frames = [image, image]
    spikes = simulate_spikes(frames, [0, end], config, device=device)
    return spikes.frames(0, n_ticks)
