"""Running one sweep cell: the load generator's process (Locust for closed loop, loadtest/sweep/locust_cell.py; the
asyncio generator for open loop, loadtest/sweep/open_cell.py) against the server, watched every second.

The server's /metrics are read when the warm-up ends and when the cell ends, and sampled every second between, for
queue vs inference time, batch sizes, cores per process role and peak memory.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol

import psutil

from loadtest.probe.discovery import Served
from loadtest.probe.metrics_scrape import MetricsSnapshot
from loadtest.settings import SweepSettings
from loadtest.sweep.cells import Cell, CellResult
from loadtest.sweep.locust_cell import LocustCell
from loadtest.sweep.open_cell import OpenLoopCell, ProfileRequests, RequestSource
from loadtest.sweep.progress import Progress
from loadtest.sweep.targets import Target, backend_target

# Above this share of one core, the load generator itself may be what limits the cell, not the server.
CLIENT_CPU_LIMIT_PCT = 80.0
MB = 1024 * 1024


class LoadJob(Protocol):
    """One cell's load generator, run in a process of its own (sweep/locust_cell.py, sweep/open_cell.py)."""

    def start(self) -> int:
        """Starts the generator's process; returns its pid (its CPU is measured)."""

    def running(self) -> bool: ...

    def warmed_up(self) -> bool:
        """True once the unmeasured warm-up is over."""

    def live_figures(self) -> str:
        """Figures so far, for the live progress line."""

    def result(self) -> CellResult:
        """The client-side figures, once the process has ended."""


class CellRunner:
    """Runs cells one after another, with a live line on a terminal and one line per finished cell."""

    def __init__(
        self,
        settings: SweepSettings,
        server_url: str,
        run_dir: Path,
        total_cells: int,
        served: Served | None = None,
        requests: RequestSource | None = None,
        peers: dict[str, Target] | None = None,
    ):
        self.settings = settings
        self.server_url = server_url
        self.locust_dir = run_dir / "locust"
        self.locust_dir.mkdir(parents=True, exist_ok=True)
        self.total_cells = total_cells
        self.served = served  # what the server said it serves: the answers' expected dimensions and norm
        self.requests = requests or ProfileRequests(settings)  # open loop's bodies
        self.peers = peers or {}
        self.done = 0
        self.started = time.monotonic()
        self.progress = Progress()

    def target(self, cell: Cell) -> Target:
        if cell.backend in self.peers:
            return self.peers[cell.backend]
        return backend_target(self.server_url, cell.backend, self.settings.model, self.served, self.settings.dimensions)

    def run(self, cell: Cell) -> CellResult:
        target = self.target(cell)
        job: LoadJob
        if cell.open_loop:
            # A peer may name the model otherwise (Infinity: its folder); the requests are the same otherwise.
            requests = self.requests if not target.peer else ProfileRequests(self.settings, target.model)
            job = OpenLoopCell(self.settings, target, cell, requests)
        else:
            job = LocustCell(self.settings, target, cell, self.locust_dir)
        watch = CellWatch(self.server_url, cell.backend, job.start())
        measured_from = None
        while job.running():
            if not cell.open_loop:
                time.sleep(1)  # the open-loop job's running() waits for its child's messages instead
            watch.sample()
            if measured_from is None and job.warmed_up():
                measured_from = watch.start_measuring()
            phase = "measuring" if measured_from is not None else "warming up"
            self.progress.update(f"{self.position(cell)} {phase:<10} {job.live_figures()} {self.time_left()}")
        result = job.result()
        result.round, result.peer = cell.round, target.peer
        if result.requests == 0:
            raise RuntimeError(f"no request completed in cell {cell.name}")
        if not target.peer:  # a peer has no embedserve /metrics: its server-side figures stay empty
            self.server_side(result, watch, measured_from or watch.first)
        result.client_cpu_pct = watch.client_cpu_pct()
        result.client_cpu_bound = result.client_cpu_pct > CLIENT_CPU_LIMIT_PCT
        self.progress.finish(f"{self.position(cell)} {summary(result)}")
        self.done += 1
        return result

    def position(self, cell: Cell) -> str:
        return f"[{self.done + 1}/{self.total_cells}] {cell.label():<40}"

    def time_left(self) -> str:
        per_cell = self.settings.warmup + self.settings.duration + 3
        left = max(0.0, self.total_cells * per_cell - (time.monotonic() - self.started))
        return f"~{left / 60:4.1f} min left"

    def server_side(self, result: CellResult, watch: CellWatch, before: MetricsSnapshot) -> None:
        after = MetricsSnapshot.scrape(self.server_url)
        seconds = max(watch.elapsed_since_measuring(), 1e-9)
        if result.load == "closed":
            result.seconds = seconds
        served = {"backend": result.backend}
        result.tokens_per_s = after.since(before, "embedserve_tokens_total", **served) / seconds
        to_ms = lambda value: None if value is None else value * 1000  # noqa: E731
        result.queue_wait_ms = to_ms(after.mean_since(before, "embedserve_queue_wait_seconds", **served))
        result.inference_ms = to_ms(after.mean_since(before, "embedserve_inference_duration_seconds", **served))
        result.inputs_per_forward = after.mean_since(before, "embedserve_forward_inputs", **served)
        result.requests_per_batch = after.mean_since(before, "embedserve_batch_requests", **served)
        result.worker_rss_peak_mb = watch.worker_rss_peak / MB if watch.worker_rss_peak else None
        cpu = "embedserve_process_cpu_seconds"
        if cpu in after.names():
            all_cores = after.since(before, cpu) / seconds
            result.worker_cores = after.since(before, cpu, role="worker", backend=result.backend) / seconds
            result.http_cores = after.since(before, cpu, role="http") / seconds
            result.other_cores = max(0.0, all_cores - result.worker_cores - result.http_cores)
        result.gpu_memory_peak_mb = watch.gpu_memory_peak / MB if watch.gpu_memory_peak else None


