"""What the commands print while they work: named progress bars and an estimate of the time left.

The estimate is a plain proportion: the work is split into stages weighted in *units* (forward
evaluations per image, roughly), and the time left is the time spent so far scaled by the units still
to do over the units done. It is as good as the weights, so it is printed as "about".
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

__all__ = ["RemainingWork", "bar", "format_seconds", "say", "with_pass_callback"]


def say(line: str, *, file: TextIO | None = None) -> None:
    """Print ``line`` at once, without tearing an active progress bar (``tqdm.write``)."""
    from tqdm.auto import tqdm

    tqdm.write(line, file=file or sys.stdout)
    (file or sys.stdout).flush()


def bar(iterable: Iterable[Any], desc: str, enabled: bool) -> Iterable[Any]:
    """``iterable`` under a transient tqdm bar labelled ``desc`` (unchanged when not ``enabled``)."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, unit="batch", leave=False)


def format_seconds(seconds: float) -> str:
    """``"4.2 s"``, ``"42 s"``, ``"3 min 5 s"`` or ``"1 h 2 min"``.

    Example:
        >>> format_seconds(4.2), format_seconds(42), format_seconds(185), format_seconds(3720)
        ('4.2 s', '42 s', '3 min 5 s', '1 h 2 min')
    """
    if seconds < 9.95:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


@dataclass
class _Stage:
    name: str
    units: float
    most: float  # an upper bound on the units, when ``units`` is only a guess
    seconds: float | None = None  # wall time, once finished


class RemainingWork:
    """Stages of work weighted in units, and the time left at the pace measured so far.

    The pace (seconds per unit) comes from the stages whose units are known; a stage given as
    ``(name, guess, most)`` is a guess until :meth:`finish` gives its real units, and the time left
    is then a range.

    Example:
        >>> work = RemainingWork([("natural", 10), ("grid", 10, 100), ("profile", 30)], now=0.0)
        >>> work.finish(now=1.0)              # 10 units in 1 s
        'natural done in 1.0 s; about 4.0-13 s left'
        >>> work.finish(units=50, now=6.0)    # the grid took 50 units, 5 s
        'grid done in 5.0 s; about 3.0 s left'
    """

    def __init__(
        self, stages: Sequence[tuple[str, float] | tuple[str, float, float]], *, now: float | None = None
    ):
        self.stages = [_Stage(s[0], float(s[1]), float(s[-1])) for s in stages]
        self.fraction = 0.0  # of the current stage
        self.stage_start = self.start = time.perf_counter() if now is None else now

    @property
    def current(self) -> _Stage | None:
        """The first unfinished stage."""
        return next((stage for stage in self.stages if stage.seconds is None), None)

    def advance(self, fraction: float) -> None:
        """Say that ``fraction`` (0 to 1) of the current stage is done."""
        self.fraction = min(max(fraction, 0.0), 1.0)

    def finish(self, *, units: float | None = None, now: float | None = None) -> str:
        """Close the current stage (``units``: what it really took) and describe the time left."""
        stage = self.current
        if stage is None:
            return "done"
        now = time.perf_counter() if now is None else now
        stage.seconds = now - self.stage_start
        if units is not None:
            stage.units = stage.most = float(units)
        self.stage_start, self.fraction = now, 0.0
        return f"{stage.name} done in {format_seconds(stage.seconds)}; {self.describe(now=now)}"

    def remaining_seconds(self, *, now: float | None = None) -> tuple[float, float] | None:
        """``(least, most)`` seconds left at the pace so far; ``None`` before anything is measured."""
        now = time.perf_counter() if now is None else now
        known = [s for s in self.stages if s.seconds is not None and s.units == s.most]
        seconds = sum(s.seconds or 0.0 for s in known)
        units = sum(s.units for s in known)
        current = self.current
        if current is not None and current.units == current.most and self.fraction > 0:
            seconds += now - self.stage_start
            units += self.fraction * current.units
        if units <= 0 or seconds <= 0:
            return None
        pace = seconds / units
        left = [s for s in self.stages if s.seconds is None]
        least = sum(s.units for s in left) - (self.fraction * current.units if current else 0.0)
        most = sum(s.most for s in left) - (self.fraction * current.most if current else 0.0)
        return pace * least, pace * most

    def describe(self, *, now: float | None = None) -> str:
        """``"about 40 s left"``, ``"about 40 s-3 min left"`` (a range), ``"done"`` or unknown."""
        if self.current is None:
            return "done"
        left = self.remaining_seconds(now=now)
        if left is None:
            return "time left not known yet"
        least, most = (format_seconds(value) for value in left)
        if least == most:
            return f"about {least} left"
        if least.endswith(" s") and most.endswith(" s"):
            return f"about {least[:-2]}-{most} left"
        return f"about {least}-{most} left"


class _PassCallback:
    """An iterable that calls ``on_pass()`` each time a pass over ``iterable`` is exhausted."""

    def __init__(self, iterable: Iterable[Any], on_pass: Callable[[], None]) -> None:
        self.iterable = iterable
        self.on_pass = on_pass

    def __iter__(self) -> Iterator[Any]:
        yield from self.iterable
        self.on_pass()

    def __len__(self) -> int:
        return len(self.iterable)  # type: ignore[arg-type]


def with_pass_callback(iterable: Iterable[Any], on_pass: Callable[[], None]) -> Iterable[Any]:
    """Wrap a loader so that ``on_pass()`` runs after every complete pass over it.

    Example:
        >>> passes = []
        >>> loader = with_pass_callback([1, 2], lambda: passes.append("pass"))
        >>> list(loader), list(loader), passes, len(loader)
        ([1, 2], [1, 2], ['pass', 'pass'], 2)
    """
    return _PassCallback(iterable, on_pass)
