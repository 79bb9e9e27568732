"""`embedserve soak`: steady open-loop load for minutes, every answer checked, the server's memory followed.

Requests carry 1 to --max-inputs distinct texts of mixed lengths, to every backend in turn, with a share of
invalid ones (--bad-share). Before the load, each text is embedded alone on each backend: its reference vector.
During the load, each answer must hold one vector per input, in order, each as close as --min-cosine to its own
input's reference; so an answer that went to the wrong request, or vectors shuffled within one, is a failure. Each
invalid request must get its 4xx status in OpenAI's error shape. Meanwhile the server's /metrics are read every
--sample-seconds in a process of their own, for each server process's resident memory over time.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from loadtest.client.api_key import authorization
from loadtest.client.arrivals import arrival_times
from loadtest.client.http_load import SHED, Outcome, open_loop
from loadtest.client.latency import LatencySummary
from loadtest.probe.discovery import discover
from loadtest.probe.environment import describe_environment
from loadtest.probe.launcher import start_server_for_load
from loadtest.probe.memory import MemorySampler, memory_drift
from loadtest.settings import SoakSettings
from loadtest.soak.report import SoakReport, overload_lines, summary_lines, write_soak
from loadtest.soak.traffic import AnswerCheck, SoakRequest, Target, plan_requests
from server.settings import DEFAULT_MODEL


def over_time(outcomes: list[Outcome], planned: list[SoakRequest], width: float) -> list[dict]:
    """Per window of `width` seconds (by due time), of the valid requests: offered, admitted (answered, not shed) and
    shed per second, and the admitted ones' p50 and p99 latency (for the plot)."""
    windows: dict[int, list[Outcome]] = {}
    for outcome, request in zip(outcomes, planned, strict=True):
        if not request.bad:
            windows.setdefault(int(outcome.due // width), []).append(outcome)
    rows = []
    for number in sorted(windows):
        own = windows[number]
        admitted = [o.latency * 1000 for o in own if o.admitted]
        summary = LatencySummary.of(admitted)
        rows.append(
            {
                "t": (number + 0.5) * width,
                "offered_per_s": len(own) / width,
                "admitted_per_s": len(admitted) / width,
                "shed_per_s": sum(o.failure == SHED for o in own) / width,
                "p50_ms": summary.p50_ms if summary else None,
                "p99_ms": summary.p99_ms if summary else None,
            }
        )
    return rows


def soak(settings: SoakSettings, target: Target) -> SoakReport:
    url, backends = target.url, target.backends
    schedule = arrival_times(settings.rate, settings.duration, settings.arrival, settings.seed)
    planned = plan_requests(settings, backends, target.model, target.pool, len(schedule))
    print(
        f"soak: {len(schedule)} requests at {settings.rate:g}/s ({settings.arrival}) for {settings.duration:g} s ...",
        file=sys.stderr,
        flush=True,
    )
    with MemorySampler(url, settings.sample_seconds) as memory:
        outcome = open_loop(
            url,
            schedule,
            settings.duration,
            lambda index: (f"/{planned[index].backend}/v1/embeddings", planned[index].body),
            AnswerCheck(planned, target.references, settings.min_cosine),
            headers=authorization(),
        )
    samples = memory.rows
    window = max(6 * settings.sample_seconds, settings.duration / 10)
    valid = [o for o, request in zip(outcome.outcomes, planned, strict=True) if not request.bad]
    admitted = [o for o in valid if o.admitted]
    return SoakReport(
        backends=backends,
        rate=settings.rate,
        seconds=settings.duration,
        requests=len(planned),
        valid=len(valid),
        invalid=len(planned) - len(valid),
        failures=outcome.failures,
        shed=len(outcome.shed),
        latency=LatencySummary.of(o.latency * 1000 for o in admitted),
        shed_latency=LatencySummary.of(o.latency * 1000 for o in outcome.shed),
        goodput_rate=sum(1 for o in admitted if o.failure is None and o.latency * 1000 <= settings.slo_ms)
        / outcome.elapsed,
        offered_rate=outcome.offered_rate,
        admitted_rate=len(admitted) / outcome.elapsed,
        shed_rate=len(outcome.shed) / outcome.elapsed,
        achieved_rate=outcome.rate_within(),
        generator_behind_pct=outcome.behind_pct,
        memory=memory_drift(samples, settings.warmup, window),
        memory_window=window,
        samples=samples,
        windows=over_time(outcome.outcomes, planned, max(settings.duration / 30, 1.0)),
    )


@contextlib.contextmanager
def served_target(settings: SoakSettings, run_dir: Path) -> Iterator[tuple[Target, dict]]:
    """The server to soak (started here, and stopped after, when --host is not given), what is sent to it, and the
    environment it runs in."""
    server = None
    if settings.host is None:
        server = start_server_for_load(
            settings.backends or ["torch", "onnx", "openvino"], settings.model or DEFAULT_MODEL, run_dir / "server.log"
        )
    url = (settings.host or server.url).rstrip("/")
    try:
        served = discover(url)
        backends, model = settings.backends or served.ready_backends, settings.model or served.model
        yield Target.take(settings, url, backends, model), describe_environment(url)
    finally:
        if server:
            server.stop()


def new_run_dir(settings: SoakSettings, kind: str) -> Path:
    run_dir = settings.output / f"{kind}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}"
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def run_soak(settings: SoakSettings) -> tuple[SoakReport, Path]:
    run_dir = new_run_dir(settings, "soak")
    with served_target(settings, run_dir) as (target, environment):
        report = soak(settings, target)
    write_soak(report, settings, environment, run_dir)
    print("\n".join(summary_lines(report, settings)))
    print(f"\nreport: {run_dir}/report.html, soak.json, soak.png")
    return report, run_dir


# The overload scenario: a probe far past capacity (what the server then admits is its capacity), then 80% of it and
# twice it.
OVERLOAD_PHASES = (("capacity probe", None), ("80% of capacity", 0.8), ("2x capacity", 2.0))


def run_overload(settings: SoakSettings) -> tuple[list[tuple[str, SoakReport]], Path]:
    """`embedserve soak --overload`: the three phases on one server, each --duration long, each with its report."""
    run_dir = new_run_dir(settings, "overload")
    phases: list[tuple[str, SoakReport]] = []
    with served_target(settings, run_dir) as (target, environment):
        capacity = None
        for name, factor in OVERLOAD_PHASES:
            phase = settings if factor is None else settings.model_copy(update={"rate": round(factor * capacity, 2)})
            print(f"== {name}: {phase.rate:g} requests/s", file=sys.stderr, flush=True)
            report = soak(phase, target)
            phase_dir = run_dir / name.replace(" ", "-").replace("%", "pct")
            phase_dir.mkdir()
            write_soak(report, phase, environment, phase_dir)
            phases.append((name, report))
            capacity = capacity or report.admitted_rate
    lines = overload_lines(phases, settings)
    (run_dir / "overload.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nreports: {run_dir}/*/report.html; summary: {run_dir}/overload.txt")
    return phases, run_dir
