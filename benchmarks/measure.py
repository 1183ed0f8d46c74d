"""Figures, measurements and the arithmetic around them."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

TIMES = "\u00d7"  # the multiplication sign
SIDES = ("cqrskit", "eventsourcing")


@dataclass(frozen=True)
class Figure:
    """One thing measured: what it is, its unit, and which way is better."""

    key: str
    label: str
    unit: str
    higher_is_better: bool
    #: ``(kind, number, backend)``: ``("ratio", 20, "sqlite")`` = at least 20 times eventsourcing
    #: on SQLite, ``("max", 200, ...)`` = at most 200 in the figure's unit, ``("min", ...)``
    #: at least that much
    goals: tuple[tuple[str, float, str], ...] = ()

    def target(self, backend: str) -> str:
        """The goals on ``backend`` as text, e.g. ``≥ 20 times`` or ``≤ 200 µs``."""
        texts = []
        for kind, number, where in self.goals:
            if where != backend:
                continue
            if kind == "ratio":
                texts.append(f"≥ {number:g}{TIMES}")
            else:
                shown = f"{number:,.0f}" if number == int(number) else f"{number:g}"
                sep = "" if self.unit == TIMES else " "
                texts.append(f"{'≤' if kind == 'max' else '≥'} {shown}{sep}{self.unit}")
        return ", ".join(texts)


@dataclass
class Measurement:
    """A figure measured on one side and one backend, counted only when ``verified``."""

    figure: str
    backend: str
    side: str
    value: float | None
    verified: bool
    samples: int = 0
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class VerificationError(AssertionError):
    """The state after a benchmark is not what the workload must produce."""


def check(condition: bool, message: str) -> None:
    """Raise :class:`VerificationError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise VerificationError(message)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, nearest-rank."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def latencies_us(call: Callable[[], object], count: int) -> list[float]:
    """Run ``call`` ``count`` times; each call's duration in microseconds."""
    out = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        out.append((time.perf_counter() - start) * 1e6)
    return out


async def latencies_us_async(call: Callable[[], Awaitable[object]], count: int) -> list[float]:
    """Await ``call()`` ``count`` times; each call's duration in microseconds."""
    out = []
    for _ in range(count):
        start = time.perf_counter()
        await call()
        out.append((time.perf_counter() - start) * 1e6)
    return out


def ratio(cqrskit: float | None, other: float | None, higher_is_better: bool) -> float | None:
    """How many times better cqrskit is (> 1 means better), or None when not comparable."""
    if cqrskit is None or other is None or cqrskit <= 0 or other <= 0:
        return None
    return cqrskit / other if higher_is_better else other / cqrskit


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else math.inf
