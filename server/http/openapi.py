"""/openapi.json as the server really behaves: every status a route answers, errors in OpenAI's shape (400, never
FastAPI's 422), the API key where one is needed, and the request bounds of the model being served.

FastAPI's schema is the start; this adds what the routes' signatures cannot say. The model's facts (dimensions,
token limit, vocabulary, sparse head) come from the backends once they have loaded: until then the schema is the
model-independent one, and it is not cached.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from server.http.auth import METRICS_PATH, OPEN_PATHS
from server.http.errors import ErrorResponse
from server.http.schemas import EmbeddingResponse
from server.http.status import BackendStatus, ModelFacts

SECURITY_SCHEME = "apiKey"
_ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
# What an embeddings request can be answered, besides 200 (and 401 with keys on).
EMBEDDINGS_ERRORS = {
    400: "invalid request: the body, an input, a parameter or a limit (the message says which)",
    404: "the model is not served here (code model_not_found)",
    413: "the body is larger than --max-body-bytes (code request_too_large)",
    500: "the backend failed on this batch",
    503: "the backend is overloaded (code server_overloaded, with Retry-After) or failed to load",
    504: "the request waited in the queue past --request-timeout-s",
}
TIMING_HEADERS = {
    "x-queue-time": "ms from arrival to the start of its batch's inference (its tokenization included)",
    "x-tokenization-time": "ms to check and tokenize it",
    "x-inference-time": "ms of its batch's inference",
}
REQUEST_ID_HEADER_DOC = {"description": "the request's x-request-id, or a new one", "schema": {"type": "string"}}


def install_openapi(
    app: FastAPI,
    statuses: dict[str, BackendStatus],
    model_names: tuple[str, ...],
    embeddings_paths: set[str],
    keys_required: bool,
    metrics_need_key: bool,
) -> None:
    """Replaces FastAPI's app.openapi; it is cached once every backend has settled (loaded or failed)."""

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        facts = next((f for s in statuses.values() if (f := ModelFacts.of(s.detail())) is not None), None)
        open_paths = OPEN_PATHS if metrics_need_key else OPEN_PATHS | {METRICS_PATH}
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        components.update(_model_schemas(ErrorResponse, EmbeddingResponse))
        for path, operations in schema["paths"].items():
            for operation in operations.values():
                responses = operation["responses"]
                responses.pop("422", None)
                if path in embeddings_paths:
                    _document_embeddings(responses)
                if keys_required and path not in open_paths:
                    operation["security"] = [{SECURITY_SCHEME: []}]
                    responses["401"] = _error("no API key, or a wrong one (code invalid_api_key)")
                for response in responses.values():
                    response.setdefault("headers", {})["x-request-id"] = REQUEST_ID_HEADER_DOC
        if keys_required:
            schema["components"]["securitySchemes"] = {
                SECURITY_SCHEME: {"type": "http", "scheme": "bearer", "description": "one of the server's --api-key"}
            }
        request = components["EmbeddingRequest"]["properties"]
        _narrow_to_model(request, model_names, facts)
        if all(status.detail()["state"] != "loading" for status in statuses.values()):
            app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _model_schemas(*models: type) -> dict:
    schemas: dict = {}
    for model in models:
        generated = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(generated.pop("$defs", {}))
        schemas[model.__name__] = generated
    return schemas


def _error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": _ERROR_REF}}}


def _document_embeddings(responses: dict) -> None:
    ok = responses.setdefault("200", {"description": "Successful Response"})
    ok["content"] = {"application/json": {"schema": {"$ref": "#/components/schemas/EmbeddingResponse"}}}
    ok["headers"] = {name: {"description": text, "schema": {"type": "string"}} for name, text in TIMING_HEADERS.items()}
    for status, description in EMBEDDINGS_ERRORS.items():
        responses[str(status)] = _error(description)
    responses["503"]["headers"] = {
        "Retry-After": {"description": "seconds to wait before retrying (shedding only)", "schema": {"type": "string"}}
    }


def _narrow_to_model(request: dict, model_names: tuple[str, ...], facts: ModelFacts | None) -> None:
    """The served model's names and, once it has loaded, its bounds: what passes these is embedded, not refused."""
    request["model"] = {**request["model"], "enum": list(model_names)}
    if facts is None:
        return
    dimensions = request["dimensions"]
    dimensions["anyOf"] = [
        {**branch, "maximum": facts.dimensions} if branch.get("type") == "integer" else branch
        for branch in dimensions["anyOf"]
    ]
    if not facts.sparse:
        encoding = request["encoding_format"]
        encoding["enum"] = [value for value in encoding["enum"] if value != "sparse"]
    request["input"] = _with_token_id_maximum(request["input"], facts.vocab_size - 1)


def _with_token_id_maximum(node: object, maximum: int) -> object:
    """A copy of the input schema in which every token id (its only integers) is at most `maximum`."""
    if isinstance(node, dict):
        if node.get("type") == "integer":
            return {**node, "maximum": maximum}
        return {key: _with_token_id_maximum(value, maximum) for key, value in node.items()}
    if isinstance(node, list):
        return [_with_token_id_maximum(value, maximum) for value in node]
    return node
