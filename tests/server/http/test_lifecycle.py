"""A server's life as the README promises it: /ready while a backend loads and when one fails (the others serve),
504 past --request-timeout-s, and a clean exit on SIGTERM to the main process alone, as `docker stop` sends it."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from corpus.texts import texts
from loadtest.probe.launcher import ServerProcess
from tests.helpers import MODEL, metrics_dir_of, start_server

pytestmark = pytest.mark.slow
ARTEFACTS = MODEL.replace("/", "--")  # the cache's folder for the model


def cache_with(exported: Path, tmp_path: Path, *artefacts: str) -> Path:
    """A cache holding only these of the exported artefacts (links), so that the others are missing."""
    cache = tmp_path / "cache"
    (cache / ARTEFACTS).mkdir(parents=True)
    for artefact in artefacts:
        (cache / ARTEFACTS / artefact).symlink_to(exported / ARTEFACTS / artefact)
    return cache


def first_ready_answer(server: ServerProcess, timeout: float = 120) -> requests.Response:
    """/ready's first answer, as soon as the HTTP port opens."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.process.poll() is None, server.log_tail()
        try:
            return requests.get(f"{server.url}/ready", timeout=2)
        except requests.ConnectionError:
            time.sleep(0.1)
    raise AssertionError(f"the server never answered:\n{server.log_tail()}")


def embed(server: ServerProcess, backend: str, inputs: list[str] | str = "hello") -> requests.Response:
    return requests.post(f"{server.url}/{backend}/v1/embeddings", json={"model": MODEL, "input": inputs}, timeout=120)


def test_a_backend_that_cannot_load_is_reported_and_the_others_serve(exported, tmp_path):
    cache = cache_with(exported, tmp_path, "onnx")  # no OpenVINO artefact, and no export allowed
    server = ServerProcess(
        "--backends",
        "onnx,openvino",
        "--no-allow-export",
        log_path=tmp_path / "log",
        env={"EMBEDSERVE_CACHE": str(cache)},
    )
    try:
        ready = first_ready_answer(server)
        deadline = time.monotonic() + 60
        settled = lambda answer: "loading" not in {b["state"] for b in answer.json()["backends"].values()}  # noqa: E731
        while not settled(ready) and time.monotonic() < deadline:
            time.sleep(0.2)
            ready = requests.get(f"{server.url}/ready")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        failed = ready.json()["backends"]["openvino"]
        assert failed["state"] == "failed" and "openvino" in failed["error"].lower(), failed
        assert ready.json()["backends"]["onnx"]["state"] == "ready"
        refused = embed(server, "openvino")
        assert refused.status_code == 503 and "not available" in refused.json()["error"]["message"]
        assert embed(server, "onnx").status_code == 200  # the other backend keeps serving
        models = requests.get(f"{server.url}/v1/models").json()["data"][0]["backends"]
        assert models["openvino"]["state"] == "failed"
    finally:
        server.stop()


def test_ready_is_503_while_a_backend_loads(exported, tmp_path):
    """OpenVINO exports on first use (many seconds); the ONNX artefact is there, so its backend is ready at once."""
    cache = cache_with(exported, tmp_path, "onnx")
    server = ServerProcess(
        "--backends", "onnx,openvino", log_path=tmp_path / "log", env={"EMBEDSERVE_CACHE": str(cache)}
    )
    try:
        loading = first_ready_answer(server)
        assert loading.status_code == 503
        assert loading.json()["backends"]["openvino"]["state"] == "loading"
        assert embed(server, "onnx").status_code == 200  # a loaded backend serves meanwhile
        server.wait_ready(timeout=240)
        assert requests.get(f"{server.url}/ready").json()["backends"]["openvino"]["state"] == "ready"
        assert embed(server, "openvino").status_code == 200
    finally:
        server.stop()


def test_a_request_that_waits_past_the_request_timeout_gets_504(exported, tmp_path):
    server = start_server(
        exported,
        tmp_path,
        "--backends",
        "onnx",
        "--request-timeout-s",
        "0.3",
        "--max-queue-wait-ms",
        "0",  # no shedding: the timeout is what answers
        "--max-batch-requests",
        "2",
    )
    long_texts = texts("long", 32, seed=3)  # 32 inputs near MiniLM's 256-token limit: far over 0.3 s per batch
    try:
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda _: embed(server, "onnx", long_texts), range(12)))
        statuses = [answer.status_code for answer in answers]
        assert set(statuses) == {200, 504}, statuses
        timed_out = next(answer.json()["error"] for answer in answers if answer.status_code == 504)
        assert "request timeout" in timed_out["message"] and timed_out["type"] == "server_error"
        assert embed(server, "onnx").status_code == 200  # and the server goes on
    finally:
        server.stop()


def test_sigterm_to_the_main_process_alone_exits_cleanly(exported, tmp_path):
    """What `docker stop` and Kubernetes do: SIGTERM to PID 1 only. Exit code 0, no worker left behind, the
    metrics directory gone."""
    server = start_server(exported, tmp_path, "--backends", "onnx,openvino", "--api-servers", "2")
    children = [pid for pid in server.child_pids() if pid != server.process.pid]
    # main, the manager, 2 HTTP servers, 2 inference workers (at least: LitServe may add helpers)
    assert len(children) >= 5, children
    metrics_dir = metrics_dir_of(server)
    assert metrics_dir.is_dir()
    os.kill(server.process.pid, signal.SIGTERM)
    assert server.process.wait(timeout=60) == 0, server.log_tail()
    deadline = time.monotonic() + 10
    while (alive := [pid for pid in children if Path(f"/proc/{pid}").exists()]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert alive == [], f"left running after the main process exited: {alive}"
    assert not metrics_dir.exists()
    assert "Traceback" not in server.log_path.read_text(), server.log_tail()
