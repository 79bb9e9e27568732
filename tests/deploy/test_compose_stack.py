"""The composed stack for real (`make compose-test`): deploy/Dockerfile built, `docker compose up` started, plain
`locust` from the host against it, Prometheus scraping it, a restart that keeps the exported artefacts, the loadtest
profile, and `down` leaving nothing. Images come from local stand-ins (deploy/test/compose.yaml) because registries
cannot be reached here; Grafana, which has no stand-in, stays out. Every port is published on 127.0.0.1 only."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests

from loadtest.probe.metrics_scrape import MetricsSnapshot
from tests.deploy.docker_stack import (
    STANDIN_IMAGE,
    STANDIN_RECIPE_LABEL,
    Compose,
    build_standin_image,
    container_log,
    docker_engine,
    docker_output,
    image_bytes,
    prune_replaced_test_images,
)
from tests.helpers import ROOT, settled_scrape

pytestmark = [pytest.mark.slow, pytest.mark.compose]
PROJECT = "embedserve-compose-test"
SERVER = "http://127.0.0.1:8000"
PROMETHEUS = "http://127.0.0.1:9090"
PUBLISHED_PORTS = (8000, 9090, 8089)
API_KEY = "compose-test-key"
IMAGE = "embedserve-compose-test:cpu"
EXPORTING = "exporting sentence-transformers/all-MiniLM-L6-v2"
# Shared objects of CUDA and its libraries: none may be in the CPU image.
CUDA_LIBRARIES = ("libcuda.so*", "libcudart*", "libcublas*", "libcudnn*", "libnccl*", "libcufft*", "libcusparse*")


def wait_until(check, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(1)


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.ConnectionError:
        return False


def embedding_requests(stats: Path) -> tuple[int, int, set[str]]:
    """From Locust's JSON statistics: embeddings requests (served or shed), their failures, and the backends hit."""
    rows = [row for row in json.loads(stats.read_text()) if "/v1/embeddings" in row["name"]]
    sent = sum(row["num_requests"] for row in rows)
    return sent, sum(row["num_failures"] for row in rows), {row["name"].split("/")[1] for row in rows}


def port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Compose]:
    """compose.yaml with the test override, its images built: the stand-in base, then `compose build`."""
    work = tmp_path_factory.mktemp("compose")
    with docker_engine(work):
        started = time.monotonic()
        build_standin_image(work)
        stack = Compose(PROJECT, {"STANDIN_IMAGE": STANDIN_IMAGE, "EMBEDSERVE_API_KEY": API_KEY})
        stack.run("build")
        prune_replaced_test_images()
        print(f"\nstand-in base and images built in {time.monotonic() - started:.0f} s with {' '.join(stack.cli)}")
        try:
            yield stack
        finally:
            stack.run("down", "--volumes", "--remove-orphans")


@pytest.fixture(scope="module")
def stack(compose: Compose) -> Compose:
    """`up -d`: the server (exporting its ONNX and OpenVINO artefacts into the cache volume) and Prometheus."""
    busy = [port for port in PUBLISHED_PORTS if port_in_use(port)]
    assert not busy, f"127.0.0.1 ports {busy} are taken; the composed stack publishes them (stop what holds them)"
    print("grafana: skipped, no Grafana binary or image can be had on this machine (its files are checked statically)")
    compose.run("up", "-d")
    wait_until(lambda: answers(f"{SERVER}/ready"), "the composed server ready", timeout=420)
    return compose


def test_a_rebuild_leaves_no_replaced_image_behind(compose):
    replaced = docker_output(
        "images", "--quiet", "--filter", "dangling=true", "--filter", f"label={STANDIN_RECIPE_LABEL}"
    )
    assert replaced == "", "images of earlier builds, untagged by this one, are still on disk"
    assert image_bytes(IMAGE) > 0, "the image this build tagged is kept"


def test_the_cpu_image_is_deploy_dockerfile_without_cuda_and_with_every_cpu_backend(compose):
    image_size, base_size = image_bytes(IMAGE), image_bytes(STANDIN_IMAGE)
    print(
        f"\n{IMAGE}: {image_size / 1e6:.0f} MB, of which {base_size / 1e6:.0f} MB is the stand-in base "
        f"(Debian minbase + python3 + the torch wheel; python:3.11-slim is about 130 MB): "
        f"{(image_size - base_size) / 1e6:.0f} MB of embedserve's own layers"
    )
    names = " -o ".join(f"-name '{pattern}'" for pattern in CUDA_LIBRARIES)
    cuda_files = f"find / -xdev \\( {names} \\) -print; pip list --format=freeze | grep -i '^nvidia' || true"
    cuda = docker_output("run", "--rm", "--entrypoint", "sh", IMAGE, "-c", cuda_files)
    assert cuda == "", f"CUDA in the CPU image: {cuda}"
    frameworks = (
        "import torch, onnxruntime, openvino, embed_anything\n"
        "print(torch.__version__, torch.version.cuda, 'CUDAExecutionProvider' in onnxruntime.get_available_providers())"
    )
    found = docker_output("run", "--rm", "--entrypoint", "python", IMAGE, "-c", frameworks)
    assert found.strip() == "2.13.0+cpu None False", found
    user = docker_output("image", "inspect", "--format", "{{.Config.User}}", IMAGE).strip()
    assert user == "10001"


