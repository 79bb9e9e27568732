"""`embedserve bench`'s served half: the same backends behind a real server, measured from outside.

One server holds every served backend; one backend at a time is under load, so the others' idle cost is in the
figure too. Measured: the server's CPU while idle, throughput at saturation for requests of 32 short texts and of
one short text (closed loop, `loadtest/client/http_load.py`) against the same backend in-process (batch 32, and the best
batch for single texts), taken in turns, three rounds each, so that a drifting machine biases neither; where a
ratio below 1 comes from (the forward passes' time per input and their share of the time, served and in-process:
the server's /metrics and the engine's own figures); the cores each process role used meanwhile, and memory (the
whole process tree, each worker's RSS at its peak and once the load stops). An optional soak (the soak package's
traffic, checks and memory sampler) runs mixed-length load on every backend at half the capacity measured here, then
an overload burst at twice it, and reports how each worker's RSS drifted and came back.
"""

from __future__ import annotations

import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from corpus.texts import texts
from loadtest.bench.in_process import InProcessProbe
from loadtest.client.checks import embeddings_failure
from loadtest.client.http_load import LoadResult, closed_loop
from loadtest.client.latency import percentile
from loadtest.probe.environment import server_state
from loadtest.probe.launcher import ServerProcess
from loadtest.probe.memory import MemoryDrift, MemorySampler, rss_by_process
from loadtest.probe.metrics_scrape import MetricsSnapshot
from loadtest.probe.process_tree import ServerTree, cores_by_role, memory_mib
from loadtest.settings import BenchSettings, SoakSettings
from loadtest.soak.report import SoakReport
from loadtest.soak.run import soak as soak_phase
from loadtest.soak.traffic import Target


@dataclass(frozen=True)
class LoadShape:
    label: str
    batch_size: int
    concurrency: int


# Saturation: enough requests in flight that the worker never waits for the next one; for single texts, enough
# that a dynamic batch can fill --max-batch-requests (32) while the previous one runs.
LOADS = (LoadShape("32 short texts", 32, 4), LoadShape("1 short text", 1, 64))
# Served and in-process measurements alternate this many times per load.
ROUNDS = 3
# The soak's steady phase lasts long enough to expect this many requests after its warm-up.
MIN_SOAK_REQUESTS = 8
# After the soak's burst, the workers rest this long (at most the soak's own length) before their RSS is read.
REST_SECONDS = 10.0


@dataclass
class ServedLoad:
    backend: str
    load: LoadShape
    inputs_per_s: float
    p50_ms: float
    p99_ms: float
    failures: dict[str, int]
    cores: dict[str, float]  # by process role: main, http, worker, other
    in_process_batch: int = 0
    in_process_inputs_per_s: float = 0.0  # the mean of the rounds taken in turns with the served ones
    # Each served round over the in-process round taken just before it: their spread is the machine's drift, which
    # a single ratio hides.
    round_ratios: list[float] = field(default_factory=list)
    # Where a ratio below 1 comes from: the worker's forward passes per input, served over in-process (above 1: they
    # ran slower, sharing the cores with the HTTP front and the client); and the share of the time spent in forward
    # passes, served and in-process (the rest: per-request work in the worker, or waiting for requests).
    forward_slowdown: float | None = None
    forward_share: float = 0.0
    in_process_forward_share: float = 0.0

    @property
    def ratio(self) -> float | None:
        return self.inputs_per_s / self.in_process_inputs_per_s if self.in_process_inputs_per_s else None


@dataclass
class WorkerMemory:
    backend: str
    peak_mib: float = 0.0
    steady_mib: float = 0.0


@dataclass
class SoakResult:
    """The bench's soak: the soak package's steady phase at half the capacity measured above, then a burst at twice
    it, and each worker's RSS once at rest after that."""

    steady: SoakReport
    burst: SoakReport
    rest_seconds: float
    rss_after_burst: dict[str, float]  # MiB per backend

    @property
    def drift(self) -> dict[str, MemoryDrift]:
        """Each backend's worker over the steady phase (medians after the warm-up and over the last window)."""
        rows = {row.process: row for row in self.steady.memory}
        return {backend: rows[f"worker {backend}"] for backend in self.steady.backends if f"worker {backend}" in rows}


@dataclass
class ServedReport:
    backends: list[str]
    idle_seconds: float = 0.0
    idle_cores: dict[str, float] = field(default_factory=dict)
    loaded_memory: tuple[float, float] = (0.0, 0.0)  # whole tree: (RSS, PSS) MiB, idle after loading
    after_load_memory: tuple[float, float] = (0.0, 0.0)  # whole tree after every load
    loads: list[ServedLoad] = field(default_factory=list)
    workers: dict[str, WorkerMemory] = field(default_factory=dict)
    soak: SoakResult | None = None
    error: str = ""


