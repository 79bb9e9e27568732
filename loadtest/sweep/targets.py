"""Where a sweep cell's requests go: one of the loaded embedserve's backends, or a peer server (`--peer NAME=URL`):
any OpenAI-compatible embedding server (Infinity, TEI, vLLM, another embedserve), loaded by the same generator with
the same requests and the same checks on every answer.

A peer's URL is its OpenAI base URL, as the OpenAI SDK's `base_url` takes it: requests go to `URL/embeddings`, and
its model comes from `URL/models` (Infinity: http://127.0.0.1:7997; TEI and vLLM: http://127.0.0.1:8080/v1; an
embedserve backend: http://127.0.0.1:8000/onnx/v1).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np

from loadtest.client.checks import UNIT_NORM_TOLERANCE
from loadtest.client.openai_api import call, embed
from loadtest.probe.discovery import Served


@dataclass(frozen=True)
class Target:
    name: str  # the backend's name, or the peer's NAME
    host: str  # scheme://host:port
    path: str  # what requests are POSTed to
    model: str
    dimensions: int | None  # every answer's embeddings must have these (None: not checked)
    unit_norm: bool
    peer: bool = False  # no embedserve /metrics behind it: the server-side figures stay empty


def backend_target(server_url: str, backend: str, model: str, served: Served | None, dimensions: int | None) -> Target:
    return Target(
        backend,
        server_url,
        f"/{backend}/v1/embeddings",
        model,
        dimensions or (served.dimensions(backend) if served else None),
        served.normalized(backend) if served else False,
    )


def parse_peer(spec: str) -> tuple[str, str]:
    """`NAME=URL` -> (NAME, URL without a trailing slash)."""
    name, sep, url = spec.partition("=")
    name, url = name.strip(), url.strip().rstrip("/")
    parts = urlsplit(url)
    if not sep or not name or parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"--peer {spec!r}: expected NAME=URL, with the server's OpenAI base URL (http://host:port/v1)")
    if not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"--peer {spec!r}: NAME takes letters, digits, - and _ (it names files and report columns)")
    return name, url


def peer_model(base_url: str, wanted: str) -> str:
    """`wanted` where the peer lists it (or lists nothing), else the first model it lists (Infinity names a local
    model by its folder, for example)."""
    try:
        listed = [model["id"] for model in call(f"{base_url}/models", timeout=10)["data"]]
    except (OSError, ValueError, KeyError, TypeError):
        return wanted
    return wanted if wanted in listed or not listed else listed[0]


def peer_target(name: str, base_url: str, wanted_model: str, dimensions: int | None) -> Target:
    """A peer, probed with one request: its model, and the dimensions and norm every later answer must have."""
    model = peer_model(base_url, wanted_model)
    try:
        vectors = embed(base_url + "/embeddings", model, ["a probe of the peer server"], dimensions)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RuntimeError(f"peer {name} at {base_url}: no embedding from {base_url}/embeddings: {error}") from error
    parts = urlsplit(base_url)
    unit_norm = abs(float(np.linalg.norm(vectors[0])) - 1.0) <= UNIT_NORM_TOLERANCE
    host = f"{parts.scheme}://{parts.netloc}"
    return Target(name, host, f"{parts.path}/embeddings", model, vectors.shape[1], unit_norm, peer=True)
