"""`embedserve sweep --find-max`: per backend, profile and batch size, the most load that holds the SLO.

Closed loop: double the users until p99 breaks the SLO, requests fail, or throughput stops rising; the answer is
the highest throughput that held the SLO. Open loop (--rates): double the arrival rate from the first --rates value
until p99 breaks the SLO or 0.1% of requests fail or are shed (halve it instead while the first does not hold), then
halve the gap between the last rate that held and the first that did not, twice; the answer is the maximum
sustainable rate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from loadtest.settings import SweepSettings
from loadtest.sweep.cells import Cell, CellResult

# Less than this gain from doubling the users: the server is saturated.
MIN_GAIN = 1.05
# Open loop: a rate holds when fewer than this share of its requests failed.
MAX_ERROR_RATIO = 0.001
BISECTIONS = 2
# When the first rate does not hold, at most this many halvings look for one that does.
MAX_HALVINGS = 6


@dataclass
class Saturation:
    backend: str
    profile: str
    batch_size: int
    slo_ms: float
    load: str = "closed"  # closed: users; open: arrival rate
    best_concurrency: int | None = None
    best_rate: float | None = None
    best_requests_per_s: float | None = None
    best_inputs_per_s: float | None = None
    best_p99_ms: float | None = None
    stopped_because: str = ""
    tried: list[float] = field(default_factory=list)

    def held(self, result: CellResult) -> None:
        self.best_concurrency = result.concurrency or None
        self.best_rate = result.rate
        self.best_requests_per_s, self.best_inputs_per_s = result.requests_per_s, result.inputs_per_s
        self.best_p99_ms = result.p99_ms


def saturation_levels(settings: SweepSettings) -> list[int]:
    """1, 2, 4, ... up to --max-concurrency."""
    levels, level = [], 1
    while level <= settings.max_concurrency:
        levels.append(level)
        level *= 2
    return levels


def find_max(
    run_cell: Callable[[Cell], CellResult], settings: SweepSettings, on_result: Callable[[CellResult], None]
) -> list[Saturation]:
    """Searches every backend x profile x batch size. `run_cell` measures one cell; `on_result` sees every result
    as it comes (the sweep saves it at once)."""
    search = search_rate if settings.rates else search_concurrency
    return [
        search(run_cell, settings, on_result, backend, profile, batch_size)
        for backend in settings.backends
        for profile in settings.profiles
        for batch_size in settings.batch_sizes
    ]


def search_concurrency(run_cell, settings, on_result, backend: str, profile: str, batch_size: int) -> Saturation:
    search = Saturation(backend, profile, batch_size, settings.slo_ms)
    for concurrency in saturation_levels(settings):
        result = run_cell(Cell(backend, profile, batch_size, concurrency))
        on_result(result)
        search.tried.append(concurrency)
        if result.failures or result.shed:
            search.stopped_because = f"{result.failures} failed and {result.shed} shed requests at {concurrency} users"
            break
        if result.p99_ms > settings.slo_ms:
            search.stopped_because = f"p99 {result.p99_ms:.0f} ms above the SLO at {concurrency} users"
            break
        best_so_far = search.best_inputs_per_s or 0.0
        if result.inputs_per_s > best_so_far:
            search.held(result)
        if result.inputs_per_s < best_so_far * MIN_GAIN:
            search.stopped_because = f"throughput stopped rising at {concurrency} users"
            break
    else:
        search.stopped_because = f"reached --max-concurrency {settings.max_concurrency}"
    return search


def breaks_slo(result: CellResult, slo_ms: float, max_error_ratio: float = MAX_ERROR_RATIO) -> str | None:
    """Why an open-loop cell did not hold, or None."""
    if result.generator_behind:
        return f"the generator fell {result.generator_behind_pct:.1f}% behind at {result.rate:g} req/s"
    if result.requests and (result.failures + result.shed) / result.requests >= max_error_ratio:
        return (
            f"{result.failures} of {result.requests} requests failed and {result.shed} were shed at {result.rate:g} "
            "req/s"
        )
    if result.p99_ms > slo_ms:
        return f"p99 {result.p99_ms:.0f} ms above the SLO at {result.rate:g} req/s"
    return None


def search_rate(
    run_cell,
    settings,
    on_result,
    backend: str,
    profile: str,
    batch_size: int,
    min_rate: float = 0.0,
    max_error_ratio: float = MAX_ERROR_RATIO,
) -> Saturation:
    """`min_rate`: the halving stops above it (advise: the rate below which a cell holds too few requests for a
    p99). `max_error_ratio`: the share of failed or shed requests a rate that holds may have."""
    search = Saturation(backend, profile, batch_size, settings.slo_ms, load="open")

    def holds(rate: float) -> bool:
        result = run_cell(Cell(backend, profile, batch_size, rate=rate))
        on_result(result)
        search.tried.append(rate)
        why = breaks_slo(result, settings.slo_ms, max_error_ratio)
        if why is None:
            search.held(result)
        else:
            search.stopped_because = why
        return why is None

    start = settings.rates[0]
    good = bad = None
    if holds(start):
        good, rate = start, start * 2
        while rate <= settings.max_rate:
            if not holds(rate):
                bad = rate
                break
            good, rate = rate, rate * 2
        else:
            search.stopped_because = f"reached --max-rate {settings.max_rate:g}"
    else:  # the first rate was already too much: halve until one holds
        lowest = max(start / 2**MAX_HALVINGS, min_rate)
        bad, rate = start, start / 2
        while rate >= lowest and not holds(rate):
            bad, rate = rate, rate / 2
        good = rate if rate >= lowest else None
    if good is not None and bad is not None:
        reason = search.stopped_because
        for _ in range(BISECTIONS):
            middle = round((good + bad) / 2, 2)
            if holds(middle):
                good = middle
            else:
                bad, reason = middle, search.stopped_because
        search.stopped_because = reason
    return search
