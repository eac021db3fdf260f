"""The label firewall: target labels travel with the data but a method cannot read them.

A method trains on what its data object holds. The target train labels and the target test
labels ride along (the evaluation step and the target-supervised rows need them), wrapped in
`Withheld`: every way of using the wrapper as data (indexing, `len`, attributes, numpy or
torch operations) raises `LabelAccessError`, naming what was read and which readers may read
it. A reader that is allowed says so explicitly, `labels.read(EVALUATION)`, so a grep finds
every place that unwraps labels; the benchmark does it for scoring and for the target-supervised
rows (`TARGET_SUPERVISED`: oracle, ess_supervised, ECDDP's fine-tuning), and a diagnosis
scores pseudo-labels against the target train labels of a dev world (`DIAGNOSIS`); never a
method.
"""

from __future__ import annotations

from typing import Any

EVALUATION = "evaluation"  # scoring a trained method (benchmark, MethodResult scoring)
TARGET_SUPERVISED = "target-supervised"  # rows that train on target labels by design
DIAGNOSIS = "diagnosis"  # scoring pseudo-labels on a dev world (benchmarks/cmess_tpl.py)


class LabelAccessError(PermissionError):
    """Withheld labels were read by code that may not read them."""


class Withheld:
    """Labels (any value: a tensor, a dataset) that only `readers` may read, via `read`.

    `what` names them in errors, e.g. "target test labels (TransferData.test_label)"."""

    __slots__ = ("_value", "readers", "what")

    def __init__(self, value: Any, what: str, readers: tuple[str, ...]):
        if isinstance(value, Withheld):
            raise TypeError(f"{what}: already withheld")
        object.__setattr__(self, "_value", value)
        object.__setattr__(self, "what", what)
        object.__setattr__(self, "readers", tuple(readers))

    def read(self, reader: str) -> Any:
        """The labels, for `reader` (one of `readers`); LabelAccessError for anyone else."""
        if reader not in self.readers:
            raise LabelAccessError(f"{self.what}: reader {reader!r} refused; only "
                                   f"{', '.join(self.readers)} may read them")
        return self._value

    def replace(self, value: Any) -> Withheld:
        """The same firewall around other labels (e.g. the poisoned copies of the tests)."""
        return Withheld(value, self.what, self.readers)

    def __reduce__(self):
        return Withheld, (self._value, self.what, self.readers)  # copies stay withheld

    def _refuse(self, how: str):
        raise LabelAccessError(f"{self.what} are withheld from training ({how}); only "
                               f"{', '.join(self.readers)} may read them, through "
                               f".read(<reader>)")

    def __getattr__(self, name: str):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)  # protocol probes (copy, numpy) find nothing
        self._refuse(f"attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        self._refuse(f"setting {name!r}")

    def __getitem__(self, index):
        self._refuse("indexing")

    def __len__(self) -> int:
        self._refuse("len()")

    def __iter__(self):
        self._refuse("iteration")

    def __bool__(self) -> bool:
        self._refuse("truth value")

    def __eq__(self, other):
        self._refuse("comparison")

    def __ne__(self, other):
        self._refuse("comparison")

    __hash__ = None

    def __array__(self, *args, **kwargs):
        self._refuse("numpy conversion")

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        flat = [*args, *(kwargs or {}).values()]
        flat += [b for a in flat if isinstance(a, (list, tuple)) for b in a]
        what = next((a.what for a in flat if isinstance(a, Withheld)), "withheld labels")
        raise LabelAccessError(f"{what} are withheld from training (torch.{func.__name__})")

    def __repr__(self) -> str:
        return f"Withheld({self.what}; readers: {', '.join(self.readers)})"


def withhold(value: Any, what: str, readers: tuple[str, ...]) -> Withheld:
    """`value` behind the firewall (a `Withheld` is returned as it is)."""
    return value if isinstance(value, Withheld) else Withheld(value, what, readers)
