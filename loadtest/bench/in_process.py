"""Measuring a backend in-process: the very `Embedder` the server runs, timed over whole calls (tokenize, plan,
forward, pool), in a child process of its own so that its peak RSS is its own."""

from __future__ import annotations

import resource
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from corpus.texts import texts
from loadtest.bench.quality import RetrievalSet
from loadtest.bench.reference import ReferenceRun, measure_reference
from loadtest.probe import fingerprint
from loadtest.processes import SPAWN
from loadtest.settings import BenchSettings
from server.engine import Embedder
from server.settings import EngineSettings


def engine_settings(settings: BenchSettings) -> EngineSettings:
    return EngineSettings(**settings.model_dump(include=set(EngineSettings.model_fields)))


@dataclass
class BatchThroughput:
    """In-process throughput of one backend at one text profile and batch size."""

    profile: str
    batch_size: int
    inputs: int
    tokens: int  # real (unpadded) tokens
    seconds: float  # the timed calls, whole
    forward_seconds: float  # of those, in forward passes (pooling included, as the server counts them)
    p50_ms: float

    @property
    def inputs_per_s(self) -> float:
        return self.inputs / self.seconds

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


@dataclass
class BackendRun:
    backend: str
    device: str = ""
    load_s: float = 0.0
    peak_rss_mb: float = 0.0
    dimensions: int = 0
    cells: list[BatchThroughput] = field(default_factory=list)
    parity_vectors: np.ndarray | None = None
    retrieval_vectors: np.ndarray | None = None
    fingerprint: np.ndarray | None = None  # loadtest/probe/fingerprint.py's texts: drift between runs
    reference: ReferenceRun | None = None  # --reference: against sentence-transformers' own path
    error: str = ""


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure_backend(
    settings: BenchSettings, backend: str, parity_texts: list[str], retrieval: RetrievalSet
) -> BackendRun:
    run = BackendRun(backend)
    try:
        embedder = Embedder(engine_settings(settings), backend)
    except Exception as exc:  # noqa: BLE001 - reported in the table, the other backends still run
        run.error = f"{type(exc).__name__}: {exc}"
        return run
    run.device, run.load_s, run.dimensions = embedder.backend.device, embedder.load_seconds, embedder.spec.dimensions
    for profile in settings.profiles:
        pool = texts(profile, max(settings.batch_sizes) * 4, seed=1)
        for batch_size in settings.batch_sizes:
            run.cells.append(time_batches(embedder, profile, batch_size, pool, settings.seconds))
    run.parity_vectors = embedder.embed_texts(parity_texts).dense
    run.retrieval_vectors = embedder.embed_texts(retrieval.all_texts).dense
    run.fingerprint = embedder.embed_texts(fingerprint.TEXTS).dense
    if settings.reference:
        pools = {profile: texts(profile, max(settings.batch_sizes) * 4, seed=1) for profile in settings.profiles}
        with tempfile.TemporaryDirectory(prefix="embedserve-reference-") as folder:
            run.reference = measure_reference(
                embedder,
                backend,
                pools,
                settings.batch_sizes,
                settings.seconds,
                settings.reference_pairs,
                parity_texts,
                retrieval.all_texts,
                Path(folder),
            )
    run.peak_rss_mb = _peak_rss_mb()
    return run


def time_batches(embedder: Embedder, profile: str, batch_size: int, pool: list[str], seconds: float) -> BatchThroughput:
    """Calls of `batch_size` texts from `pool`, back to back for `seconds` (after one warm-up call)."""
    batches = [pool[i : i + batch_size] for i in range(0, len(pool) - batch_size + 1, batch_size)]
    embedder.embed_texts(batches[0])  # warm-up: first-call allocations and kernel selection
    latencies, inputs, tokens, forward = [], 0, 0, 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or not latencies:
        batch = batches[len(latencies) % len(batches)]
        started = time.perf_counter()
        encoded = embedder.embed_texts(batch)
        latencies.append(time.perf_counter() - started)
        inputs += len(batch)
        tokens += encoded.stats.real_tokens
        forward += sum(forward_pass.seconds for forward_pass in encoded.stats.forward_passes)
    return BatchThroughput(
        profile, batch_size, inputs, tokens, sum(latencies), forward, statistics.median(latencies) * 1000
    )


_probe_embedder: Embedder | None = None


def _load_probe(settings: BenchSettings, backend: str) -> None:
    global _probe_embedder
    _probe_embedder = Embedder(engine_settings(settings), backend)


def _probe(profile: str, batch_size: int, seconds: float) -> BatchThroughput:
    return time_batches(_probe_embedder, profile, batch_size, texts(profile, 512, seed=1), seconds)


class InProcessProbe:
    """One backend loaded in a child process, measured on demand: lets the served bench take its in-process figure
    in turns with the served one, so that a machine whose speed drifts over minutes (shared, throttled) biases
    neither."""

    def __init__(self, settings: BenchSettings, backend: str):
        self._pool = ProcessPoolExecutor(1, mp_context=SPAWN, initializer=_load_probe, initargs=(settings, backend))

    def measure(self, profile: str, batch_size: int, seconds: float) -> BatchThroughput:
        return self._pool.submit(_probe, profile, batch_size, seconds).result()

    def close(self) -> None:
        self._pool.shutdown()
