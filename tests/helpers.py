"""Helpers the tests share (fixtures live in conftest.py): the model, the repository root, starting a server."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from loadtest.probe.launcher import ServerProcess
from server.settings import DEFAULT_MODEL

MODEL = DEFAULT_MODEL
ROOT = Path(__file__).resolve().parents[1]


def start_server(cache: Path, log_dir: Path, *args: str) -> ServerProcess:
    log_path = log_dir / f"server-{time.monotonic_ns()}.log"
    server = ServerProcess(*args, "--log-level", "warning", log_path=log_path, env={"EMBEDSERVE_CACHE": str(cache)})
    return server.wait_ready(timeout=240)


def export_in_this_process(
    model_dirs: list[Path], cache: Path, backends: tuple[str, ...] = ("onnx", "openvino")
) -> Path:
    """The models' fp32 artefacts, exported by the test process itself, which has the exporter's libraries loaded
    already: the engine's own export child (tests/server/engine/test_export.py tests it) would import them again for
    every artefact, seconds each. The artefacts are the same: the child runs this very function."""
    from server.engine.export import export
    from server.settings import ExportSettings

    for model_dir in model_dirs:
        for backend in backends:
            export(ExportSettings(model=str(model_dir), backend=backend, cache=cache))
    return cache


def run_schemathesis(url: str, *extra: str) -> str:
    """schemathesis (every check, its coverage and fuzzing phases, a fixed seed so that CI is reproducible) against
    the server's own /openapi.json; fails the test with its report unless it found nothing."""
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{url}/openapi.json",
            "--checks",
            "all",
            "--phases",
            "coverage,fuzzing",
            "--max-examples",
            "60",
            "--workers",
            "1",
            "--seed",
            "20261130",
            # A generator setting, not a check: model IDs are free strings, and many it draws cannot be a path.
            "--suppress-health-check",
            "filter_too_much",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tempfile.gettempdir(),  # where it keeps its cache of crashes, not in the checkout
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    return result.stdout


def require_tool(name: str, how: str) -> str:
    """The tool's path. `make test` installs every tool on this machine kind, so a missing one fails the test with
    how to get it; EMBEDSERVE_TESTS_SKIP_MISSING_TOOLS=1 (a laptop without apt) turns that into a skip."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        message = f"{name} not found: {how}"
        if os.environ.get("EMBEDSERVE_TESTS_SKIP_MISSING_TOOLS") == "1":
            pytest.skip(message)
        pytest.fail(message + " (or set EMBEDSERVE_TESTS_SKIP_MISSING_TOOLS=1 to skip what needs it)")
    return found


def settled_scrape(url: str, settled, timeout: float = 10.0):
    """The server's metrics once `settled(snapshot)` holds, polled until a deadline (never a fixed sleep); the last
    snapshot when it does not hold by then, for the test's assertions to say what was seen."""
    from loadtest.probe.metrics_scrape import MetricsSnapshot

    deadline = time.monotonic() + timeout
    while True:
        snapshot = MetricsSnapshot.scrape(url)
        if settled(snapshot) or time.monotonic() > deadline:
            return snapshot
        time.sleep(0.05)


def run_locust(server, tmp_path, *extra: str, backend: str | None = "onnx") -> tuple[dict, list[dict]]:
    """Plain `locust --headless` from the repository root (its locust.conf) for 3 s against `server`: the stats row
    of `backend` (all rows by name when None), and the failures."""
    prefix = tmp_path / "run"
    chosen = ["--backends", backend] if backend else []
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "--headless",
            "-u",
            "2",
            "-r",
            "2",
            "-t",
            "3s",
            "--host",
            server.url,
            "--csv",
            str(prefix),
            *chosen,
            "--batch-size",
            "4",
            *extra,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    with open(f"{prefix}_stats.csv") as handle:
        rows = {r["Name"]: r for r in csv.DictReader(handle)}
    with open(f"{prefix}_failures.csv") as handle:
        failures = list(csv.DictReader(handle))
    return (rows[f"/{backend}/v1/embeddings"] if backend else rows), failures


def metrics_dir_of(server: ServerProcess) -> Path:
    """The directory where the server's processes keep their metric files: PROMETHEUS_MULTIPROC_DIR in the
    environment of a process the main process started (they inherit it from there)."""
    child = next(pid for pid in server.child_pids() if pid != server.process.pid)
    for item in Path(f"/proc/{child}/environ").read_bytes().split(b"\0"):
        name, _, value = item.partition(b"=")
        if name == b"PROMETHEUS_MULTIPROC_DIR":
            return Path(value.decode())
    raise AssertionError(f"process {child} of the server has no PROMETHEUS_MULTIPROC_DIR")
