"""Errors in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with the right status.

Every failure, wherever it happens (validation, unknown paths, the engine's refusals, worker errors, crashes),
becomes an `OpenAIError` and leaves through `error_response`.
"""

from __future__ import annotations

import json
import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from server.engine.errors import EmbeddingRejected, InvalidInput, ModelNotServed

log = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    message: str
    type: str = Field(description="invalid_request_error (4xx) or server_error (5xx)")
    param: str | None = Field(description="the request field at fault, when one is")
    code: str | None = Field(description="a stable machine-readable reason, e.g. invalid_api_key, model_not_found")


class ErrorResponse(BaseModel):
    """Every error, in OpenAI's shape."""

    error: ErrorDetail


class OpenAIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or ("invalid_request_error" if status < 500 else "server_error")
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def error_response(error: OpenAIError) -> Response:
    return Response(
        orjson.dumps(error.body()), status_code=error.status, media_type="application/json", headers=error.headers
    )


# The engine's refusals by kind; one table, so a new kind gets its status here and nowhere else.
STATUS_BY_REJECTION: dict[type[EmbeddingRejected], int] = {InvalidInput: 400, ModelNotServed: 404}


def from_rejection(rejection: EmbeddingRejected) -> OpenAIError:
    status = STATUS_BY_REJECTION[type(rejection)]
    return OpenAIError(status, rejection.message, param=rejection.param, code=rejection.code)


_INPUT_SHAPE = "input must be a string, an array of strings, an array of token ids, or an array of arrays of token ids"


def validation_error(exc: RequestValidationError) -> OpenAIError:
    """One clear message for the first problem, instead of FastAPI's 422 list of union branches."""
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    if first["type"] == "json_invalid":
        return OpenAIError(400, f"the body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}")
    location = [str(part) for part in first["loc"] if part != "body"]
    param = location[0] if location else None
    if first["type"] == "value_error":
        message = first["msg"].removeprefix("Value error, ")
    elif param == "input" and first["type"] != "missing":
        message = _INPUT_SHAPE
    elif first["type"] == "missing":
        message = f"`{param}` is required" if param else "a JSON body is required"
    elif first["type"] == "model_attributes_type":
        message = "the body must be a JSON object, sent with Content-Type: application/json"
    else:
        message = f"`{'.'.join(location) or 'body'}`: {first['msg']}"
    return OpenAIError(400, message, param=param)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> Response:
        return error_response(validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            error = OpenAIError(404, f"no route {request.method} {request.url.path}", code="not_found")
        elif exc.status_code >= 500:
            # LitServe reports worker crashes as 500 and queue timeouts as 504; details stay in the server log.
            error = OpenAIError(exc.status_code, _server_message(exc))
        else:
            error = OpenAIError(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))
        return error_response(error)

    @app.exception_handler(OpenAIError)
    async def on_openai_error(request: Request, exc: OpenAIError) -> Response:
        return error_response(exc)

    @app.exception_handler(Exception)
    async def on_crash(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        return error_response(OpenAIError(500, "internal server error"))


def _server_message(exc: StarletteHTTPException) -> str:
    if exc.status_code == 504:
        return "the request waited in the queue longer than the server's request timeout"
    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    return detail if detail and "Traceback" not in detail else "internal server error"
