"""The OpenAI embeddings contract: request and response shapes, and errors in OpenAI's shape.

Every failure, wherever it happens, becomes an `OpenAIError` and leaves through `error_response`, so clients
always get `{"error": {"message", "type", "param", "code"}}` with the right status.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Literal, Union

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, StrictInt, StrictStr, field_validator
from starlette.responses import Response

# OpenAI's own limit on inputs per request.
MAX_INPUTS = 2048

EmbeddingInput = Union[StrictStr, list[StrictStr], list[StrictInt], list[list[StrictInt]]]


class EmbeddingRequest(BaseModel):
    """POST /v1/embeddings, as the official openai SDK sends it, plus two documented extensions."""

    model_config = ConfigDict(extra="ignore")

    input: EmbeddingInput = Field(description="a string, strings, token ids, or arrays of token ids")
    model: StrictStr = Field(description="a served model ID or alias")
    encoding_format: Literal["float", "base64", "sparse"] = Field(
        "float",
        description="base64: little-endian float32 bytes; sparse (extension, models with a sparse head such as "
        "bge-m3): lexical weights as {indices: token ids, values: weights}",
    )
    dimensions: StrictInt | None = Field(None, ge=1, description="Matryoshka truncation, then re-normalisation")
    user: str | None = None
    truncate: bool = Field(True, description="extension: false makes an over-long input a 400 instead of a cut")
    input_type: Literal["query", "document"] | None = Field(None, description="extension: picks the model's prompt")
    # Stamped when the HTTP process has parsed the body; travels with the request to the inference worker, where
    # it gives the queue wait. CLOCK_MONOTONIC is one clock for every process on a Linux host.
    _received_at: float = PrivateAttr(default_factory=time.monotonic)

    @property
    def received_at(self) -> float:
        return self._received_at

    @field_validator("input")
    @classmethod
    def _non_empty(cls, value: EmbeddingInput) -> EmbeddingInput:
        items = [value] if isinstance(value, str) else value
        if len(items) == 0:
            raise ValueError("input must not be an empty array")
        if len(items) > MAX_INPUTS:
            raise ValueError(f"input has {len(items)} items; at most {MAX_INPUTS} are allowed")
        for index, item in enumerate(items):
            if isinstance(item, (str, list)) and len(item) == 0:
                raise ValueError(f"input[{index}] is empty")
        return value

    def inputs(self) -> list[str] | list[list[int]]:
        """Always a list: of strings, or of token-id lists (a flat id list is one input)."""
        if isinstance(self.input, str):
            return [self.input]
        if self.input and isinstance(self.input[0], int):
            return [self.input]  # type: ignore[list-item]
        return self.input  # type: ignore[return-value]


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


def model_not_found(model: str, served: list[str]) -> OpenAIError:
    return OpenAIError(
        404,
        f"The model `{model}` does not exist or is not served here; served: {', '.join(served)}",
        param="model",
        code="model_not_found",
    )


@dataclass
class EmbeddingResult:
    vectors: np.ndarray  # float32 [inputs, dims], in input order
    prompt_tokens: int
    model: str
    encoding_format: str
    sparse: list[dict[int, float]] | None = None  # with encoding_format "sparse"


def success_response(result: EmbeddingResult) -> Response:
    kind = "embedding"
    if result.encoding_format == "sparse":
        kind = "sparse_embedding"
        embeddings: list = [
            {"indices": sorted(row), "values": [row[token] for token in sorted(row)]} for row in result.sparse or []
        ]
    elif result.encoding_format == "base64":
        # OpenAI's base64 is the raw little-endian float32 buffer; the SDK decodes it with np.frombuffer.
        little_endian = result.vectors.astype("<f4", copy=False)
        embeddings = [base64.b64encode(row.tobytes()).decode("ascii") for row in little_endian]
    else:
        embeddings = list(result.vectors)
    body = {
        "object": "list",
        "data": [{"object": kind, "index": i, "embedding": e} for i, e in enumerate(embeddings)],
        "model": result.model,
        "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
    }
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")
