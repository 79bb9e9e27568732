"""Admission control in front of the queues: a body-size limit (413) and a hard bound on requests in flight per
backend (503 with Retry-After), both answered at once so that an overloaded server fails fast. (Shedding by expected
wait, which needs the parsed request, is the endpoint's: server/http/overload.py.)"""

from __future__ import annotations

from collections import Counter

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.http.errors import OpenAIError, error_response
from server.metrics import server_metrics


class AdmissionMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        queue_limit: int,
        max_body_bytes: int,
        backend_by_path: dict[str, str],
        model: str,
    ):
        self.app = app
        self.queue_limit = queue_limit
        self.max_body_bytes = max_body_bytes
        self.backend_by_path = backend_by_path
        self.model = model
        self.in_flight: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or scope["method"] != "POST" or not path.endswith("/v1/embeddings"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._reject(scope, receive, send, self._too_large())
            return
        if declared is None:
            # A chunked body declares no size: read it here, never more than the limit, and hand it on whole. (A
            # limit raised inside the app's own receive would reach FastAPI's body reader, which answers any error
            # there with 400.)
            try:
                body = await self._read_at_most(receive)
            except ClientDisconnect:
                return
            if body is None:
                await self._reject(scope, receive, send, self._too_large())
                return
            receive = _replay(body, receive)
        backend = self.backend_by_path.get(path)
        if backend is None:  # no such backend: the app answers 404, nothing is queued
            await self.app(scope, receive, send)
            return
        if self.in_flight[backend] >= self.queue_limit:
            server_metrics().rejected.labels(backend, self.model, "count_bound").inc()
            overloaded = OpenAIError(
                503,
                f"the server is at its limit of {self.queue_limit} requests in flight for this backend; retry shortly",
                code="server_overloaded",
                headers={"Retry-After": "1"},
            )
            await self._reject(scope, receive, send, overloaded)
            return
        self.in_flight[backend] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight[backend] -= 1

    async def _read_at_most(self, receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it passes the limit."""
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise ClientDisconnect()
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                return None
            if not message.get("more_body", False):
                return bytes(body)

    def _too_large(self) -> OpenAIError:
        return OpenAIError(
            413, f"the request body is larger than {self.max_body_bytes} bytes", code="request_too_large"
        )

    @staticmethod
    async def _reject(scope: Scope, receive: Receive, send: Send, error: OpenAIError) -> None:
        await error_response(error)(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the already read body once, then waits on the connection (for a disconnect)."""
    delivered = False

    async def replayed() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
