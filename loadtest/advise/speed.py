"""A candidate's speed: served alone from its own embedserve.yaml, the open-loop rate search of `sweep --find-max
--rates` on the user's request shape, repeated until two rounds agree; and the verification of a chosen setup."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from loadtest.advise.economics import Speed
from loadtest.advise.workload import Workload
from loadtest.probe.discovery import discover
from loadtest.probe.launcher import ServerProcess
from loadtest.probe.memory import rss_by_process
from loadtest.probe.metrics_scrape import MetricsSnapshot
from loadtest.settings import SweepSettings
from loadtest.sweep.cells import Cell, CellResult
from loadtest.sweep.open_cell import BODIES, request_body
from loadtest.sweep.runner import CellRunner
from loadtest.sweep.saturation import breaks_slo, search_rate

PROFILE = "corpus"  # the cells' text profile: the user's texts
# A server's first start may export its artefact (int8 calibration: minutes on a small machine).
READY_TIMEOUT_S = 1200
# Later rounds start below the previous answer, so that their first cell holds and the search brackets it again.
NEXT_ROUND_START = 0.7
# Fewer requests than this in a cell make no p99: the search goes no lower.
MIN_REQUESTS = 8
# A p99 objective lets 1% of requests miss it: a request shed (503) or failed counts as one that missed.
MAX_MISSED = 0.01


@dataclass(frozen=True)
class WorkloadRequests:
    """Requests of the user's shape: a uniform number of inputs in the range, consecutive corpus texts each."""

    workload: Workload
    settings: SweepSettings
    inputs_range: tuple[int, int]

    def bodies(self, cell: Cell) -> tuple[list[bytes], list[int]]:
        rng = random.Random(f"advise:{self.settings.seed}")
        sizes = [rng.randint(*self.inputs_range) for _ in range(BODIES)]
        return [request_body(self.settings, self.workload.request_inputs(rng, size)) for size in sizes], sizes


@dataclass
class SearchPlan:
    """How long each cell runs and how many rounds a search may take (the budget sets them; cuts says what it cut)."""

    warmup: float = 3.0
    duration: float = 10.0
    max_rounds: int = 3
    cuts: list[str] = field(default_factory=list)


def serve(config_path: Path, cache: Path, log_path: Path) -> ServerProcess:
    """`embedserve serve --config` of one candidate, exactly as deployed (the host and port aside)."""
    return ServerProcess(
        "--config", str(config_path), "--log-level", "warning", log_path=log_path, env={"EMBEDSERVE_CACHE": str(cache)}
    ).wait_ready(timeout=READY_TIMEOUT_S)


def agree(a: float | None, b: float | None, tolerance: float) -> bool:
    if not a or not b:
        return a == b
    return abs(a - b) / max(a, b) <= tolerance


def measure_speed(
    server_url: str,
    backend: str,
    workload: Workload,
    inputs_range: tuple[int, int],
    slo_ms: float,
    start_rate: float,
    plan: SearchPlan,
    tolerance: float,
    cells_dir: Path,
    seed: int = 0,
) -> Speed:
    """Rounds of the rate search until the last two agree within `tolerance` (the lower is kept) or the plan's
    rounds are spent (marked unstable)."""
    served = discover(server_url)
    sweep = SweepSettings(
        host=server_url,
        model=served.model,
        backends=[backend],
        rates=[start_rate],
        slo_ms=slo_ms,
        duration=plan.duration,
        warmup=plan.warmup,
        max_rate=start_rate * 2**12,
        seed=seed,
        output=cells_dir,
    )
    requests = WorkloadRequests(workload, sweep, inputs_range)
    runner = CellRunner(sweep, server_url, cells_dir, plan.max_rounds * 5, served, requests)
    mean_inputs = round(sum(inputs_range) / 2)
    speed = Speed(max_rate=None)
    results: list[CellResult] = []
    for round_number in range(1, plan.max_rounds + 1):
        first = len(results)
        lowest = MIN_REQUESTS / plan.duration
        search = search_rate(runner.run, sweep, results.append, backend, PROFILE, mean_inputs, lowest, MAX_MISSED)
        speed.curve += [
            {
                "round": round_number,
                "rate": r.rate,
                "p99_ms": r.p99_ms,
                "held": breaks_slo(r, slo_ms, MAX_MISSED) is None,
            }
            for r in results[first:]
        ]
        speed.rounds.append(search.best_rate)
        speed.stopped_because = search.stopped_because
        if len(speed.rounds) >= 2 and agree(speed.rounds[-1], speed.rounds[-2], tolerance):
            speed.stable = True
            break
        if search.best_rate is None:
            break  # not even the lowest rate held: another round would find the same
        sweep = sweep.model_copy(update={"rates": [round(search.best_rate * NEXT_ROUND_START, 2)]})
    counted = speed.rounds[-2:] if speed.stable else speed.rounds
    speed.max_rate = min(counted) if all(counted) else None
    answered = [r for r in results if r.requests]
    speed.lowest_p99_ms = min((r.p99_ms for r in answered if r.p99_ms), default=None)
    if speed.max_rate:
        best = next(r for r in results if r.rate == speed.max_rate and breaks_slo(r, slo_ms, MAX_MISSED) is None)
        speed.p99_ms, speed.tokens_per_s, speed.inputs_per_s = best.p99_ms, best.tokens_per_s, best.inputs_per_s
        speed.cores = (best.worker_cores or 0) + (best.http_cores or 0) + (best.other_cores or 0)
    worker_peak = max((r.worker_rss_peak_mb or 0.0 for r in results), default=0.0)
    others = rss_by_process(MetricsSnapshot.scrape(server_url))
    speed.memory_mb = worker_peak + sum(mb for role, mb in others.items() if not role.startswith("worker"))
    return speed


@dataclass
class Verification:
    rate: float
    seconds: float
    p99_ms: float
    goodput_rate: float
    requests: int
    passed: bool
    why: str = ""


def verify(
    server_url: str,
    backend: str,
    workload: Workload,
    inputs_range: tuple[int, int],
    slo_ms: float,
    rate: float,
    seconds: float,
    cells_dir: Path,
    seed: int = 0,
) -> Verification:
    """The setup under open-loop load at `rate` for `seconds` (after a short warm-up): does p99 hold, and what share
    of the requests came back right within the objective (goodput)?"""
    served = discover(server_url)
    sweep = SweepSettings(
        host=server_url, model=served.model, backends=[backend], rates=[rate], slo_ms=slo_ms,
        duration=seconds, warmup=min(5.0, seconds / 4), seed=seed + 1, output=cells_dir,
    )  # fmt: skip
    runner = CellRunner(sweep, server_url, cells_dir, 1, served, WorkloadRequests(workload, sweep, inputs_range))
    result = runner.run(Cell(backend, PROFILE, round(sum(inputs_range) / 2), rate=rate))
    why = breaks_slo(result, slo_ms, MAX_MISSED)
    return Verification(
        rate, result.seconds, result.p99_ms, result.goodput_rate or 0.0, result.requests, why is None, why or ""
    )
