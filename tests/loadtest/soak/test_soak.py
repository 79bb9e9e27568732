"""`embedserve soak` against a real server: every answer checked against its own inputs' reference vectors, every
invalid request's 4xx in OpenAI's shape, memory followed; and through a proxy that mixes up one answer, the soak
finds it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading

import pytest

from loadtest.client.http_load import KeepAliveConnection
from loadtest.probe.launcher import free_port
from loadtest.probe.memory import memory_drift
from loadtest.settings import SoakSettings
from loadtest.soak.run import run_overload, run_soak
from tests.helpers import start_server
from tests.loadtest.report.layout import rendered_problems

pytestmark = pytest.mark.slow

MIXED_UP = "a vector is not its own input's: answers mixed up between or within requests"


def settings(url: str, tmp_path, **changes) -> SoakSettings:
    # Short texts: mixed request sizes at a rate a 2-core machine serves on three backends at once.
    base = dict(
        host=url,
        rate=3,
        duration=30,
        warmup=10,
        texts=24,
        profile="short",
        bad_share=0.1,
        sample_seconds=2,
        output=tmp_path,
    )
    return SoakSettings(**{**base, **changes})


def test_a_30_s_soak_checks_every_answer_and_follows_memory(server, tmp_path):
    report, run_dir = run_soak(settings(server.url, tmp_path))
    assert report.backends == ["torch", "onnx", "openvino"]  # discovered from /v1/models
    assert report.failures == {} and report.failed == 0
    assert report.requests == report.valid + report.invalid and report.invalid >= 3 and report.valid >= 60
    assert report.latency.count == report.valid and report.latency.p99_ms <= report.latency.max_ms
    assert 0 < report.goodput_rate <= report.achieved_rate
    processes = {row.process for row in report.memory}
    assert {"worker torch", "worker onnx", "worker openvino", "http", "server tree"} <= processes
    tree = next(row for row in report.memory if row.process == "server tree")
    assert 100 < tree.first_mb <= tree.max_mb and tree.settled_mb <= tree.max_mb and tree.end_mb <= tree.max_mb
    assert len(report.samples) >= 10 and report.samples[-1]["t"] >= 25
    document = json.loads((run_dir / "soak.json").read_text())
    assert document["failures"] == {} and document["memory"][-1]["process"] == "server tree"
    assert (run_dir / "soak.png").read_bytes()[:4] == b"\x89PNG" and "p99" in (run_dir / "report.html").read_text()
    assert rendered_problems(run_dir / "report.html") == ([], 1)


@contextlib.contextmanager
def mixing_proxy(upstream: str):
    """Forwards every request to `upstream`; in the first answer with several embeddings, reverses their order (and
    keeps the indexes 0..n-1, so only the vectors betray it)."""
    port, ready, state = free_port(), threading.Event(), {"mixed": 0}

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = await KeepAliveConnection.open(upstream)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode()
                method, path, _ = head.split(" ", 2)
                lengths = [
                    line.split(":")[1] for line in head.split("\r\n") if line.lower().startswith("content-length:")
                ]
                body = await reader.readexactly(int(lengths[0]) if lengths else 0)
                status, body = await connection.request(method, path, body)
                if status == 200 and path.endswith("/embeddings") and not state["mixed"]:
                    answer = json.loads(body)
                    vectors = [item["embedding"] for item in answer["data"]]
                    if len(vectors) > 1:
                        for item, vector in zip(answer["data"], reversed(vectors), strict=True):
                            item["embedding"] = vector
                        body, state["mixed"] = json.dumps(answer).encode(), 1
                writer.write(
                    b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (status, len(body), body)
                )
                await writer.drain()
        connection.close()

    async def main() -> None:
        server = await asyncio.start_server(relay, "127.0.0.1", port)
        ready.set()
        await server.serve_forever()

    threading.Thread(target=lambda: asyncio.run(main()), daemon=True).start()
    assert ready.wait(10)
    yield f"http://127.0.0.1:{port}", state


def test_a_mixed_up_answer_is_found(server, tmp_path):
    with mixing_proxy(server.url) as (url, state):
        report, _ = run_soak(settings(url, tmp_path, duration=8, warmup=2, rate=4, bad_share=0.0, backends=["onnx"]))
    assert state["mixed"] == 1
    assert report.failures == {MIXED_UP: 1}, report.failures
    assert report.valid == report.requests > 20


def test_memory_drift_compares_medians_after_the_warm_up_and_at_the_end():
    onnx = [300, 400, 380, 420, 410, 440, 430, 450]  # swings with each batch, creeps up
    rows = [{"t": 5.0 * n, "worker onnx": float(mb), "http": 100.0 + n} for n, mb in enumerate(onnx)]
    drift = {row.process: row for row in memory_drift(rows, warmup=5, window=15)}
    worker = drift["worker onnx"]
    assert (worker.first_mb, worker.last_mb, worker.max_mb) == (300, 450, 450)
    assert worker.settled_mb == 400  # median of t = 5, 10, 15: 400, 380, 420
    assert worker.end_mb == 440  # median of t = 25, 30, 35: 440, 430, 450
    assert worker.drift_pct == pytest.approx(10.0)
    tree = drift["server tree"]
    assert tree.first_mb == 400 and tree.last_mb == 557 and tree.settled_mb == 501  # 501, 482, 523


def test_the_overload_scenario_probes_capacity_then_runs_80_percent_and_twice_it(exported, tmp_path):
    server = start_server(exported, tmp_path, "--backends", "onnx", "--max-queue-wait-ms", "300")
    try:
        overload = settings(
            server.url,
            tmp_path,
            rate=40,
            duration=4,
            warmup=1,
            arrival="constant",
            bad_share=0.0,
            overload=True,
            profile="medium",
        )
        phases, run_dir = run_overload(overload)
    finally:
        server.stop()
    (probe_name, probe), (_, eighty), (_, double) = phases
    assert probe_name == "capacity probe" and probe.shed > 0  # 40 requests/s is past one backend's capacity
    capacity = probe.admitted_rate
    assert 0 < capacity < 40
    assert (eighty.rate, double.rate) == (round(0.8 * capacity, 2), round(2 * capacity, 2))
    for phase in (eighty, double):  # evenly spaced arrivals: the count in the window is the rate's, give or take one
        assert abs(phase.offered_rate - phase.rate) <= 1 / overload.duration, (phase.offered_rate, phase.rate)
    assert all(report.failed == 0 for _, report in phases)  # shed is not failed: every admitted answer was right
    summary = (run_dir / "overload.txt").read_text()
    assert f"{capacity:.2f}" in summary and "2x capacity" in summary
    assert len(list(run_dir.glob("*/soak.json"))) == 3
