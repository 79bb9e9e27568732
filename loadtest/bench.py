"""`embedserve bench`: in-process throughput of each backend, parity against sentence-transformers, peak RSS.

Each backend runs in a fresh child process, one after another, so that its peak RSS is its own and no two
backends compete for cores. Ratios are to torch measured in the same run.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from loadtest.corpus import texts, varied_texts
from loadtest.settings import BenchSettings
from server.engine import Embedder, resolve_device, resolve_model_dir
from server.settings import EngineSettings


@dataclass
class BatchThroughput:
    """In-process throughput of one backend at one text profile and batch size."""

    profile: str
    batch_size: int
    inputs_per_s: float
    tokens_per_s: float
    p50_ms: float


@dataclass
class BackendRun:
    backend: str
    device: str = ""
    load_s: float = 0.0
    peak_rss_mb: float = 0.0
    cells: list[BatchThroughput] = field(default_factory=list)
    parity_vectors: np.ndarray | None = None
    error: str = ""


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _measure_backend(settings: BenchSettings, backend: str, parity_texts: list[str]) -> BackendRun:
    run = BackendRun(backend)
    try:
        embedder = Embedder(EngineSettings(**settings.model_dump(include=set(EngineSettings.model_fields))), backend)
    except Exception as exc:  # noqa: BLE001 - reported in the table, the other backends still run
        run.error = f"{type(exc).__name__}: {exc}"
        return run
    run.device, run.load_s = embedder.backend.device, embedder.load_seconds
    for profile in settings.profiles:
        pool = texts(profile, max(settings.batch_sizes) * 4, seed=1)
        for batch_size in settings.batch_sizes:
            batches = [pool[i : i + batch_size] for i in range(0, len(pool) - batch_size + 1, batch_size)]
            embedder.embed_texts(batches[0])  # warm-up: first-call allocations and kernel selection
            latencies, inputs, tokens = [], 0, 0
            deadline = time.perf_counter() + settings.seconds
            while time.perf_counter() < deadline or not latencies:
                batch = batches[len(latencies) % len(batches)]
                started = time.perf_counter()
                encoded = embedder.encode_texts(batch)
                latencies.append(time.perf_counter() - started)
                inputs += len(batch)
                tokens += encoded.stats.real_tokens
            elapsed = sum(latencies)
            run.cells.append(
                BatchThroughput(
                    profile, batch_size, inputs / elapsed, tokens / elapsed, statistics.median(latencies) * 1000
                )
            )
    run.parity_vectors = embedder.embed_texts(parity_texts)
    run.peak_rss_mb = _peak_rss_mb()
    return run


def _reference_vectors(model: str, texts: list[str], device: str) -> np.ndarray | str:
    """sentence-transformers' own output for the same texts: the parity reference."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return "sentence-transformers is not installed (pip install embedserve[dev])"
    model_dir = resolve_model_dir(model)
    st_device = "cuda" if device.startswith("cuda") else "cpu"
    try:
        reference = SentenceTransformer(str(model_dir), device=st_device)
        return reference.encode(texts, batch_size=32, convert_to_numpy=True, normalize_embeddings=True)
    except Exception as exc:  # noqa: BLE001 - parity is reported as not measured, the throughput table stands
        return f"sentence-transformers could not run {model}: {type(exc).__name__}: {exc}"


def run_bench(settings: BenchSettings) -> list[BackendRun]:
    parity_texts = varied_texts(settings.parity_texts)
    context = mp.get_context("spawn")
    runs: list[BackendRun] = []
    for backend in settings.backends:
        print(f"measuring {backend} ...", file=sys.stderr, flush=True)
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            runs.append(pool.submit(_measure_backend, settings, backend, parity_texts).result())
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        reference = pool.submit(
            _reference_vectors, settings.model, parity_texts, resolve_device(settings.device)
        ).result()
    print(format_report(settings, runs, reference))
    return runs


def _parity(run: BackendRun, reference: np.ndarray | str) -> str:
    if isinstance(reference, str) or run.parity_vectors is None:
        return "n/a"
    return f"{float((run.parity_vectors * reference).sum(axis=1).min()):.6f}"


def format_report(settings: BenchSettings, runs: list[BackendRun], reference: np.ndarray | str) -> str:
    baseline = {(c.profile, c.batch_size): c for r in runs if r.backend == "torch" for c in r.cells}
    lines = [
        f"model: {settings.model}   timed: {settings.seconds:g} s per cell   parity: min cosine vs "
        f"sentence-transformers over {settings.parity_texts} texts",
        "",
        f"{'backend':<15}{'device':<8}{'profile':<8}{'batch':>6}{'inputs/s':>11}{'tokens/s':>11}{'p50 ms':>9}"
        f"{'x torch':>9}",
    ]
    for run in runs:
        if run.error:
            lines.append(f"{run.backend:<15}failed: {run.error}")
            continue
        for cell in run.cells:
            base = baseline.get((cell.profile, cell.batch_size))
            ratio = f"{cell.inputs_per_s / base.inputs_per_s:.2f}" if base else "-"
            lines.append(
                f"{run.backend:<15}{run.device:<8}{cell.profile:<8}{cell.batch_size:>6}{cell.inputs_per_s:>11.1f}"
                f"{cell.tokens_per_s:>11.0f}{cell.p50_ms:>9.1f}{ratio:>9}"
            )
    lines += ["", f"{'backend':<15}{'parity':>10}{'peak RSS MB':>13}{'load s':>8}"]
    for run in runs:
        if not run.error:
            lines.append(f"{run.backend:<15}{_parity(run, reference):>10}{run.peak_rss_mb:>13.0f}{run.load_s:>8.1f}")
    if isinstance(reference, str):
        lines.append(f"parity not measured: {reference}")
    return "\n".join(lines)
