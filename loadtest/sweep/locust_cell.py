"""A closed-loop sweep cell: one headless Locust process (loadtest/locustfile.py) against the server.

Each cell is its own Locust process, so Locust is used as users know it and its CPU use can be measured apart from
the server's. The locustfile discards the warm-up's statistics and writes every measured request's latency and
outcome to a file per process; counts, rates and exact percentiles come from those (Locust's own percentiles are
rounded to two digits, and its CSV files can be written before the last second's requests are counted).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from loadtest.client.checks import FAILED, PASSED, SHED_MARK
from loadtest.client.latency import LatencySummary
from loadtest.settings import SweepSettings
from loadtest.sweep.cells import Cell, CellResult
from loadtest.sweep.locust_csv import read_failures, read_last_history_row
from loadtest.sweep.targets import Target

LOCUSTFILE = Path(__file__).parents[1] / "locustfile.py"


class LocustCell:
    def __init__(self, settings: SweepSettings, target: Target, cell: Cell, directory: Path):
        self.settings, self.target, self.cell = settings, target, cell
        self.prefix = directory / cell.name
        self.log_path = directory / f"{cell.name}.log"
        self.latency_prefix = directory / f"{cell.name}_latencies"
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        s, cell = self.settings, self.cell
        command = [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(LOCUSTFILE),
            "--headless",
            "--only-summary",
            "--host",
            self.target.host,
            "-u",
            str(cell.concurrency),
            "-r",
            str(cell.concurrency),
            "-t",
            f"{s.warmup + s.duration:.0f}s",
            "--stop-timeout",
            "5",
            "--csv",
            str(self.prefix),
            "--exit-code-on-error",
            "0",
            "--backends",
            cell.backend,
            "--model",
            self.target.model,
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
            "--latency-file",
            str(self.latency_prefix),
        ]
        if s.dimensions:
            command += ["--dimensions", str(s.dimensions)]
        if self.target.peer:  # no embedserve /v1/models to read what to expect from
            command += ["--embeddings-path", self.target.path, "--expected-dimensions", str(self.target.dimensions)]
            command += ["--unit-norm"] if self.target.unit_norm else []
        if s.locust_processes > 1:
            command += ["--processes", str(s.locust_processes)]
        return command

    def start(self) -> int:
        # --config: an empty file, so a locust.conf in the working directory does not add its own arguments.
        self._config = tempfile.NamedTemporaryFile("w", suffix=".conf")
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [*self.command(), "--config", self._config.name], stdout=self._log, stderr=subprocess.STDOUT
        )
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def warmed_up(self) -> bool:
        return self.settings.warmup == 0 or "statistics reset" in self.log_path.read_text(errors="replace")

    def live_figures(self) -> str:
        history = read_last_history_row(Path(f"{self.prefix}_stats_history.csv"))
        rps = float(history.get("Requests/s") or 0) if history else 0.0
        return f"{rps:7.1f} req/s"

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:]

    def result(self) -> CellResult:
        self._log.close()
        self._config.close()
        if self.process.returncode != 0:
            raise RuntimeError(
                f"Locust failed in cell {self.cell.name} (exit {self.process.returncode}); see {self.log_path}:\n"
                + self.log_tail()
            )
        cell = self.cell
        result = CellResult(cell.backend, cell.profile, cell.batch_size, cell.concurrency)
        measured = read_measured(self.latency_prefix)
        result.requests = len(measured)
        result.failures = sum(outcome == FAILED for _, outcome in measured)
        result.shed = sum(outcome == SHED_MARK for _, outcome in measured)
        result.requests_per_s = sum(outcome == PASSED for _, outcome in measured) / self.settings.duration
        result.inputs_per_s = result.requests_per_s * cell.batch_size
        within_slo = sum(outcome == PASSED and latency <= self.settings.slo_ms for latency, outcome in measured)
        result.slo_ms, result.goodput_rate = self.settings.slo_ms, within_slo / self.settings.duration
        result.failure_reasons = read_failures(Path(f"{self.prefix}_failures.csv"))
        result.set_latencies(LatencySummary.of(latency for latency, _ in measured))
        return result


def read_measured(prefix: Path) -> list[tuple[float, str]]:
    """Every measured request's latency in ms and its outcome (PASSED, FAILED or SHED_MARK), from the files the
    locustfile's processes wrote (Locust's own CSV can be written before the last requests are counted)."""
    measured = []
    for path in sorted(prefix.parent.glob(f"{prefix.name}.*")):
        for line in path.read_text().splitlines():
            latency, outcome = line.split()
            measured.append((float(latency), outcome))
    return measured
