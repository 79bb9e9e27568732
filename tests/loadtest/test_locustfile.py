"""Plain `locust` in the repository root (locust.conf) against a real server: right responses pass, and a wrong
dimension is a Locust failure with its reason, never a silent success."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import ROOT, run_locust

pytestmark = pytest.mark.slow


def test_plain_locust_uses_the_repository_config_and_every_request_passes(server, tmp_path):
    row, failures = run_locust(server, tmp_path, "--text-profile", "variable", "--encoding-format", "base64")
    assert int(row["Request Count"]) > 0
    assert int(row["Failure Count"]) == 0 and failures == []


def test_with_no_backend_or_model_given_users_spread_over_what_v1_models_lists(server, tmp_path):
    rows, failures = run_locust(server, tmp_path, "-u", "3", "-r", "3", backend=None)
    assert failures == []
    for backend in ("torch", "onnx", "openvino"):
        row = rows[f"/{backend}/v1/embeddings"]
        assert int(row["Request Count"]) > 0 and int(row["Failure Count"]) == 0, backend
    assert int(rows["/v1/models"]["Request Count"]) >= 1  # asked once per Locust process


def test_wrong_dimension_is_a_failure_with_its_reason(server, tmp_path):
    row, failures = run_locust(server, tmp_path, "--expected-dimensions", "123")
    assert int(row["Request Count"]) > 0
    assert int(row["Failure Count"]) == int(row["Request Count"])
    (failure,) = failures  # one reason, stable across requests, so Locust groups them
    assert "expected 123 dimensions, got 384" in failure["Error"]
    assert int(failure["Occurrences"]) == int(row["Failure Count"])


def test_requested_dimensions_are_checked_against_the_response(server, tmp_path):
    row, failures = run_locust(server, tmp_path, "--dimensions", "128")
    assert int(row["Request Count"]) > 0 and int(row["Failure Count"]) == 0, failures


def test_the_locustfile_runs_one_user_in_process_for_debugging(server):
    """`python loadtest/locustfile.py` runs Locust's run_single_user, printing each request as it completes."""
    process = subprocess.Popen(
        [sys.executable, "loadtest/locustfile.py", "--host", server.url, "--backends", "onnx", "--batch-size", "2"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = [process.stdout.readline() for _ in range(8)]
    finally:
        process.kill()
        process.wait()
    # PrintListener's columns: type, name, response ms, exception (empty when the response passed its checks)
    requests_printed = [line.rstrip("\n").split("\t") for line in lines if "/onnx/v1/embeddings" in line]
    assert len(requests_printed) >= 3, lines
    assert all(fields[0].strip() == "POST" and fields[3].strip() == "" for fields in requests_printed), lines
