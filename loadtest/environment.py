"""What a sweep ran on: host CPU/GPU, package versions, git commit and the server's own configuration."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import urllib.request
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

PACKAGES = ("embedserve", "litserve", "torch", "transformers", "onnxruntime", "openvino", "locust", "tokenizers")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpus() -> list[str]:
    if not shutil.which("nvidia-smi"):
        return []
    probe = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"], capture_output=True, text=True
    )
    return [line.strip() for line in probe.stdout.splitlines() if line.strip()] if probe.returncode == 0 else []


def git_commit() -> str | None:
    root = Path(__file__).resolve().parents[1]
    probe = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
    if probe.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
    ).stdout.strip()
    return probe.stdout.strip() + ("-dirty" if dirty else "")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def server_state(server_url: str) -> dict:
    """The served model and each backend's device, dimensions and load time, as /v1/models reports them."""
    with urllib.request.urlopen(f"{server_url}/v1/models", timeout=10) as response:
        return json.load(response)["data"][0]


def describe_environment(server_url: str) -> dict:
    return {
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpus": gpus(),
        "packages": package_versions(),
        "git_commit": git_commit(),
        "server_url": server_url,
        "server": server_state(server_url),
    }
