"""How a process's resident memory moved over a long load, from samples taken through it: `embedserve soak`
(per process role, from /metrics) and the bench's soak (per worker, from /proc) both judge drift this way."""

from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass
class MemoryDrift:
    process: str
    first_mb: float
    last_mb: float
    max_mb: float
    # Medians over a window right after the warm-up and over the last window: a worker's RSS swings with each batch,
    # so single samples would make the drift a coin toss.
    settled_mb: float
    end_mb: float

    @property
    def drift_pct(self) -> float:
        return 100 * (self.end_mb / self.settled_mb - 1) if self.settled_mb else 0.0


def memory_drift(rows: list[dict], warmup: float, window: float) -> list[MemoryDrift]:
    """Per process role (and the whole tree): first, last and max RSS, and the drift from the window after the
    warm-up to the last window."""
    if not rows:
        return []
    keys = sorted({key for row in rows for key in row if key != "t"})
    for row in rows:
        row["server tree"] = sum(row.get(key, 0.0) for key in keys)
    end = rows[-1]["t"]
    settled = [row for row in rows if warmup <= row["t"] < warmup + window] or rows[-1:]
    final = [row for row in rows if row["t"] > end - window] or rows[-1:]
    return [
        MemoryDrift(
            key,
            first_mb=rows[0].get(key, 0.0),
            last_mb=rows[-1].get(key, 0.0),
            max_mb=max(row.get(key, 0.0) for row in rows),
            settled_mb=statistics.median(row.get(key, 0.0) for row in settled),
            end_mb=statistics.median(row.get(key, 0.0) for row in final),
        )
        for key in [*keys, "server tree"]
    ]
