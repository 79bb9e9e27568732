"""The response check every Locust request goes through."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from loadtest.client.checks import embeddings_failure
from loadtest.client.http_load import SHED


def body(count: int, dims: int, encoding: str = "float") -> dict:
    vectors = np.ones((count, dims), dtype="<f4")
    encode = (lambda v: base64.b64encode(v.tobytes()).decode()) if encoding == "base64" else (lambda v: v.tolist())
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vectors)],
    }


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_right_response_passes(encoding):
    assert embeddings_failure(200, body(3, 384, encoding), 3, 384, encoding) is None


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_wrong_dimension_fails_with_its_reason(encoding):
    assert embeddings_failure(200, body(3, 384, encoding), 3, 256, encoding) == "expected 256 dimensions, got 384"


def test_wrong_count_order_status_and_shape_fail():
    assert embeddings_failure(200, body(2, 8), 3, 8, "float") == "expected 3 embeddings, got 2"
    shuffled = body(2, 8)
    shuffled["data"].reverse()
    assert embeddings_failure(200, shuffled, 2, 8, "float") == "embeddings are not indexed 0..n-1 in order"
    overloaded = {"error": {"message": "at its limit", "code": "server_overloaded"}}
    assert embeddings_failure(503, overloaded, 2, 8, "float") == SHED  # shed: a category of its own
    assert (
        embeddings_failure(503, {"error": {"message": "not loaded", "code": None}}, 2, 8, "float")
        == "HTTP 503 not loaded"
    )
    assert embeddings_failure(502, None, 2, 8, "float") == "HTTP 502"
    assert embeddings_failure(200, {"data": "x"}, 2, 8, "float") == "response has no data list"
    assert embeddings_failure(200, body(1, 8, "base64"), 1, 8, "float") == "embedding is not float"


def test_unknown_expected_dimension_checks_the_rest():
    assert embeddings_failure(200, body(2, 8), 2, None, "float") is None


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_zero_nan_and_infinite_vectors_fail(encoding):
    for bad, reason in ((0.0, "embedding is all zeros"), (np.nan, "embedding has NaN or infinite values")):
        response = body(2, 8, encoding)
        vector = np.full(8, bad, dtype="<f4")
        response["data"][1]["embedding"] = (
            base64.b64encode(vector.tobytes()).decode() if encoding == "base64" else vector.tolist()
        )
        assert embeddings_failure(200, response, 2, 8, encoding) == reason
    response = body(1, 8, encoding)
    vector_inf = np.ones(8, dtype="<f4")
    vector_inf[3] = np.inf
    response["data"][0]["embedding"] = (
        base64.b64encode(vector_inf.tobytes()).decode() if encoding == "base64" else vector_inf.tolist()
    )
    assert embeddings_failure(200, response, 1, 8, encoding) == "embedding has NaN or infinite values"


def test_an_embedding_of_non_numbers_is_not_float():
    response = body(1, 2)
    response["data"][0]["embedding"] = ["a", "b"]
    assert embeddings_failure(200, response, 1, 2, "float") == "embedding is not float"


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_a_normalising_models_embeddings_must_be_unit_length(encoding):
    unit = np.full(8, 8**-0.5, dtype="<f4")
    response = body(2, 8, encoding)
    for item, vector in zip(response["data"], (unit, 2 * unit), strict=True):
        item["embedding"] = base64.b64encode(vector.tobytes()).decode() if encoding == "base64" else vector.tolist()
    assert embeddings_failure(200, response, 2, 8, encoding, unit_norm=True) == "embedding is not unit length"
    assert embeddings_failure(200, response, 2, 8, encoding) is None  # a model that does not normalise
    response["data"] = response["data"][:1]
    assert embeddings_failure(200, response, 1, 8, encoding, unit_norm=True) is None