def summary(result: CellResult) -> str:
    """One line of a finished cell's main figures."""
    line = f"{result.requests_per_s:7.1f} req/s  p50 {result.p50_ms:6.1f}  p99 {result.p99_ms:7.1f} ms"
    if result.load == "open":
        line += f"  offered {result.offered_rate:.1f}  goodput {result.goodput_rate:.1f} req/s"
        if result.generator_behind:
            line += f"  (generator {result.generator_behind_pct:.1f}% behind)"
    if result.shed:
        line += f"  {result.shed} shed"
    if result.failures:
        line += f"  {result.failures} failed"
    return line


class CellWatch:
    """Samples the server's memory and the load generator's CPU while a cell runs."""

    def __init__(self, server_url: str, backend: str, client_pid: int):
        self.server_url = server_url
        self.backend = backend
        self.client = psutil.Process(client_pid)
        self.first = MetricsSnapshot.scrape(server_url)
        self.created = time.monotonic()
        self.worker_rss_peak = 0.0
        self.gpu_memory_peak = 0.0
        self.measuring_since: float | None = None
        self.cpu_start: dict[int, float] = {}
        self.cpu_last: dict[int, float] = {}

    def start_measuring(self) -> MetricsSnapshot:
        self.measuring_since = time.monotonic()
        self.worker_rss_peak = self.gpu_memory_peak = 0.0  # peaks of the measured part only
        self.cpu_start = dict(self.cpu_last)
        return MetricsSnapshot.scrape(self.server_url)

    def elapsed_since_measuring(self) -> float:
        return time.monotonic() - (self.measuring_since or self.created)

    def sample(self) -> None:
        try:
            snapshot = MetricsSnapshot.scrape(self.server_url, timeout=2)
        except OSError:
            snapshot = None
        if snapshot:
            rss = snapshot.total("embedserve_process_resident_memory_bytes", role="worker", backend=self.backend)
            self.worker_rss_peak = max(self.worker_rss_peak, rss)
            self.gpu_memory_peak = max(self.gpu_memory_peak, snapshot.total("embedserve_gpu_memory_used_bytes"))
        try:
            processes = [self.client, *self.client.children(recursive=True)]
            for process in processes:
                times = process.cpu_times()
                self.cpu_last[process.pid] = times.user + times.system
        except psutil.NoSuchProcess:
            pass

    def client_cpu_pct(self) -> float:
        """The busiest load-generator process's share of one core during the measured part."""
        wall = self.elapsed_since_measuring()
        busiest = max((cpu - self.cpu_start.get(pid, 0.0) for pid, cpu in self.cpu_last.items()), default=0.0)
        return 100 * busiest / wall if wall > 0 else 0.0
