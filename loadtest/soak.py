"""`embedserve soak`: steady open-loop load for minutes, every answer checked, the server's memory followed.

Requests carry 1 to --max-inputs distinct texts of mixed lengths, to every backend in turn, with a share of
invalid ones (--bad-share). Before the load, each text is embedded alone on each backend: its reference vector.
During the load, each answer must hold one vector per input, in order, each as close as --min-cosine to its own
input's reference; so an answer that went to the wrong request, or vectors shuffled within one, is a failure. Each
invalid request must get its 4xx status in OpenAI's error shape. Meanwhile the server's /metrics are read every
--sample-seconds in a process of their own, for each server process's resident memory over time.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import multiprocessing as mp
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from loadtest.api_key import authorization
from loadtest.arrivals import arrival_times
from loadtest.checks import embeddings_failure, shed
from loadtest.corpus import texts
from loadtest.discovery import discover
from loadtest.environment import describe_environment
from loadtest.http_load import SHED, KeepAliveConnection, Outcome, open_loop
from loadtest.latency import LatencySummary
from loadtest.launcher import start_server_for_load
from loadtest.memory_drift import MemoryDrift, memory_drift
from loadtest.server_metrics import MetricsSnapshot
from loadtest.settings import SoakSettings
from server.settings import DEFAULT_MODEL

_SPAWN = mp.get_context("spawn")
RSS = "embedserve_process_resident_memory_bytes"
MB = 1024 * 1024


@dataclass(frozen=True)
class BadRequest:
    name: str
    body: bytes
    status: int


def bad_requests(model: str) -> list[BadRequest]:
    """Invalid requests a client could send, with the status the README's error table promises for each."""
    as_json = lambda document: json.dumps(document).encode()  # noqa: E731
    return [
        BadRequest("empty input list", as_json({"model": model, "input": []}), 400),
        BadRequest("empty string", as_json({"model": model, "input": ""}), 400),
        BadRequest("unknown model", as_json({"model": "no-such/model", "input": "hello"}), 404),
        BadRequest("body is not JSON", b'{"model": "x", "input": ', 400),
        BadRequest("zero dimensions", as_json({"model": model, "input": "hello", "dimensions": 0}), 400),
        BadRequest("input of the wrong type", as_json({"model": model, "input": {"text": "hello"}}), 400),
    ]


@dataclass(frozen=True)
class SoakRequest:
    backend: str
    body: bytes
    text_ids: tuple[int, ...] = ()  # the inputs, by index into the soak's texts
    bad: BadRequest | None = None


def plan_requests(
    settings: SoakSettings, backends: list[str], model: str, pool: list[str], count: int
) -> list[SoakRequest]:
    """One request per arrival, seeded: backends in turn, 1..max_inputs distinct texts of `pool`, a share of bad
    ones."""
    rng = random.Random(f"soak:{settings.seed}")
    bad = bad_requests(model)
    planned = []
    for index in range(count):
        backend = backends[index % len(backends)]
        if rng.random() < settings.bad_share:
            choice = rng.choice(bad)
            planned.append(SoakRequest(backend, choice.body, bad=choice))
            continue
        ids = tuple(rng.sample(range(len(pool)), rng.randint(1, min(settings.max_inputs, len(pool)))))
        body = {"model": model, "input": [pool[i] for i in ids]}
        planned.append(SoakRequest(backend, json.dumps(body).encode(), text_ids=ids))
    return planned


def openai_error_shape(answer: object) -> bool:
    error = answer.get("error") if isinstance(answer, dict) else None
    return (
        isinstance(error, dict)
        and isinstance(error.get("message"), str)
        and bool(error["message"])
        and isinstance(error.get("type"), str)
        and "param" in error
        and "code" in error
    )


class AnswerCheck:
    """Checks each answer against the references of its own request's inputs."""

    def __init__(self, planned: list[SoakRequest], references: dict[str, np.ndarray], min_cosine: float):
        self.planned, self.references, self.min_cosine = planned, references, min_cosine

    def __call__(self, index: int, status: int, body: bytes) -> str | None:
        request = self.planned[index]
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        if shed(status, answer):
            return SHED
        if request.bad:
            if status != request.bad.status:
                return f"{request.bad.name}: HTTP {status}, expected {request.bad.status}"
            if not openai_error_shape(answer):
                return f"{request.bad.name}: the error is not in OpenAI's shape"
            return None
        expected = self.references[request.backend][list(request.text_ids)]
        failure = embeddings_failure(status, answer, len(request.text_ids), expected.shape[1], "float")
        if failure:
            return failure
        vectors = np.asarray([item["embedding"] for item in answer["data"]], dtype=np.float32)
        cosines = (vectors * expected).sum(axis=1) / (
            np.linalg.norm(vectors, axis=1) * np.linalg.norm(expected, axis=1) + 1e-12
        )
        if cosines.min() < self.min_cosine:
            return "a vector is not its own input's: answers mixed up between or within requests"
        return None


