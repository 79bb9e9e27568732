"""`embedserve sweep` on a tiny grid against a real server, closed and open loop, then `embedserve report` on what
it wrote."""

from __future__ import annotations

import csv
import json
import re
import shutil

import pytest

from loadtest.probe import fingerprint
from loadtest.report.page import write_report
from loadtest.settings import ReportSettings, SweepSettings
from loadtest.sweep.locust_cell import read_measured
from loadtest.sweep.run import run_sweep
from tests.loadtest.report.layout import rendered_problems

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sweep_dir(server, tmp_path_factory):
    settings = SweepSettings(
        host=server.url,
        backends=["torch", "onnx"],
        batch_sizes=[1, 4],
        concurrency=[2],
        rates=[20],
        arrival="constant",
        slo_ms=5000,
        profiles=["short"],
        duration=2.5,
        warmup=1,
        output=tmp_path_factory.mktemp("reports"),
    )
    return run_sweep(settings)


def test_every_cell_is_written_with_positive_throughput_and_ordered_percentiles(sweep_dir):
    with (sweep_dir / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    document = json.loads((sweep_dir / "results.json").read_text())
    expected = {(b, "short", n, load) for b in ("torch", "onnx") for n in (1, 4) for load in ("2", "20.0")}
    loads = {
        (r["backend"], r["profile"], int(r["batch_size"]), r["concurrency"] if r["load"] == "closed" else r["rate"])
        for r in rows
    }
    assert loads == expected
    assert len(document["cells"]) == len(rows) == 8
    for cell in document["cells"]:
        assert cell["requests"] > 0 and cell["failures"] == 0, cell
        assert cell["requests_per_s"] > 0 and cell["tokens_per_s"] > 0
        assert cell["inputs_per_s"] == pytest.approx(cell["requests_per_s"] * cell["batch_size"])
        assert 0 < cell["p50_ms"] <= cell["p90_ms"] <= cell["p95_ms"] <= cell["p99_ms"] <= cell["p999_ms"]
        assert cell["p999_ms"] <= cell["max_ms"]
        # server-side figures, from /metrics
        assert cell["queue_wait_ms"] is not None and cell["inference_ms"] > 0
        assert cell["inputs_per_forward"] >= 1 and cell["worker_rss_peak_mb"] > 50
        # the loaded worker did the work (sampled each second: a 2.5 s cell sees at least one step)
        assert cell["worker_cores"] > 0.05 and cell["http_cores"] >= 0 and cell["other_cores"] >= 0
        assert 0 <= cell["client_cpu_pct"] < 400
    for cell in (c for c in document["cells"] if c["load"] == "open"):
        # 20 arrivals a second, evenly spaced, over the 2.5 s measured: 50 requests, all answered right
        assert cell["requests"] == 50 and cell["offered_rate"] == pytest.approx(20)
        assert 0 < cell["requests_per_s"] <= cell["offered_rate"]
        assert cell["goodput_rate"] <= cell["requests_per_s"] and cell["arrival"] == "constant"
        assert 0 <= cell["generator_behind_pct"] and cell["slo_ms"] == 5000
    for cell in (c for c in document["cells"] if c["load"] == "closed"):
        # exact figures: from every measured request the Locust processes wrote, not Locust's rounded percentiles
        name = f"{cell['backend']}_short_b{cell['batch_size']}_c2"
        measured = read_measured(sweep_dir / "locust" / f"{name}_latencies")
        latencies = [latency for latency, _ in measured]
        assert len(measured) == cell["requests"] and cell["max_ms"] == max(latencies) and cell["p50_ms"] in latencies
        within = sum(outcome == "1" and latency <= 5000 for latency, outcome in measured)
        assert cell["goodput_rate"] == pytest.approx(within / 2.5) and cell["slo_ms"] == 5000
        # the same count as Locust's own summary at exit: POST /torch/v1/embeddings  <requests>  <failures>(...)
        summary = re.search(
            rf"POST\s+/{cell['backend']}/v1/embeddings\s+(\d+)\s+(\d+)\(",
            (sweep_dir / "locust" / f"{name}.log").read_text(),
        )
        assert (int(summary[1]), int(summary[2])) == (cell["requests"], cell["failures"])


def test_report_writes_html_and_plots_and_compares_runs(sweep_dir, tmp_path):
    # A baseline that really differs: one cell twice as fast as this run's, one with half its p99.
    baseline = tmp_path / "baseline"
    shutil.copytree(sweep_dir, baseline)
    document = json.loads((baseline / "results.json").read_text())
    document["cells"][0]["inputs_per_s"] *= 2
    document["cells"][1]["p99_ms"] /= 2
    (baseline / "results.json").write_text(json.dumps(document))
    report = write_report(ReportSettings(runs=[sweep_dir, baseline]))
    page = report.read_text()
    plots = ("throughput_vs_batch", "latency_vs_concurrency", "saturation", "latency_vs_load", "memory")
    for plot in plots:
        png = sweep_dir / "plots" / f"{plot}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        svg = (sweep_dir / "plots" / f"{plot}.svg").read_text()
        assert svg[svg.index("<svg") :] in page  # inline, text as text
    # As a person sees it, wide and narrow: every plot inline with its title inside it, nothing past the page.
    for width in (1280, 700):
        assert rendered_problems(report, width) == ([], len(plots))
    # Each backend's vectors of the fingerprint texts, kept for `embedserve report A B`.
    assert set(fingerprint.load(sweep_dir / fingerprint.FILE)) == {"torch", "onnx"}
    assert "vectors of onnx unchanged" in page
    assert "Ratios between backends" in page and "1.00x" in page  # torch over itself
    assert "2 of 8 shared cells regressed" in page
    assert "20 req/s" in page and "2 users" in page


def find_max_settings(server, tmp_path, **changes) -> SweepSettings:
    """One backend and shape, an SLO no answer misses: the search stops at its own bound."""
    base = dict(host=server.url, backends=["onnx"], profiles=["short"], find_max=True, slo_ms=10_000, output=tmp_path)
    return SweepSettings(**{**base, **changes})


def test_find_max_reports_the_best_load_within_the_slo(server, tmp_path):
    settings = find_max_settings(server, tmp_path, batch_sizes=[2], max_concurrency=2, duration=2, warmup=1)
    document = json.loads((run_sweep(settings) / "results.json").read_text())
    (search,) = document["saturation"]
    assert search["tried"][0] == 1 and set(search["tried"]) <= {1, 2}
    assert search["best_concurrency"] in search["tried"] and search["best_inputs_per_s"] > 0
    assert search["stopped_because"]
    assert [c["concurrency"] for c in document["cells"]] == search["tried"]


def test_find_max_in_rate_mode_finds_a_sustainable_rate_per_backend(server, tmp_path):
    settings = find_max_settings(server, tmp_path, batch_sizes=[1], rates=[4], max_rate=8, duration=2, warmup=0.5)
    run_dir = run_sweep(settings)
    document = json.loads((run_dir / "results.json").read_text())
    (search,) = document["saturation"]
    assert search["load"] == "open" and search["tried"] == [4, 8]
    assert search["best_rate"] == 8 and search["stopped_because"] == "reached --max-rate 8"
    assert [c["rate"] for c in document["cells"]] == [4, 8]
    page = write_report(ReportSettings(runs=[run_dir])).read_text()
    assert "Maximum sustainable arrival rate" in page and "1.00x of onnx" in page
