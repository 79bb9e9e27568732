"""What a running embedserve serves, from its /v1/models: the model id and each backend's state and dimensions.

Load tools read it so that they need no flags to match the server (plain `locust`, `embedserve soak`)."""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass

from loadtest.client.api_key import authorization


@dataclass(frozen=True)
class Served:
    model: str
    backends: dict[str, dict]  # name -> {"state": "ready", "dimensions": 384, ...}

    @property
    def ready_backends(self) -> list[str]:
        return [name for name, detail in self.backends.items() if detail.get("state") == "ready"]

    def dimensions(self, backend: str) -> int | None:
        return self.backends.get(backend, {}).get("dimensions")

    def normalized(self, backend: str) -> bool:
        """Whether the backend's embeddings are unit length (an older server does not say: no check)."""
        return bool(self.backends.get(backend, {}).get("normalized"))


def parse_models(document: dict) -> Served:
    """The first model of an OpenAI model list with embedserve's `backends` field."""
    try:
        model = document["data"][0]
        return Served(model["id"], dict(model.get("backends") or {}))
    except (KeyError, IndexError, TypeError) as error:
        raise ValueError(f"not an embedserve /v1/models answer: {str(document)[:200]}") from error


def discover(server_url: str, timeout: float = 10) -> Served:
    request = urllib.request.Request(f"{server_url.rstrip('/')}/v1/models", headers=authorization())
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return parse_models(json.load(response))