def test_host_locust_loads_the_stack_and_prometheus_counts_every_request(stack, tmp_path):
    stats = tmp_path / "locust"  # Locust adds .json
    # Plain `locust` in the repository root (its locust.conf: 127.0.0.1:8000, 32 users, every ready backend); users
    # finish the request they have in flight when time is up, and the JSON statistics (unlike the CSV ones, written
    # before those answers arrive) count them, so both sides count the same requests.
    result = subprocess.run(
        [sys.executable, "-m", "locust", "--headless", "-t", "20s", "--stop-timeout", "60", "--json-file", str(stats)],
        cwd=ROOT,
        env={**os.environ, "EMBEDSERVE_API_KEY": API_KEY},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sent, failures, backends = embedding_requests(tmp_path / "locust.json")
    assert failures == 0 and sent > 0, result.stderr[-3000:]
    assert backends == {"torch", "onnx", "openvino"}, "locust.conf's users spread over every ready backend"

    targets = requests.get(f"{PROMETHEUS}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
    embedserve_targets = [target for target in targets if target["labels"]["job"] == "embedserve"]
    assert [target["health"] for target in embedserve_targets] == ["up"], embedserve_targets

    def counted() -> float:
        answer = requests.get(
            f"{PROMETHEUS}/api/v1/query", params={"query": "sum(embedserve_requests_total)"}, timeout=10
        ).json()
        return float(answer["data"]["result"][0]["value"][1]) if answer["data"]["result"] else 0.0

    # Prometheus scrapes every 5 s: the first scrape after the run holds them all.
    wait_until(lambda: counted() >= sent, "Prometheus's count reaching Locust's", timeout=60)
    assert counted() == sent
    print(f"host locust, 20 s: {sent} embeddings requests over {sorted(backends)}, 0 failures; Prometheus: {sent}")
    # The key from .env's variable reached the server: without it, a request is refused.
    assert requests.post(f"{SERVER}/v1/embeddings", json={"input": "x"}, timeout=10).status_code == 401


def test_a_restart_keeps_the_exported_artefacts_in_the_cache_volume(stack):
    server = stack.container("embedserve")
    first_start = container_log(server)
    assert first_start.count(EXPORTING) == 2, "the first start exports ONNX and OpenVINO into the cache volume"
    restarted_at = datetime.now(timezone.utc).isoformat()
    started = time.monotonic()
    stack.run("restart", "embedserve")
    wait_until(lambda: answers(f"{SERVER}/ready"), "the restarted server ready", timeout=300)
    print(f"restart: ready again in {time.monotonic() - started:.0f} s, nothing exported")
    log = container_log(server, "--since", restarted_at)
    assert "embedserve" in log and EXPORTING not in log, log[-3000:]
    # The artefacts lie in the named volume, not the container's own layer: a new container finds them too.
    volume = f"{PROJECT}_model-cache"
    listed = docker_output("run", "--rm", "-v", f"{volume}:/cache", STANDIN_IMAGE, "ls", "-R", "/cache/embedserve")
    assert "model.onnx" in listed and "openvino_model.xml" in listed, listed[-2000:]


def test_the_loadtest_profile_runs_locust_master_and_workers_headless(stack, tmp_path):
    before = MetricsSnapshot.scrape(SERVER)
    stack.run("--profile", "loadtest", "up", "-d")
    master = stack.container("locust-master")
    # Headless for LOCUST_RUN_TIME (deploy/test/compose.yaml), then the master exits: 0 only with no failure.
    exit_code = int(docker_output("wait", master).strip())
    log = container_log(master)
    assert exit_code == 0, log[-3000:]
    assert "2 workers connected" in log, log[-3000:]
    subprocess.run(["docker", "cp", f"{master}:/tmp/locust.json", str(tmp_path)], check=True)
    sent, failures, _ = embedding_requests(tmp_path / "locust.json")
    assert sent > 0 and failures == 0
    # The server counted every one of them. Not exactly these: the master writes its statistics as it quits, and may
    # miss what a worker did since its last report (every 3 s), so the server may count a few more.
    after = settled_scrape(SERVER, lambda now: now.since(before, "embedserve_requests_total") >= sent)
    counted = after.since(before, "embedserve_requests_total")
    assert counted >= sent
    print(f"loadtest profile: master, 2 workers: {sent} embeddings requests, 0 failures; server counted {counted:.0f}")


def test_down_leaves_nothing_of_the_stack(stack):
    stack.run("--profile", "loadtest", "down", "--volumes", "--remove-orphans")
    assert stack.leftovers() == {"containers": [], "networks": [], "volumes": []}
    assert not any(port_in_use(port) for port in PUBLISHED_PORTS)