def request_bodies(model: str, batch_size: int, pool: list[str]) -> list[bytes]:
    """Pre-encoded bodies, base64 as the OpenAI SDK asks, so that neither side spends its CPU on float text."""
    starts = range(0, len(pool) - batch_size + 1, batch_size) if batch_size > 1 else range(len(pool))
    return [
        orjson.dumps({"model": model, "input": pool[start : start + batch_size], "encoding_format": "base64"})
        for start in starts
    ]


def embeddings_check(dimensions: int):
    """The Locust checks (loadtest/client/checks.py) for http_load: one base64 embedding of `dimensions` per input."""

    def check(request: bytes, status: int, body: bytes) -> str | None:
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            answer = None
        return embeddings_failure(status, answer, len(orjson.loads(request)["input"]), dimensions, "base64")

    return check


def measure_served(settings: BenchSettings, best_batch: dict[str, int]) -> ServedReport:
    """`best_batch`: per backend, the batch size of its best in-process figure on short texts."""
    backends = settings.served_backends
    report = ServedReport(backends)
    log_path = Path(tempfile.gettempdir()) / "embedserve-bench-server.log"
    print(f"served: starting a server with {', '.join(backends)} (log: {log_path}) ...", file=sys.stderr, flush=True)
    try:
        server = ServerProcess(
            "--backends", ",".join(backends), "--model", settings.model, "--log-level", "warning", log_path=log_path
        ).wait_ready()
    except RuntimeError as exc:
        report.error = str(exc).splitlines()[0]
        return report
    try:
        tree = ServerTree(server.process.pid, server.port)
        check = embeddings_check(next(iter(server_state(server.url)["backends"].values()))["dimensions"])
        time.sleep(3)  # let start-up settle: the last worker's first samples, the HTTP front's first scrape
        report.loaded_memory = memory_mib(tree.sample())
        print(f"served: idle for {settings.idle_seconds:g} s ...", file=sys.stderr, flush=True)
        before = tree.sample()
        time.sleep(settings.idle_seconds)
        report.idle_seconds = settings.idle_seconds
        report.idle_cores = cores_by_role(before, tree.sample(), settings.idle_seconds)
        pool = texts("short", 512, seed=1)
        with MemorySampler(server.url, every=0.5) as memory:
            for backend in backends:
                probe = InProcessProbe(settings, backend)
                try:
                    for load in LOADS:
                        print(f"served: {backend}, {load.label} x {load.concurrency} ...", file=sys.stderr, flush=True)
                        batch = load.batch_size if load.batch_size > 1 else best_batch.get(backend, 32)
                        measured = measure_load(server, tree, probe, settings, backend, load, batch, pool, check)
                        report.loads.append(measured)
                finally:
                    probe.close()
            long_batches(server, settings.model, backends, check)
        time.sleep(3)  # the load is over: what each worker keeps
        steady, peaks = rss_by_process(MetricsSnapshot.scrape(server.url)), memory.peaks()
        report.workers = {
            b: WorkerMemory(b, peaks.get(f"worker {b}", 0.0), steady.get(f"worker {b}", 0.0)) for b in backends
        }
        report.after_load_memory = memory_mib(tree.sample())
        if settings.soak_seconds:
            report.soak = soak(server, settings, soak_capacity(report.loads, pool))
    finally:
        server.stop()
    return report


