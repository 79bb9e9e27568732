"""API keys: with `--api-key` set, every route but the probes needs `Authorization: Bearer <key>`, as the OpenAI SDK
sends its api_key; anything else gets 401 in OpenAI's shape, code `invalid_api_key`, before its body is read."""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from server.http.errors import OpenAIError, error_response

# Open with keys on: liveness and readiness probes (kubelet, compose healthchecks send no key), and the API's
# description, which holds no data.
OPEN_PATHS = frozenset({"/health", "/ready", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
METRICS_PATH = "/metrics"


class ApiKeys:
    def __init__(self, keys: list[str]):
        self._keys = [key.encode() for key in keys]

    def __bool__(self) -> bool:
        return bool(self._keys)

    def accepts(self, presented: bytes) -> bool:
        """Constant time in the presented key's content: every key is compared, with no early exit."""
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(presented, key)
        return matched


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, keys: ApiKeys, metrics_need_key: bool):
        self.app = app
        self.keys = keys
        self.open_paths = OPEN_PATHS if metrics_need_key else OPEN_PATHS | {METRICS_PATH}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS" or scope["path"] in self.open_paths:
            # OPTIONS: a browser's CORS preflight carries no credentials; it reaches no data.
            await self.app(scope, receive, send)
            return
        error = self._check(dict(scope["headers"]).get(b"authorization"))
        if error is None:
            await self.app(scope, receive, send)
        else:
            await error_response(error)(scope, receive, send)

    def _check(self, authorization: bytes | None) -> OpenAIError | None:
        if authorization is None:
            return _unauthorized("no API key given: send it as `Authorization: Bearer <key>`")
        scheme, _, presented = authorization.partition(b" ")
        if scheme.lower() != b"bearer" or not presented.strip():
            return _unauthorized("the Authorization header must read `Bearer <key>`")
        if not self.keys.accepts(presented.strip()):
            return _unauthorized("the API key is not valid")  # never echoed: it could be a real key of elsewhere
        return None


def _unauthorized(message: str) -> OpenAIError:
    return OpenAIError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
