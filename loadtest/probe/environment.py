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

from loadtest.client.api_key import authorization
from server.engine import cpu_flags

PACKAGES = ("embedserve", "litserve", "torch", "transformers", "onnxruntime", "openvino", "locust", "tokenizers")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# The instruction sets that decide how fast int8 (and bf16) inference runs on a CPU, as /proc/cpuinfo names them.
SPEED_FLAGS = {
    "avx2": "AVX2",
    "avx512f": "AVX-512",
    "avx512_vnni": "AVX-512 VNNI",
    "avx_vnni": "AVX-VNNI",
    "avx512_bf16": "AVX-512 BF16",
    "amx_int8": "AMX-INT8",
    "amx_bf16": "AMX-BF16",
}


def instruction_sets() -> list[str]:
    """Which of SPEED_FLAGS this CPU has; int8 pays off only with a dot-product set (VNNI or AMX)."""
    flags = cpu_flags()
    return [name for flag, name in SPEED_FLAGS.items() if flag in flags]


def int8_dot_product(sets: list[str]) -> bool:
    return any(name in sets for name in ("AVX-512 VNNI", "AVX-VNNI", "AMX-INT8"))


def describe_cpu() -> str:
    sets = instruction_sets()
    return f"{cpu_model()}, {os.cpu_count()} cores, {', '.join(sets) or 'no AVX2'}"


def gpus() -> list[str]:
    if not shutil.which("nvidia-smi"):
        return []
    probe = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"], capture_output=True, text=True
    )
    return [line.strip() for line in probe.stdout.splitlines() if line.strip()] if probe.returncode == 0 else []


def git_commit() -> str | None:
    root = Path(__file__).resolve().parents[2]
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
    request = urllib.request.Request(f"{server_url}/v1/models", headers=authorization())
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["data"][0]


def describe_environment(server_url: str) -> dict:
    return {**describe_machine(), "server_url": server_url, "server": server_state(server_url)}


def describe_machine() -> dict:
    """The machine, the versions and the commit a run measured with."""
    return {
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "instruction_sets": instruction_sets(),
        "gpus": gpus(),
        "packages": package_versions(),
        "git_commit": git_commit(),
    }
