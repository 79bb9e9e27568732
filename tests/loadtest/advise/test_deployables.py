"""The recommended setup's files: embedserve.yaml loads in `embedserve serve --config`, the compose override
validates against the Compose Specification, and the kustomize overlay renders with `kubectl kustomize`."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from loadtest.advise.candidates import Candidate
from loadtest.advise.deployables import CONFIG_IN_CONTAINER, serve_config, write_deployables
from loadtest.settings import AdviseSettings
from server.settings import ServeSettings, parse_cli
from tests.helpers import ROOT, require_tool

COMPOSE_SCHEMA = ROOT.parent / "shared" / "schemas" / "compose-spec.json"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    settings = AdviseSettings(slo_p99_ms=80, max_tokens=128)
    config = serve_config(Candidate("sentence-transformers/all-MiniLM-L6-v2", "onnx-int8"), settings, "cpu")
    return config, write_deployables(tmp_path_factory.mktemp("deploy"), config, 3, 1.1, 500, gpu=False)


def test_the_config_is_what_serve_reads(files, monkeypatch):
    config, paths = files
    monkeypatch.delenv("EMBEDSERVE_CONFIG", raising=False)
    served = parse_cli(ServeSettings, "embedserve serve", ["--config", str(paths["config"]), "--port", "8100"])
    assert served.backends == ["onnx-int8"] and served.model == config["model"]
    assert (served.max_queue_wait_ms, served.max_tokens, served.max_batch_tokens) == (160.0, 128, 2048)
    assert served.port == 8100  # the command line still wins over the file


def test_the_compose_override_validates_and_merges_onto_compose_yaml(files):
    _, paths = files
    override = yaml.safe_load(paths["compose"].read_text())
    service = override["services"]["embedserve"]
    assert service["deploy"]["replicas"] == 3
    assert service["deploy"]["resources"]["reservations"] == {"cpus": "1.25", "memory": "640M"}
    assert service["environment"]["EMBEDSERVE_CONFIG"] == CONFIG_IN_CONTAINER
    assert service["volumes"] == [f"{paths['config'].resolve()}:{CONFIG_IN_CONTAINER}:ro"]
    if not COMPOSE_SCHEMA.exists():
        pytest.skip(f"{COMPOSE_SCHEMA} not found (../shared beside the project)")
    import jsonschema

    validator = jsonschema.Draft7Validator(json.loads(COMPOSE_SCHEMA.read_text()))
    merged = yaml.safe_load((ROOT / "compose.yaml").read_text())
    base = merged["services"]["embedserve"]
    base["environment"] = {**base["environment"], **service["environment"]}
    base["volumes"] = base["volumes"] + service["volumes"]
    base["deploy"] = service["deploy"]
    for document in (override, merged):
        errors = sorted(validator.iter_errors(document), key=str)
        assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_the_kustomize_overlay_renders_on_the_repository_manifests(files):
    config, paths = files
    kubectl = require_tool("kubectl", "`make test` installs it (apt: kubernetes-client)")
    rendered = subprocess.run([kubectl, "kustomize", str(paths["kustomize"])], capture_output=True, text=True)
    assert rendered.returncode == 0, rendered.stderr
    documents = {doc["kind"]: doc for doc in yaml.safe_load_all(rendered.stdout) if doc}
    deployment = documents["Deployment"]
    assert deployment["spec"]["replicas"] == 3
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["EMBEDSERVE_BACKENDS"] == "onnx-int8" and env["EMBEDSERVE_CONFIG"] == CONFIG_IN_CONTAINER
    assert env["EMBEDSERVE_HOST"] == "0.0.0.0"  # the base's own settings stay
    assert container["resources"]["requests"] == {"cpu": "1250m", "memory": "640Mi"}
    assert container["resources"]["limits"]["memory"] == "6Gi"  # room for a first start's export
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == CONFIG_IN_CONTAINER)
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    config_map = documents["ConfigMap"]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]  # the generator's hashed name, followed
    assert yaml.safe_load(config_map["data"]["embedserve.yaml"]) == config
    assert documents["HorizontalPodAutoscaler"]["spec"]["minReplicas"] == 3
