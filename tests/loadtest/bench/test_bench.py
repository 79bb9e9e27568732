"""`embedserve bench` end to end on one backend, with tiny durations: every section is measured and holds numbers
that make sense together (the figures themselves are benchmarks, not tests)."""

from __future__ import annotations

from collections import Counter

import pytest

from loadtest.bench.run import run_bench
from loadtest.bench.served import LOADS, LoadShape, ServedLoad, ServedReport, embeddings_check, format_served
from loadtest.probe import fingerprint
from loadtest.probe.process_tree import ProcessSample, ServerTree, cores_by_role, memory_mib
from loadtest.settings import BenchSettings


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
    batches = ServedLoad("onnx", LoadShape("32 short texts", 32, 4), 300.0, 1, 2, {}, {"worker": 1.9}, 32, 333.3)
    single = ServedLoad("onnx", LoadShape("1 short text", 1, 64), 270.0, 1, 2, {}, {"worker": 1.8}, 32, 333.3)
    assert batches.ratio == pytest.approx(0.9, abs=0.001) and single.ratio == pytest.approx(0.81, abs=0.001)
    assert ServedLoad("onnx", LOADS[0], 300.0, 1, 2, {}, {}).ratio is None, "no in-process figure: no ratio"
    report = ServedReport(["onnx"], idle_seconds=30, idle_cores={"http": 0.002, "worker": 0.001}, loads=[batches])
    rows = [line.split() for line in format_served(report).splitlines() if line.startswith("onnx ")]
    assert any(f"{batches.ratio:.2f}" in row for row in rows), "the table shows each load's ratio"


@pytest.mark.slow
def test_bench_measures_in_process_quality_served_and_soak(exported, capsys, tmp_path):
    settings = BenchSettings(
        backends=["onnx"],
        served_backends=["onnx"],
        batch_sizes=[1, 32],
        seconds=0.3,
        idle_seconds=2,
        served_seconds=1.5,
        warmup_seconds=0.5,
        soak_seconds=6,
        parity_texts=32,  # tests/server/backends/test_parity.py holds every backend to 128
        cache=exported,
        allow_export=False,
        output=tmp_path,
        reference=True,
        reference_pairs=1,  # tests/loadtest/bench/test_reference.py checks the alternation of several
    )
    report = run_bench(settings)
    # Beside sentence-transformers' ONNX backend on the very graph embedserve exported, in alternated rounds.
    reference = report.runs[0].reference
    assert reference.error == "" and reference.parity > 0.9999 and "onnx backend, the same graph" in reference.runner
    assert {(c.profile, c.batch_size) for c in reference.cells} == {(p, b) for p in ("short", "long") for b in (1, 32)}
    assert all(len(c.ours) == len(c.reference) == 1 and c.ratio > 0 for c in reference.cells)
    # ONNX Runtime needs no length buckets: each of its passes pads to its own longest input, at most the call's.
    assert all(c.padding <= 1 for c in reference.cells)
    # A call of 32 long texts is more than one pass's token budget (2048): the reference runs it as one.
    assert {(c.profile, c.batch_size): c.passes > 1 for c in reference.cells} == {
        ("short", 1): False,
        ("short", 32): False,
        ("long", 1): False,
        ("long", 32): True,
    }
    assert {c.padding for c in reference.cells if c.batch_size == 1} == {1}
    # Each backend's vectors of the fingerprint texts, for `embedserve report A B`: the engine's own onnx vectors.
    (kept,) = tmp_path.glob(f"bench-*/{fingerprint.FILE}")
    assert report.fingerprints == kept and list(fingerprint.load(kept)) == ["onnx"]
    assert fingerprint.load(kept)["onnx"].shape == (len(fingerprint.TEXTS), 384)
    (run,) = report.runs
    assert not run.error and {(c.profile, c.batch_size) for c in run.cells} == {
        (profile, batch) for profile in ("short", "long") for batch in (1, 32)
    }
    assert all(cell.inputs_per_s > 0 and 0 < cell.forward_seconds <= cell.seconds for cell in run.cells)
    assert report.quality["onnx"].parity >= 0.9999 and report.quality["onnx"].top10 == 1.0, "fp32 ONNX agrees"

    served = report.served
    assert served.error == "" and served.idle_seconds == 2
    assert {"main", "http", "worker"} <= set(served.idle_cores) and min(served.idle_cores.values()) >= 0
    assert [load.load for load in served.loads] == list(LOADS)
    for load in served.loads:
        assert load.inputs_per_s > 0 and load.ratio > 0 and not load.failures, load
        assert len(load.round_ratios) == 3 and load.forward_slowdown > 0
        assert 0 < load.forward_share <= 1 and 0 < load.in_process_forward_share <= 1, "shares of time in forward"
        assert 0 < load.p50_ms <= load.p99_ms
    worker = served.workers["onnx"]
    assert worker.peak_mib >= worker.steady_mib > 50, "a loaded worker's RSS, in MiB"

    soak = served.soak
    assert soak.steady.requests > 0 and soak.steady.failed == 0 and soak.burst.failed == 0
    assert soak.burst.rate == pytest.approx(4 * soak.steady.rate), "the burst is twice capacity, the soak half"
    assert soak.rest_seconds == 6, "the rest after the burst: at most the soak's own length"
    drift = soak.drift["onnx"]
    assert min(drift.settled_mb, drift.end_mb, soak.rss_after_burst["onnx"]) > 50
    printed = capsys.readouterr().out
    headings = ("CPU: ", "quality against sentence-transformers", "against the reference runner", "served: one server")
    # 6 s, or longer where half the measured capacity expects fewer than 8 requests after the 1.2 s warm-up.
    assert soak.steady.seconds == pytest.approx(max(6, 1.2 + 8 / soak.steady.rate))
    for heading in (*headings, f"soak: {soak.steady.seconds:g} s"):
        assert heading in printed, f"the printed report has no section starting {heading!r}"


@pytest.mark.slow
def test_each_server_process_gets_its_role(server):
    """The manager holds the listening socket too (it is forked after the bind): it must not count as HTTP."""
    roles = Counter(sample.role for sample in ServerTree(server.process.pid, server.port).sample())
    # three backends, each its own worker; other: LitServe's manager and Python's resource tracker
    assert roles == {"main": 1, "http": 1, "worker": 3, "other": 2}


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
