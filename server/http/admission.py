"""Admission control in front of the queues: a body-size limit (413) and a bound on requests in flight per
backend (503 with Retry-After), both answered at once so that an overloaded server fails fast."""

from __future__ import annotations

from collections import Counter

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.http.errors import OpenAIError, error_response


class _BodyTooLarge(Exception):
    pass


class AdmissionMiddleware:
    def __init__(self, app: ASGIApp, queue_limit: int, max_body_bytes: int, default_path: str):
        self.app = app
        self.queue_limit = queue_limit
        self.max_body_bytes = max_body_bytes
        self.default_path = default_path
        self.in_flight: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or scope["method"] != "POST" or not path.endswith("/v1/embeddings"):
            await self.app(scope, receive, send)
            return
        queue = self.default_path if path == "/v1/embeddings" else path
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._reject(scope, receive, send, self._too_large())
            return
        if self.in_flight[queue] >= self.queue_limit:
            overloaded = OpenAIError(
                503,
                f"the server is at its limit of {self.queue_limit} requests in flight for this backend; retry shortly",
                code="server_overloaded",
                headers={"Retry-After": "1"},
            )
            await self._reject(scope, receive, send, overloaded)
            return
        self.in_flight[queue] += 1
        started = False
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body_bytes:  # a chunked body has no Content-Length to check up front
                raise _BodyTooLarge()
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _BodyTooLarge:
            if not started:
                await self._reject(scope, receive, send, self._too_large())
        finally:
            self.in_flight[queue] -= 1

    def _too_large(self) -> OpenAIError:
        return OpenAIError(
            413, f"the request body is larger than {self.max_body_bytes} bytes", code="request_too_large"
        )

    @staticmethod
    async def _reject(scope: Scope, receive: Receive, send: Send, error: OpenAIError) -> None:
        await error_response(error)(scope, receive, send)
