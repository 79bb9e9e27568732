"""The status routes, /health, /ready and /v1/models, and the per-backend load state they read.

Each backend's worker writes its state once (ready or failed, with details); /ready and /v1/models read it from
any HTTP process. Shared memory, because LitServe spawns the workers and forks the HTTP servers.
"""

from __future__ import annotations

import json
import multiprocessing as mp
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

LOADING, READY, FAILED = 0, 1, 2
_STATE_NAMES = {LOADING: "loading", READY: "ready", FAILED: "failed"}
_DETAIL_BYTES = 2048
# Spawn context: LitServe starts inference workers with spawn, and a fork-context lock cannot follow them.
_SPAWN = mp.get_context("spawn")


@dataclass
class BackendStatus:
    _state: Any
    _detail: Any

    @classmethod
    def create(cls) -> BackendStatus:
        return cls(_SPAWN.Value("i", LOADING), _SPAWN.Array("c", _DETAIL_BYTES))

    def _write(self, state: int, detail: dict) -> None:
        encoded = json.dumps(detail).encode()[: _DETAIL_BYTES - 1]
        with self._state.get_lock():
            self._detail.value = encoded
            self._state.value = state

    def set_ready(self, device: str, load_seconds: float, dimensions: int) -> None:
        self._write(READY, {"device": device, "load_seconds": round(load_seconds, 2), "dimensions": dimensions})

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


def install_status_routes(app: FastAPI, model: str, statuses: dict[str, BackendStatus]) -> None:
    @app.get("/health", summary="Liveness: the HTTP process answers")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready", summary="Readiness: 200 only when every backend has loaded")
    async def ready() -> JSONResponse:
        backends = {name: status.detail() for name, status in statuses.items()}
        all_ready = all(status.ready for status in statuses.values())
        return JSONResponse({"ready": all_ready, "backends": backends}, status_code=200 if all_ready else 503)

    @app.get("/v1/models", summary="Served models, OpenAI list format")
    async def models() -> dict:
        return {
            "object": "list",
            "data": [
                {
                    "id": model,
                    "object": "model",
                    "created": 0,
                    "owned_by": "embedserve",
                    "backends": {name: status.detail() for name, status in statuses.items()},
                }
            ],
        }
