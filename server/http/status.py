"""The status routes, /health, /ready and the model routes (/v1/models and each backend's), and the per-backend
load state they read.

Each backend's worker writes its state once (ready or failed, with details); /ready and /v1/models read it from
any HTTP process. Shared memory, because LitServe spawns the workers and forks the HTTP servers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from server.http.errors import ErrorResponse, OpenAIError
from server.http.processes import SPAWN

LOADING, READY, FAILED = 0, 1, 2
_STATE_NAMES = {LOADING: "loading", READY: "ready", FAILED: "failed"}
_DETAIL_BYTES = 2048


@dataclass
class ModelFacts:
    """What a loaded backend knows of its model and a client may rely on: shown in /ready and /v1/models, and the
    bounds of the OpenAPI request schema (server/http/openapi.py)."""

    dimensions: int
    max_tokens: int
    vocab_size: int
    sparse: bool
    normalized: bool  # unit-length embeddings (also with `dimensions`, which re-normalises)

    @classmethod
    def of(cls, detail: dict) -> ModelFacts | None:
        """From a backend's status detail; None until it has loaded."""
        try:
            return cls(**{name: detail[name] for name in cls.__dataclass_fields__})
        except KeyError:
            return None


@dataclass
class BackendStatus:
    _state: Any
    _detail: Any

    @classmethod
    def create(cls) -> BackendStatus:
        return cls(SPAWN.Value("i", LOADING), SPAWN.Array("c", _DETAIL_BYTES))

    def _write(self, state: int, detail: dict) -> None:
        encoded = json.dumps(detail).encode()[: _DETAIL_BYTES - 1]
        with self._state.get_lock():
            self._detail.value = encoded
            self._state.value = state

    def set_ready(self, device: str, load_seconds: float, facts: ModelFacts) -> None:
        self._write(READY, {"device": device, "load_seconds": round(load_seconds, 2), **asdict(facts)})

    def set_failed(self, reason: str) -> None:
        self._write(FAILED, {"error": reason})

    @property
    def ready(self) -> bool:
        return self._state.value == READY

    def detail(self) -> dict:
        raw = self._detail.value
        try:
            detail = json.loads(raw) if raw else {}
        except ValueError:  # cut mid-way by the size limit
            detail = {"error": raw.decode(errors="replace")}
        return {"state": _STATE_NAMES[self._state.value], **detail}


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    ready: bool
    backends: dict[str, dict[str, Any]] = Field(description="each backend's state (loading, ready, failed) and details")


class Model(BaseModel):
    """OpenAI's model object, plus the state of each backend that serves it."""

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "embedserve"
    backends: dict[str, dict[str, Any]]


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


def install_status_routes(
    app: FastAPI, model: str, model_names: tuple[str, ...], statuses: dict[str, BackendStatus]
) -> None:
    """/health and /ready, and OpenAI's model list and retrieve under / and under every backend's base URL, where
    they describe that backend alone (the SDK's `base_url=.../onnx/v1` then works for models as for embeddings)."""

    @app.get("/health", summary="Liveness: the HTTP process answers")
    async def health() -> Health:
        return Health(status="ok")

    @app.get(
        "/ready",
        summary="Readiness: 200 only when every backend has loaded",
        responses={503: {"model": Readiness, "description": "a backend is loading or failed to load"}},
    )
    async def ready() -> Readiness:
        readiness = Readiness(
            ready=all(status.ready for status in statuses.values()),
            backends={name: status.detail() for name, status in statuses.items()},
        )
        if not readiness.ready:
            return JSONResponse(readiness.model_dump(), status_code=503)
        return readiness

    def served_model(backends: list[str]) -> Model:
        return Model(id=model, backends={name: statuses[name].detail() for name in backends})

    def install(prefix: str, backends: list[str], what: str) -> None:
        async def list_models() -> ModelList:
            return ModelList(data=[served_model(backends)])

        async def retrieve_model(model_id: Annotated[str, Path(min_length=1)]) -> Model:
            # A slash in an ID arrives percent-encoded from the SDK, and decoded here: the :path route takes it.
            if model_id != model and model_id not in model_names:
                raise OpenAIError(
                    404,
                    f"The model `{model_id}` is not served here; served: {model}",
                    param="model",
                    code="model_not_found",
                )
            return served_model(backends)

        app.add_api_route(
            f"{prefix}/v1/models", list_models, methods=["GET"], summary=f"Models of {what} (OpenAI list)"
        )
        app.add_api_route(
            f"{prefix}/v1/models/{{model_id:path}}",
            retrieve_model,
            methods=["GET"],
            summary=f"One model of {what} (OpenAI retrieve), by ID or alias",
            responses={404: {"model": ErrorResponse, "description": "no such model served"}},
        )

    install("", list(statuses), "every backend")
    for backend in statuses:
        install(f"/{backend}", [backend], f"the `{backend}` backend")
