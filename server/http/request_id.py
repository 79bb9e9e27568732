"""`x-request-id` on every answer: the client's own (so one ID follows a request through its proxies and logs), or a
new one; and one log line, naming it, for every error answered."""

from __future__ import annotations

import json
import logging
import re
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "x-request-id"
# What a client may set: printable, no spaces, short, so that it cannot forge log lines or bloat them.
_ACCEPTED_ID = re.compile(rb"[\x21-\x7e]{1,128}")
# The head of an error body that the log line quotes.
_LOGGED_BODY_BYTES = 2048

log = logging.getLogger("embedserve.requests")


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(REQUEST_ID_HEADER.encode())
        request_id = given.decode() if given and _ACCEPTED_ID.fullmatch(given) else uuid.uuid4().hex
        status = 0
        error_body = bytearray()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            elif message["type"] == "http.response.body" and status >= 400:
                error_body.extend(message.get("body", b"")[: _LOGGED_BODY_BYTES - len(error_body)])
                if not message.get("more_body", False):
                    _log_error(scope, status, request_id, bytes(error_body))
            await send(message)

        await self.app(scope, receive, send_with_id)


def _log_error(scope: Scope, status: int, request_id: str, body: bytes) -> None:
    try:
        error = json.loads(body)["error"]
        what = f"{error.get('code') or error.get('type')}: {error.get('message')}"
    except (ValueError, KeyError, TypeError):
        what = body.decode(errors="replace")
    # A shed (503) or timed-out (504) request is the overload control at work, not a fault: a warning, so that a
    # storm of them does not read as one of errors.
    level = logging.INFO if status < 500 else logging.WARNING if status in (503, 504) else logging.ERROR
    log.log(level, "%s %s -> %d request_id=%s %s", scope["method"], scope["path"], status, request_id, what)
