"""A sweep's unit: one backend, text profile and batch size under one load, and what was measured there.

The load is closed loop (`concurrency` users, each waiting for its answer before it sends again) or open loop
(`rate` arrivals per second, sent when due whatever the server does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from loadtest.client.http_load import SCHEDULE_SLACK_PCT

if TYPE_CHECKING:
    from loadtest.client.latency import LatencySummary


@dataclass(frozen=True)
class Cell:
    backend: str
    profile: str
    batch_size: int
    concurrency: int = 0
    rate: float | None = None
    round: int = 0  # --rounds: the same cell again, alternated with the others of its shape

    @property
    def open_loop(self) -> bool:
        return self.rate is not None

    @property
    def name(self) -> str:
        load = f"r{self.rate:g}" if self.open_loop else f"c{self.concurrency}"
        again = f"_round{self.round}" if self.round else ""
        return f"{self.backend}_{self.profile}_b{self.batch_size}_{load}{again}"

    def label(self) -> str:
        load = f"{self.rate:g} req/s" if self.open_loop else f"{self.concurrency} users"
        return f"{self.backend} {self.profile} batch {self.batch_size} x {load}" + (
            f" (round {self.round + 1})" if self.round else ""
        )


@dataclass
class CellResult:
    backend: str
    profile: str
    batch_size: int
    concurrency: int = 0  # closed loop: users; open loop: 0
    rate: float | None = None  # open loop: the arrivals per second asked for
    load: str = "closed"  # closed | open
    seconds: float = 0.0
    requests: int = 0
    failures: int = 0
    failure_reasons: str = ""
    shed: int = 0  # answered at once with 503 server_overloaded: the server's overload control, not a failure
    requests_per_s: float = 0.0  # correct answers per second (open loop: the achieved rate)
    inputs_per_s: float = 0.0
    tokens_per_s: float = 0.0
    # Exact, from every answered request's latency (open loop: from the moment each request was due).
    mean_ms: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    p999_ms: float = 0.0
    max_ms: float = 0.0
    slo_ms: float | None = None
    goodput_rate: float | None = None  # correct answers within the SLO per second
    # Open loop only.
    arrival: str | None = None
    offered_rate: float | None = None  # requests due per second in the measured window
    generator_behind_pct: float | None = None  # the generator's worst lag, as a share of the window
    queue_wait_ms: float | None = None
    inference_ms: float | None = None
    inputs_per_forward: float | None = None
    requests_per_batch: float | None = None
    worker_rss_peak_mb: float | None = None
    # Cores the server's processes used during the cell, from its own metrics: the loaded backend's worker, the
    # HTTP front, and the rest (LitServe's manager, the main process, idle workers of other backends).
    worker_cores: float | None = None
    http_cores: float | None = None
    other_cores: float | None = None
    gpu_memory_peak_mb: float | None = None
    # The load generator's busiest process (Locust, or the open-loop client), in % of one core.
    client_cpu_pct: float = 0.0
    client_cpu_bound: bool = False
    round: int = 0
    peer: bool = False  # a peer server's cell (--peer): `backend` holds the peer's name

    @property
    def generator_behind(self) -> bool:
        """The open-loop generator did not keep to its schedule: part of what the cell measured is the client."""
        return (self.generator_behind_pct or 0.0) > SCHEDULE_SLACK_PCT

    def set_latencies(self, summary: LatencySummary | None) -> None:
        """Copy a LatencySummary's figures (None: nothing was answered; the figures stay 0)."""
        if summary is None:
            return
        for name in ("mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms"):
            setattr(self, name, getattr(summary, name))
