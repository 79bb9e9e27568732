"""The HTTP side of the metrics: a middleware that times every embeddings request, and GET /metrics."""

from __future__ import annotations

import time

from fastapi import FastAPI
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.metrics import REJECTION_REASONS, render_metrics, server_metrics, start_process_sampler


class RequestMetricsMiddleware:
    """Counts and times every request to a served embeddings path, rejections by admission control included.

    It sits outside the admission middleware, so a 413 or a 503 is counted like any other answer. Paths that
    name no served backend are not labelled: a client probing random URLs cannot grow the label set.
    """

    def __init__(self, app: ASGIApp, backend_by_path: dict[str, str], model: str, queue_limit: int):
        self.app = app
        self.backend_by_path = backend_by_path
        self.model = model
        # Starlette builds its middleware in the HTTP process, at startup: the limit is exported from there, and the
        # process samples itself from there on.
        for backend in set(backend_by_path.values()):
            server_metrics().queue_limit.labels(backend, model).set(queue_limit)
            for reason in REJECTION_REASONS:  # at zero from the start: rate() and alerts see a series, not nothing
                server_metrics().rejected.labels(backend, model, reason).inc(0)
        start_process_sampler("http")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        backend = self.backend_by_path.get(scope.get("path", "")) if scope["type"] == "http" else None
        if backend is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        metrics = server_metrics()
        started = time.monotonic()
        status = 500  # what the client gets when the app fails before starting a response
        in_flight = metrics.in_flight.labels(backend, self.model)
        counted = False

        def count() -> None:
            nonlocal counted
            if not counted:
                counted = True
                in_flight.dec()
                metrics.observe_response(backend, self.model, status, time.monotonic() - started)

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                count()  # before the client can read the whole answer: a scrape that follows it sees it counted
            await send(message)

        in_flight.inc()
        try:
            await self.app(scope, receive, timed_send)
        finally:
            count()


def install_metrics_route(app: FastAPI) -> None:
    @app.get("/metrics", summary="Prometheus metrics of every server process", include_in_schema=False)
    async def metrics() -> Response:
        body, content_type = render_metrics()
        return Response(body, media_type=content_type)
