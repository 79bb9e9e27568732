"""`embedserve sweep`: backend x batch size x concurrency x profile, one headless Locust run per cell (runner.py),
or the saturation search (saturation.py). Results are written after every cell, so an interrupted sweep keeps what
it measured.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from loadtest.cells import Cell, CellResult
from loadtest.environment import describe_environment
from loadtest.launcher import ServerProcess
from loadtest.runner import LOCUST_CPU_LIMIT_PCT, CellRunner
from loadtest.saturation import Saturation, find_max, saturation_levels
from loadtest.settings import SweepSettings


def grid(settings: SweepSettings) -> list[Cell]:
    return [
        Cell(backend, profile, batch_size, concurrency)
        for backend in settings.backends
        for profile in settings.profiles
        for batch_size in settings.batch_sizes
        for concurrency in settings.concurrency
    ]


def write_results(
    run_dir: Path, environment: dict, settings: SweepSettings, results: list[CellResult], saturation: list[Saturation]
) -> None:
    rows = [asdict(result) for result in results]
    with (run_dir / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(CellResult.__dataclass_fields__))
        writer.writeheader()
        writer.writerows(rows)
    document = {
        "environment": environment,
        "sweep": json.loads(settings.model_dump_json()),
        "cells": rows,
        "saturation": [asdict(search) for search in saturation],
    }
    (run_dir / "results.json").write_text(json.dumps(document, indent=2))


def format_table(results: list[CellResult]) -> str:
    header = (
        f"{'backend':<14}{'profile':<9}{'batch':>6}{'users':>6}{'req/s':>9}{'inputs/s':>10}{'tokens/s':>10}"
        f"{'p50':>7}{'p95':>7}{'p99':>7}{'max':>7}{'queue':>7}{'infer':>7}{'wkr':>5}{'http':>5}{'rest':>5}{'fails':>6}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        ms = lambda value: f"{value:7.0f}" if value is not None else f"{'-':>7}"  # noqa: E731
        cores = lambda value: f"{value:5.2f}" if value is not None else f"{'-':>5}"  # noqa: E731
        flag = " (Locust CPU-bound)" if r.locust_cpu_bound else ""
        lines.append(
            f"{r.backend:<14}{r.profile:<9}{r.batch_size:>6}{r.concurrency:>6}{r.requests_per_s:>9.1f}"
            f"{r.inputs_per_s:>10.1f}{r.tokens_per_s:>10.0f}{ms(r.p50_ms)}{ms(r.p95_ms)}{ms(r.p99_ms)}{ms(r.max_ms)}"
            f"{ms(r.queue_wait_ms)}{ms(r.inference_ms)}{cores(r.worker_cores)}{cores(r.http_cores)}"
            f"{cores(r.other_cores)}{r.failures:>6}{flag}"
        )
    return "\n".join(lines)


def run_sweep(settings: SweepSettings) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    run_dir = settings.output / stamp
    run_dir.mkdir(parents=True, exist_ok=True)
    server = None
    if settings.host is None:
        print(f"starting embedserve with {', '.join(settings.backends)} on {settings.model} ...", file=sys.stderr)
        server = ServerProcess(
            "--backends",
            ",".join(settings.backends),
            "--model",
            settings.model,
            "--log-level",
            "warning",
            log_path=run_dir / "server.log",
        ).wait_ready()
    server_url = (settings.host or server.url).rstrip("/")
    try:
        environment = describe_environment(server_url)
        results: list[CellResult] = []
        saturation: list[Saturation] = []
        save = lambda: write_results(run_dir, environment, settings, results, saturation)  # noqa: E731
        if settings.find_max:
            per_search = len(saturation_levels(settings))
            cells = len(settings.backends) * len(settings.profiles) * len(settings.batch_sizes) * per_search
            runner = CellRunner(settings, server_url, run_dir, cells)

            def on_result(result: CellResult) -> None:
                results.append(result)
                save()

            saturation = find_max(runner.run, settings, on_result)
        else:
            cells = grid(settings)
            runner = CellRunner(settings, server_url, run_dir, len(cells))
            for cell in cells:
                results.append(runner.run(cell))
                save()
        save()
    finally:
        if server:
            server.stop()
    print("\n\n" + format_table(results))
    print(
        "(ms: latency, the server's mean queue wait and batch inference; wkr, http, rest: cores the loaded "
        "backend's worker, the HTTP front and the rest of the server used)"
    )
    for search in saturation:
        best = (
            f"{search.best_inputs_per_s:.1f} inputs/s at {search.best_concurrency} users "
            f"(p99 {search.best_p99_ms:.0f} ms)"
            if search.best_concurrency
            else "no load level held the SLO"
        )
        print(
            f"max under p99 <= {search.slo_p99_ms:g} ms: {search.backend} {search.profile} batch {search.batch_size}: "
            f"{best}; stopped: {search.stopped_because}"
        )
    if any(r.locust_cpu_bound for r in results):
        print(
            f"\nLocust used more than {LOCUST_CPU_LIMIT_PCT:.0f}% of a core in the flagged cells: add "
            "--locust-processes N (Locust's --processes) or run Locust on another machine."
        )
    print(f"\nresults: {run_dir}/results.csv, results.json; Locust's own CSVs in {run_dir}/locust/")
    return run_dir
