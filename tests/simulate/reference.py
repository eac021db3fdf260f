"""Independent scalar float64 references for the simulator tests.

Written from the model definitions (ESIM's per-pixel crossing loop, a tick-by-tick
integrate-and-fire loop), one pixel or one tick at a time, so the tests compare two separate
implementations rather than the library against itself.
"""

from __future__ import annotations

import numpy as np


def esim_pixel(levels, times, c_pos: float, c_neg: float, refractory_us: int = 0,
               leak_per_us: float = 0.0) -> list[tuple[int, int]]:
    """(t_us, polarity) events of one pixel whose (filtered) log level is `levels` at `times`.

    Between two samples the level is linear in time; the reference starts at levels[0], drifts
    down by leak_per_us per µs, and moves one threshold per crossing; crossings closer than
    `refractory_us` to the last emitted event are not emitted but still move the reference.
    """
    ref = float(levels[0])
    last = None
    out = []
    for i in range(1, len(levels)):
        l0, l1 = float(levels[i - 1]), float(levels[i])
        t0, t1 = int(times[i - 1]), int(times[i])
        drift = leak_per_us * (t1 - t0)
        d0 = l0 - ref
        d1 = l1 - (ref - drift)
        pol, c = (1, c_pos) if d1 >= 0 else (-1, c_neg)
        k = 0
        while abs(d1) >= (k + 1) * c:
            k += 1
            s = (pol * k * c - d0) / (d1 - d0)
            t = t0 + int(np.rint(s * (t1 - t0)))
            if last is None or t - last >= refractory_us:
                out.append((t, pol))
                last = t
        ref = ref - drift + pol * k * c
    return out


def integrate_and_fire(charges: np.ndarray, theta, init) -> np.ndarray:
    """(T, H, W) uint8 fire bits: each tick adds charges[k]; a pixel at or above theta fires
    and subtracts theta (charges below theta per tick, so at most one crossing)."""
    acc = np.array(init, dtype=np.float64, copy=True)
    out = np.zeros(charges.shape, np.uint8)
    for k in range(charges.shape[0]):
        acc = acc + charges[k]
        fire = acc >= theta
        out[k] = fire
        acc = np.where(fire, acc - theta, acc)
    return out
