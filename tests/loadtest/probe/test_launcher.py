"""Reading /ready while a launched server starts: a backend that failed to load ends the wait with its reason, and a
wait that ends in an exception stops the server."""

from __future__ import annotations

import json
import time

import pytest

from loadtest.probe import launcher
from loadtest.probe.launcher import ServerProcess, failed_backends


def test_only_failed_backends_are_named_with_their_reasons():
    failed = {"state": "failed", "error": "RuntimeError: export failed"}
    readiness = {"ready": False, "backends": {"onnx": failed, "torch": {"state": "loading"}}}
    assert failed_backends(json.dumps(readiness).encode()) == {"onnx": "RuntimeError: export failed"}
    assert failed_backends(json.dumps({"ready": False, "backends": {"torch": {"state": "loading"}}}).encode()) == {}


def test_an_answer_that_is_not_readiness_json_names_nothing():
    for body in (b"", b"Internal Server Error", b"[1, 2]"):
        assert failed_backends(body) == {}


@pytest.mark.slow
def test_a_ctrl_c_while_waiting_for_the_server_stops_it_first(exported, tmp_path, monkeypatch):
    """The server runs in a session of its own: a wait that ends in an exception must not leave it running."""
    server = ServerProcess(
        "--backends", "onnx", log_path=tmp_path / "server.log", env={"EMBEDSERVE_CACHE": str(exported)}
    )

    real_sleep, calls = time.sleep, []

    def interrupted_once(seconds: float) -> None:  # the first wait between two reads of /ready: Ctrl-C
        calls.append(seconds)
        if len(calls) == 1:
            raise KeyboardInterrupt
        real_sleep(seconds)

    monkeypatch.setattr(launcher.time, "sleep", interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        server.wait_ready()
    assert server.process.poll() is not None and not server.child_pids()