def long_batches(server: ServerProcess, model: str, backends: list[str], check) -> None:
    """Three requests of 32 long (256-token) texts per backend: the largest passes, whose memory must come back."""
    bodies = request_bodies(model, 32, texts("long", 96, seed=2))
    for backend in backends:
        print(f"served: {backend}, 3 requests of 32 long texts ...", file=sys.stderr, flush=True)
        for body in bodies:
            request = urllib.request.Request(
                f"{server.url}/{backend}/v1/embeddings", body, {"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=300) as response:
                if reason := check(body, response.status, response.read()):
                    raise RuntimeError(f"{backend}: a long batch failed: {reason}")


def measure_load(
    server: ServerProcess,
    tree: ServerTree,
    probe: InProcessProbe,
    settings: BenchSettings,
    backend: str,
    load: LoadShape,
    in_process_batch: int,
    pool: list[str],
    check,
) -> ServedLoad:
    path = f"/{backend}/v1/embeddings"
    bodies = request_bodies(settings.model, load.batch_size, pool)
    closed_loop(server.url, path, bodies, load.concurrency, settings.warmup_seconds, check)
    seconds = settings.served_seconds / ROUNDS
    served, in_process, cores, round_ratios = LoadResult(), [], {}, []
    forward_seconds = forward_inputs = 0.0
    for _ in range(ROUNDS):
        in_process.append(probe.measure("short", in_process_batch, seconds))
        metrics_before = MetricsSnapshot.scrape(server.url)
        before = tree.sample()
        result = closed_loop(server.url, path, bodies, load.concurrency, seconds, check)
        for role, used in cores_by_role(before, tree.sample(), result.seconds).items():
            cores[role] = cores.get(role, 0.0) + used / ROUNDS
        metrics = MetricsSnapshot.scrape(server.url)
        forward_seconds += metrics.since(metrics_before, "embedserve_forward_duration_seconds_sum", backend=backend)
        forward_inputs += metrics.since(metrics_before, "embedserve_inputs_total", backend=backend)
        served.add(result)
        round_ratios.append(result.passed * load.batch_size / result.seconds / in_process[-1].inputs_per_s)
    measured = ServedLoad(
        backend,
        load,
        served.passed * load.batch_size / served.seconds,
        *latency_ms(served, 50, 99),
        served.failures,
        cores,
        in_process_batch,
        sum(cell.inputs_per_s for cell in in_process) / ROUNDS,
        round_ratios,
    )
    in_process_forward = sum(cell.forward_seconds for cell in in_process)
    if forward_inputs and in_process_forward:
        per_input_in_process = in_process_forward / sum(cell.inputs for cell in in_process)
        measured.forward_slowdown = forward_seconds / forward_inputs / per_input_in_process
    measured.forward_share = forward_seconds / served.seconds
    measured.in_process_forward_share = in_process_forward / sum(cell.seconds for cell in in_process)
    return measured


def latency_ms(result: LoadResult, *percentiles: float) -> list[float]:
    """Nearest-rank percentiles of the passed requests' latencies, in ms (0 when none passed)."""
    ordered = sorted(result.latencies)
    return [1000 * percentile(ordered, pct) if ordered else 0.0 for pct in percentiles]


def soak_capacity(loads: list[ServedLoad], short_texts: list[str]) -> dict[str, float]:
    """Each backend's capacity as characters per second: its served inputs/s of 32 short texts, in their mean length.
    Characters stand for tokens, as admission's own estimate takes them."""
    mean_chars = sum(map(len, short_texts)) / len(short_texts)
    return {load.backend: load.inputs_per_s * mean_chars for load in loads if load.load == LOADS[0]}


def soak(server: ServerProcess, settings: BenchSettings, capacity: dict[str, float]) -> SoakResult:
    """The soak package's mixed-length traffic on every backend at once (the requests go to the backends in turn), at
    half the slowest backend's capacity, then a burst at twice that capacity, then a rest."""
    backends = settings.served_backends
    seconds = settings.soak_seconds
    steady = SoakSettings(
        duration=seconds,
        warmup=min(60.0, seconds / 5),
        bad_share=0.0,
        sample_seconds=0.5,
    )
    target = Target.take(steady, server.url, backends, settings.model)
    request_chars = (steady.max_inputs + 1) / 2 * sum(map(len, target.pool)) / len(target.pool)
    full = len(backends) * min(capacity.get(backend, 0.0) for backend in backends) / request_chars or 1.0
    # Long enough for its checks to see something where the capacity is low (a slow or busy machine).
    steady_seconds = max(seconds, steady.warmup + MIN_SOAK_REQUESTS / (full / 2))
    steady = steady.model_copy(update={"rate": full / 2, "duration": steady_seconds})
    print(f"soak: {steady_seconds:g} s at {full / 2:.2f} requests/s on {', '.join(backends)} ...", file=sys.stderr)
    steady_report = soak_phase(steady, target)
    print("soak: overload burst, then a rest ...", file=sys.stderr, flush=True)
    burst = steady.model_copy(update={"rate": 2 * full, "duration": min(20.0, seconds / 3), "warmup": 0.0})
    burst_report = soak_phase(burst, target)
    rest = min(REST_SECONDS, seconds)
    time.sleep(rest)
    idle = rss_by_process(MetricsSnapshot.scrape(server.url))
    return SoakResult(steady_report, burst_report, rest, {b: idle.get(f"worker {b}", 0.0) for b in backends})


def format_served(report: ServedReport) -> str:
    if report.error:
        return f"served: the server did not start: {report.error}"
    idle = report.idle_cores
    lines = [
        f"served: one server with {', '.join(report.backends)}; one backend under load at a time; client: "
        "loadtest/client/http_load.py (base64 answers, every one checked); in-process figure taken in turns with "
        f"the served one ({ROUNDS} rounds each)",
        f"idle CPU over {report.idle_seconds:g} s: {100 * sum(idle.values()):.2f}% of one core in all ("
        + ", ".join(f"{role} {100 * cores:.2f}%" for role, cores in sorted(idle.items()))
        + ")",
        f"memory, whole process tree: loaded {report.loaded_memory[0]:.0f} MiB RSS / {report.loaded_memory[1]:.0f} "
        f"MiB PSS; after the loads and 3 requests of 32 long texts per backend {report.after_load_memory[0]:.0f} / "
        f"{report.after_load_memory[1]:.0f}",
        "",
        f"{'backend':<15}{'load':<24}{'inputs/s':>9}{'in-process':>17}{'ratio':>7}{'rounds':>11}{'fwd x':>7}"
        f"{'in fwd':>11}{'p50 ms':>8}{'p99 ms':>8}{'worker':>8}{'http':>6}{'other':>7}{'fails':>6}",
    ]
    for load in report.loads:
        compared = f"{load.in_process_inputs_per_s:.1f} (b{load.in_process_batch})"
        ratio = f"{load.ratio:.2f}" if load.ratio else "-"
        rounds = f"{min(load.round_ratios):.2f}-{max(load.round_ratios):.2f}" if load.round_ratios else "-"
        slowdown = f"{load.forward_slowdown:.2f}" if load.forward_slowdown else "-"
        shares = f"{load.forward_share:.2f}/{load.in_process_forward_share:.2f}"
        cores = load.cores
        other = cores.get("main", 0) + cores.get("other", 0)
        lines.append(
            f"{load.backend:<15}{f'{load.load.label} x {load.load.concurrency}':<24}{load.inputs_per_s:>9.1f}"
            f"{compared:>17}{ratio:>7}{rounds:>11}{slowdown:>7}{shares:>11}{load.p50_ms:>8.1f}{load.p99_ms:>8.1f}"
            f"{cores.get('worker', 0):>8.2f}"
            f"{cores.get('http', 0):>6.2f}{other:>7.2f}{sum(load.failures.values()):>6}"
        )
    lines += [
        "(rounds: the lowest and highest ratio of one served round to the in-process round just before it; fwd x: "
        "the forward passes' time per input, served over in-process (above 1: they ran slower served, sharing the "
        "cores with the HTTP front and the client); in fwd: the share of the time spent in forward passes, served / "
        "in-process (the rest: the worker's per-request work, or waiting for requests); worker, http, other: cores "
        "each role used under that load)",
        "",
    ]
    lines.append(f"{'backend':<15}{'worker RSS MiB: peak':>22}{'steady':>8}")
    for memory in report.workers.values():
        lines.append(f"{memory.backend:<15}{memory.peak_mib:>22.0f}{memory.steady_mib:>8.0f}")
    if report.soak:
        lines += ["", *format_soak(report.soak)]
    return "\n".join(lines)


def describe_phase(report: SoakReport) -> str:
    # A 503 server_overloaded is the server refusing work it could not do in time, not a wrong answer.
    reasons = "; ".join(f"{reason} (x{count})" for reason, count in report.failures.items())
    return f"{report.requests} requests, {report.failed} failed{': ' + reasons if reasons else ''}, {report.shed} shed"


def format_soak(soak: SoakResult) -> list[str]:
    steady, burst = soak.steady, soak.burst
    lines = [
        f"soak: {steady.seconds:g} s of requests of 1-16 texts of mixed lengths on every backend at "
        f"{steady.rate:.2f}/s ({describe_phase(steady)}), then an overload burst at {burst.rate:.2f}/s "
        f"({describe_phase(burst)}) and {soak.rest_seconds:g} s of rest",
        f"worker RSS, MiB: settled and end are medians over {steady.memory_window:g} s after the warm-up and over "
        "the last as long; after the burst, one sample at rest",
        f"{'backend':<15}{'settled':>10}{'end':>8}{'drift':>8}{'after burst':>13}{'vs end':>8}",
    ]
    for backend, row in soak.drift.items():
        burst_rss = soak.rss_after_burst.get(backend, 0.0)
        lines.append(
            f"{backend:<15}{row.settled_mb:>10.0f}{row.end_mb:>8.0f}{row.drift_pct:>7.1f}%{burst_rss:>13.0f}"
            f"{100 * (burst_rss / row.end_mb - 1):>7.1f}%"
        )
    return lines
