"""The API around the embeddings (a real server, no API keys): OpenAI's model routes under every base URL, the
timing and request-ID headers, and an OpenAPI schema that schemathesis holds the server to."""

from __future__ import annotations

import re

import openai
import pytest
import requests
from openai import OpenAI

from loadtest.probe.metrics_scrape import MetricsSnapshot
from tests.helpers import MODEL, run_schemathesis

pytestmark = pytest.mark.slow
BACKENDS = ["torch", "onnx", "openvino"]
ALIAS = "all-MiniLM-L6-v2"  # server/engine/models.yaml


def sdk(server, prefix: str) -> OpenAI:
    return OpenAI(base_url=f"{server.url}{prefix}/v1", api_key="unused", max_retries=0)


@pytest.mark.parametrize("prefix", ["", *(f"/{backend}" for backend in BACKENDS)])
def test_the_sdk_lists_and_retrieves_the_model_under_every_base_url(server, prefix):
    client = sdk(server, prefix)
    listed = client.models.list().data
    assert [model.id for model in listed] == [MODEL]
    backends = listed[0].model_extra["backends"]
    assert list(backends) == ([prefix.strip("/")] if prefix else BACKENDS)  # a backend's base URL: that backend
    assert all(state["state"] == "ready" for state in backends.values())
    for name in (MODEL, ALIAS):  # the ID's slash travels percent-encoded
        retrieved = client.models.retrieve(name)
        assert (retrieved.id, retrieved.object, retrieved.owned_by) == (MODEL, "model", "embedserve")
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("no-such/model")
    assert caught.value.body["code"] == "model_not_found"
    # and embeddings under the same base URL, as before
    assert len(client.embeddings.create(model=MODEL, input="hello").data[0].embedding) == 384


def test_timing_headers_agree_with_the_metrics(server):
    """x-queue-time and x-inference-time are this request's share of the worker's histograms; x-tokenization-time
    is the tokenization histogram's (one request alone on its backend)."""
    labels = {"backend": "openvino", "model": MODEL}
    before = MetricsSnapshot.scrape(server.url)
    response = requests.post(f"{server.url}/openvino/v1/embeddings", json={"model": MODEL, "input": ["a", "b c"]})
    assert response.status_code == 200
    after = MetricsSnapshot.scrape(server.url)  # the worker writes them before it answers: no wait needed
    headers = {
        name: float(response.headers[name]) for name in ("x-queue-time", "x-tokenization-time", "x-inference-time")
    }
    for header, metric in [
        ("x-queue-time", "embedserve_queue_wait_seconds_sum"),
        ("x-tokenization-time", "embedserve_tokenization_duration_seconds_sum"),
        ("x-inference-time", "embedserve_inference_duration_seconds_sum"),
    ]:
        assert after.since(before, metric, **labels) * 1000 == pytest.approx(headers[header], abs=0.002), header
    assert 0 < headers["x-tokenization-time"] <= headers["x-queue-time"]  # the wait includes its tokenization
    assert headers["x-inference-time"] > 0


def test_every_answer_carries_a_request_id_and_errors_are_logged_with_it(server):
    given = requests.post(
        f"{server.url}/v1/embeddings", json={"model": MODEL, "input": "x"}, headers={"x-request-id": "trace-42"}
    )
    assert given.headers["x-request-id"] == "trace-42"
    generated = requests.get(f"{server.url}/health")
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["x-request-id"])
    forged = requests.get(f"{server.url}/health", headers={"x-request-id": "a b"})  # spaces could forge log fields
    assert forged.headers["x-request-id"] != "a b"
    bad = requests.post(
        f"{server.url}/onnx/v1/embeddings", json={"model": "nope", "input": "x"}, headers={"x-request-id": "trace-404"}
    )
    assert bad.status_code == 404
    assert bad.headers["x-request-id"] == "trace-404"
    log = server.log_path.read_text()
    line = next(line for line in log.splitlines() if "request_id=trace-404" in line)
    assert "POST /onnx/v1/embeddings -> 404" in line and "model_not_found" in line


def test_the_schema_documents_what_the_server_answers(server):
    schema = requests.get(f"{server.url}/openapi.json").json()
    paths = schema["paths"]
    assert not {"/", "/litserve/health", "/litserve/info"} & set(paths)  # LitServe's own text routes
    assert {"/v1/models/{model_id}", "/onnx/v1/models", "/onnx/v1/models/{model_id}"} <= set(paths)
    for path in ["/v1/embeddings", *(f"/{backend}/v1/embeddings" for backend in BACKENDS)]:
        responses = paths[path]["post"]["responses"]
        assert {"200", "400", "404", "413", "503", "504"} <= set(responses)
        assert responses["400"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorResponse"
        }
        assert "x-inference-time" in responses["200"]["headers"]
    assert not [p for p, item in paths.items() for op in item.values() if "422" in op["responses"]]
    assert "securitySchemes" not in schema["components"]  # no keys on this server
    request = schema["components"]["schemas"]["EmbeddingRequest"]["properties"]
    assert MODEL in request["model"]["enum"] and ALIAS in request["model"]["enum"]
    integer = next(branch for branch in request["dimensions"]["anyOf"] if branch["type"] == "integer")
    assert (integer["minimum"], integer["maximum"]) == (1, 384)
    assert request["encoding_format"]["enum"] == ["float", "base64"]  # MiniLM has no sparse head
    assert request["input_type"]["anyOf"][0]["enum"] == ["query", "document"]
    string, strings, _, _ = request["input"]["anyOf"]
    assert string["minLength"] == 1 and strings["maxItems"] == 2048


def test_schemathesis_finds_nothing(server):
    report = run_schemathesis(server.url)
    assert re.search(r"\d+ generated, \d+ passed", report), report[-2000:]
