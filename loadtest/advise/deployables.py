"""The chosen setup as files a user deploys unchanged: `embedserve.yaml` for `embedserve serve --config`, a compose
override, and a kustomize overlay on deploy/k8s, sized from what advise measured.

advise serves every candidate from its own embedserve.yaml, so the file that is verified is the file deployed.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import yaml

from loadtest.advise.candidates import Candidate
from loadtest.settings import AdviseSettings

REPOSITORY = Path(__file__).resolve().parents[2]
CONFIG_IN_CONTAINER = "/etc/embedserve/embedserve.yaml"
# Token budget of one forward pass, as the server defaults it (server/settings.py): written out, so the file says it.
DEFAULT_BATCH_TOKENS = {"cpu": 2048, "cuda": 32768}


def serve_config(candidate: Candidate, settings: AdviseSettings, device: str) -> dict:
    """embedserve.yaml: the model, its one backend, the batching and the admission bound it was measured with.
    Requests whose expected wait is twice the objective are shed at once (503 + Retry-After) rather than answered
    hopelessly late; the bound is not the objective itself, because the expected wait is an estimate, and at the
    objective it shed requests that would have made it (p99 under the objective with 10% shed, on MiniLM here)."""
    config = {
        "model": candidate.model,
        "backends": [candidate.backend],
        "dtype": candidate.dtype,
        "max_batch_tokens": DEFAULT_BATCH_TOKENS["cuda" if device.startswith("cuda") else "cpu"],
        "batch_timeout_ms": 0.0,
        "max_queue": 256,
        "max_queue_wait_ms": 2 * settings.slo_p99_ms,
    }
    if settings.max_tokens:
        config["max_tokens"] = settings.max_tokens
    if settings.trust_remote_code:
        config["trust_remote_code"] = True
    return config


def write_serve_config(path: Path, config: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# embedserve serve --config "
        + path.name
        + "   (written by embedserve advise)\n"
        + yaml.safe_dump(config, sort_keys=False)
    )
    return path


def cpu_quantity(cores: float) -> str:
    """Cores as Kubernetes millicores, rounded up to a quarter core."""
    return f"{math.ceil(max(cores, 0.25) * 4) * 250}m"


def memory_mebibytes(megabytes: float) -> int:
    """Measured peak plus a quarter, rounded up to 64 MiB: RSS moves with traffic."""
    return math.ceil(megabytes * 1.25 / 64) * 64


def compose_override(config_path: Path, config: dict, replicas: int, cores: float, memory_mb: float) -> dict:
    """`docker compose -f compose.yaml -f compose.override.yaml up`: the chosen model and backend, its config
    mounted, cores reserved and limited as measured, memory reserved as measured (not limited: a first start may
    export the model's artefact, which takes more than serving it)."""
    cpus = f"{math.ceil(max(cores, 0.25) * 4) / 4:g}"
    resources = {
        "limits": {"cpus": cpus},
        "reservations": {"cpus": cpus, "memory": f"{memory_mebibytes(memory_mb)}M"},
    }
    return {
        "services": {
            "embedserve": {
                "environment": {
                    "EMBEDSERVE_MODEL": config["model"],
                    "EMBEDSERVE_BACKENDS": ",".join(config["backends"]),
                    "EMBEDSERVE_CONFIG": CONFIG_IN_CONTAINER,
                },
                "volumes": [f"{config_path.resolve()}:{CONFIG_IN_CONTAINER}:ro"],
                "deploy": {"replicas": replicas, "resources": resources},
            }
        }
    }


def kustomize_patch(config: dict, replicas: int, cores: float, memory_mb: float) -> list[dict]:
    memory = f"{memory_mebibytes(memory_mb)}Mi"
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "embedserve"},
        "spec": {
            "replicas": replicas,
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "embedserve",
                            "env": [
                                {"name": "EMBEDSERVE_MODEL", "value": config["model"]},
                                {"name": "EMBEDSERVE_BACKENDS", "value": ",".join(config["backends"])},
                                {"name": "EMBEDSERVE_CONFIG", "value": CONFIG_IN_CONTAINER},
                            ],
                            # Requests as measured; the base's memory limit stays, for a first start's export.
                            "resources": {"requests": {"cpu": cpu_quantity(cores), "memory": memory}},
                            "volumeMounts": [
                                {"name": "config", "mountPath": CONFIG_IN_CONTAINER, "subPath": "embedserve.yaml"}
                            ],
                        }
                    ],
                    "volumes": [{"name": "config", "configMap": {"name": "embedserve-config"}}],
                }
            },
        },
    }
    # The base's autoscaler would scale below the replicas the rate needs.
    autoscaler = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "embedserve"},
        "spec": {"minReplicas": replicas, "maxReplicas": max(10, replicas * 2)},
    }
    return [deployment, autoscaler]


def write_deployables(
    directory: Path, config: dict, replicas: int, cores: float, memory_mb: float, gpu: bool
) -> dict[str, Path]:
    """embedserve.yaml, compose.override.yaml and k8s/ (kustomization.yaml, patch.yaml, its own embedserve.yaml)."""
    directory.mkdir(parents=True, exist_ok=True)
    config_path = write_serve_config(directory / "embedserve.yaml", config)
    compose_path = directory / "compose.override.yaml"
    compose_path.write_text(
        "# docker compose -f compose.yaml -f " + str(compose_path) + " up   (written by embedserve advise)\n"
        "# Replicas on one host share its published port 8000: publish a port range, or run one per machine.\n"
        + yaml.safe_dump(compose_override(config_path, config, replicas, cores, memory_mb), sort_keys=False)
    )
    k8s = directory / "k8s"
    write_serve_config(k8s / "embedserve.yaml", config)
    overlay = REPOSITORY / "deploy" / "k8s" / "overlays" / ("gpu" if gpu else "cpu")
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(overlay, k8s)],
        "configMapGenerator": [{"name": "embedserve-config", "files": ["embedserve.yaml"]}],
        "patches": [{"path": "patch.yaml"}],
    }
    (k8s / "kustomization.yaml").write_text(
        f"# kubectl apply -k {k8s}   (written by embedserve advise)\n" + yaml.safe_dump(kustomization, sort_keys=False)
    )
    (k8s / "patch.yaml").write_text(
        yaml.safe_dump_all(kustomize_patch(config, replicas, cores, memory_mb), sort_keys=False)
    )
    return {"config": config_path, "compose": compose_path, "kustomize": k8s}
