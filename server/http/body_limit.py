"""The request body's size limit (--max-body-bytes): 413 `request_too_large`, answered before the body is parsed, and
while a chunked body, which declares no size, is still arriving."""

from __future__ import annotations

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.http.errors import OpenAIError, error_response


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not scope.get("path", "").endswith("/v1/embeddings"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await error_response(self._too_large())(scope, receive, send)
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
                await error_response(self._too_large())(scope, receive, send)
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, send)

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
