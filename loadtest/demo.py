"""`make demo`: the three backends on the default model, one request to each endpoint, a short sweep (closed-loop
Locust cells, and one open-loop cell per backend: single texts arriving at a fixed rate) with its HTML report, then
the in-process bench table."""

from __future__ import annotations

import json
import sys
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

from loadtest.bench.run import run_bench
from loadtest.probe.launcher import ServerProcess
from loadtest.report.page import write_report
from loadtest.settings import BenchSettings, ReportSettings, SweepSettings
from loadtest.sweep.cells import Cell
from loadtest.sweep.run import grid, run_sweep
from server.settings import DEFAULT_MODEL

BACKENDS = ("torch", "onnx", "openvino")
# About 3.5 minutes on a 2-core machine: 15 cells of 8 s measured after 2 s of warm-up.
DEMO_SWEEP = SweepSettings(
    backends=list(BACKENDS), batch_sizes=[1, 32], concurrency=[1, 8], profiles=["short"], duration=8, warmup=2
)
# Open loop: Poisson arrivals of one short text each, at a rate every backend serves on 2 cores.
DEMO_RATE = 30.0
TEXTS = ["How do I bake sourdough bread?", "A recipe for sourdough bread", "The quarterly numbers are late."]


def post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def main() -> None:
    log_path = Path(tempfile.gettempdir()) / "embedserve-demo.log"
    print(f"starting embedserve with {', '.join(BACKENDS)} on {DEFAULT_MODEL} (log: {log_path}) ...", flush=True)
    server = ServerProcess("--backends", ",".join(BACKENDS), log_path=log_path).wait_ready()
    try:
        vectors = {}
        for backend in BACKENDS:
            url = f"{server.url}/{backend}/v1/embeddings"
            reply = post_json(url, {"model": DEFAULT_MODEL, "input": TEXTS})
            vectors[backend] = np.array([item["embedding"] for item in reply["data"]])
            first = ", ".join(f"{v:+.4f}" for v in vectors[backend][0][:4])
            print(
                f"POST {url}: {len(reply['data'])} x {vectors[backend].shape[1]} dims, "
                f"{reply['usage']['prompt_tokens']} tokens, first: [{first}, ...]"
            )
        similarity = vectors["torch"] @ vectors["torch"].T
        print(
            f"cosine(query, matching doc) = {similarity[0, 1]:.3f}, cosine(query, unrelated) = {similarity[0, 2]:.3f}"
        )
        for backend in BACKENDS[1:]:
            agreement = (vectors[backend] * vectors["torch"]).sum(axis=1).min()
            print(f"{backend} vs torch: min cosine {agreement:.6f}")
        print(
            "\nsweep: closed loop (embedserve sweep --batch-sizes 1,32 --concurrency 1,8 --profiles short "
            f"--duration 8s --warmup 2s), then open loop (... --batch-sizes 1 --rates {DEMO_RATE:g}):",
            flush=True,
        )
        cells = grid(DEMO_SWEEP) + [Cell(backend, "short", 1, rate=DEMO_RATE) for backend in BACKENDS]
        run_dir = run_sweep(DEMO_SWEEP.model_copy(update={"host": server.url}), cells)
    finally:
        server.stop()
    print(f"report: {write_report(ReportSettings(runs=[run_dir]))}")
    print("\nin-process bench (embedserve bench --seconds 1):", flush=True)
    run_bench(BenchSettings(backends=list(BACKENDS), seconds=1.0, served_backends=[]))


if __name__ == "__main__":
    sys.exit(main())
