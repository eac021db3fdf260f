"""Model registry: `create_model(name, ...)` and `list_models()`.

The table is explicit: each model module exports a `MODELS` dict of name -> builder, merged
here, so what is registered is visible in one place and nothing registers on import.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable

from torch import nn

from evtransfer.models.weights import apply_encoder_init

Builder = Callable[..., nn.Module]


def _table() -> dict[str, Builder]:
    from evtransfer.models import dpt, heads, mit, recurrent, resnet, segmenters, swin

    # each model module appends itself
    modules: list = [heads, resnet, swin, dpt, recurrent, mit, segmenters]
    table: dict[str, Builder] = {}
    for module in modules:
        for name, builder in module.MODELS.items():
            if name in table:
                raise RuntimeError(f"model name {name!r} registered twice")
            table[name] = builder
    return table


def list_models(pattern: str = "*") -> list[str]:
    """Sorted registered model names matching a shell-style `pattern`."""
    return sorted(n for n in _table() if fnmatch.fnmatch(n, pattern))


def create_model(name: str, **kwargs) -> nn.Module:
    """Build model `name` with keyword options (in_chans, num_classes, ...).

    Raises ValueError for an unknown name or for options the model does not take (checked
    against the builder's signature before anything is built).
    """
    table = _table()
    if name not in table:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(table))}")
    builder = table[name]
    try:
        inspect.signature(builder).bind(**kwargs)
    except TypeError as err:
        raise ValueError(f"model {name!r}: {err}; it takes "
                         f"{', '.join(inspect.signature(builder).parameters)}") from err
    model = builder(**kwargs)
    apply_encoder_init(name, model)  # a no-op outside `models.weights.encoder_init`
    return model
