"""What the compose test needs of Docker on a machine that cannot pull registry images: a running engine, a local
stand-in for python:3.11-slim built with debootstrap, and the compose CLI with the test-only override."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import ROOT, require_tool

STANDIN_IMAGE = "embedserve-standin/python:3.11-bookworm"
# The official python:3.11-slim carries python3, venv and pip on Debian bookworm; so does the stand-in.
STANDIN_PACKAGES = "python3,python3-venv,python3-pip,ca-certificates"
STANDIN_RECIPE_LABEL = "org.embedserve.standin-recipe"
DOCKER_HOW = "`make test` installs Debian's docker.io, docker-compose and debootstrap (needs apt)"


def docker_ok() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


@contextmanager
def docker_engine(log_dir: Path) -> Iterator[None]:
    """A Docker engine for the duration: the running one, or a dockerd started here and stopped afterwards. Skips
    with dockerd's own words where it cannot run (no root, no overlay or cgroups in a sandbox)."""
    require_tool("docker", DOCKER_HOW)
    if docker_ok():
        yield
        return
    dockerd = require_tool("dockerd", DOCKER_HOW)
    if os.geteuid() != 0:
        pytest.skip("dockerd is not running and only root can start it here")
    log_path = log_dir / "dockerd.log"
    with log_path.open("w") as log:
        process = subprocess.Popen([dockerd], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not docker_ok():
            if process.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(log_path.read_text().splitlines()[-5:])
                pytest.skip(f"dockerd cannot run on this machine: {tail}")
            time.sleep(0.5)
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def debian_mirror() -> str:
    """The Debian mirror this machine's apt sources name (deb822 or one-line format)."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for source in sources:
        text = source.read_text() if source.is_file() else ""
        for match in re.finditer(r"^(?:URIs:\s*|deb\s+(?:\[[^]]*\]\s+)?)(\S+)", text, re.M):
            if not match.group(1).rstrip("/").endswith("-security"):
                return match.group(1)
    return "http://deb.debian.org/debian"


def host_ca_bundle() -> Path:
    """The CA bundle this host's own TLS clients trust (here it holds the CA of the network's TLS proxy)."""
    return Path(os.environ.get("SSL_CERT_FILE") or ssl.get_default_verify_paths().openssl_cafile)


def torch_cpu_wheel(into: Path) -> Path:
    """torch==2.13.0's CPU wheel as this host's pip finds it (its find-links hold it here), for the image's pip."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(into), "torch==2.13.0"],
        check=True,
        capture_output=True,
    )
    (wheel,) = into.glob("torch-*.whl")
    if "+cpu" not in wheel.name:
        pytest.fail(f"pip here offers {wheel.name}, not torch's CPU build: the CPU image would carry CUDA")
    return wheel


def image_label(image: str, label: str) -> str | None:
    result = subprocess.run(["docker", "image", "inspect", image], capture_output=True, text=True)
    if result.returncode != 0:
        return None
    return (json.loads(result.stdout)[0]["Config"].get("Labels") or {}).get(label)


def build_standin_image(work: Path) -> str:
    """STANDIN_IMAGE: Debian bookworm with python3, venv and pip (debootstrap, `docker import`), plus what pip in a
    build needs on this machine and nowhere in the production Dockerfile: the host's CA bundle and the torch CPU
    wheel in /opt/wheels (PIP_FIND_LINKS). Kept between runs while its recipe is unchanged."""
    debootstrap = require_tool("debootstrap", DOCKER_HOW)
    wheel = torch_cpu_wheel(work / "wheels")
    ca_bundle = host_ca_bundle()
    mirror = debian_mirror()
    recipe = hashlib.sha256(f"{mirror} {STANDIN_PACKAGES} {wheel.name}".encode() + ca_bundle.read_bytes()).hexdigest()[
        :16
    ]
    if image_label(STANDIN_IMAGE, STANDIN_RECIPE_LABEL) == recipe:
        return STANDIN_IMAGE
    rootfs = work / "rootfs"
    subprocess.run(
        [debootstrap, "--variant=minbase", f"--include={STANDIN_PACKAGES}", "bookworm", str(rootfs), mirror],
        check=True,
        capture_output=True,
    )
    shutil.copyfile(ca_bundle, rootfs / "etc/ssl/certs/ca-certificates.crt")
    (rootfs / "opt/wheels").mkdir(parents=True)
    shutil.move(wheel, rootfs / "opt/wheels" / wheel.name)
    changes = [
        "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt",
        "ENV PIP_FIND_LINKS=/opt/wheels",
        f"LABEL {STANDIN_RECIPE_LABEL}={recipe}",
        'CMD ["python3"]',
    ]
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    subprocess.run(
        ["docker", "import", *(arg for change in changes for arg in ("--change", change)), "-", STANDIN_IMAGE],
        stdin=tar.stdout,
        check=True,
        capture_output=True,
    )
    assert tar.wait() == 0
    shutil.rmtree(rootfs)
    return STANDIN_IMAGE


def prune_replaced_test_images() -> None:
    """Removes the images this suite built on the stand-in base and has since replaced: every build gets a new image
    under the same tag, and the old one, left untagged, kept 2.5 GB per `make test` on a developer's disk (a full
    disk failed the compose tests' build). Images built from a real base do not carry the stand-in's label."""
    docker_output("image", "prune", "--force", "--filter", f"label={STANDIN_RECIPE_LABEL}")


def compose_cli() -> list[str]:
    """Compose v2 (`docker compose`) where it is installed, else docker-compose 1.29 (Debian bookworm's)."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return [require_tool("docker-compose", DOCKER_HOW)]


@dataclass
class Compose:
    """compose.yaml plus the test-only override (deploy/test/compose.yaml), as one project of its own name."""

    project: str
    environment: dict[str, str]
    cli: list[str] = field(default_factory=compose_cli)
    files: tuple[Path, ...] = (ROOT / "compose.yaml", ROOT / "deploy" / "test" / "compose.yaml")

    def run(self, *args: str, timeout: float = 600) -> str:
        command = [*self.cli, "--project-name", self.project, *(f"--file={path}" for path in self.files), *args]
        # An empty COMPOSE_FILE/COMPOSE_PROFILES and no stray .env: only what the test sets shapes the project.
        env = {key: value for key, value in os.environ.items() if not key.startswith("COMPOSE_")}
        result = subprocess.run(
            command,
            cwd=ROOT,
            env={**env, **self.environment},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-4000:]}{result.stderr[-4000:]}"
        return result.stdout

    def container(self, service: str) -> str:
        container_id = self.run("ps", "-q", service).strip()
        assert container_id, f"no container for {service}"
        return container_id

    def leftovers(self) -> dict[str, list[str]]:
        """Containers (running or not), networks and volumes of the project that are still there."""
        label = f"label=com.docker.compose.project={self.project}"
        found = {}
        for kind, command in {
            "containers": ["docker", "ps", "-a", "-q", "--filter", label],
            "networks": ["docker", "network", "ls", "-q", "--filter", label],
            "volumes": ["docker", "volume", "ls", "-q", "--filter", label],
        }.items():
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            found[kind] = output.split()
        return found


def docker_output(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout


def container_log(container: str, *args: str) -> str:
    """What the container wrote, stdout and stderr together (the server logs to stderr)."""
    result = subprocess.run(["docker", "logs", *args, container], capture_output=True, text=True, check=True)
    return result.stdout + result.stderr


def image_bytes(image: str) -> int:
    return int(docker_output("image", "inspect", "--format", "{{.Size}}", image))
