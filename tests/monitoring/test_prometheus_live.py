"""A real server and a real Prometheus on 127.0.0.1: the metrics add up across processes, and the PromQL of every
dashboard panel returns data once load has gone through every backend."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import yaml

from corpus.texts import texts
from loadtest.probe.launcher import free_port
from loadtest.probe.metrics_scrape import MetricsSnapshot
from monitoring.dashboards import DASHBOARD_DIR, GPU_PANELS, panel_queries
from tests.helpers import MODEL, ROOT, metrics_dir_of, require_tool, settled_scrape, start_server

pytestmark = pytest.mark.slow
BACKENDS = ["torch", "onnx", "openvino"]
PROMETHEUS_HOW = "`make test` installs Debian's prometheus package (needs apt)"
HAS_GPU = (
    shutil.which("nvidia-smi") is not None and subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0
)


def embed(url: str, backend: str, body: dict) -> int:
    return requests.post(f"{url}/{backend}/v1/embeddings", json=body, timeout=60).status_code


def send_load(url: str, backend: str, requests_count: int, inputs_per_request: int) -> None:
    corpus = texts("short", requests_count * inputs_per_request, seed=3)
    bodies = [{"model": MODEL, "input": corpus[i::requests_count]} for i in range(requests_count)]
    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(lambda body: embed(url, backend, body), bodies)) == {200}


def test_counts_from_every_process_add_up_to_the_requests_sent(exported, tmp_path):
    """Two HTTP front processes answer in turn; /metrics from either one gives the same whole-server totals."""
    # No shedding by expected wait: a burst at a cold worker on a busy machine was shed in a fresh-clone `make test`
    # (503), and the counts are what this test is about (tests/server/http/test_admission.py tests the shedding).
    server = start_server(exported, tmp_path, "--backends", "onnx", "--api-servers", "2", "--max-queue-wait-ms", "0")
    try:
        before = MetricsSnapshot.scrape(server.url)
        send_load(server.url, "onnx", requests_count=24, inputs_per_request=3)
        assert embed(server.url, "onnx", {"model": "no-such-model", "input": "x"}) == 404
        assert embed(server.url, "onnx", {"model": MODEL, "input": []}) == 400
        for _ in range(3):  # each scrape may land on either front process
            after = settled_scrape(
                server.url, lambda now: now.since(before, "embedserve_request_duration_seconds_count") >= 26
            )

            def delta(name: str, after: MetricsSnapshot = after, **labels: str) -> float:
                return after.since(before, name, **labels)

            assert delta("embedserve_requests_total", backend="onnx", code="200") == 24
            assert delta("embedserve_requests_total", backend="onnx", code="404") == 1
            assert delta("embedserve_requests_total", backend="onnx", code="400") == 1
            assert delta("embedserve_request_duration_seconds_count", backend="onnx") == 26
            assert delta("embedserve_inputs_total", backend="onnx") == 72
            assert delta("embedserve_forward_inputs_sum", backend="onnx") == 72
            assert delta("embedserve_queue_wait_seconds_count", backend="onnx") == 24
            assert after.total("embedserve_requests_in_flight") == 0
            roles = {"main", "manager", "http", "worker"}
            assert after.label_values("embedserve_process_resident_memory_bytes", "role") == roles
            assert after.label_values("embedserve_process_cpu_seconds", "role") == roles
            assert after.total("embedserve_process_cpu_seconds", role="worker") > 0
        assert len(requests_answered_by_process(server)) == 2, "both front processes answered"
    finally:
        server.stop()


def requests_answered_by_process(server) -> dict[str, float]:
    """Requests counted in each process's own metric file (counter_<pid>.db), for the processes that counted any."""
    from prometheus_client.mmap_dict import MmapedDict

    counted: dict[str, float] = {}
    for path in metrics_dir_of(server).glob("counter_*.db"):
        values = MmapedDict.read_all_values_from_file(str(path))
        total = sum(value for key, value, *_ in values if '"embedserve_requests_total"' in key)
        if total:
            counted[path.stem] = total
    return counted


