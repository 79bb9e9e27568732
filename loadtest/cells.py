"""A sweep's unit: one backend, text profile, batch size and concurrency, and what was measured there."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cell:
    backend: str
    profile: str
    batch_size: int
    concurrency: int

    @property
    def name(self) -> str:
        return f"{self.backend}_{self.profile}_b{self.batch_size}_c{self.concurrency}"

    def label(self) -> str:
        return f"{self.backend} {self.profile} batch {self.batch_size} x {self.concurrency} users"


@dataclass
class CellResult:
    backend: str
    profile: str
    batch_size: int
    concurrency: int
    seconds: float = 0.0
    requests: int = 0
    failures: int = 0
    failure_reasons: str = ""
    requests_per_s: float = 0.0
    inputs_per_s: float = 0.0
    tokens_per_s: float = 0.0
    mean_ms: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    p999_ms: float = 0.0
    max_ms: float = 0.0
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
    locust_cpu_pct: float = 0.0
    locust_cpu_bound: bool = False
