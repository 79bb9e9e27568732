"""`embedserve bench`'s served half: the same backends behind a real server, measured from outside.

One server holds every served backend; one backend at a time is under load, so the others' idle cost is in the
figure too. Measured: the server's CPU while idle, throughput at saturation for requests of 32 short texts and of
one short text (closed loop, `loadtest/http_load.py`) against the same backend in-process (batch 32, and the best
batch for single texts), taken in turns, three rounds each, so that a drifting machine biases neither; where a
ratio below 1 comes from (the forward passes' time per input and their share of the time, served and in-process:
the server's /metrics and the engine's own figures); the cores each process role used meanwhile, and memory (the
whole process tree, each worker's RSS at its peak and once the load stops). An optional soak runs mixed-length load
on every backend, then an overload burst, and reports how each worker's RSS drifted and came back.
"""

from __future__ import annotations

import random
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from loadtest.checks import embeddings_failure
from loadtest.corpus import texts
from loadtest.environment import server_state
from loadtest.http_load import SHED, LoadResult, closed_loop
from loadtest.in_process import InProcessProbe
from loadtest.launcher import ServerProcess
from loadtest.memory_drift import MemoryDrift, memory_drift
from loadtest.process_tree import ServerTree, cores_by_role, memory_mib
from loadtest.server_metrics import MetricsSnapshot
from loadtest.settings import BenchSettings

MiB = 1024 * 1024


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
class PhaseCounts:
    """The requests of one phase of the soak, and why those that failed did (SHED among them)."""

    requests: int = 0
    failures: Counter[str] = field(default_factory=Counter)

    def add(self, outcome: LoadResult) -> None:
        self.requests += outcome.passed + outcome.failed
        self.failures.update(outcome.failures)

    def describe(self) -> str:
        # A 503 server_overloaded is the server refusing work it could not do in time, not a wrong answer.
        wrong = {reason: count for reason, count in self.failures.items() if reason != SHED}
        reasons = ": " + "; ".join(f"{reason} (x{count})" for reason, count in wrong.items()) if wrong else ""
        return f"{self.requests} requests, {sum(wrong.values())} failed{reasons}, {self.failures.get(SHED, 0)} shed"


@dataclass
class SoakResult:
    seconds: float
    warmup_seconds: float
    window_seconds: float
    # per backend: the worker's RSS over the steady load (medians over the window after the warm-up and over the
    # last window: it swings with every batch, so single samples would decide the drift), and in MiB after the burst
    # and a rest, when it is idle
    drift: dict[str, MemoryDrift] = field(default_factory=dict)
    rss_after_burst: dict[str, float] = field(default_factory=dict)
    steady: PhaseCounts = field(default_factory=PhaseCounts)
    burst: PhaseCounts = field(default_factory=PhaseCounts)


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
    """The Locust checks (loadtest/checks.py) for http_load: one base64 embedding of `dimensions` per input."""

    def check(request: bytes, status: int, body: bytes) -> str | None:
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            answer = None
        return embeddings_failure(status, answer, len(orjson.loads(request)["input"]), dimensions, "base64")

    return check


def mixed_bodies(model: str, seed: int, count: int = 400) -> list[bytes]:
    """Requests of 1-16 texts of 1-120 words: the steady mixed traffic of the soak."""
    rng = random.Random(seed)
    words = " ".join(texts("long", 64, seed=seed)).split()
    bodies = []
    for _ in range(count):
        inputs = []
        for _ in range(rng.randint(1, 16)):
            start, length = rng.randrange(len(words) - 120), rng.randint(1, 120)
            inputs.append(" ".join(words[start : start + length]))
        bodies.append(orjson.dumps({"model": model, "input": inputs, "encoding_format": "base64"}))
    return bodies


