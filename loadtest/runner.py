"""Running one sweep cell: a headless Locust process (loadtest/locustfile.py) against the server, watched every
second.

Each cell is its own Locust process, so Locust is used as users know it and its CPU use can be measured apart from
the server's. The locustfile discards the warm-up's statistics; the server's /metrics are read when the warm-up
ends and when the cell ends, and sampled every second between, for queue vs inference time, batch sizes and peak
memory.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from loadtest.cells import Cell, CellResult
from loadtest.locust_csv import read_failures, read_last_history_row, read_locust_row
from loadtest.server_metrics import MetricsSnapshot
from loadtest.settings import SweepSettings

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
# Above this share of one core, Locust itself may be what limits the cell, not the server.
LOCUST_CPU_LIMIT_PCT = 80.0
PERCENTILES = {"p50": "50%", "p90": "90%", "p95": "95%", "p99": "99%", "p999": "99.9%"}
MB = 1024 * 1024


class CellRunner:
    """Runs one cell: a headless Locust process against the server, watched every second."""

    def __init__(self, settings: SweepSettings, server_url: str, run_dir: Path, total_cells: int):
        self.settings = settings
        self.server_url = server_url
        self.locust_dir = run_dir / "locust"
        self.locust_dir.mkdir(parents=True, exist_ok=True)
        self.total_cells = total_cells
        self.done = 0
        self.started = time.monotonic()

    def command(self, cell: Cell) -> list[str]:
        s = self.settings
        command = [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(LOCUSTFILE),
            "--headless",
            "--only-summary",
            "--host",
            self.server_url,
            "-u",
            str(cell.concurrency),
            "-r",
            str(cell.concurrency),
            "-t",
            f"{s.warmup + s.duration:.0f}s",
            "--stop-timeout",
            "5",
            "--csv",
            str(self.locust_dir / cell.name),
            "--exit-code-on-error",
            "0",
            "--backends",
            cell.backend,
            "--model",
            s.model,
            "--batch-size",
            str(cell.batch_size),
            "--text-profile",
            cell.profile,
            "--encoding-format",
            s.encoding_format,
            "--seed",
            str(s.seed),
            "--warmup",
            str(s.warmup),
        ]
        if s.dimensions:
            command += ["--dimensions", str(s.dimensions)]
        if s.locust_processes > 1:
            command += ["--processes", str(s.locust_processes)]
        return command

    def run(self, cell: Cell) -> CellResult:
        log_path = self.locust_dir / f"{cell.name}.log"
        # --config: an empty file, so a locust.conf in the working directory does not add its own arguments.
        with log_path.open("w") as log, tempfile.NamedTemporaryFile("w", suffix=".conf") as empty_config:
            process = subprocess.Popen(
                [*self.command(cell), "--config", empty_config.name], stdout=log, stderr=subprocess.STDOUT
            )
            watch = CellWatch(self.server_url, cell.backend, process.pid)
            measured_from = None
            while process.poll() is None:
                time.sleep(1)
                watch.sample()
                if measured_from is None and "statistics reset" in log_path.read_text(errors="replace"):
                    measured_from = watch.start_measuring()
                self.print_progress(cell, measured_from)
            if process.returncode != 0:
                raise RuntimeError(
                    f"Locust failed in cell {cell.name} (exit {process.returncode}); see {log_path}:\n"
                    + log_path.read_text(errors="replace")[-2000:]
                )
            if measured_from is None:  # no warm-up configured: the whole run was measured
                measured_from = watch.first
        result = self.collect(cell, watch, measured_from)
        if result.requests == 0:
            raise RuntimeError(
                f"no request completed in cell {cell.name}; see {log_path}:\n"
                + log_path.read_text(errors="replace")[-2000:]
            )
        self.done += 1
        return result

    def collect(self, cell: Cell, watch: CellWatch, before: MetricsSnapshot) -> CellResult:
        after = MetricsSnapshot.scrape(self.server_url)
        result = CellResult(cell.backend, cell.profile, cell.batch_size, cell.concurrency)
        row = read_locust_row(self.locust_dir / f"{cell.name}_stats.csv", f"/{cell.backend}/v1/embeddings")
        if row:
            result.requests = int(row["Request Count"])
            result.failures = int(row["Failure Count"])
            result.requests_per_s = float(row["Requests/s"])
            result.mean_ms = float(row["Average Response Time"])
            result.max_ms = float(row["Max Response Time"])
            # Locust rounds response times to two significant digits for its percentiles but keeps the max
            # exact, so a rounded p99 can land above the max; no percentile can truly exceed it.
            for name, column in PERCENTILES.items():
                value = float(row[column]) if row[column] not in ("", "N/A") else 0.0
                setattr(result, f"{name}_ms", min(value, result.max_ms))
        successes = result.requests - result.failures
        result.seconds = max(watch.elapsed_since_measuring(), 1e-9)
        result.inputs_per_s = (
            result.requests_per_s * successes / result.requests * cell.batch_size if result.requests else 0
        )
        result.failure_reasons = read_failures(self.locust_dir / f"{cell.name}_failures.csv")
        served = {"backend": cell.backend}
        result.tokens_per_s = after.since(before, "embedserve_tokens_total", **served) / result.seconds
        to_ms = lambda seconds: None if seconds is None else seconds * 1000  # noqa: E731
        result.queue_wait_ms = to_ms(after.mean_since(before, "embedserve_queue_wait_seconds", **served))
        result.inference_ms = to_ms(after.mean_since(before, "embedserve_inference_duration_seconds", **served))
        result.inputs_per_forward = after.mean_since(before, "embedserve_forward_inputs", **served)
        result.requests_per_batch = after.mean_since(before, "embedserve_batch_requests", **served)
        result.worker_rss_peak_mb = watch.worker_rss_peak / MB if watch.worker_rss_peak else None
        cpu = "embedserve_process_cpu_seconds"
        if cpu in after.names():
            all_cores = after.since(before, cpu) / result.seconds
            result.worker_cores = after.since(before, cpu, role="worker", backend=cell.backend) / result.seconds
            result.http_cores = after.since(before, cpu, role="http") / result.seconds
            result.other_cores = max(0.0, all_cores - result.worker_cores - result.http_cores)
        result.gpu_memory_peak_mb = watch.gpu_memory_peak / MB if watch.gpu_memory_peak else None
        result.locust_cpu_pct = watch.locust_cpu_pct()
        result.locust_cpu_bound = result.locust_cpu_pct > LOCUST_CPU_LIMIT_PCT
        return result

    def print_progress(self, cell: Cell, measured_from: MetricsSnapshot | None) -> None:
        history = read_last_history_row(self.locust_dir / f"{cell.name}_stats_history.csv")
        rps = float(history.get("Requests/s") or 0) if history else 0.0
        p99 = history.get("99%", "N/A") if history else "N/A"
        per_cell = self.settings.warmup + self.settings.duration + 3
        elapsed = time.monotonic() - self.started
        left = max(0.0, self.total_cells * per_cell - elapsed)
        phase = "measuring" if measured_from is not None else "warming up"
        print(
            f"\r[{self.done + 1}/{self.total_cells}] {cell.label():<40} {phase:<10} {rps:7.1f} req/s  "
            f"p99 {p99:>6} ms  ~{left / 60:4.1f} min left ",
            end="",
            file=sys.stderr,
            flush=True,
        )


class CellWatch:
    """Samples the server's memory and the Locust process's CPU while a cell runs."""

    def __init__(self, server_url: str, backend: str, locust_pid: int):
        self.server_url = server_url
        self.backend = backend
        self.locust = psutil.Process(locust_pid)
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
            processes = [self.locust, *self.locust.children(recursive=True)]
            for process in processes:
                times = process.cpu_times()
                self.cpu_last[process.pid] = times.user + times.system
        except psutil.NoSuchProcess:
            pass

    def locust_cpu_pct(self) -> float:
        """The busiest Locust process's share of one core during the measured part."""
        wall = self.elapsed_since_measuring()
        busiest = max((cpu - self.cpu_start.get(pid, 0.0) for pid, cpu in self.cpu_last.items()), default=0.0)
        return 100 * busiest / wall if wall > 0 else 0.0
