"""An open-loop sweep cell: arrivals at a fixed rate (loadtest/client/arrivals.py) sent by the asyncio generator
(loadtest/client/http_load.py) in a child process of its own, so its CPU is measured apart from the sweep's and the
server's, and the sweep's once-a-second scrapes of /metrics cannot delay its schedule.

Why not Locust: its users are closed loop, and `constant_throughput` only caps a user's rate (a slow answer still
delays that user's next request). The generator here sends each request when it is due, on as many connections as
there are requests waiting, and times each one from its due moment.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from typing import Protocol

from corpus.texts import texts, window
from loadtest.client.api_key import authorization
from loadtest.client.arrivals import arrival_times
from loadtest.client.checks import embeddings_failure
from loadtest.client.echo_server import echo_server_process
from loadtest.client.http_load import OpenLoopResult, open_loop
from loadtest.client.latency import LatencySummary
from loadtest.processes import SPAWN
from loadtest.settings import SweepSettings
from loadtest.sweep.cells import Cell, CellResult
from loadtest.sweep.targets import Target

BODIES = 256


@dataclass(frozen=True)
class GeneratorJob:
    """What the child process needs, picklable."""

    server_url: str
    path: str
    bodies: list[bytes]
    inputs: list[int]  # each body's number of inputs
    dimensions: int | None
    unit_norm: bool
    encoding_format: str
    schedule: list[float]
    span: float


class RequestSource(Protocol):
    """The requests of a cell: the sweep's built-in text profiles, or advise's user corpus."""

    def bodies(self, cell: Cell) -> tuple[list[bytes], list[int]]:
        """Request bodies, and each one's number of inputs."""
        ...


def request_body(settings: SweepSettings, inputs: list[str], model: str | None = None) -> bytes:
    extra = {"dimensions": settings.dimensions} if settings.dimensions else {}
    return json.dumps(
        {"model": model or settings.model, "input": inputs, "encoding_format": settings.encoding_format, **extra}
    ).encode()


@dataclass(frozen=True)
class ProfileRequests:
    """Requests of `batch_size` consecutive texts of a profile's pool, from seeded starting points (`model`: the name
    a peer server knows the model by, where it differs)."""

    settings: SweepSettings
    model: str | None = None

    def bodies(self, cell: Cell) -> tuple[list[bytes], list[int]]:
        pool = texts(cell.profile, 1024, seed=self.settings.seed)
        rng = random.Random(f"bodies:{self.settings.seed}")
        batches = [window(pool, rng.randrange(len(pool)), cell.batch_size) for _ in range(BODIES)]
        return [request_body(self.settings, batch, self.model) for batch in batches], [cell.batch_size] * BODIES


def generate(job: GeneratorJob, results) -> None:
    """The child process: tell the parent the schedule starts, keep to it, send back every outcome."""

    def check(index: int, status: int, body: bytes) -> str | None:
        try:
            answer = json.loads(body)
        except ValueError:
            return f"HTTP {status}, not JSON"
        inputs = job.inputs[index % len(job.inputs)]
        return embeddings_failure(status, answer, inputs, job.dimensions, job.encoding_format, job.unit_norm)

    results.send("started")
    outcome = open_loop(
        job.server_url,
        job.schedule,
        job.span,
        lambda index: (job.path, job.bodies[index % len(job.bodies)]),
        check,
        headers=authorization(),
    )
    results.send(outcome)


class OpenLoopCell:
    def __init__(self, settings: SweepSettings, target: Target, cell: Cell, requests: RequestSource):
        self.settings, self.cell = settings, cell
        self.span = settings.warmup + settings.duration
        bodies, inputs = requests.bodies(cell)
        self.job = GeneratorJob(
            target.host,
            target.path,
            bodies,
            inputs,
            target.dimensions,
            target.unit_norm,
            settings.encoding_format,
            arrival_times(cell.rate, self.span, settings.arrival, settings.seed),
            self.span,
        )
        self.started_at: float | None = None  # when the child began its schedule
        self.outcome: OpenLoopResult | None = None

    def start(self) -> int:
        self.results, child_end = SPAWN.Pipe(duplex=False)
        self.process = SPAWN.Process(target=generate, args=(self.job, child_end), daemon=True)
        self.process.start()
        child_end.close()
        return self.process.pid

    def running(self) -> bool:
        """Waits up to a second for the child's next message."""
        if self.outcome is not None:
            return False
        try:
            if self.results.poll(1):
                message = self.results.recv()
                if message == "started":
                    self.started_at = time.monotonic()
                else:
                    self.outcome = message
                    return False
        except EOFError:  # the child died without an answer
            return False
        return True

    def warmed_up(self) -> bool:
        return self.started_at is not None and time.monotonic() - self.started_at >= self.settings.warmup

    def live_figures(self) -> str:
        return ""

    def result(self) -> CellResult:
        self.process.join(10)
        if self.outcome is None:
            raise RuntimeError(f"the open-loop generator of cell {self.cell.name} died (exit {self.process.exitcode})")
        mean_inputs = sum(self.job.inputs) / len(self.job.inputs)
        return open_loop_result(self.cell, self.settings, self.outcome.since(self.settings.warmup), mean_inputs)


def open_loop_result(
    cell: Cell, settings: SweepSettings, measured: OpenLoopResult, mean_inputs: float | None = None
) -> CellResult:
    result = CellResult(cell.backend, cell.profile, cell.batch_size, rate=cell.rate, load="open")
    result.arrival = settings.arrival
    result.seconds = measured.elapsed
    result.requests = len(measured.outcomes)
    failures = measured.failures
    result.failures = sum(failures.values())
    result.failure_reasons = "; ".join(f"{reason} (x{count})" for reason, count in failures.items())
    result.shed = len(measured.shed)
    result.offered_rate = measured.offered_rate
    result.requests_per_s = measured.rate_within()
    result.inputs_per_s = result.requests_per_s * (mean_inputs or cell.batch_size)
    result.slo_ms = settings.slo_ms
    result.goodput_rate = measured.rate_within(settings.slo_ms / 1000)
    result.generator_behind_pct = measured.behind_pct
    result.set_latencies(LatencySummary.of(o.latency * 1000 for o in measured.answered))
    return result


def generator_capacity(seconds: float = 5.0, start_rate: float = 500.0) -> tuple[float, list[tuple[float, float]]]:
    """The highest arrival rate one generator process holds here against a server that costs nearly nothing
    (loadtest/client/echo_server.py): behind its schedule by at most 1%, every answer right. Doubles from `start_rate`,
    then halves the gap twice. Returns that rate and every (rate, % behind) tried."""
    body = json.dumps({"model": "m", "input": ["a short text of about sixteen tokens"] * 4}).encode()
    tried: list[tuple[float, float]] = []

    def holds(rate: float, url: str) -> bool:
        outcome = open_loop(
            url,
            arrival_times(rate, seconds, "constant"),
            seconds,
            lambda _: ("/echo", body),
            lambda _, status, answer: None if status == 200 and answer == body else f"HTTP {status}",
        )
        tried.append((rate, outcome.behind_pct))
        return outcome.kept_schedule and not outcome.failures

    with echo_server_process() as url:
        good, bad = 0.0, start_rate
        while holds(bad, url):
            good, bad = bad, bad * 2
        for _ in range(2):
            middle = (good + bad) / 2
            good, bad = (middle, bad) if holds(middle, url) else (good, middle)
    return good, tried