def take_references(url: str, backends: list[str], model: str, pool: list[str]) -> dict[str, np.ndarray]:
    """Each text alone on each backend, one request per input: the vectors every later answer must match."""

    async def one_backend(backend: str) -> np.ndarray:
        connection = await KeepAliveConnection.open(url)
        try:
            vectors = []
            for text in pool:
                body = json.dumps({"model": model, "input": [text]}).encode()
                status, answer = await connection.post(f"/{backend}/v1/embeddings", body)
                if status != 200:
                    raise RuntimeError(f"reference of {backend} failed: HTTP {status} {answer[:300]!r}")
                vectors.append(json.loads(answer)["data"][0]["embedding"])
            return np.asarray(vectors, dtype=np.float32)
        finally:
            connection.close()

    async def every_backend() -> list[np.ndarray]:
        return await asyncio.gather(*(one_backend(backend) for backend in backends))

    return dict(zip(backends, asyncio.run(every_backend()), strict=True))


def sample_memory(url: str, every: float, stop, samples) -> None:
    """A child process: each server process role's resident memory, every `every` seconds, until `stop` is set."""
    started = time.monotonic()
    rows = []
    while not stop.wait(every if rows else 0):
        try:
            snapshot = MetricsSnapshot.scrape(url, timeout=5)
        except OSError:
            continue
        row = {"t": round(time.monotonic() - started, 2)}
        for (name, labels), value in snapshot.samples.items():
            if name == RSS:
                labels = dict(labels)
                key = labels["role"] + (f" {labels['backend']}" if labels.get("backend") else "")
                row[key] = row.get(key, 0.0) + value / MB
        rows.append(row)
    samples.send(rows)


@dataclass
class SoakReport:
    backends: list[str]
    rate: float
    seconds: float
    requests: int
    valid: int
    invalid: int
    failures: dict[str, int]
    shed: int
    latency: LatencySummary | None  # of the valid requests admitted (not shed)
    shed_latency: LatencySummary | None  # how fast the shed ones got their 503
    goodput_rate: float
    offered_rate: float
    admitted_rate: float  # valid requests answered, not shed, per second
    shed_rate: float
    achieved_rate: float
    generator_behind_pct: float
    memory: list[MemoryDrift]
    samples: list[dict] = field(default_factory=list)
    windows: list[dict] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())


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


@dataclass
class Target:
    """What a soak sends and checks against: the server, its backends and model, the texts and their references."""

    url: str
    backends: list[str]
    model: str
    pool: list[str]
    references: dict[str, np.ndarray]

    @classmethod
    def take(cls, settings: SoakSettings, url: str, backends: list[str], model: str) -> Target:
        pool = texts(settings.profile, settings.texts, seed=settings.seed)
        print(f"references: {len(pool)} texts, each alone, on {', '.join(backends)} ...", file=sys.stderr, flush=True)
        return cls(url, backends, model, pool, take_references(url, backends, model, pool))


def soak(settings: SoakSettings, target: Target) -> SoakReport:
    url, backends = target.url, target.backends
    schedule = arrival_times(settings.rate, settings.duration, settings.arrival, settings.seed)
    planned = plan_requests(settings, backends, target.model, target.pool, len(schedule))
    print(
        f"soak: {len(schedule)} requests at {settings.rate:g}/s ({settings.arrival}) for {settings.duration:g} s ...",
        file=sys.stderr,
        flush=True,
    )
    stop = _SPAWN.Event()
    samples_in, samples_out = _SPAWN.Pipe(duplex=False)
    sampler = _SPAWN.Process(target=sample_memory, args=(url, settings.sample_seconds, stop, samples_out), daemon=True)
    sampler.start()
    try:
        outcome = open_loop(
            url,
            schedule,
            settings.duration,
            lambda index: (f"/{planned[index].backend}/v1/embeddings", planned[index].body),
            AnswerCheck(planned, target.references, settings.min_cosine),
            headers=authorization(),
        )
    finally:
        stop.set()
        samples = samples_in.recv() if samples_in.poll(30) else []
        sampler.join(10)
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
        memory=memory_drift(samples, settings.warmup, window=max(6 * settings.sample_seconds, settings.duration / 10)),
        samples=samples,
        windows=over_time(outcome.outcomes, planned, max(settings.duration / 30, 1.0)),
    )


def summary_lines(report: SoakReport, settings: SoakSettings) -> list[str]:
    lines = [
        f"{report.requests} requests ({report.valid} valid, {report.invalid} invalid on purpose): "
        f"{report.offered_rate:.2f}/s offered ({settings.arrival} at {report.rate:g}/s), {report.achieved_rate:.2f}/s "
        f"answered right, valid ones admitted {report.admitted_rate:.2f}/s, shed {report.shed} "
        f"({report.shed_rate:.2f}/s); goodput {report.goodput_rate:.2f}/s within "
        f"{settings.slo_ms:g} ms; generator at worst {report.generator_behind_pct:.2f}% behind",
        f"failures: {report.failed}"
        + "".join(f"\n  {count:>6}  {reason}" for reason, count in sorted(report.failures.items())),
    ]
    for name, latency in (("admitted valid requests", report.latency), ("shed requests' 503", report.shed_latency)):
        if latency:
            lines.append(
                f"latency of {name} (ms, from their due time): p50 {latency.p50_ms:.1f}  p90 {latency.p90_ms:.1f}"
                f"  p99 {latency.p99_ms:.1f}  p99.9 {latency.p999_ms:.1f}  max {latency.max_ms:.1f}"
            )
    lines.append(
        "resident memory (MB; settled: median of the window after the warm-up, end: of the last window; drift "
        "between them):"
    )
    lines.append(f"  {'process':<20}{'first':>9}{'settled':>9}{'end':>9}{'last':>9}{'max':>9}{'drift':>9}")
    for row in report.memory:
        lines.append(
            f"  {row.process:<20}{row.first_mb:>9.0f}{row.settled_mb:>9.0f}{row.end_mb:>9.0f}{row.last_mb:>9.0f}"
            f"{row.max_mb:>9.0f}{row.drift_pct:>8.1f}%"
        )
    return lines


