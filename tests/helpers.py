"""Helpers the tests share (fixtures live in conftest.py): the model, the repository root, starting a server."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from loadtest.launcher import ServerProcess
from server.settings import DEFAULT_MODEL

MODEL = DEFAULT_MODEL
ROOT = Path(__file__).resolve().parents[1]


def start_server(cache: Path, log_dir: Path, *args: str) -> ServerProcess:
    log_path = log_dir / f"server-{time.monotonic_ns()}.log"
    server = ServerProcess(*args, "--log-level", "warning", log_path=log_path, env={"EMBEDSERVE_CACHE": str(cache)})
    return server.wait_ready(timeout=240)


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
