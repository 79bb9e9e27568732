"""Where a backend's model files come from: the model's own folder (torch), or an ONNX / OpenVINO artefact exported
into the cache (optionally int8), like TEI's `init_backend`: the backends only ever receive a folder.

Exporting needs torch and optimum; serving an artefact needs only its runtime. A missing artefact is therefore
exported by the exporter in a child process of its own (`python -m server.engine.export`, which `embedserve export`
runs too), so that a server of ONNX backends never imports torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path

from server.backends.base import Backend
from server.settings import EngineSettings

log = logging.getLogger(__name__)

MARKER = "embedserve-export.json"
# Raised when an export recipe changes (2: calibrated int8), so that artefacts of an older recipe are made again.
EXPORT_VERSION = 2


def artefact_dir(cache: Path, model: str, runtime: str, quantize: str) -> Path:
    path = Path(model).expanduser()
    if path.is_dir():
        # Two local models may share a folder name; their resolved paths differ.
        digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:10]
        slug = f"local--{path.resolve().name}--{digest}"
    else:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "--", model)
    variant = runtime if quantize == "none" else f"{runtime}-{quantize}"
    return cache / slug / variant


def is_complete(directory: Path) -> bool:
    """Written whole (the marker comes last), by the current recipe."""
    marker = directory / MARKER
    return marker.is_file() and json.loads(marker.read_text()).get("export_version") == EXPORT_VERSION


def ensure_artefact(settings: EngineSettings, runtime: str, quantize: str) -> Path:
    """The artefact's directory, exported first (in a child process) when it is missing."""
    target = artefact_dir(settings.cache, settings.model, runtime, quantize)
    if is_complete(target):
        return target
    if not settings.allow_export:
        raise FileNotFoundError(
            f"no {runtime} artefact for {settings.model} in {target.parent}; run "
            f"`embedserve export --model {settings.model} --backend {runtime} --quantize {quantize}`"
        )
    log.warning(
        "exporting %s to %s (%s, quantize=%s): first use, this takes a while", settings.model, target, runtime, quantize
    )
    started = time.monotonic()
    command = [
        sys.executable,
        "-m",
        "server.engine.export",
        "--model",
        settings.model,
        "--backend",
        runtime,
        "--quantize",
        quantize,
        "--cache",
        str(settings.cache),
    ]
    if settings.trust_remote_code:
        command.append("--trust-remote-code")
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not is_complete(target):
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"export of {settings.model} for {runtime} failed:\n{tail}")
    log.warning("exported %s for %s in %.0f s", settings.model, runtime, time.monotonic() - started)
    return target


def backend_files(settings: EngineSettings, model_dir: Path, backend: Backend) -> Path:
    """The folder a backend loads: the model's own for a runtime that reads it directly, else its artefact."""
    if backend.artefact is None:
        return model_dir
    return ensure_artefact(settings, backend.artefact, backend.quantize)
