"""`embedserve sweep`: backend x profile x batch size x load, one cell at a time (runner.py): closed loop through
headless Locust, open loop through the asyncio generator; or the saturation search (saturation.py). Results are
written after every cell, so an interrupted sweep keeps what it measured.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from loadtest.probe import fingerprint
from loadtest.probe.discovery import discover
from loadtest.probe.environment import describe_environment
from loadtest.probe.fingerprint import served_fingerprints
from loadtest.probe.launcher import start_server_for_load
from loadtest.report.tables import PEER_HEADER, peer_rows
from loadtest.settings import SweepSettings
from loadtest.sweep.cells import Cell, CellResult
from loadtest.sweep.open_cell import generator_capacity
from loadtest.sweep.runner import CLIENT_CPU_LIMIT_PCT, CellRunner
from loadtest.sweep.saturation import BISECTIONS, Saturation, find_max, saturation_levels
from loadtest.sweep.targets import backend_target, parse_peer, peer_target


def closed_loop_wanted(settings: SweepSettings) -> bool:
    """--rates alone sweeps open loop only; --concurrency given as well sweeps both."""
    return not settings.rates or "concurrency" in settings.model_fields_set


def grid(settings: SweepSettings, peers: list[str] = ()) -> list[Cell]:
    """Every shape (profile x batch size x load) on every backend and peer, one shape after another; with --rounds,
    each shape's backends and peers in turn in the opposite order every other round (ours, peers, peers, ours, ...),
    so that a machine whose speed drifts favours none of them."""
    loads = [(users, None) for users in settings.concurrency] if closed_loop_wanted(settings) else []
    loads += [(0, rate) for rate in settings.rates]
    targets = [*settings.backends, *peers]
    cells = []
    for profile in settings.profiles:
        for batch_size in settings.batch_sizes:
            for users, rate in loads:
                for round_ in range(settings.rounds):
                    order = targets if round_ % 2 == 0 else targets[::-1]
                    cells += [Cell(name, profile, batch_size, users, rate, round_) for name in order]
    return cells


def search_cells(settings: SweepSettings) -> int:
    """How many cells --find-max may run at most (for the time-left estimate)."""
    per_search = (
        len(saturation_levels(settings))
        if not settings.rates
        else len([r for r in (settings.rates[0] * 2**n for n in range(32)) if r <= settings.max_rate]) + BISECTIONS
    )
    return (
        (len(settings.backends) + len(settings.peer)) * len(settings.profiles) * len(settings.batch_sizes) * per_search
    )


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


def ms(value: float | None) -> str:
    if value is None:
        return f"{'-':>7}"
    return f"{value:7.1f}" if value < 100 else f"{value:7.0f}"


def cores(value: float | None) -> str:
    return f"{value:5.2f}" if value is not None else f"{'-':>5}"


def format_table(results: list[CellResult]) -> str:
    header = (
        f"{'backend':<14}{'profile':<9}{'batch':>6}{'load':>9}{'req/s':>8}{'good/s':>8}{'inputs/s':>9}"
        f"{'tokens/s':>9}{'p50':>7}{'p99':>7}{'p99.9':>7}{'max':>7}{'queue':>7}{'infer':>7}{'wkr':>5}{'http':>5}"
        f"{'rest':>5}{'shed':>6}{'fails':>6}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        load = f"{r.rate:g}/s" if r.load == "open" else f"{r.concurrency}u"
        goodput = f"{r.goodput_rate:8.1f}" if r.goodput_rate is not None else f"{'-':>8}"
        flags = []
        if r.client_cpu_bound:
            flags.append("load generator CPU-bound")
        if r.generator_behind:
            flags.append(f"generator {r.generator_behind_pct:.1f}% behind schedule")
        lines.append(
            f"{r.backend:<14}{r.profile:<9}{r.batch_size:>6}{load:>9}{r.requests_per_s:>8.1f}{goodput}"
            f"{r.inputs_per_s:>9.1f}{r.tokens_per_s:>9.0f}{ms(r.p50_ms)}{ms(r.p99_ms)}{ms(r.p999_ms)}{ms(r.max_ms)}"
            f"{ms(r.queue_wait_ms)}{ms(r.inference_ms)}{cores(r.worker_cores)}{cores(r.http_cores)}"
            f"{cores(r.other_cores)}{r.shed:>6}{r.failures:>6}" + (f" ({'; '.join(flags)})" if flags else "")
        )
    return "\n".join(lines)


def format_peer_table(results: list[CellResult], vectors: dict) -> str:
    rows = peer_rows([asdict(result) for result in results], vectors)
    table = [PEER_HEADER, *(row for row, _ in rows)]
    widths = [max(len(row[column]) for row in table) for column in range(len(PEER_HEADER))]

    def line(row: list[str]) -> str:  # the first five columns name the cell, the rest are figures
        return "  ".join(v.ljust(w) if i < 5 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths, strict=True)))

    lines = ["against peer servers (ours / peer inputs/s: the median of the rounds' ratios, and their range)"]
    lines += [line(PEER_HEADER)] + [
        line(row) + ("  (within the rounds' drift)" if drift else "") for row, drift in rows
    ]
    return "\n".join(lines)


def run_sweep(settings: SweepSettings, cells: list[Cell] | None = None) -> Path:
    """Runs `cells` (default: the settings' grid) or the saturation search; returns the run's directory."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    run_dir = settings.output / stamp
    run_dir.mkdir(parents=True, exist_ok=True)
    server = None
    if settings.host is None:
        server = start_server_for_load(settings.backends, settings.model, run_dir / "server.log")
    server_url = (settings.host or server.url).rstrip("/")
    try:
        environment = describe_environment(server_url)
        if settings.generator_capacity:
            best, tried = generator_capacity()
            environment["generator_capacity_per_s"] = best
            print(
                f"one open-loop generator process holds {best:g} req/s here (tried, % behind schedule: "
                + ", ".join(f"{rate:g}: {behind:.1f}%" for rate, behind in tried)
                + ")",
                file=sys.stderr,
            )
        served = discover(server_url)
        if settings.host and "backends" not in settings.model_fields_set:
            settings = settings.model_copy(update={"backends": served.ready_backends})
        if settings.host and "model" not in settings.model_fields_set:
            settings = settings.model_copy(update={"model": served.model})
        named = dict(map(parse_peer, settings.peer))
        if clash := set(named) & set(settings.backends):
            raise ValueError(
                f"--peer names {sorted(clash)} are backends of the loaded server: name the peers otherwise"
            )
        peers = {name: peer_target(name, url, settings.model, settings.dimensions) for name, url in named.items()}
        environment["peers"] = {name: asdict(target) for name, target in peers.items()}
        targets = [backend_target(server_url, b, settings.model, served, None) for b in settings.backends]
        vectors = served_fingerprints({t.name: (t.host + t.path, t.model) for t in [*targets, *peers.values()]})
        fingerprint.save(run_dir / fingerprint.FILE, vectors)
        results: list[CellResult] = []
        saturation: list[Saturation] = []
        save = lambda: write_results(run_dir, environment, settings, results, saturation)  # noqa: E731
        if settings.find_max:
            runner = CellRunner(settings, server_url, run_dir, search_cells(settings), served, peers=peers)

            def on_result(result: CellResult) -> None:
                results.append(result)
                save()

            searched = settings.model_copy(update={"backends": [*settings.backends, *peers]})
            saturation = find_max(runner.run, searched, on_result)
        else:
            cells = grid(settings, list(peers)) if cells is None else cells
            runner = CellRunner(settings, server_url, run_dir, len(cells), served, peers=peers)
            for cell in cells:
                results.append(runner.run(cell))
                save()
        save()
    finally:
        if server:
            server.stop()
    print("\n" + format_table(results))
    print(
        "(load: users (closed loop) or arrivals per second (open loop); req/s: correct answers per second; good/s: "
        f"those within --slo-ms {settings.slo_ms:g}; ms: exact latency percentiles (open loop: from each "
        "request's due time), the server's mean queue wait and batch inference; wkr, http, rest: cores the loaded "
        "backend's worker, the HTTP front and the rest of the server used; shed: answered at once with 503 "
        "server_overloaded)"
    )
    if settings.peer:
        print("\n" + format_peer_table(results, fingerprint.load(run_dir / fingerprint.FILE)))
    for search in saturation:
        at = f"{search.best_rate:g} req/s" if search.load == "open" else f"{search.best_concurrency} users"
        best = (
            f"{search.best_inputs_per_s:.1f} inputs/s at {at} (p99 {search.best_p99_ms:.0f} ms)"
            if search.best_inputs_per_s
            else "no load level held the SLO"
        )
        print(
            f"max under p99 <= {search.slo_ms:g} ms: {search.backend} {search.profile} batch {search.batch_size}: "
            f"{best}; stopped: {search.stopped_because}"
        )
    if any(r.client_cpu_bound for r in results):
        print(
            f"\nThe load generator used more than {CLIENT_CPU_LIMIT_PCT:.0f}% of a core in the flagged cells: add "
            "--locust-processes N (closed loop), or run the load from another machine."
        )
    print(f"\nresults: {run_dir}/results.csv, results.json; Locust's own CSVs and logs in {run_dir}/locust/")
    return run_dir