def plot_soak(report: SoakReport, path: Path) -> Path:
    from loadtest.report import _figure, _save

    fig, (memory, latency, rates) = _figure(3, "Soak: memory, latency and load over time")
    for key in [row.process for row in report.memory if row.process != "server tree"]:
        memory.plot([s["t"] for s in report.samples], [s.get(key, 0) for s in report.samples], label=key)
    memory.set(xlabel="seconds", ylabel="resident memory (MB)", title="per server process")
    memory.grid(alpha=0.3)
    memory.legend(fontsize=7)
    windows = [w for w in report.windows if w["p99_ms"] is not None]
    latency.plot([w["t"] for w in windows], [w["p99_ms"] for w in windows], marker="o", label="p99")
    latency.plot([w["t"] for w in windows], [w["p50_ms"] for w in windows], linestyle="--", label="p50")
    latency.set(xlabel="seconds", ylabel="latency (ms)", title="admitted valid requests, from their due time")
    latency.grid(alpha=0.3)
    latency.legend()
    for key, label in (("offered_per_s", "offered"), ("admitted_per_s", "admitted"), ("shed_per_s", "shed (503)")):
        rates.plot([w["t"] for w in report.windows], [w[key] for w in report.windows], label=label)
    rates.set(xlabel="seconds", ylabel="valid requests per second", title="offered, admitted, shed")
    rates.grid(alpha=0.3)
    rates.legend()
    return _save(fig, path)


def write_soak(report: SoakReport, settings: SoakSettings, environment: dict, run_dir: Path) -> Path:
    from loadtest.report import STYLE, _image

    document = {
        "environment": environment,
        "soak": json.loads(settings.model_dump_json()),
        **{key: value for key, value in asdict(report).items() if key not in ("latency", "shed_latency", "memory")},
        "latency": asdict(report.latency) if report.latency else None,
        "shed_latency": asdict(report.shed_latency) if report.shed_latency else None,
        "memory": [{**asdict(row), "drift_pct": row.drift_pct} for row in report.memory],
    }
    (run_dir / "soak.json").write_text(json.dumps(document, indent=2))
    plot = plot_soak(report, run_dir / "soak.png")
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>embedserve soak {html.escape(run_dir.name)}"
        f"</title><style>{STYLE}</style></head><body><h1>embedserve soak {html.escape(run_dir.name)}</h1>"
        f"<pre>{html.escape(chr(10).join(summary_lines(report, settings)))}</pre>{_image(plot)}</body></html>"
    )
    (run_dir / "report.html").write_text(page)
    return run_dir


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


def overload_lines(phases: list[tuple[str, SoakReport]], settings: SoakSettings) -> list[str]:
    capacity = phases[0][1].admitted_rate
    ms = lambda summary, name: f"{getattr(summary, name):.0f}" if summary else "-"  # noqa: E731
    lines = [
        f"capacity (valid requests admitted per second by the probe at {settings.rate:g}/s): {capacity:.2f}",
        f"{'phase':<18}{'offered':>9}{'admitted':>9}{'shed':>7}{'failed':>7}{'adm p50':>9}{'adm p99':>9}"
        f"{'shed p99':>9}{'goodput':>9}{'of cap.':>8}{'tree drift':>11}",
    ]
    for name, report in phases:
        tree = next((row for row in report.memory if row.process == "server tree"), None)
        lines.append(
            f"{name:<18}{report.offered_rate:>9.2f}{report.admitted_rate:>9.2f}{report.shed_rate:>7.2f}"
            f"{report.failed:>7}{ms(report.latency, 'p50_ms'):>9}{ms(report.latency, 'p99_ms'):>9}"
            f"{ms(report.shed_latency, 'p99_ms'):>9}{report.goodput_rate:>9.2f}"
            f"{report.goodput_rate / capacity if capacity else 0:>8.0%}"
            f"{(f'{tree.drift_pct:+.1f}%' if tree else '-'):>11}"
        )
    lines.append(
        f"(requests per second of valid requests; latencies in ms from each request's due time; goodput: admitted "
        f"answers within --slo-ms {settings.slo_ms:g}; tree drift: the server's resident memory from the end of the "
        "warm-up to the end)"
    )
    return lines
