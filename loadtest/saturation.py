"""`embedserve sweep --find-max`: per backend, profile and batch size, double the users until p99 breaks the SLO,
requests fail, or throughput stops rising; the answer is the highest throughput that held the SLO."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from loadtest.cells import Cell, CellResult
from loadtest.settings import SweepSettings

# Less than this gain from doubling the users: the server is saturated.
MIN_GAIN = 1.05


@dataclass
class Saturation:
    backend: str
    profile: str
    batch_size: int
    slo_p99_ms: float
    best_concurrency: int | None = None
    best_inputs_per_s: float | None = None
    best_p99_ms: float | None = None
    stopped_because: str = ""
    tried: list[int] = field(default_factory=list)


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
    """Per backend, profile and batch size: double the users until p99 breaks the SLO or throughput stops rising.

    `run_cell` measures one cell; `on_result` sees every result as it comes (the sweep saves it at once).
    """
    found = []
    for backend in settings.backends:
        for profile in settings.profiles:
            for batch_size in settings.batch_sizes:
                search = Saturation(backend, profile, batch_size, settings.slo_p99_ms)
                for concurrency in saturation_levels(settings):
                    result = run_cell(Cell(backend, profile, batch_size, concurrency))
                    on_result(result)
                    search.tried.append(concurrency)
                    if result.failures:
                        search.stopped_because = f"{result.failures} failed requests at {concurrency} users"
                        break
                    if result.p99_ms > settings.slo_p99_ms:
                        search.stopped_because = f"p99 {result.p99_ms:.0f} ms above the SLO at {concurrency} users"
                        break
                    best_so_far = search.best_inputs_per_s or 0.0
                    if result.inputs_per_s > best_so_far:
                        search.best_concurrency, search.best_inputs_per_s = concurrency, result.inputs_per_s
                        search.best_p99_ms = result.p99_ms
                    if result.inputs_per_s < best_so_far * MIN_GAIN:
                        search.stopped_because = f"throughput stopped rising at {concurrency} users"
                        break
                else:
                    search.stopped_because = f"reached --max-concurrency {settings.max_concurrency}"
                found.append(search)
    return found
