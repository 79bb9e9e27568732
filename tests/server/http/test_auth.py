"""API keys and CORS on a real server: 401 in OpenAI's shape without the right key, the OpenAI SDK and the load
tools with it, probes open, keys never in the log; and schemathesis, which also checks that no route ignores auth."""

from __future__ import annotations

import openai
import pytest
import requests
from openai import OpenAI

from loadtest.client.api_key import API_KEY_ENV
from loadtest.probe.discovery import discover
from server.http.auth import ApiKeys
from server.settings import ServeSettings
from tests.helpers import MODEL, run_locust, run_schemathesis, start_server

FLAG_KEYS = ["sk-flag-one", "sk-flag-two"]
FILE_KEY = "sk-from-a-mounted-secret"
ORIGIN = "https://search.example"


def test_keys_come_from_the_flag_the_environment_and_a_file(tmp_path, monkeypatch):
    key_file = tmp_path / "keys"
    key_file.write_text(f"# one per line\n{FILE_KEY}\n\n")
    monkeypatch.setenv("EMBEDSERVE_API_KEY", "sk-env-a, sk-env-b")
    settings = ServeSettings(api_key_file=key_file)
    assert settings.api_keys() == ["sk-env-a", "sk-env-b", FILE_KEY]
    assert "sk-env-a" not in repr(settings) and "sk-env-a" not in str(settings.model_dump())


def test_every_key_is_accepted_and_nothing_else():
    keys = ApiKeys(["k1", "key-two"])
    assert keys.accepts(b"k1") and keys.accepts(b"key-two")
    assert not any(keys.accepts(wrong) for wrong in [b"", b"k", b"k1 ", b"key-two-", b"K1"])
    assert not ApiKeys([])


@pytest.fixture(scope="module")
def keyed(exported, tmp_path_factory):
    directory = tmp_path_factory.mktemp("keyed")
    key_file = directory / "keys"
    key_file.write_text(FILE_KEY + "\n")
    running = start_server(
        exported,
        directory,
        "--backends",
        "onnx,openvino",
        "--api-key",
        ",".join(FLAG_KEYS),
        "--api-key-file",
        str(key_file),
        "--metrics-need-key",
        "--cors-origins",
        ORIGIN,
    )
    yield running
    running.stop()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.slow
@pytest.mark.parametrize(
    "method, path",
    [
        ("POST", "/v1/embeddings"),
        ("POST", "/onnx/v1/embeddings"),
        ("GET", "/v1/models"),
        ("GET", "/openvino/v1/models"),
        ("GET", f"/v1/models/{MODEL}"),
        ("GET", "/metrics"),
        ("GET", "/litserve/info"),
    ],
)
def test_without_the_right_key_every_route_answers_401(keyed, method, path):
    body = {"model": MODEL, "input": "secret text"}
    for headers in [
        {},
        bearer("sk-wrong"),
        {"Authorization": FLAG_KEYS[0]},
        {"Authorization": "Basic " + FLAG_KEYS[0]},
    ]:
        answer = requests.request(method, f"{keyed.url}{path}", json=body, headers=headers)
        assert answer.status_code == 401, (path, headers)
        assert answer.json()["error"]["code"] == "invalid_api_key"
        assert answer.json()["error"]["type"] == "invalid_request_error"
        assert answer.headers["WWW-Authenticate"] == "Bearer"
    assert requests.request(method, f"{keyed.url}{path}", json=body, headers=bearer(FILE_KEY)).status_code == 200


@pytest.mark.slow
def test_probes_and_the_schema_stay_open(keyed):
    for path in ["/health", "/ready", "/openapi.json"]:
        assert requests.get(f"{keyed.url}{path}").status_code == 200, path
    schema = requests.get(f"{keyed.url}/openapi.json").json()
    assert schema["components"]["securitySchemes"]["apiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "one of the server's --api-key",
    }
    assert schema["paths"]["/onnx/v1/embeddings"]["post"]["security"] == [{"apiKey": []}]
    assert "401" in schema["paths"]["/v1/models"]["get"]["responses"]
    assert "security" not in schema["paths"]["/ready"]["get"]


@pytest.mark.slow
@pytest.mark.parametrize("key", [*FLAG_KEYS, FILE_KEY])
@pytest.mark.parametrize("prefix", ["", "/onnx", "/openvino"])
def test_the_sdk_works_with_each_key_under_each_base_url(keyed, key, prefix):
    client = OpenAI(base_url=f"{keyed.url}{prefix}/v1", api_key=key, max_retries=0)
    assert len(client.embeddings.create(model=MODEL, input=["one", "two"]).data) == 2
    assert client.models.retrieve(MODEL).id == client.models.list().data[0].id == MODEL
    with pytest.raises(openai.AuthenticationError) as caught:
        OpenAI(base_url=f"{keyed.url}{prefix}/v1", api_key=key + "x", max_retries=0).models.list()
    assert caught.value.code == "invalid_api_key"


@pytest.mark.slow
def test_keys_never_reach_the_log(keyed):
    for key in [*FLAG_KEYS, FILE_KEY, "sk-a-wrong-guess"]:
        requests.post(f"{keyed.url}/v1/embeddings", json={"model": "nope", "input": "x"}, headers=bearer(key))
    log = keyed.log_path.read_text()
    assert "/v1/embeddings -> 401" in log and "/v1/embeddings -> 404" in log  # the errors were logged
    assert not [key for key in [*FLAG_KEYS, FILE_KEY, "sk-a-wrong-guess"] if key in log]


@pytest.mark.slow
def test_cors_lets_the_allowed_origin_read_answers_and_errors(keyed):
    preflight = requests.options(
        f"{keyed.url}/onnx/v1/embeddings",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    answer = requests.post(
        f"{keyed.url}/onnx/v1/embeddings",
        json={"model": MODEL, "input": "x"},
        headers={"Origin": ORIGIN, **bearer(FILE_KEY)},
    )
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    assert "x-inference-time" in answer.headers["access-control-expose-headers"]
    refused = requests.post(f"{keyed.url}/onnx/v1/embeddings", json={}, headers={"Origin": ORIGIN})
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == ORIGIN
    stranger = requests.options(
        f"{keyed.url}/onnx/v1/embeddings",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in stranger.headers


@pytest.mark.slow
def test_the_load_tools_send_the_key(keyed, tmp_path, monkeypatch):
    with pytest.raises(Exception, match="401"):
        discover(keyed.url)
    monkeypatch.setenv(API_KEY_ENV, f"{FLAG_KEYS[1]},{FLAG_KEYS[0]}")  # the server's list: the first is sent
    assert discover(keyed.url).ready_backends == ["onnx", "openvino"]
    monkeypatch.delenv(API_KEY_ENV)  # Locust's own flag, this time
    rows, failures = run_locust(keyed, tmp_path, "--api-key", FILE_KEY, backend=None)
    assert int(rows["Aggregated"]["Request Count"]) > 0 and failures == [], (rows["Aggregated"], failures)


@pytest.mark.slow
def test_schemathesis_finds_nothing_with_keys_on(keyed):
    """With the key given, schemathesis also sends requests without it and with a wrong one (its ignored_auth
    check), on every route the schema says is secured."""
    run_schemathesis(keyed.url, "--header", f"Authorization: Bearer {FILE_KEY}")