class WorkerWatch:
    """Samples each worker's RSS every half second while a load runs (workers spawn in the order of --backends):
    the peaks, and every sample (`rows`: seconds since the start, and MiB per backend)."""

    def __init__(self, tree: ServerTree, backends: list[str]):
        self.tree, self.backends = tree, backends
        self.peaks: dict[str, float] = dict.fromkeys(backends, 0.0)
        self.rows: list[dict[str, float]] = []
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> dict[str, float]:
        workers = sorted((s for s in self.tree.sample() if s.role == "worker"), key=lambda s: s.pid)
        return {backend: s.rss / MiB for backend, s in zip(self.backends, workers, strict=False)}

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            sample = self.rss()
            self.rows.append({"t": time.monotonic() - self._started, **sample})
            for backend, rss in sample.items():
                self.peaks[backend] = max(self.peaks[backend], rss)

    def __enter__(self) -> WorkerWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()


def _percentile_ms(result: LoadResult, q: float) -> float:
    if not result.latencies:
        return 0.0
    ordered = sorted(result.latencies)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


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
        watch = WorkerWatch(tree, backends)
        with watch:
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
        steady = watch.rss()
        report.workers = {b: WorkerMemory(b, watch.peaks[b], steady.get(b, 0.0)) for b in backends}
        report.after_load_memory = memory_mib(tree.sample())
        if settings.soak_seconds:
            report.soak = soak(server, tree, settings, check)
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
        _percentile_ms(served, 0.5),
        _percentile_ms(served, 0.99),
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


def soak(server: ServerProcess, tree: ServerTree, settings: BenchSettings, check) -> SoakResult:
    """Steady mixed-length load on every backend at once, then a burst of 16 times the users, then a rest."""
    backends = settings.served_backends
    warmup = min(60.0, settings.soak_seconds / 5)
    result = SoakResult(settings.soak_seconds, warmup, min(60.0, (settings.soak_seconds - warmup) / 3))
    users = 2  # per backend: a steady load below saturation on a small machine

    def run(seconds: float, per_backend: int, counts: PhaseCounts) -> None:
        outcomes: list[LoadResult] = []

        def load(number: int, backend: str) -> None:
            bodies = mixed_bodies(settings.model, seed=number)
            outcomes.append(closed_loop(server.url, f"/{backend}/v1/embeddings", bodies, per_backend, seconds, check))

        threads = [threading.Thread(target=load, args=item) for item in enumerate(backends)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for outcome in outcomes:
            counts.add(outcome)

    print(f"soak: {settings.soak_seconds:g} s of mixed-length load on {', '.join(backends)} ...", file=sys.stderr)
    with WorkerWatch(tree, backends) as watch:
        run(settings.soak_seconds, users, result.steady)
    drift = {row.process: row for row in memory_drift(watch.rows, result.warmup_seconds, result.window_seconds)}
    result.drift = {backend: drift[backend] for backend in backends if backend in drift}  # in --backends order
    print("soak: overload burst, then a rest ...", file=sys.stderr, flush=True)
    run(min(20.0, settings.soak_seconds / 3), users * 16, result.burst)
    time.sleep(10)
    result.rss_after_burst = watch.rss()
    return result


def format_served(report: ServedReport) -> str:
    if report.error:
        return f"served: the server did not start: {report.error}"
    idle = report.idle_cores
    lines = [
        f"served: one server with {', '.join(report.backends)}; one backend under load at a time; client: "
        "loadtest/http_load.py (base64 answers, every one checked); in-process figure taken in turns with the served "
        f"one ({ROUNDS} rounds each)",
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


def format_soak(soak: SoakResult) -> list[str]:
    lines = [
        f"soak: {soak.seconds:g} s of requests of 1-16 texts of 1-120 words on every backend "
        f"({soak.steady.describe()}), then an overload burst of 16 times the users ({soak.burst.describe()}) and "
        "10 s of rest",
        f"worker RSS, MiB: settled and end are medians over {soak.window_seconds:g} s after the "
        f"{soak.warmup_seconds:g} s warm-up and over the last as long; after the burst, one sample at rest",
        f"{'backend':<15}{'settled':>10}{'end':>8}{'drift':>8}{'after burst':>13}{'vs end':>8}",
    ]
    for backend, row in soak.drift.items():
        burst = soak.rss_after_burst.get(backend, 0.0)
        lines.append(
            f"{backend:<15}{row.settled_mb:>10.0f}{row.end_mb:>8.0f}{row.drift_pct:>7.1f}%{burst:>13.0f}"
            f"{100 * (burst / row.end_mb - 1):>7.1f}%"
        )
    return lines
