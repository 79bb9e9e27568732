"""A real `embedserve serve` on 127.0.0.1, driven with the official openai SDK and raw HTTP."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
from openai import OpenAI

from corpus.texts import varied_texts
from loadtest.probe.metrics_scrape import MetricsSnapshot
from tests.helpers import MODEL, start_server

pytestmark = pytest.mark.slow
BACKENDS = ["torch", "onnx", "openvino"]


def client(server, backend: str | None = None) -> OpenAI:
    base = f"{server.url}/{backend}/v1" if backend else f"{server.url}/v1"
    return OpenAI(base_url=base, api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def reference(minilm_dir):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_dir), device="cpu")
    return lambda texts: model.encode(texts, normalize_embeddings=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_openai_sdk_default_base64_and_float(server, backend, reference, plain_tokenizer):
    texts = ["The cat sat on the mat.", "Embedding servers batch requests."]
    sdk = client(server, backend)
    as_base64 = sdk.embeddings.create(model=MODEL, input=texts)  # the SDK asks for base64 when not told
    as_float = sdk.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    expected = reference(texts)
    for response in (as_base64, as_float):
        vectors = np.array([item.embedding for item in response.data])
        assert vectors.shape == (2, 384)
        assert (vectors * expected).sum(axis=1).min() > 0.9999
        assert [item.index for item in response.data] == [0, 1]
    real_tokens = sum(len(plain_tokenizer.encode(t).ids) for t in texts)
    assert as_float.usage.prompt_tokens == as_float.usage.total_tokens == real_tokens


def test_dimensions_truncate_and_renormalise(server):
    full = client(server).embeddings.create(model=MODEL, input="hello world", encoding_format="float")
    short = client(server).embeddings.create(model=MODEL, input="hello world", dimensions=64, encoding_format="float")
    vector = np.array(short.data[0].embedding)
    assert vector.shape == (64,)
    assert abs(np.linalg.norm(vector) - 1) < 1e-5
    prefix = np.array(full.data[0].embedding[:64])
    np.testing.assert_allclose(vector, prefix / np.linalg.norm(prefix), atol=1e-5)


def test_token_ids_embed_like_the_text_they_encode(server, plain_tokenizer):
    texts = ["token ids work too", "and arrays of them"]
    id_lists = [plain_tokenizer.encode(t, add_special_tokens=False).ids for t in texts]
    sdk = client(server, "onnx")
    by_ids = sdk.embeddings.create(model=MODEL, input=id_lists, encoding_format="float")
    by_one_id_list = sdk.embeddings.create(model=MODEL, input=id_lists[0], encoding_format="float")
    by_text = sdk.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    np.testing.assert_allclose([d.embedding for d in by_ids.data], [d.embedding for d in by_text.data], atol=1e-5)
    assert len(by_one_id_list.data) == 1
    assert by_ids.usage.prompt_tokens == by_text.usage.prompt_tokens


def test_models_ready_health_and_openapi(server):
    models = requests.get(f"{server.url}/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["id"] == MODEL
    assert set(models["data"][0]["backends"]) == set(BACKENDS)
    assert {b: s["dimensions"] for b, s in models["data"][0]["backends"].items()} == dict.fromkeys(BACKENDS, 384)
    ready = requests.get(f"{server.url}/ready")
    assert ready.status_code == 200
    assert {b: s["state"] for b, s in ready.json()["backends"].items()} == dict.fromkeys(BACKENDS, "ready")
    assert requests.get(f"{server.url}/health").json() == {"status": "ok"}
    paths = requests.get(f"{server.url}/openapi.json").json()["paths"]
    assert {"/v1/embeddings", "/torch/v1/embeddings", "/onnx/v1/embeddings", "/openvino/v1/embeddings"} <= set(paths)


LONG = "word " * 400

ERROR_CASES = [
    ("empty input", {"input": [], "model": MODEL}, 400, "input"),
    ("empty string", {"input": "", "model": MODEL}, 400, "input"),
    ("wrong type", {"input": {"a": 1}, "model": MODEL}, 400, "input"),
    ("mixed types", {"input": ["a", 1], "model": MODEL}, 400, "input"),
    ("too many inputs", {"input": ["a"] * 2049, "model": MODEL}, 400, "input"),
    ("over-long, truncate=false", {"input": ["ok", LONG], "model": MODEL, "truncate": False}, 400, "input"),
    ("dimensions too large", {"input": "a", "model": MODEL, "dimensions": 385}, 400, "dimensions"),
    ("dimensions zero", {"input": "a", "model": MODEL, "dimensions": 0}, 400, "dimensions"),
    ("token id out of vocab", {"input": [[1, 99999999]], "model": MODEL}, 400, "input"),
    ("unknown model", {"input": "a", "model": "gpt-4"}, 404, "model"),
    ("image to a text model", {"input": ["a", "data:image/png;base64,iVBORw0KGgo="], "model": MODEL}, 400, "input"),
    (
        "sparse without a sparse head",
        {"input": "a", "model": MODEL, "encoding_format": "sparse"},
        400,
        "encoding_format",
    ),
    ("missing model", {"input": "a"}, 400, "model"),
]


@pytest.mark.parametrize("name, body, status, param", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_bad_requests_get_openai_errors(server, name, body, status, param):
    response = requests.post(f"{server.url}/onnx/v1/embeddings", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and error["message"]
    if name == "over-long, truncate=false":
        assert "input[1]" in error["message"]
    if name == "unknown model":
        assert error["code"] == "model_not_found"


def test_truncate_default_cuts_long_input(server):
    response = requests.post(f"{server.url}/onnx/v1/embeddings", json={"input": LONG, "model": MODEL})
    assert response.status_code == 200
    assert response.json()["usage"]["prompt_tokens"] == 256


@pytest.mark.parametrize(
    "path, data, status",
    [
        ("/onnx/v1/embeddings", b"{not json", 400),
        ("/onnx/v1/embeddings", b"[1, 2]", 400),
        ("/tensorrt/v1/embeddings", b"{}", 404),
        ("/v2/embeddings", b"{}", 404),
    ],
)
def test_malformed_bodies_and_unknown_paths(server, path, data, status):
    response = requests.post(server.url + path, data=data, headers={"Content-Type": "application/json"})
    assert response.status_code == status
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_body_over_limit_is_413(server):
    huge = json.dumps({"input": ["x" * 1000] * 20000, "model": MODEL})  # ~20 MB > 16 MiB default
    response = requests.post(
        f"{server.url}/onnx/v1/embeddings", data=huge, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_a_chunked_body_over_limit_is_413_and_under_it_is_served(server):
    """Without a Content-Length (Transfer-Encoding: chunked) the limit still answers 413, not a parse error."""

    def chunked(body: bytes, size: int = 1 << 20):
        yield from (body[start : start + size] for start in range(0, len(body), size))

    huge = json.dumps({"input": ["x" * 1000] * 20000, "model": MODEL}).encode()  # ~20 MB > 16 MiB default
    response = requests.post(
        f"{server.url}/onnx/v1/embeddings", data=chunked(huge), headers={"Content-Type": "application/json"}
    )
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    small = json.dumps({"input": ["a chunked request", "of two texts"], "model": MODEL}).encode()
    response = requests.post(
        f"{server.url}/onnx/v1/embeddings", data=chunked(small, 7), headers={"Content-Type": "application/json"}
    )
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert response.status_code == 200 and [item["index"] for item in response.json()["data"]] == [0, 1]


def test_64_concurrent_requests_each_get_their_own_embeddings(server, reference):
    """Different sizes on every backend at once, while bad requests land in the same batches."""
    texts = varied_texts(160, seed=7)
    jobs = []
    offset = 0
    for n in range(64):
        size = 1 + n % 5
        jobs.append((BACKENDS[n % 3], texts[offset : offset + size]))
        offset = (offset + size) % (len(texts) - 5)
    expected = {t: v for t, v in zip(texts, reference(texts), strict=True)}

    def call(job):
        backend, inputs = job
        response = client(server, backend).embeddings.create(model=MODEL, input=inputs)
        return job, np.array([d.embedding for d in response.data])

    def bad(_):
        return requests.post(f"{server.url}/onnx/v1/embeddings", json={"input": ["a", ""], "model": MODEL})

    with ThreadPoolExecutor(max_workers=64) as pool:
        bad_futures = [pool.submit(bad, i) for i in range(8)]
        results = list(pool.map(call, jobs))
    assert all(f.result().status_code == 400 for f in bad_futures)
    for (backend, inputs), vectors in results:
        assert vectors.shape == (len(inputs), 384)
        wanted = np.stack([expected[t] for t in inputs])
        assert (vectors * wanted).sum(axis=1).min() > 0.9999, backend


def test_onnx_only_server_runs_without_torch_and_sheds_load(exported, tmp_path):
    """No process of an ONNX-only server maps libtorch; a full queue answers 503 + Retry-After at once (the hard
    count bound, per HTTP process, here two of them; shedding by expected wait is off, see test_overload.py)."""
    onnx_server = start_server(
        exported,
        tmp_path,
        "--backends",
        "onnx",
        "--max-queue",
        "2",
        "--max-batch-requests",
        "1",
        "--max-queue-wait-ms",
        "0",
        "--api-servers",
        "2",
    )
    try:
        maps = {pid: Path(f"/proc/{pid}/maps").read_text() for pid in onnx_server.child_pids()}
        assert len(maps) >= 5, "main, manager, two HTTP processes and the worker, at least"
        assert not [pid for pid, mapped in maps.items() if "libtorch" in mapped], "a process loaded torch"
        assert any("onnxruntime" in mapped for mapped in maps.values()), "the check would see a loaded library"
        body = {"input": varied_texts(64, seed=3), "model": MODEL}
        with ThreadPoolExecutor(max_workers=16) as pool:
            responses = list(
                pool.map(lambda _: requests.post(f"{onnx_server.url}/v1/embeddings", json=body), range(16))
            )
        statuses = [r.status_code for r in responses]
        assert 503 in statuses and 200 in statuses, statuses
        shed = next(r for r in responses if r.status_code == 503)
        assert shed.headers["Retry-After"] == "1"
        assert shed.json()["error"]["code"] == "server_overloaded"
        assert all(len(r.json()["data"]) == 64 for r in responses if r.status_code == 200)
        rejected = MetricsSnapshot.scrape(onnx_server.url).total
        assert rejected("embedserve_rejected_requests_total", reason="count_bound") == statuses.count(503)
        assert rejected("embedserve_rejected_requests_total", reason="expected_wait") == 0
    finally:
        onnx_server.stop()


def test_int8_variants_are_served_under_their_own_names(exported, tmp_path, reference):
    """onnx-int8, openvino-int8 and openvino-int8-weights over HTTP: listed, close to the fp32 reference, and not the
    fp32 artefact under another name."""
    variants = ["onnx-int8", "openvino-int8", "openvino-int8-weights"]
    int8_server = start_server(exported, tmp_path, "--backends", ",".join(variants))
    texts = varied_texts(16, seed=11)
    expected = reference(texts)
    try:
        listed = requests.get(f"{int8_server.url}/v1/models").json()["data"][0]["backends"]
        assert list(listed) == variants and {state["state"] for state in listed.values()} == {"ready"}
        for variant in variants:
            vectors = np.array(
                [
                    item.embedding
                    for item in client(int8_server, variant).embeddings.create(model=MODEL, input=texts).data
                ]
            )
            cosines = (vectors * expected).sum(axis=1)
            assert cosines.min() >= 0.95, (variant, cosines.min())
            assert np.abs(vectors - expected).max() > 1e-4, f"{variant} answers exactly as fp32"
    finally:
        int8_server.stop()
