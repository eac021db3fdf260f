"""EMA teacher: a frozen copy of a student updated as teacher = m * teacher + (1 - m) * student.

The update runs under `no_grad` with fused multi-tensor ops (one launch per dtype group, no
host sync), over parameters and floating-point buffers; integer buffers (BatchNorm's
`num_batches_tracked`) are copied. The teacher never receives gradients.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from evtransfer.engine.distributed import unwrap


class EmaTeacher:
    """Exponential moving average of `student` (DDP wrappers are unwrapped).

    `module` is a deep copy of the student with `requires_grad=False`, put in eval mode (call
    `module.train()` if a method wants train-mode teacher behaviour). `momentum` is the
    default used when `update` is called without one; the training loop passes the value of
    the `ema_momentum` schedule instead when there is one.
    """

    def __init__(self, student: nn.Module, momentum: float = 0.999):
        self.momentum = _check_momentum(momentum)
        self.module = copy.deepcopy(unwrap(student))
        self.module.requires_grad_(False)
        self.module.eval()

    @torch.no_grad()
    def update(self, student: nn.Module, momentum: float | None = None) -> None:
        """teacher <- m * teacher + (1 - m) * student for parameters and float buffers."""
        m = self.momentum if momentum is None else _check_momentum(momentum)
        student = unwrap(student)
        t_params, s_params = _paired(self.module.named_parameters(), student.named_parameters())
        t_bufs, s_bufs = _paired(self.module.named_buffers(), student.named_buffers())
        t_float = [t for t in t_params + t_bufs if t.is_floating_point()]
        s_float = [s for s in s_params + s_bufs if s.is_floating_point()]
        if t_float:
            torch._foreach_lerp_(t_float, s_float, 1.0 - m)
        for t, s in zip(t_bufs, s_bufs, strict=True):
            if not t.is_floating_point():
                t.copy_(s)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The teacher's weights (the same keys as the student's `state_dict`)."""
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load teacher weights saved by `state_dict`."""
        self.module.load_state_dict(state)


def _check_momentum(momentum: float) -> float:
    m = float(momentum)
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"EMA momentum must be in [0, 1], got {momentum!r}")
    return m


def _paired(teacher_items, student_items) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Teacher and student tensors in matching order; an error if names or shapes differ."""
    t_named, s_named = dict(teacher_items), dict(student_items)
    if t_named.keys() != s_named.keys():
        missing = sorted(t_named.keys() ^ s_named.keys())
        raise ValueError(f"EMA teacher and student differ in tensors: {missing[:5]}")
    for name, t in t_named.items():
        if t.shape != s_named[name].shape:
            raise ValueError(
                f"EMA tensor {name!r}: teacher shape {tuple(t.shape)} != "
                f"student shape {tuple(s_named[name].shape)}"
            )
    return list(t_named.values()), [s_named[k] for k in t_named]
