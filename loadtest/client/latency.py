"""Exact latency percentiles from raw samples: nearest rank, so every reported figure is a latency that happened.

Locust's own percentiles are rounded to two significant digits (147 ms shows as 150 ms); the sweep and the soak
compute theirs from every sample instead.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p999": 99.9}


def percentile(ordered: list[float], pct: float) -> float:
    """The nearest-rank percentile of an ascending list: the smallest sample with at least pct% of the samples at or
    below it."""
    if not ordered:
        raise ValueError("no samples")
    # rounded first: 99.9 / 100 * 1000 is 999.0000000000001 in floating point, whose ceiling is not the rank
    rank = max(1, math.ceil(round(pct / 100 * len(ordered), 9)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class LatencySummary:
    count: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float

    @classmethod
    def of(cls, samples_ms: Iterable[float]) -> LatencySummary | None:
        ordered = sorted(samples_ms)
        if not ordered:
            return None
        figures = {f"{name}_ms": percentile(ordered, pct) for name, pct in PERCENTILES.items()}
        return cls(count=len(ordered), mean_ms=sum(ordered) / len(ordered), max_ms=ordered[-1], **figures)
