"""Reading /ready while a launched server starts: a backend that failed to load ends the wait with its reason."""

from __future__ import annotations

import json

from loadtest.probe.launcher import failed_backends


def test_only_failed_backends_are_named_with_their_reasons():
    failed = {"state": "failed", "error": "RuntimeError: export failed"}
    readiness = {"ready": False, "backends": {"onnx": failed, "torch": {"state": "loading"}}}
    assert failed_backends(json.dumps(readiness).encode()) == {"onnx": "RuntimeError: export failed"}
    assert failed_backends(json.dumps({"ready": False, "backends": {"torch": {"state": "loading"}}}).encode()) == {}


def test_an_answer_that_is_not_readiness_json_names_nothing():
    for body in (b"", b"Internal Server Error", b"[1, 2]"):
        assert failed_backends(body) == {}
