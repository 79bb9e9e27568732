"""Helpers the tests share (fixtures live in conftest.py): the model, the repository root, starting a server."""

from __future__ import annotations

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
