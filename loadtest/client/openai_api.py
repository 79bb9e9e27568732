"""One-off calls to an OpenAI-compatible embedding server (embedserve or a peer), outside the timed load: probes
and the vector fingerprints."""

from __future__ import annotations

import json
import urllib.request

import numpy as np

from loadtest.client.api_key import authorization


def call(url: str, body: dict | None = None, timeout: float = 120) -> dict:
    """GET `url`, or POST `body` to it as JSON; the answer's JSON."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", **authorization()}
    with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=timeout) as response:
        return json.load(response)


def embed(url: str, model: str, texts: list[str], dimensions: int | None = None) -> np.ndarray:
    """The embeddings `url` (an embeddings route) gives `texts`, [texts, dims] float32, in input order."""
    extra = {"dimensions": dimensions} if dimensions else {}
    data = sorted(call(url, {"model": model, "input": texts, **extra})["data"], key=lambda item: item["index"])
    return np.asarray([item["embedding"] for item in data], dtype=np.float32)