class PrometheusProcess:
    """Debian's prometheus on 127.0.0.1, scraping one server every second with the shipped config and alerts."""

    def __init__(self, target: str, workdir: Path):
        shipped = ROOT / "monitoring" / "prometheus"
        config = yaml.safe_load((shipped / "prometheus.yml").read_text())
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        config["rule_files"] = [str(shipped / name) for name in config["rule_files"]]
        embedserve_job = next(job for job in config["scrape_configs"] if job["job_name"] == "embedserve")
        embedserve_job.pop("dns_sd_configs")  # compose's service names; here the test's own server
        embedserve_job["static_configs"] = [{"targets": [target]}]
        config["scrape_configs"] = [embedserve_job]  # no dcgm-exporter on this host
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = (workdir / "prometheus.log").open("w")
        self.process = subprocess.Popen(
            [
                require_tool("prometheus", PROMETHEUS_HOW),
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address={self.url.removeprefix('http://')}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60) -> PrometheusProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, Path(self.log.name).read_text()[-2000:]
            try:
                if requests.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        raise TimeoutError(Path(self.log.name).read_text()[-2000:])

    def query(self, promql: str) -> list[dict]:
        reply = requests.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10).json()
        assert reply["status"] == "success", (promql, reply)
        return reply["data"]["result"]

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)
        self.log.close()


@pytest.fixture
def prometheus(server, tmp_path) -> Iterator[PrometheusProcess]:
    require_tool("prometheus", PROMETHEUS_HOW)
    running = PrometheusProcess(server.url.removeprefix("http://"), tmp_path).wait_ready()
    yield running
    running.stop()


def substitute(expr: str) -> str:
    """Dashboard variables as Grafana sends them with 'All' selected; a window long enough to hold the load."""
    for variable in ("$instance", "$backend", "$model"):
        expr = expr.replace(variable, ".*")
    return expr.replace("$__rate_interval", "2m")


def wait_for_scrapes(prometheus: PrometheusProcess, server_url: str, timeout: float = 30) -> None:
    """Until Prometheus holds the server's current request count in two scrapes (rate() needs two samples)."""
    expected = MetricsSnapshot.scrape(server_url).total("embedserve_requests_total")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = prometheus.query("min_over_time(sum(embedserve_requests_total)[3s:1s])")
        if result and float(result[0]["value"][1]) >= expected:
            return
        time.sleep(0.5)
    raise TimeoutError(f"Prometheus never saw {expected} requests")


def send_mixed_load(server_url: str, requests_count: int) -> None:
    for backend in BACKENDS:
        send_load(server_url, backend, requests_count=requests_count, inputs_per_request=4)
        assert embed(server_url, backend, {"model": "no-such-model", "input": "x"}) == 404


def test_every_dashboard_panel_returns_data_from_a_real_prometheus(server, prometheus):
    # A series' first sample counts as no increase, so every series is made to exist (and scraped) first.
    send_mixed_load(server.url, requests_count=1)
    wait_for_scrapes(prometheus, server.url)
    send_mixed_load(server.url, requests_count=12)
    wait_for_scrapes(prometheus, server.url)

    targets = requests.get(f"{prometheus.url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
    assert [t["health"] for t in targets] == ["up"]
    rules = requests.get(f"{prometheus.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    assert sum(len(group["rules"]) for group in rules) == 7
    assert all(rule["health"] == "ok" for group in rules for rule in group["rules"])

    board = json.loads((DASHBOARD_DIR / "embedserve.json").read_text())
    empty = []
    for title, exprs in panel_queries(board).items():
        results = [prometheus.query(substitute(expr)) for expr in exprs]
        if not any(results):
            empty.append(title)
        if title == "Requests/s":
            per_backend = {r["metric"]["backend"]: float(r["value"][1]) for r in results[0]}
            assert set(BACKENDS) <= set(per_backend) and all(per_backend[b] > 0 for b in BACKENDS), per_backend
        if title == "Errors/s by code":
            assert {r["metric"]["code"] for r in results[0]} >= {"404"}
    allowed_empty = set() if HAS_GPU else set(GPU_PANELS)
    assert set(empty) <= allowed_empty, f"panels without data: {sorted(set(empty) - allowed_empty)}"
    if not HAS_GPU:
        assert set(empty) == set(GPU_PANELS), "a GPU panel shows data on a host without a GPU"
