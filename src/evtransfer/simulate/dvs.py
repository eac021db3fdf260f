"""A streaming DVS (event camera) simulator in torch: frames with timestamps in, `Events` out.

The pixel model is ESIM's (Rebecq et al., CoRL 2018; uzh-rpg/rpg_esim :
event_camera_simulator/esim/src/event_simulator.cpp): each pixel keeps a reference log intensity;
between two frames the log intensity is linear in time, and every time it moves one contrast
threshold away from the reference the pixel emits an event at the interpolated crossing time and
the reference moves by that threshold. Several events per pixel per frame interval are normal.
Non-idealities follow v2e (SensorsINI/v2e : v2ecore/emulator.py, emulator_utils.py): per-pixel
threshold mismatch, intensity-dependent photoreceptor low-pass, leak events, shot noise, plus a
refractory period, hot pixels and timestamp jitter. Timestamps are int64 µs computed from float64
fractions of the frame interval (v2e's float32 seconds lose µs after 16.7 s), and nothing is
dropped: esim_torch discards events at t = 0, this simulator keeps them.

Model choices, documented where they differ between ESIM and v2e:
- Refractory period (as ESIM): a crossing whose timestamp is less than `refractory_us` after the
  pixel's last emitted signal event is suppressed, but the reference still moves past it, so the
  change is consumed rather than replayed later (v2e instead keeps the reference).
- Leak (as v2e): the reference drifts down at leak_rate_hz * C+ per second, linearly within an
  interval, so leak crossings get interpolated timestamps like signal crossings.
- Low-pass (as v2e): once per frame, level += eps * (log I - level) with
  eps = min(1, (I + 20/255) / (1 + 20/255) * dt * 2 pi cutoff_hz); events come from the filtered
  level, interpolated linearly between frames.
- Shot noise: a Poisson process per pixel at shot_noise_rate_hz * (1 + (f - 1) * clip(I, 0, 1)),
  f = shot_noise_bright_factor (v2e lowers the rate in bright pixels by 0.25), with uniform times
  and random polarity; as in v2e a noise event resets the pixel's reference to its current level.
  Noise and hot-pixel events bypass the refractory period.
- Jitter: Gaussian, rounded to µs and clamped into the frame interval, applied to every event
  after the refractory check; the output is then sorted again.
Fixed-pattern effects (thresholds, leak rates, hot pixels) are drawn once per (H, W) sensor and
shared by the batch, so a batch is B videos seen by one sensor; temporal noise is drawn per batch
element. All randomness comes from one torch.Generator on the simulator's device seeded with
`config.seed`; CPU and CUDA generators give different streams, the ideal preset has none.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from evtransfer.events import Events
from evtransfer.simulate._checks import (
    SimulationError,
    as_frames,
    as_time_us,
    bad_values,
    check_shape,
    make_generator,
)
from evtransfer.simulate.dvs_config import IDEAL, DvsConfig

_NEVER = -(2**62)  # "no event yet" timestamp: far in the past, yet safe to subtract from
_MAX_BUCKETS = 1 << 24  # numba counting sort: beyond B * (dt + 1) keys the torch path sorts
# code: SensorsINI/v2e : v2ecore/emulator_utils.py (rescale_intensity_frame: (DN + 20) / 275)
_V2E_DN_OFFSET = 20.0 / 255.0


class DvsSimulator:
    """Streaming DVS simulator for `batch` videos of `height` × `width` pixels on `device`.

    Call `feed(frames, t_us)` once per frame: frames are (batch, H, W) linear intensities (floats
    >= 0, e.g. uint8 / 255), t_us an int µs timestamp greater than the previous one. The first
    call only sets the state; each later call returns, per batch element, the `Events` of the
    interval (t_prev, t_us], sorted by time (ties in generation order: signal crossings in pixel
    order, then shot noise, then hot pixels). `reset()` forgets the state and reseeds.
    `max_chunk_events` bounds the temporaries of the torch crossing expansion (never the
    output). backend "numba" (or "auto" on the CPU when numba is installed) runs the linear
    mode (no low-pass, leak, shot noise, hot pixels or jitter) through fused CPU kernels whose
    temporaries are proportional to the output; "torch" runs everything on `device`.
    A frame with NaN, infinite or negative values raises SimulationError; the numba kernels
    find it while reading the frame once, part-way through the state, so that simulator then
    refuses every frame until `reset()` (the torch path checks first and stays usable).
    """

    def __init__(
        self,
        config: DvsConfig = IDEAL,
        height: int = 480,
        width: int = 640,
        batch: int = 1,
        device: str | torch.device = "cpu",
        *,
        max_chunk_events: int = 1 << 22,
        backend: str = "auto",
    ):
        if not isinstance(config, DvsConfig):
            raise SimulationError(f"config must be a DvsConfig, got {type(config)}")
        check_shape(height, width, batch)
        if max_chunk_events < 1:
            raise SimulationError(f"max_chunk_events must be >= 1, got {max_chunk_events}")
        self.config = config
        self.height, self.width, self.batch = int(height), int(width), int(batch)
        self.device = torch.device(device)
        self.max_chunk_events = int(max_chunk_events)
        if backend not in ("auto", "torch", "numba"):
            raise SimulationError(f"backend must be 'auto', 'torch' or 'numba', got {backend!r}")
        self.backend = backend
        self.reset()

    # --- state ----------------------------------------------------------------------
    def reset(self) -> None:
        """Forget all per-pixel state and redraw the fixed pattern from `config.seed`."""
        cfg, npix = self.config, self.height * self.width
        self._gen = make_generator(cfg.seed, self.device)
        self._cp = self._thresholds(cfg.pos_threshold)
        self._cn = self._thresholds(cfg.neg_threshold)
        self._leak_per_us = None
        if cfg.leak_rate_hz > 0:
            spread = torch.randn((self.height, self.width), generator=self._gen,
                                 device=self.device, dtype=torch.float64)
            rate = cfg.leak_rate_hz * torch.pow(10.0, cfg.leak_rate_cov_decades * spread)
            self._leak_per_us = rate * self._cp * 1e-6
        n_hot = round(cfg.hot_pixel_fraction * npix) if cfg.hot_pixel_rate_hz > 0 else 0
        self._hot = (
            torch.randperm(npix, generator=self._gen, device=self.device)[:n_hot] if n_hot else None
        )
        # Without low-pass and leak the reference only moves where events happen, so the test
        # "log(I + eps) - ref crosses a threshold" is done on linear intensities against
        # per-pixel bounds exp(ref ± C) - eps, and logs are taken only where it passes.
        self._linear = cfg.cutoff_hz == 0 and self._leak_per_us is None
        self._kernels = self._numba_kernels()
        self._t: int | None = None
        self._prev: torch.Tensor | None = None  # linear mode: last intensity; else filtered log
        self._ref: torch.Tensor | None = None
        self._upper: torch.Tensor | None = None
        self._lower: torch.Tensor | None = None
        self._last_event: torch.Tensor | None = None
        self._state: np.ndarray | None = None  # numba: (B·H·W, 4) upper, lower, ref, prev
        self._poisoned = ""  # why feed refuses until reset(), after a bad frame in the kernels

    def _numba_kernels(self):
        """The numba kernel module when this simulator uses it, else None."""
        cfg = self.config
        fits = (self._linear and self.device.type == "cpu" and cfg.shot_noise_rate_hz == 0
                and self._hot is None and cfg.jitter_us == 0)
        if self.backend == "torch" or (self.backend == "auto" and not fits):
            return None
        if not fits:
            raise SimulationError(
                "backend 'numba' runs on the CPU without low-pass, leak, shot noise, hot pixels "
                "or jitter; use backend 'torch' or 'auto'"
            )
        try:
            from evtransfer.simulate import _numba
        except ImportError:
            if self.backend == "numba":
                raise SimulationError("backend 'numba' needs numba installed") from None
            return None
        return _numba

    def _thresholds(self, nominal: float) -> float | torch.Tensor:
        """A scalar, or an (H, W) float64 map with Gaussian mismatch clamped at the minimum."""
        cfg = self.config
        if cfg.sigma_threshold == 0:
            return max(float(nominal), cfg.min_threshold)
        c = torch.randn((self.height, self.width), generator=self._gen, device=self.device,
                        dtype=torch.float64)
        return (nominal + cfg.sigma_threshold * c).clamp_(min=cfg.min_threshold)

    @property
    def time_us(self) -> int | None:
        """Timestamp of the last frame fed, in µs (None before the first)."""
        return self._t

    # --- public stepping ------------------------------------------------------------
    def feed(self, frames, t_us) -> list[Events]:
        """Advance to the frame `frames` (batch, H, W) at `t_us` µs; one `Events` per video."""
        if self._poisoned:
            raise SimulationError(self._poisoned)
        t = as_time_us(t_us, self._t)
        # the numba kernels check the values on their way through the frame
        fused = (self._kernels is not None and self._t is not None
                 and self.batch * (t - self._t + 1) <= _MAX_BUCKETS)
        intensity = as_frames(frames, self.batch, self.height, self.width, self.device,
                              copy=False, check_values=not fused)
        if self._t is None:
            self._start(intensity, t)
            return [Events.empty(self.width, self.height) for _ in range(self.batch)]
        t0, dt = self._t, t - self._t
        if fused:
            return self._feed_numba(intensity, t0, t)
        if self._linear:
            idx, ref, d0, d1 = self._candidates_linear(intensity)
        else:
            idx, ref, d0, d1 = self._candidates_log(intensity, dt)
        src_pix, src_pol, owner, off = self._crossings(idx, ref, d0, d1, t0, dt)
        extra = []
        if self.config.shot_noise_rate_hz > 0:
            extra.append(self._shot_noise(intensity, dt))
        if self._hot is not None:
            extra.append(self._hot_pixel_events(dt))
        for pix, pol, offsets in extra:
            owner = torch.cat([owner, src_pix.numel() + torch.arange(pix.numel(),
                                                                     device=self.device)])
            src_pix, src_pol = torch.cat([src_pix, pix]), torch.cat([src_pol, pol])
            off = torch.cat([off, offsets])
        if self._linear:
            self._prev.copy_(intensity)
        self._t = t
        return self._assemble(src_pix, src_pol, owner, off, t0, dt)

    def _feed_numba(self, intensity: torch.Tensor, t0: int, t1: int) -> list[Events]:
        """The interval (t0, t1] through the fused CPU kernels (same model and order as the
        torch path). A frame with bad values leaves the state partly advanced: it is refused,
        and so is every later frame until `reset()`."""
        k, npix, dt = self._kernels, self.height * self.width, t1 - t0
        cand = self._candidates
        m, total = k.crossing_pixels(intensity.numpy().reshape(-1), self._state,
                                     self._thresholds_flat, self.config.eps, npix, float(dt),
                                     *cand)
        if m < 0:
            problem = bad_values(intensity) or "frames contain bad intensities"
            self._poisoned = (f"{problem} (frame at t_us={t1}), and the simulator is part-way "
                              "through it: call reset() before feeding it again")
            raise SimulationError(self._poisoned)
        self._t = t1
        last = self._last_event.numpy().reshape(-1) if self._last_event is not None else cand[0]
        period = int(self.config.refractory_us) if self._last_event is not None else -1
        src, off, pol, hist = k.crossing_events(*cand, m, total, t0, dt, npix, self.batch, last,
                                                period)
        x, y, t, p, starts = k.counting_sort(src, off, pol, hist, t0, dt, npix, self.width,
                                             self.batch)
        # valid by construction (pixels on the sensor, p = ±1, sorted by the counting sort)
        return [
            Events._trusted(x[i:j], y[i:j], t[i:j], p[i:j], self.width, self.height)
            for i, j in zip(starts[:-1].tolist(), starts[1:].tolist(), strict=True)
        ]

    def _log(self, intensity: torch.Tensor) -> torch.Tensor:
        return torch.add(intensity, self.config.eps).log_()

    def _start(self, intensity: torch.Tensor, t: int) -> None:
        log_i = self._log(intensity)
        if self._kernels is not None:
            n = log_i.numel()
            cp, cn = (c.numpy().reshape(-1) if isinstance(c, torch.Tensor) else np.array([c])
                      for c in (self._cp, self._cn))
            self._thresholds_flat = np.stack([cp, cn, np.exp(cp), np.exp(-cn)], axis=1)
            # the kernels keep (upper, lower, ref, prev) of a pixel side by side; the torch
            # tensors (for intervals too long for the kernels' sort) are strided views of it
            self._state = np.empty((n, 4))
            self._kernels.start_state(intensity.numpy().reshape(-1), log_i.numpy().reshape(-1),
                                      self._thresholds_flat, self.config.eps,
                                      self.height * self.width, self._state)
            views = [torch.from_numpy(self._state[:, k]).view(log_i.shape) for k in range(4)]
            self._upper, self._lower, self._ref, self._prev = views
            self._candidates = (np.empty(n, np.int64), np.empty(n, np.int64),
                                np.empty(n, np.float64), np.empty(n, np.float64))
        else:
            self._ref = log_i.clone()
            self._prev = intensity.clone() if self._linear else log_i
            if self._linear:
                self._upper = torch.empty_like(log_i)
                self._lower = torch.empty_like(log_i)
                self._start_bounds(intensity)
        self._t = t
        if self.config.refractory_us > 0:
            self._last_event = torch.full_like(log_i, _NEVER, dtype=torch.int64)

    def _start_bounds(self, intensity: torch.Tensor) -> None:
        """Linear-intensity bounds of the references log(I + eps) set by `_start`:
        exp(ref ± C) - eps = (I + eps)·exp(±C) - eps, without a log or exp per pixel."""
        eps = self.config.eps
        shifted = intensity + eps
        for out, c in ((self._upper, self._cp), (self._lower, -self._cn)):
            factor = c.exp() if isinstance(c, torch.Tensor) else math.exp(c)
            torch.mul(shifted, factor, out=out).sub_(eps)

    def _set_ref(self, idx: torch.Tensor, ref: torch.Tensor) -> None:
        """Store the references `ref` of the flat pixels `idx` and, in linear mode, their
        linear-intensity bounds exp(ref + C+) - eps and exp(ref - C-) - eps."""
        eps, npix = self.config.eps, self.height * self.width
        self._ref.view(-1)[idx] = ref
        if self._linear:
            self._upper.view(-1)[idx] = torch.exp(ref + _at(self._cp, idx, npix)) - eps
            self._lower.view(-1)[idx] = torch.exp(ref - _at(self._cn, idx, npix)) - eps

    def _candidates_linear(self, intensity: torch.Tensor):
        """Flat indices of the pixels that cross, their references, and d0, d1 = log level -
        reference at the start and end of the interval, found with the linear bounds."""
        hit = (intensity >= self._upper).logical_or_(intensity <= self._lower)
        idx = hit.view(-1).nonzero().squeeze(1)
        ref = self._ref.view(-1)[idx]
        d1 = self._log(intensity.view(-1)[idx]) - ref
        d0 = self._log(self._prev.view(-1)[idx]) - ref
        return idx, ref, d0, d1

    def _candidates_log(self, intensity: torch.Tensor, dt: int):
        """As `_candidates_linear`, for the general model (low-pass filter, leak drift)."""
        level = self._low_pass(self._log(intensity), intensity, dt)
        ref = self._ref
        drift = None
        if self._leak_per_us is not None:
            drift = self._leak_per_us * dt
            ref.sub_(drift)
        diff = level - ref
        idx = ((diff >= self._cp) | (diff <= -self._cn)).view(-1).nonzero().squeeze(1)
        d1 = diff.view(-1)[idx]
        ref = ref.view(-1)[idx]
        d0 = self._prev.view(-1)[idx] - ref
        if drift is not None:
            d0 = d0 - drift.view(-1)[idx % (self.height * self.width)]
        self._prev = level
        return idx, ref, d0, d1

    def _low_pass(self, log_i: torch.Tensor, intensity: torch.Tensor, dt: int) -> torch.Tensor:
        cutoff = self.config.cutoff_hz
        if cutoff <= 0:
            return log_i
        # code: SensorsINI/v2e : v2ecore/emulator_utils.py (low_pass_filter): the time constant
        # shrinks with intensity, and the update fraction is clamped at 1 to stay stable.
        scale = (intensity + _V2E_DN_OFFSET) / (1.0 + _V2E_DN_OFFSET)
        frac = (scale * (dt * 1e-6 * 2.0 * math.pi * cutoff)).clamp_(max=1.0)
        return self._prev + frac * (log_i - self._prev)

    # --- signal crossings -----------------------------------------------------------
    def _crossings(self, idx, ref, d0, d1, t0: int, dt: int):
        """Events of the crossing pixels `idx`; moves their references.

        Crossing k of a pixel sits where the linear path d0 -> d1 reaches k * step, at
        fraction s = (k * step - d0) / (d1 - d0) of the interval, i.e. at offset
        round(a + k * b) µs with a = -d0 dt / (d1 - d0), b = step dt / (d1 - d0). Returns the
        per-pixel sources (flat pixel, polarity) and per-event (source index, offset).
        """
        npix = self.height * self.width
        up = d1 > 0
        c = torch.where(up, _at(self._cp, idx, npix), _at(self._cn, idx, npix))
        count = torch.floor(d1.abs() / c).to(torch.int64)
        step = torch.where(up, c, -c)
        self._set_ref(idx, ref + step * count)
        scale = dt / (d1 - d0)
        a, b = -d0 * scale, step * scale
        pieces = [
            self._expand(lo, idx[lo:hi], count[lo:hi], a[lo:hi], b[lo:hi], t0, dt)
            for lo, hi in _chunks(count, self.max_chunk_events)
        ]
        owner, off = (torch.cat(z) for z in zip(*pieces, strict=True))
        return idx, torch.where(up, 1, -1).to(torch.int8), owner, off

    def _expand(self, first: int, idx, count, a, b, t0: int, dt: int):
        """(owner, offset) of every crossing of one chunk of pixels, grouped by pixel in time
        order; `first` is the chunk's position among all crossing pixels."""
        if bool((count == 1).all()):
            owner = torch.arange(count.numel(), device=self.device)
            k = 1.0
            start = owner
        else:
            owner = torch.repeat_interleave(count)
            start = torch.cumsum(count, 0) - count
            k = (torch.arange(owner.numel(), device=self.device) - start[owner] + 1).double()
            a, b = a[owner], b[owner]
        # float rounding (or a zero slope) can put s a hair outside (0, 1]: clamp
        off = torch.round(a + k * b).nan_to_num_(0.0).clamp_(0, dt).to(torch.int64)
        if self._last_event is not None:
            keep = self._refractory(idx, count, start, off, t0)
            owner, off = owner[keep], off[keep]
        return owner + first, off

    def _refractory(self, idx, count, start, off, t0: int) -> torch.Tensor:
        """Keep mask for crossings grouped by pixel in time order: crossing j of every pixel is
        decided in one vectorised step against that pixel's last emitted event time."""
        last = self._last_event.view(-1)
        period = int(self.config.refractory_us)
        keep = torch.empty_like(off, dtype=torch.bool)
        alive = torch.arange(count.numel(), device=self.device)
        for j in range(int(count.max()) if count.numel() else 0):
            alive = alive[count[alive] > j]
            pos = start[alive] + j
            p = idx[alive]
            t = off[pos] + t0
            ok = t - last[p] >= period
            keep[pos] = ok
            last[p] = torch.where(ok, t, last[p])
        return keep

    # --- noise ----------------------------------------------------------------------
    def _poisson_total(self, mean: float) -> int:
        lam = torch.tensor([mean], dtype=torch.float64, device=self.device)
        return int(torch.poisson(lam, generator=self._gen).item())

    def _uniform_offsets(self, n: int, dt: int) -> torch.Tensor:
        """n integer offsets uniform over (0, dt] µs."""
        u = torch.rand(n, generator=self._gen, device=self.device, dtype=torch.float64)
        return (torch.floor(u * dt).to(torch.int64) + 1).clamp_(max=dt)

    def _shot_noise(self, intensity: torch.Tensor, dt: int):
        """Shot noise by thinning: candidates at the peak rate, uniform over pixels and time,
        each kept with probability rate(I) / peak, which is an exact Poisson process per pixel."""
        cfg = self.config
        factor = cfg.shot_noise_bright_factor
        peak = cfg.shot_noise_rate_hz * max(1.0, factor)
        n_all = self.batch * self.height * self.width
        n = self._poisson_total(peak * dt * 1e-6 * n_all)
        pix = torch.randint(0, n_all, (n,), generator=self._gen, device=self.device)
        off = self._uniform_offsets(n, dt)
        u = torch.rand(2, n, generator=self._gen, device=self.device, dtype=torch.float64)
        if factor != 1.0:
            bright = intensity.view(-1)[pix].clamp(0.0, 1.0)
            keep = u[1] * peak < cfg.shot_noise_rate_hz * (1.0 + (factor - 1.0) * bright)
            pix, off, u = pix[keep], off[keep], u[:, keep]
        pol = torch.where(u[0] < 0.5, 1, -1).to(torch.int8)
        # code: SensorsINI/v2e : v2ecore/emulator.py: a noise event resets the memorised level
        level = self._log(intensity.view(-1)[pix]) if self._linear else self._prev.view(-1)[pix]
        self._set_ref(pix, level)
        return pix, pol, off

    def _hot_pixel_events(self, dt: int):
        """ON events of the hot pixels, Poisson at hot_pixel_rate_hz in every batch element."""
        hot = self._hot
        slots = self.batch * hot.numel()
        n = self._poisson_total(self.config.hot_pixel_rate_hz * dt * 1e-6 * slots)
        slot = torch.randint(0, slots, (n,), generator=self._gen, device=self.device)
        pix = (slot // hot.numel()) * (self.height * self.width) + hot[slot % hot.numel()]
        off = self._uniform_offsets(n, dt)
        return pix, torch.ones(n, dtype=torch.int8, device=self.device), off

    # --- output ---------------------------------------------------------------------
    def _assemble(self, src_pix, src_pol, owner, off, t0: int, dt: int) -> list[Events]:
        """Sort the events by (batch, time), stable, and split them into one stream per video."""
        npix = self.height * self.width
        if self.config.jitter_us > 0 and off.numel():
            noise = torch.randn(off.numel(), generator=self._gen, device=self.device,
                                dtype=torch.float64)
            off = (off + torch.round(noise * self.config.jitter_us).to(torch.int64)).clamp_(0, dt)
        src_b = src_pix // npix if self.batch > 1 else None
        key = off if src_b is None else src_b[owner] * (dt + 1) + off
        order = _stable_argsort(key, self.batch * (dt + 1))
        owner, off = owner[order], off[order]
        local = src_pix % npix if src_b is not None else src_pix
        x = (local % self.width).to(torch.int16)[owner].cpu().numpy()
        y = (local // self.width).to(torch.int16)[owner].cpu().numpy()
        p = src_pol[owner].cpu().numpy()
        t = (off + t0).cpu().numpy()
        if src_b is None:
            bounds = [0, len(t)]
        else:
            counts = torch.bincount(src_b[owner], minlength=self.batch)
            bounds = [0, *torch.cumsum(counts, 0).tolist()]
        return [
            Events(x[i:j], y[i:j], t[i:j], p[i:j], self.width, self.height)
            for i, j in zip(bounds[:-1], bounds[1:], strict=True)
        ]


def simulate_events(
    frames,
    t_us,
    config: DvsConfig = IDEAL,
    *,
    device: str | torch.device = "cpu",
    backend: str = "auto",
) -> Events:
    """Events of one video: frames (T, H, W) linear intensity, t_us (T,) increasing int µs.

    A convenience around `DvsSimulator`: a fresh simulator is fed every frame in order and the
    per-interval streams are concatenated (they never overlap in time).
    """
    t_list = _time_list(t_us)
    if len(frames) != len(t_list):
        raise SimulationError(f"got {len(frames)} frames but {len(t_list)} timestamps")
    if len(t_list) == 0:
        raise SimulationError("simulate_events needs at least one frame")
    height, width = frames[0].shape[-2:]
    sim = DvsSimulator(config, int(height), int(width), 1, device, backend=backend)
    streams = [sim.feed(frame, t)[0] for frame, t in zip(frames, t_list, strict=True)]
    return Events.concatenate(streams)


def _time_list(t_us) -> list:
    if isinstance(t_us, torch.Tensor):
        if t_us.is_floating_point():
            raise SimulationError(f"t_us must be integer µs, got dtype {t_us.dtype}")
        return t_us.flatten().tolist()
    arr = np.asarray(t_us)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise SimulationError(f"t_us must be 1-D integer µs, got {arr.dtype} {arr.shape}")
    return arr.tolist()


def _at(c, idx: torch.Tensor, npix: int) -> torch.Tensor:
    """float64 thresholds of the flat (b, y, x) pixels `idx` from a scalar or an (H, W) map."""
    if isinstance(c, torch.Tensor):
        return c.view(-1)[idx % npix]
    return torch.full(idx.shape, c, dtype=torch.float64, device=idx.device)


def _chunks(count: torch.Tensor, budget: int) -> list[tuple[int, int]]:
    """Consecutive pixel ranges [a, b) holding about `budget` crossings each (at least one pixel,
    so one pixel with more crossings than the budget forms a chunk by itself)."""
    total = int(count.sum())
    if total <= budget:
        return [(0, count.numel())]
    cum = torch.cumsum(count, 0)
    marks = torch.arange(budget, total, budget, device=count.device)
    cuts = torch.searchsorted(cum, marks, right=True).tolist()
    edges = sorted({0, *(c for c in cuts if 0 < c < count.numel()), count.numel()})
    return list(zip(edges[:-1], edges[1:], strict=True))


def _stable_argsort(key: torch.Tensor, bound: int) -> torch.Tensor:
    """Stable argsort of non-negative int64 keys below `bound`, in the narrowest integer dtype:
    on CPU, 16-bit keys go to NumPy's radix sort (linear time, far faster than torch.sort)."""
    if key.device.type == "cpu" and bound <= np.iinfo(np.uint16).max + 1:
        order = np.argsort(key.numpy().astype(np.uint16), kind="stable")
        return torch.from_numpy(order)
    if bound <= np.iinfo(np.int16).max:
        key = key.to(torch.int16)
    elif bound <= np.iinfo(np.int32).max:
        key = key.to(torch.int32)
    return torch.sort(key, stable=True).indices
