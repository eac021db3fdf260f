"""The non-finite guard: a run whose loss or weights become NaN or infinite stops.

A diverged run must not look finished, or stage caching would reuse it. `FiniteWatch` records,
on the device and without a host-device sync, the first step at which each logged term was
NaN or ±inf; the loop reads that record only where it already waits for the device (a metrics
flush, a checkpoint save), and checks the weights before it writes a checkpoint, so
`checkpoints/last` always holds the last finite state. Under DDP the record is reduced over
ranks (one collective at those points), so every rank stops at the same place.
"""

from __future__ import annotations

import math
from collections.abc import Container, Mapping

import torch
from torch import nn

from evtransfer.engine.distributed import all_reduce_min

_NEVER = 2**62  # the code of a term that stayed finite
_KINDS = {1: "nan", 2: "inf", 3: "-inf"}


class NonFiniteError(FloatingPointError):
    """A loss term or a weight became NaN or infinite; the run stopped before saving it.

    `step` counts completed iterations as `metrics.jsonl` does (the failing iteration is the
    `step`-th); `terms` names the non-finite loss terms (or `weights:<module>.<parameter>`).
    """

    def __init__(self, message: str, *, step: int, terms: tuple[str, ...]):
        super().__init__(message)
        self.step, self.terms = step, terms


class FiniteWatch:
    """The first non-finite step of every logged term, kept where the values live."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self._codes: dict[tuple[str, ...], torch.Tensor] = {}  # device int64, one per term
        self._host: dict[str, int] = {}

    def update(self, values: Mapping[str, torch.Tensor | float], step: int,
               skip: Container[str] = ()) -> None:
        """Record step `step`'s scalar `values` (tensors stay on their device: no sync)."""
        keys = tuple(k for k, v in values.items() if k not in skip and isinstance(v, torch.Tensor))
        for key, value in values.items():
            if key not in skip and not isinstance(value, torch.Tensor):
                code = _code(float(value), step)
                self._host[key] = min(self._host.get(key, _NEVER), code)
        if not keys:
            return
        v = torch.stack([values[k].detach().reshape(()).float().to(self.device, non_blocking=True)
                         for k in keys])
        # code = 4·step + kind (1 nan, 2 +inf, 3 -inf): the minimum is the earliest failure
        code = torch.where(torch.isfinite(v), _NEVER, 4 * step + 1 + (v > 0) + 2 * (v < 0))
        running = self._codes.get(keys)
        self._codes[keys] = code if running is None else torch.minimum(running, code)

    def first_failure(self) -> tuple[int, tuple[str, ...]] | None:
        """(step, ("term (nan)", …)) of the earliest non-finite step over all ranks, or None.

        Reads the record to the host: call it only where the loop already synchronises.
        Collective under DDP (every rank must call it at the same points).
        """
        names = [k for keys in self._codes for k in keys] + list(self._host)
        if not names:
            return None
        host = torch.tensor(list(self._host.values()), dtype=torch.int64, device=self.device)
        parts = [*self._codes.values(), host]
        codes = all_reduce_min(torch.cat(parts)).tolist()
        first = min(codes)
        if first == _NEVER:
            return None
        step = first // 4
        terms = {}
        for name, code in zip(names, codes, strict=True):
            if code // 4 == step:
                terms.setdefault(name, f"{name} ({_KINDS[code % 4]})")
        return step, tuple(terms[n] for n in sorted(terms))


def _code(value: float, step: int) -> int:
    if math.isfinite(value):
        return _NEVER
    return 4 * step + (1 if math.isnan(value) else 2 if value > 0 else 3)


def nonfinite_parameter(modules: Mapping[str, nn.Module]) -> str | None:
    """`<module>.<parameter>` of the first parameter holding NaN or ±inf, or None.

    Parameters only: buffers may legitimately hold ±inf (attention masks).
    """
    named = [(f"{m}.{n}", p) for m, module in modules.items()
             for n, p in module.named_parameters() if p.is_floating_point()]
    if not named:
        return None
    device = named[0][1].device
    finite = torch.stack([torch.isfinite(p.detach()).all().to(device) for _, p in named])
    if bool(finite.all()):
        return None
    return named[int((~finite).nonzero()[0, 0])][0]
