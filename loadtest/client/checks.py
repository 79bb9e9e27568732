"""What a correct embeddings response is, checked on every Locust request.

Kept apart from the locustfile, which imports Locust (and with it gevent's monkey-patching), so that tests and
the sweep can use the same check without patching their own process.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from loadtest.client.http_load import SHED

# A request's outcome in the locustfile's latency files (--latency-file).
PASSED, FAILED, SHED_MARK = "1", "0", "s"


def shed(status: int, body: Any) -> bool:
    """The server turned the request away at once because it is past its capacity (503 server_overloaded)."""
    error = body.get("error") if isinstance(body, dict) else None
    return status == 503 and isinstance(error, dict) and error.get("code") == "server_overloaded"


# A unit-length embedding's norm, within float32 rounding over a thousand dimensions.
UNIT_NORM_TOLERANCE = 1e-3


def embeddings_failure(
    status: int, body: Any, inputs: int, dimensions: int | None, encoding_format: str, unit_norm: bool = False
) -> str | None:
    """The reason a response is wrong, SHED, or None. Reasons are stable strings, so Locust groups them.
    `unit_norm`: the model normalises, so every embedding must be unit length."""
    if shed(status, body):
        return SHED
    if status != 200:
        message = body.get("error", {}).get("message", "") if isinstance(body, dict) else ""
        code = body.get("error", {}).get("code", "") if isinstance(body, dict) else ""
        return f"HTTP {status} {code or message[:80]}".rstrip()
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        return "response has no data list"
    if len(data) != inputs:
        return f"expected {inputs} embeddings, got {len(data)}"
    if [item.get("index") for item in data] != list(range(inputs)):
        return "embeddings are not indexed 0..n-1 in order"
    for item in data:
        values = _values(item.get("embedding"), encoding_format)
        if values is None:
            return f"embedding is not {encoding_format}"
        if dimensions is not None and len(values) != dimensions:
            return f"expected {dimensions} dimensions, got {len(values)}"
        if not np.isfinite(values).all():
            return "embedding has NaN or infinite values"
        if not values.any():
            return "embedding is all zeros"
        if unit_norm and abs(float(np.linalg.norm(values)) - 1.0) > UNIT_NORM_TOLERANCE:
            return "embedding is not unit length"
    return None


def _values(vector: Any, encoding_format: str) -> np.ndarray | None:
    """An embedding's numbers, or None when it is not in the asked-for encoding."""
    try:
        if encoding_format == "base64":
            return np.frombuffer(base64.b64decode(vector), dtype="<f4") if isinstance(vector, str) else None
        return np.asarray(vector, dtype=np.float64) if isinstance(vector, list) else None
    except (ValueError, TypeError):
        return None
