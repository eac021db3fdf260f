"""What every reader shares: `FormatError`, the `EventReader` protocol and window iteration."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from evtransfer.events import Events, EventsError


class FormatError(EventsError):
    """A file that is not what its format promises; the message names the file."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass(frozen=True)
class RecordingInfo:
    """Summary of a recording: sensor size in pixels, event count, first/last t in µs."""

    format: str
    width: int
    height: int
    events: int
    t_start_us: int
    t_end_us: int

    @property
    def rate_ev_per_s(self) -> float:
        span = self.t_end_us - self.t_start_us
        return self.events / (span * 1e-6) if span > 0 else 0.0


class EventReader(Protocol):
    """A recording opened for streaming; nothing is loaded until a window is asked for.

    Timestamps are int64 µs on the recording's own clock (for DSEC: t + t_offset).
    """

    path: Path

    def info(self) -> RecordingInfo: ...

    def read_window(self, t0_us: int, t1_us: int) -> Events:
        """Events with t0_us <= t < t1_us."""
        ...

    def read_last(self, t_us: int, n: int) -> Events:
        """The last n events with t < t_us."""
        ...

    def read_index(self, i0: int, i1: int) -> Events:
        """Events i0 <= i < i1 in file order."""
        ...


def iter_time_windows(reader: EventReader, dt_us: int, t0_us: int | None = None,
                      t1_us: int | None = None) -> Iterator[Events]:
    """Consecutive windows [t, t + dt_us) over the recording (or over [t0_us, t1_us))."""
    if dt_us <= 0:
        raise ValueError(f"dt_us must be positive, got {dt_us}")
    info = reader.info()
    t = info.t_start_us if t0_us is None else t0_us
    end = info.t_end_us + 1 if t1_us is None else t1_us
    while t < end:
        yield reader.read_window(t, min(t + dt_us, end))
        t += dt_us


def iter_count_windows(reader: EventReader, n: int) -> Iterator[Events]:
    """Consecutive windows of n events (the last may be shorter)."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    total = reader.info().events
    for i in range(0, total, n):
        yield reader.read_index(i, min(i + n, total))
