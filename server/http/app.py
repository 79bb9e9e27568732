"""The LitServer: one EmbeddingAPI per backend (its own queue and worker), plus the routes and middlewares around
them, and running it."""

import os
import shutil
import signal
import tempfile
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute

from server.backends.base import BackendVariant
from server.engine.models import model_names
from server.http.admission import BackendLoad, CountBoundMiddleware
from server.http.auth import ApiKeyMiddleware, ApiKeys
from server.http.body_limit import BodyLimitMiddleware
from server.http.embeddings_api import EmbeddingAPI, embeddings_path
from server.http.errors import install_error_handlers
from server.http.litserve_changes import EmbeddingServer
from server.http.metrics_route import RequestMetricsMiddleware, install_metrics_route
from server.http.openapi import TIMING_HEADERS, install_openapi
from server.http.request_id import REQUEST_ID_HEADER, RequestIdMiddleware
from server.http.status import BackendStatus, install_status_routes
from server.metrics import start_process_sampler, use_multiprocess_dir
from server.settings import ServeSettings


def build_server(settings: ServeSettings) -> EmbeddingServer:
    backends = [BackendVariant.parse(name).name for name in settings.backends]
    if len(set(backends)) != len(backends):
        raise ValueError(f"a backend is listed twice: {settings.backends}")
    if settings.default_backend_name not in backends:
        raise ValueError(f"default backend {settings.default_backend_name!r} is not among {backends}")
    statuses = {name: BackendStatus.create() for name in backends}
    apis = [EmbeddingAPI(settings, name, statuses[name], BackendLoad.create()) for name in backends]
    server = EmbeddingServer(
        apis,
        gzip_responses=settings.gzip_responses,
        accelerator="cpu",  # each backend picks its own device in setup(); LitServe only schedules processes
        workers_per_device=1,
        timeout=settings.request_timeout_s,
        healthcheck_path="/litserve/health",
        info_path="/litserve/info",
    )
    app: FastAPI = server.app
    _hide_litserve_routes(app)
    _route_default_backend(app, settings.default_backend_name)
    names = model_names(settings.model, settings.model_registry)
    install_status_routes(app, settings.model, names, statuses)
    install_metrics_route(app)
    install_error_handlers(app)
    backend_by_path = {embeddings_path(name): name for name in backends}
    backend_by_path["/v1/embeddings"] = settings.default_backend_name
    keys = ApiKeys(settings.api_keys())
    install_openapi(app, statuses, names, set(backend_by_path), bool(keys), settings.metrics_need_key)
    # Starlette runs the middleware added last first: CORS (a browser must read even a 401), the request ID, the
    # metrics (which count what the rest turns away), the API key (before any body is read), the body's size limit,
    # then the count bound.
    app.add_middleware(
        CountBoundMiddleware, queue_limit=settings.max_queue, backend_by_path=backend_by_path, model=settings.model
    )
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    if keys:
        app.add_middleware(ApiKeyMiddleware, keys=keys, metrics_need_key=settings.metrics_need_key)
    app.add_middleware(
        RequestMetricsMiddleware, backend_by_path=backend_by_path, model=settings.model, queue_limit=settings.max_queue
    )
    app.add_middleware(RequestIdMiddleware)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", REQUEST_ID_HEADER],
            expose_headers=[REQUEST_ID_HEADER, "Retry-After", *TIMING_HEADERS],
        )
    return server


def _hide_litserve_routes(app: FastAPI) -> None:
    """LitServe's own `/`, health and info routes answer plain text; /health and /ready are the server's probes."""
    for route in app.routes:
        if isinstance(route, APIRoute) and not route.path.endswith("/v1/embeddings"):
            route.include_in_schema = False


def _route_default_backend(app: FastAPI, default_backend: str) -> None:
    """POST /v1/embeddings runs the very endpoint of the default backend (same queue, same worker)."""
    route = next(r for r in app.routes if isinstance(r, APIRoute) and r.path == embeddings_path(default_backend))
    app.add_api_route("/v1/embeddings", route.endpoint, methods=["POST"], summary=f"Embeddings ({default_backend})")


def run_server(settings: ServeSettings) -> None:
    metrics_dir = settings.metrics_dir or Path(tempfile.mkdtemp(prefix="embedserve-metrics-"))
    use_multiprocess_dir(metrics_dir)  # before any server process creates a metric
    start_process_sampler("main")
    # `docker stop` and process managers send SIGTERM: shut down as on Ctrl-C, workers and all. In this process
    # only: the HTTP processes LitServe forks get SIGTERM from it at shutdown, and uvicorn re-raises the signal once
    # it has closed; with the inherited handler, that was a KeyboardInterrupt traceback in the log of every stop.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    os.register_at_fork(after_in_child=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))
    server = build_server(settings)
    try:
        server.run(
            host=settings.host,
            port=settings.port,
            num_api_servers=settings.api_servers,
            log_level=settings.log_level,
            generate_client_file=False,
        )
    finally:
        if settings.metrics_dir is None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
