"""When each request of an open-loop run is due: arrivals at a fixed rate, evenly spaced or as a Poisson process.

The schedule is computed before the run and seeded, so two runs send at the same moments; the generator then only
has to keep to it, and how far it falls behind is measured against this list.
"""

from __future__ import annotations

import random
from typing import Literal

Arrival = Literal["poisson", "constant"]


def arrival_times(rate: float, seconds: float, arrival: Arrival = "poisson", seed: int = 0) -> list[float]:
    """Offsets in seconds from the start of the run, ascending, all below `seconds`.

    constant: one every 1/rate seconds. poisson: exponential gaps of mean 1/rate (independent arrivals, as many
    clients each sending now and then produce; bursts included)."""
    if rate <= 0 or seconds <= 0:
        raise ValueError("rate and seconds must be positive")
    if arrival == "constant":
        return [index / rate for index in range(int(rate * seconds - 1e-9) + 1)]
    rng = random.Random(f"arrivals:{seed}")
    times, now = [], rng.expovariate(rate)
    while now < seconds:
        times.append(now)
        now += rng.expovariate(rate)
    return times
