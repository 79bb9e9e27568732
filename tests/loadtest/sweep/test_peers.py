"""`embedserve sweep --peer NAME=URL --rounds N`: a peer server loaded beside ours by the same generator, in
alternated rounds, and shown against ours in the report. No peer server (Infinity, TEI) installs here, so the peer is
a second embedserve, reached only through its OpenAI base URL."""

from __future__ import annotations

import json

import numpy as np
import pytest

from loadtest.probe import fingerprint
from loadtest.probe.metrics_scrape import MetricsSnapshot
from loadtest.report.page import write_report
from loadtest.report.tables import peer_rows
from loadtest.settings import ReportSettings, SweepSettings
from loadtest.sweep.cells import Cell
from loadtest.sweep.run import grid, run_sweep
from loadtest.sweep.targets import parse_peer
from tests.helpers import start_server
from tests.loadtest.report.layout import rendered_problems


def test_a_peer_is_name_equals_its_openai_base_url():
    assert parse_peer(" infinity = http://127.0.0.1:7997/ ") == ("infinity", "http://127.0.0.1:7997")
    assert parse_peer("tei=http://h:8080/v1") == ("tei", "http://h:8080/v1")
    for bad in ("http://127.0.0.1:7997", "=http://h:1", "x=127.0.0.1:7997", "x=ftp://h/v1", "a b=http://h:1"):
        with pytest.raises(ValueError, match="--peer"):
            parse_peer(bad)
    with pytest.raises(ValueError, match="must differ"):
        SweepSettings(peer=["a=http://h:1", "a=http://h:2"])


@pytest.mark.slow
def test_a_peer_named_as_one_of_our_backends_is_refused_before_any_load(server, tmp_path):
    settings = SweepSettings(host=server.url, backends=["onnx"], peer=["onnx=http://127.0.0.1:9/v1"], output=tmp_path)
    with pytest.raises(ValueError, match="are backends of the loaded server"):
        run_sweep(settings)


def test_rounds_alternate_ours_and_the_peers_shape_by_shape():
    settings = SweepSettings(backends=["onnx"], batch_sizes=[1, 8], profiles=["short"], concurrency=[2], rounds=3)
    cells = grid(settings, ["infinity"])
    assert [(c.backend, c.batch_size, c.round) for c in cells] == [
        ("onnx", 1, 0),
        ("infinity", 1, 0),
        ("infinity", 1, 1),
        ("onnx", 1, 1),
        ("onnx", 1, 2),
        ("infinity", 1, 2),
        ("onnx", 8, 0),
        ("infinity", 8, 0),
        ("infinity", 8, 1),
        ("onnx", 8, 1),
        ("onnx", 8, 2),
        ("infinity", 8, 2),
    ]
    assert len({c.name for c in cells}) == len(cells)  # each round's files apart
    assert grid(SweepSettings(backends=["onnx"], batch_sizes=[1], concurrency=[2], profiles=["short"])) == [
        Cell("onnx", "short", 1, 2)
    ]


def test_the_peer_ratio_is_the_median_of_the_rounds_ratios_with_their_range():
    def cell(backend, round_, inputs_per_s, p99, peer=False):
        return dict(backend=backend, profile="short", batch_size=32, load="closed", concurrency=2, rate=None) | dict(
            round=round_, inputs_per_s=float(inputs_per_s), p99_ms=float(p99), peer=peer
        )

    cells = [cell("torch", 0, 100, 50), cell("inf", 0, 80, 60, True), cell("inf", 1, 100, 70, True)]
    cells += [cell("torch", 1, 90, 40), cell("torch", 2, 110, 45), cell("inf", 2, 100, 65, True)]
    vectors = {"torch": np.eye(3, dtype=np.float32), "inf": np.array([[1, 0, 0], [0, 1, 0], [0, 0.6, 0.8]])}
    ((row, within_drift),) = peer_rows(cells, vectors)
    # Rounds' ratios 1.25, 0.9, 1.1: median 1.1, range 0.90-1.25 (holds 1: within the drift); medians of each side.
    assert row[:5] == ["short", "32", "2 users", "torch", "inf"]
    assert row[5:] == ["100.0", "100.0", "1.10x", "0.90-1.25", "45.0", "65.0", "0.800000"]
    assert within_drift


@pytest.mark.slow
def test_a_second_embedserve_as_peer_is_loaded_and_reported_beside_ours(server, exported, tmp_path, capsys):
    peer = start_server(exported, tmp_path, "--backends", "onnx", "--max-queue-wait-ms", "0")
    # Closed loop (Locust) on ours and on the peer, open loop (the generator) on the peer (test_sweep.py runs it on
    # ours); the rounds' order is the grid's test above.
    cells = [Cell("onnx", "short", 2, 2), Cell("twin", "short", 2, 2), Cell("twin", "short", 2, rate=10)]
    try:
        before = MetricsSnapshot.scrape(peer.url)
        settings = SweepSettings(
            host=server.url,
            backends=["onnx"],
            peer=[f"twin={peer.url}/onnx/v1"],
            arrival="constant",
            slo_ms=5000,
            # The sweep notices a closed-loop cell's warm-up end within a second: the server-side window needs more.
            duration=2.0,
            warmup=0.5,
            output=tmp_path,
        )
        run_dir = run_sweep(settings, cells)
        served_by_peer = MetricsSnapshot.scrape(peer.url).since(before, "embedserve_requests_total", code="200")
    finally:
        peer.stop()
    results = json.loads((run_dir / "results.json").read_text())["cells"]
    assert [(c["backend"], c["load"]) for c in results] == [
        (c.backend, "open" if c.open_loop else "closed") for c in cells
    ]
    for cell in results:
        assert cell["requests"] > 0 and cell["failures"] == 0 and cell["inputs_per_s"] > 0, cell
        # Only ours has embedserve's /metrics behind it.
        assert (cell["inference_ms"] is None) == cell["peer"] == (cell["backend"] == "twin")
    # The twin's cells went to the peer: it answered at least what they counted (and the probes besides).
    assert served_by_peer >= sum(c["requests"] for c in results if c["peer"])
    vectors = fingerprint.load(run_dir / fingerprint.FILE)
    assert set(vectors) == {"onnx", "twin"} and (vectors["onnx"] * vectors["twin"]).sum(axis=1).min() > 0.9999
    printed = capsys.readouterr().out
    assert "against peer servers" in printed and " twin " in printed
    report = write_report(ReportSettings(runs=[run_dir]))
    page = report.read_text()
    assert "Against peer servers" in page and f"{peer.url}/onnx/v1/embeddings" in page
    assert rendered_problems(report, 1280)[0] == []
