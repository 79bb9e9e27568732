"""Fitting the search into --budget: how long each rate-search cell runs and how many rounds a candidate gets, from
the time left over the candidates left; and what that cut from the full search."""

from __future__ import annotations

import math

from loadtest.advise.speed import SearchPlan

FULL = SearchPlan()
CELLS_PER_ROUND = 5  # a search from half the in-process estimate: about two doublings and two bisections
CELL_OVERHEAD_S = 3.0  # the generator's process start, the metrics reads, the result
MIN_DURATION_S = 4.0
MIN_WARMUP_S = 1.0


def plan_search(seconds: float) -> SearchPlan:
    """The fullest search that fits `seconds`: first fewer seconds per cell (down to MIN_DURATION_S), then fewer
    rounds (2 still checks that the answer repeats; 1 does not)."""
    for rounds in range(FULL.max_rounds, 0, -1):
        per_cell = seconds / (rounds * CELLS_PER_ROUND) - CELL_OVERHEAD_S
        warmup = round(min(FULL.warmup, max(MIN_WARMUP_S, per_cell * 0.25)), 1)
        if per_cell - warmup < MIN_DURATION_S:  # the warm-up gives way first
            warmup = MIN_WARMUP_S
        duration = min(FULL.duration, per_cell - warmup)
        if duration >= MIN_DURATION_S:
            duration = math.floor(duration * 10) / 10
            return SearchPlan(warmup, duration, rounds, cuts(warmup, duration, rounds))
    plan = SearchPlan(MIN_WARMUP_S, MIN_DURATION_S, 1)
    plan.cuts = [*cuts(plan.warmup, plan.duration, 1), "even so the search does not fit: expect to overrun --budget"]
    return plan


def cuts(warmup: float, duration: float, rounds: int) -> list[str]:
    said = []
    if duration < FULL.duration or warmup < FULL.warmup:
        said.append(
            f"cells of {duration:g} s after {warmup:g} s warm-up instead of {FULL.duration:g} s after {FULL.warmup:g} s"
        )
    if rounds < FULL.max_rounds:
        said.append(
            f"at most {rounds} round{'s' if rounds > 1 else ''} of the rate search instead of {FULL.max_rounds}"
            + (" (its answer is not repeated, so not checked for stability)" if rounds == 1 else "")
        )
    return said
