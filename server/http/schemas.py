"""The OpenAI embeddings contract on the wire: the request body and the response body (errors: errors.py)."""

from __future__ import annotations

import base64
import time
from typing import Annotated, Literal

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StrictInt,
    StrictStr,
    WithJsonSchema,
    field_validator,
)
from starlette.responses import Response

from server.engine.requests import EmbeddingQuery, QueryResult

# OpenAI's own limit on inputs per request.
MAX_INPUTS = 2048


def _whole_numbers(value: object) -> object:
    """JSON Schema's integers include 1.0: a token id or a count written as a whole float is that integer (strings
    and booleans stay what they are, and are refused)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list) and any(isinstance(item, (float, list)) for item in value):
        return [_whole_numbers(item) for item in value]
    return value


EmbeddingInput = Annotated[
    StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]], BeforeValidator(_whole_numbers)
]

_TOKEN_IDS = {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1}
# What `input` really accepts, for the OpenAPI schema: the validator below enforces it with clearer messages than a
# constrained union would give (server/http/openapi.py narrows it further to the served model's facts).
INPUT_SCHEMA = {
    "description": "a string, strings, token ids (one input), or arrays of token ids; no empty string or array",
    "anyOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "maxItems": MAX_INPUTS},
        _TOKEN_IDS,
        {"type": "array", "items": _TOKEN_IDS, "minItems": 1, "maxItems": MAX_INPUTS},
    ],
}


class EmbeddingRequest(BaseModel):
    """POST /v1/embeddings, as the official openai SDK sends it, plus two documented extensions."""

    model_config = ConfigDict(extra="ignore")

    input: Annotated[EmbeddingInput, WithJsonSchema(INPUT_SCHEMA)]
    model: StrictStr = Field(description="a served model ID or alias")
    encoding_format: Literal["float", "base64", "sparse"] = Field(
        "float",
        description="base64: little-endian float32 bytes; sparse (extension, models with a sparse head such as "
        "bge-m3): lexical weights as {indices: token ids, values: weights}",
    )
    dimensions: Annotated[StrictInt, Field(ge=1), BeforeValidator(_whole_numbers)] | None = Field(
        None, description="Matryoshka truncation, then re-normalisation"
    )
    user: StrictStr | None = None
    truncate: StrictBool = Field(True, description="extension: false makes an over-long input a 400 instead of a cut")
    input_type: Literal["query", "document"] | None = Field(None, description="extension: picks the model's prompt")
    # Stamped when the HTTP process has parsed the body; travels with the request to the inference worker, where
    # it gives the queue wait. CLOCK_MONOTONIC is one clock for every process on a Linux host.
    _received_at: float = PrivateAttr(default_factory=time.monotonic)
    # Its estimated tokens, set by admission in the HTTP process (server/http/admission.py); travels to the worker,
    # whose throughput is measured in the same unit. Private: a client cannot set it.
    _cost: float = PrivateAttr(default=0.0)

    @property
    def received_at(self) -> float:
        return self._received_at

    @property
    def cost(self) -> float:
        return self._cost

    @cost.setter
    def cost(self, tokens: float) -> None:
        self._cost = tokens

    def __repr_args__(self):
        """The number of inputs, not the inputs: LitServe formats every request into a debug message, whether debug
        logging is on or not, and for thousands of long texts that string holds up the HTTP event loop."""
        yield "inputs", len(self.inputs())
        for name in type(self).model_fields:
            if name != "input":
                yield name, getattr(self, name)

    @field_validator("input")
    @classmethod
    def _non_empty(cls, value: EmbeddingInput) -> EmbeddingInput:
        if value and isinstance(value, list) and isinstance(value[0], int):
            return value  # token ids of one input: as long as the model's limit allows, then truncated or refused
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

    def to_query(self) -> EmbeddingQuery:
        return EmbeddingQuery(
            inputs=self.inputs(),
            model=self.model,
            dimensions=self.dimensions,
            sparse=self.encoding_format == "sparse",
            truncate=self.truncate,
            input_type=self.input_type,
        )


class SparseEmbedding(BaseModel):
    indices: list[int] = Field(description="token ids, ascending")
    values: list[float]


class Embedding(BaseModel):
    object: Literal["embedding", "sparse_embedding"]
    index: int
    embedding: list[float] | str | SparseEmbedding = Field(
        description="floats; base64 of little-endian float32 with encoding_format=base64; or the sparse weights"
    )


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    """The answer's shape, for the OpenAPI schema (embeddings_response writes it with orjson, for speed)."""

    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: Usage


def embeddings_response(
    result: QueryResult, model: str, encoding_format: str, headers: dict[str, str] | None = None
) -> Response:
    """The engine's result as OpenAI's embeddings list, in the encoding the request asked for."""
    kind = "embedding"
    if encoding_format == "sparse":
        kind = "sparse_embedding"
        embeddings: list = [
            {"indices": sorted(row), "values": [row[token] for token in sorted(row)]} for row in result.sparse or []
        ]
    elif encoding_format == "base64":
        # OpenAI's base64 is the raw little-endian float32 buffer; the SDK decodes it with np.frombuffer.
        little_endian = result.vectors.astype("<f4", copy=False)
        embeddings = [base64.b64encode(row.tobytes()).decode("ascii") for row in little_endian]
    else:
        embeddings = list(result.vectors)
    body = {
        "object": "list",
        "data": [{"object": kind, "index": i, "embedding": e} for i, e in enumerate(embeddings)],
        "model": model,
        "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
    }
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json", headers=headers
    )
