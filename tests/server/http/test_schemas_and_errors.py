import asyncio
import base64
from types import SimpleNamespace

import numpy as np
import orjson
import pytest
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from server.engine.requests import QueryResult
from server.http.errors import OpenAIError, error_response, install_error_handlers, validation_error
from server.http.schemas import MAX_INPUTS, EmbeddingRequest, embeddings_response


@pytest.mark.parametrize(
    "payload, expected",
    [
        ({"input": "hi", "model": "m"}, [["hi"]]),
        ({"input": ["a", "b"], "model": "m"}, [["a", "b"]]),
        ({"input": [1, 2, 3], "model": "m"}, [[[1, 2, 3]]]),
        ({"input": [[1, 2], [3]], "model": "m"}, [[[1, 2], [3]]]),
    ],
)
def test_every_openai_input_shape_becomes_a_list_of_inputs(payload, expected):
    assert [EmbeddingRequest(**payload).inputs()] == expected


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"input": [], "model": "m"}, "empty array"),
        ({"input": "", "model": "m"}, "input[0] is empty"),
        ({"input": ["a", ""], "model": "m"}, "input[1] is empty"),
        ({"input": [[]], "model": "m"}, "input[0] is empty"),
        ({"input": ["a"] * (MAX_INPUTS + 1), "model": "m"}, f"at most {MAX_INPUTS}"),
        ({"input": [1, "a"], "model": "m"}, "input must be"),
        ({"input": 5, "model": "m"}, "input must be"),
        ({"input": [1.5], "model": "m"}, "input must be"),
        ({"model": "m"}, "`input` is required"),
        ({"input": "a", "model": "m", "dimensions": 0}, "dimensions"),
        ({"input": "a", "model": "m", "encoding_format": "hex"}, "encoding_format"),
        ({"input": "a", "model": "m", "input_type": "passage"}, "input_type"),
    ],
)
def test_bad_requests_get_one_clear_400(payload, message):
    with pytest.raises(ValidationError) as caught:
        EmbeddingRequest(**payload)
    error = validation_error(RequestValidationError(caught.value.errors()))
    assert error.status == 400
    assert message in error.message
    assert error.body()["error"]["type"] == "invalid_request_error"


def test_whole_floats_are_the_integers_json_schema_says_they_are():
    request = EmbeddingRequest(input=[[101.0, 2023], [7592.0]], model="m", dimensions=128.0)
    assert request.inputs() == [[101, 2023], [7592]] and request.dimensions == 128
    assert all(type(token) is int for ids in request.inputs() for token in ids)


@pytest.mark.parametrize(
    "field, value", [("truncate", 0), ("truncate", "false"), ("user", 7), ("dimensions", "64"), ("dimensions", True)]
)
def test_no_type_is_coerced_that_the_schema_does_not_allow(field, value):
    with pytest.raises(ValidationError):
        EmbeddingRequest(input="a", model="m", **{field: value})


def test_token_ids_of_one_input_are_not_counted_as_inputs():
    """A flat id list is one input: its length is the model's limit to check, not the 2048 inputs of a request."""
    assert len(EmbeddingRequest(input=[7] * (MAX_INPUTS + 5), model="m").inputs()) == 1


def test_a_request_prints_as_a_summary_not_its_inputs():
    """LitServe formats every request into a debug message, logged or not."""
    request = EmbeddingRequest(input=["a long text " * 100] * 500, model="m", dimensions=64)
    for printed in (str(request), repr(request)):
        assert "inputs=500" in printed and "dimensions=64" in printed and "model='m'" in printed
        assert "a long text" not in printed and len(printed) < 200


def test_base64_is_little_endian_float32_as_the_openai_sdk_decodes_it():
    vectors = np.random.default_rng(0).standard_normal((2, 5)).astype(np.float32)
    body = orjson.loads(embeddings_response(QueryResult(vectors, 7), "m", "base64").body)
    decoded = [np.frombuffer(base64.b64decode(item["embedding"]), dtype="float32") for item in body["data"]]
    np.testing.assert_array_equal(np.stack(decoded), vectors)
    assert body["usage"] == {"prompt_tokens": 7, "total_tokens": 7}
    assert [item["index"] for item in body["data"]] == [0, 1]


def test_error_response_has_openai_shape_status_and_headers():
    response = error_response(OpenAIError(503, "busy", code="server_overloaded", headers={"Retry-After": "1"}))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert orjson.loads(response.body) == {
        "error": {"message": "busy", "type": "server_error", "param": None, "code": "server_overloaded"}
    }


def test_a_crash_becomes_a_500_without_the_exception_text():
    app = FastAPI()
    install_error_handlers(app)
    handler = app.exception_handlers[Exception]
    response = asyncio.run(handler(_FakeRequest(), RuntimeError("secret internal detail")))
    assert response.status_code == 500
    assert b"secret" not in response.body and b"Traceback" not in response.body
    assert orjson.loads(response.body)["error"]["type"] == "server_error"


class _FakeRequest:
    url = SimpleNamespace(path="/x")
