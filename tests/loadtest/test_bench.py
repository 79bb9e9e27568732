"""`embedserve bench` end to end on one backend, with tiny durations: every section of its report is there and holds
measured numbers (the figures themselves are benchmarks, not tests)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter

import pytest

from loadtest.process_tree import ProcessSample, ServerTree, cores_by_role, memory_mib
from loadtest.served_bench import LoadShape, ServedLoad, ServedReport, embeddings_check, format_served
from tests.helpers import ROOT, start_server


def test_cores_by_role_adds_up_each_roles_cpu_time_over_the_interval():
    before = [ProcessSample(1, "main", 1.0, 0, 0), ProcessSample(2, "worker", 10.0, 0, 0)]
    after = [
        ProcessSample(1, "main", 1.5, 100, 50),
        ProcessSample(2, "worker", 13.0, 200, 150),
        ProcessSample(3, "worker", 1.0, 300, 250),  # started meanwhile: counted from its first sample on
    ]
    assert cores_by_role(before, after, seconds=2.0) == {"main": 0.25, "worker": 1.5}
    assert memory_mib(after, "worker") == (500 / 2**20, 400 / 2**20)


def test_served_ratios_compare_with_the_in_process_figures_taken_in_turns():
    report = ServedReport(["onnx"], idle_seconds=30, idle_cores={"http": 0.002, "worker": 0.001})
    report.loads = [
        ServedLoad("onnx", LoadShape("32 short texts", 32, 4), 300.0, 1, 2, {}, {"worker": 1.9}, 32, 333.3),
        ServedLoad("onnx", LoadShape("1 short text", 1, 64), 270.0, 1, 2, {}, {"worker": 1.8}, 32, 333.3),
    ]
    report.loads[1].round_ratios = [0.84, 0.77, 0.815]
    report.loads[1].forward_slowdown = 1.084
    report.loads[1].forward_share, report.loads[1].in_process_forward_share = 0.874, 0.966
    text = format_served(report)
    assert "0.30% of one core" in text
    rows = [line for line in text.splitlines() if line.startswith("onnx ")]
    assert "333.3 (b32)" in rows[0] and " 0.90 " in rows[0]
    assert "333.3 (b32)" in rows[1] and " 0.81 " in rows[1]  # single texts: against the best batch
    assert " 0.77-0.84 " in rows[1], "each round's ratio, lowest to highest"
    assert " 1.08 " in rows[1] and " 0.87/0.97 " in rows[1], "where the ratio went: a slower forward, less of it"
    assert " - " in rows[0], "no forward passes measured: no slowdown to show"


@pytest.mark.slow
def test_bench_reports_in_process_quality_and_served_sections(exported):
    result = subprocess.run(
        [
            sys.executable, "-m", "server.cli", "bench", "--backends", "onnx", "--served-backends", "onnx",
            "--batch-sizes", "1,32", "--seconds", "0.3", "--idle-seconds", "2", "--served-seconds", "1.5",
            "--warmup-seconds", "0.5", "--soak-seconds", "6", "--cache", str(exported), "--allow-export", "false",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = result.stdout
    assert re.search(r"^CPU: .+ cores", report, re.M)
    assert len(re.findall(r"^onnx +cpu +(short|long) +(1|32) +[\d.]+ ", report, re.M)) == 4
    assert re.search(r"^onnx +1\.0+ +1\.000 ", report, re.M), "fp32 ONNX agrees with sentence-transformers"
    assert re.search(r"idle CPU over 2 s: [\d.]+% of one core", report)
    loads = (
        r"^onnx +(32 short texts x 4|1 short text x 64) +([\d.]+) +([\d.]+) \(b(?:1|32)\) +([\d.]+) "
        r"+([\d.]+)-([\d.]+) +([\d.]+) +([\d.]+)/([\d.]+) "
    )
    served = re.findall(loads, report, re.M)
    assert len(served) == 2, report
    for _, inputs, _, ratio, lowest, highest, slowdown, share, in_process_share in served:
        assert float(inputs) > 0 and float(ratio) > 0 and 0 < float(lowest) <= float(highest), report
        assert float(slowdown) > 0, report
        assert 0 < float(share) <= 1 and 0 < float(in_process_share) <= 1, "shares of the time in forward passes"
    assert re.search(r"^onnx +\d+ +\d+$", report, re.M), "worker RSS peak and steady"
    steady = r"^soak: 6 s .+ \((\d+) requests, 0 failed, \d+ shed\), then .+ \(\d+ requests, 0 failed, \d+ shed\)"
    soak = re.search(steady + r".+\n.+medians over 1.6 s after the 1.2 s warm-up", report, re.M)
    assert soak and int(soak.group(1)) > 0, report
    (drift,) = re.findall(r"^onnx +(\d+) +(\d+) +(-?[\d.]+)% +(\d+) +(-?[\d.]+)%$", report, re.M)
    settled, end, percent, burst = float(drift[0]), float(drift[1]), float(drift[2]), float(drift[3])
    assert min(settled, end, burst) > 50, "a loaded worker's RSS, in MiB"
    assert abs(100 * (end - settled) / settled - percent) <= 100 / settled + 0.05, "the drift of what it shows"


@pytest.mark.slow
def test_each_server_process_gets_its_role(exported, tmp_path):
    """The manager holds the listening socket too (it is forked after the bind): it must not count as HTTP."""
    server = start_server(exported, tmp_path, "--backends", "onnx")
    try:
        roles = Counter(sample.role for sample in ServerTree(server.process.pid, server.port).sample())
    finally:
        server.stop()
    # other: LitServe's manager and Python's resource tracker
    assert roles == {"main": 1, "http": 1, "worker": 1, "other": 2}


def test_the_served_check_wants_one_embedding_of_the_right_size_per_input_in_order():
    import base64
    import struct

    import orjson

    check = embeddings_check(dimensions=2)
    request = orjson.dumps({"input": ["a", "b"]})
    vector = base64.b64encode(struct.pack("<2f", 0.6, 0.8)).decode()
    answer = lambda *indices: orjson.dumps({"data": [{"index": i, "embedding": vector} for i in indices]})  # noqa: E731
    assert check(request, 200, answer(0, 1)) is None
    assert check(request, 503, b"{}") == "HTTP 503"
    assert check(request, 502, b"not json") == "HTTP 502"
    assert check(request, 200, answer(0)) == "expected 2 embeddings, got 1"
    assert check(request, 200, answer(1, 0)) == "embeddings are not indexed 0..n-1 in order"
    one_float = base64.b64encode(struct.pack("<f", 1.0)).decode()
    short = orjson.dumps({"data": [{"index": 0, "embedding": vector}, {"index": 1, "embedding": one_float}]})
    assert check(request, 200, short) == "expected 2 dimensions, got 1"
    torn = orjson.dumps({"data": [{"index": 0, "embedding": vector}, {"index": 1, "embedding": "AAAA"}]})
    assert check(request, 200, torn) == "embedding is not base64"  # 3 bytes: not float32s
    zeros = base64.b64encode(bytes(8)).decode()
    empty = orjson.dumps({"data": [{"index": 0, "embedding": vector}, {"index": 1, "embedding": zeros}]})
    assert check(request, 200, empty) == "embedding is all zeros"
