import subprocess
import sys

import pytest

from server.backends.base import BackendVariant
from server.settings import ServeSettings


def test_environment_and_yaml_feed_the_same_settings(tmp_path, monkeypatch):
    config = tmp_path / "embedserve.yaml"
    config.write_text("port: 9100\nmax_batch_tokens: 4096\nbackends: [onnx]\n")
    monkeypatch.setenv("EMBEDSERVE_CONFIG", str(config))
    monkeypatch.setenv("EMBEDSERVE_PORT", "9200")  # environment beats the file
    settings = ServeSettings()
    assert (settings.port, settings.max_batch_tokens, settings.backends) == (9200, 4096, ["onnx"])


def test_comma_separated_backends(monkeypatch):
    monkeypatch.setenv("EMBEDSERVE_BACKENDS", "torch, onnx-int8")
    settings = ServeSettings()
    assert settings.backends == ["torch", "onnx-int8"]
    assert settings.default_backend_name == "torch"


def test_backend_variants_parse_and_unknown_ones_fail():
    assert BackendVariant.parse("onnx-int8") == BackendVariant("onnx", "int8")
    assert BackendVariant.parse("openvino").name == "openvino"
    for bad in ("tensorrt", "torch-int8", "onnx-int4"):
        with pytest.raises(ValueError):
            BackendVariant.parse(bad)


def test_serve_help_documents_every_setting():
    out = subprocess.run(
        [sys.executable, "-m", "cli", "serve", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for name in ServeSettings.model_fields:
        assert f"--{name.replace('_', '-')}" in out, name


def test_a_backend_listed_twice_or_a_default_backend_not_served_is_refused_before_anything_starts():
    from server.http.app import build_server

    with pytest.raises(ValueError, match="listed twice"):
        build_server(ServeSettings(backends=["onnx", "onnx"]))
    with pytest.raises(ValueError, match="default backend 'torch' is not among"):
        build_server(ServeSettings(backends=["onnx"], default_backend="torch"))
