"""`embedserve bench`: every figure of the README's benchmark section, from one command.

In-process, each backend runs in a fresh child process, one after another, so that its peak RSS is its own and no
two backends compete for cores: throughput per text profile and batch size (the very `Embedder` the server runs),
parity against sentence-transformers and top-10 retrieval overlap with it, peak RSS. Served (served_bench.py), the
same backends behind one real server: idle CPU, throughput against the in-process figure, CPU per process role,
memory. Ratios are between figures of the same run, and the CPU's instruction sets head the report: int8 speed
depends on them, so a figure from another machine compares with nothing here.
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from corpus.texts import varied_texts
from loadtest.bench.in_process import BackendRun, measure_backend
from loadtest.bench.quality import RetrievalSet, min_cosine, top_k_overlap
from loadtest.bench.reference import ReferenceRun
from loadtest.bench.served import ServedReport, format_served, measure_served
from loadtest.probe import fingerprint
from loadtest.probe.environment import describe_cpu, gpus, instruction_sets, int8_dot_product
from loadtest.processes import in_child
from loadtest.settings import BenchSettings
from server.engine import resolve_device, resolve_model_dir


def _reference_vectors(model: str, texts: list[str], device: str) -> np.ndarray | str:
    """sentence-transformers' own output for the same texts (fp32): the reference of parity and retrieval."""
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


@dataclass(frozen=True)
class Quality:
    """A backend's embeddings against sentence-transformers' (fp32) for the same texts."""

    parity: float  # the worst cosine over the parity texts
    top10: float  # the share of each query's top 10 documents that the reference's top 10 also holds


@dataclass
class BenchReport:
    runs: list[BackendRun]
    quality: dict[str, Quality] = field(default_factory=dict)  # by backend
    reference_quality: dict[str, Quality] = field(default_factory=dict)  # a quantised reference's, by backend
    quality_error: str = ""  # why quality was not measured, when it was not
    served: ServedReport | None = None
    fingerprints: Path | None = None  # each backend's vectors of loadtest/probe/fingerprint.py's texts


def run_bench(settings: BenchSettings) -> BenchReport:
    """Every figure of the bench, printed as it is measured, and returned."""
    parity_texts = varied_texts(settings.parity_texts)
    retrieval = RetrievalSet.from_corpus()
    report = BenchReport([])
    for backend in settings.backends:
        print(f"measuring {backend} ...", file=sys.stderr, flush=True)
        report.runs.append(in_child(measure_backend, settings, backend, parity_texts, retrieval))
    reference = in_child(
        _reference_vectors, settings.model, parity_texts + retrieval.all_texts, resolve_device(settings.device)
    )
    if isinstance(reference, str):
        report.quality_error = reference
    else:
        report.quality = {
            run.backend: _quality(run, reference, retrieval) for run in report.runs if run.parity_vectors is not None
        }
        report.reference_quality = {
            run.backend: _quality(run.reference, reference, retrieval)
            for run in report.runs
            if run.reference is not None and run.reference.parity_vectors is not None
        }
    print(format_report(settings, report, retrieval), flush=True)
    run_dir = settings.output / datetime.now(timezone.utc).strftime("bench-%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    vectors = {run.backend: run.fingerprint for run in report.runs if run.fingerprint is not None}
    report.fingerprints = fingerprint.save(run_dir / fingerprint.FILE, vectors)
    print(f"vector fingerprints: {report.fingerprints}", flush=True)
    if settings.served_backends:
        best_batch = {
            run.backend: max((c for c in run.cells if c.profile == "short"), key=lambda c: c.inputs_per_s).batch_size
            for run in report.runs
            if any(c.profile == "short" for c in run.cells)
        }
        report.served = measure_served(settings, best_batch)
        print("\n" + format_served(report.served))
    return report


def _quality(run: BackendRun | ReferenceRun, reference: np.ndarray, retrieval: RetrievalSet) -> Quality:
    parity_reference, retrieval_reference = reference[: len(run.parity_vectors)], reference[len(run.parity_vectors) :]
    return Quality(
        min_cosine(run.parity_vectors, parity_reference),
        top_k_overlap(run.retrieval_vectors, retrieval_reference, retrieval),
    )


def format_report(settings: BenchSettings, report: BenchReport, retrieval: RetrievalSet) -> str:
    runs = report.runs
    baseline = {(c.profile, c.batch_size): c for r in runs if r.backend == "torch" for c in r.cells}
    sets = instruction_sets()
    lines = [
        f"CPU: {describe_cpu()}" + ("" if int8_dot_product(sets) else "  (no int8 dot-product instructions)"),
        *([f"GPU: {', '.join(gpus())}"] if gpus() else []),
        f"model: {settings.model}   in-process, timed {settings.seconds:g} s per cell",
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
    lines += [
        "",
        f"quality against sentence-transformers (fp32): parity = min cosine over {settings.parity_texts} varied "
        f"texts; top-10 = overlap of each query's top 10 documents ({len(retrieval.queries)} queries, "
        f"{len(retrieval.documents)} documents)",
        f"{'backend':<15}{'parity':>10}{'top-10':>8}{'peak RSS MB':>13}{'load s':>8}",
    ]
    for run in runs:
        if not run.error:
            quality = report.quality.get(run.backend)
            parity, overlap = (f"{quality.parity:.6f}", f"{quality.top10:.3f}") if quality else ("n/a", "n/a")
            lines.append(f"{run.backend:<15}{parity:>10}{overlap:>8}{run.peak_rss_mb:>13.0f}{run.load_s:>8.1f}")
    if report.quality_error:
        lines.append(f"quality not measured: {report.quality_error}")
    return "\n".join(lines + reference_lines(runs, settings.reference_pairs) + reference_quality_lines(report))


def reference_quality_lines(report: BenchReport) -> list[str]:
    """A quantised backend's quality beside its reference's own (sentence-transformers' int8 export), both against
    fp32: a faster reference that keeps less of fp32's answers is no better way to run the framework."""
    if not report.reference_quality:
        return []
    lines = [
        "",
        "quantised: ours and the reference's quality against sentence-transformers fp32 (parity: min cosine; top-10)",
        f"{'backend':<15}{'ours parity':>12}{'top-10':>8}{'reference parity':>18}{'top-10':>8}  reference",
    ]
    for run in report.runs:
        theirs, ours = report.reference_quality.get(run.backend), report.quality.get(run.backend)
        if theirs and ours:
            lines.append(
                f"{run.backend:<15}{ours.parity:>12.6f}{ours.top10:>8.3f}{theirs.parity:>18.6f}{theirs.top10:>8.3f}"
                f"  {run.reference.runner}"
            )
    return lines


def reference_lines(runs: list[BackendRun], pairs: int) -> list[str]:
    """--reference: ours over the reference runner per cell, the median of its alternated rounds and their range."""
    compared = [run for run in runs if run.reference is not None]
    if not compared:
        return []
    lines = [
        "",
        f"against the reference runner (ours / reference inputs/s; median of {pairs} alternated pairs of rounds, "
        "min-max; "
        "parity: min cosine between the two outputs; padding: tokens ours ran over the reference's, which pads each "
        "call to its longest input only; passes: our forward passes per call, the reference's being 1)",
        f"{'backend':<15}{'profile':<8}{'batch':>6}{'ours':>10}{'reference':>11}{'ratio':>7}{'range':>13}"
        f"{'padding':>9}{'passes':>8}  runner",
    ]
    for run in compared:
        if run.reference.error:
            lines.append(f"{run.backend:<15}not compared: {run.reference.error}")
            continue
        for cell in run.reference.cells:
            low, high = cell.spread
            lines.append(
                f"{run.backend:<15}{cell.profile:<8}{cell.batch_size:>6}{statistics.median(cell.ours):>10.1f}"
                f"{statistics.median(cell.reference):>11.1f}{cell.ratio:>7.2f}{f'{low:.2f}-{high:.2f}':>13}"
                f"{f'{cell.padding - 1:+.0%}':>9}{cell.passes:>8.1f}  {run.reference.runner}, "
                f"parity {run.reference.parity:.6f}"
            )
    cells = [cell for run in compared if run.reference.cells for cell in run.reference.cells]
    if any(cell.padding > 1.005 for cell in cells):
        lines.append(
            "padding above +0%: length buckets (and power-of-two row counts on OpenVINO) that keep a runtime's "
            "per-shape memory bounded in a long-running server; the reference does not bound it"
        )
    if any(cell.passes > 1 for cell in cells):
        lines.append(
            "passes above 1: the token budget of a forward pass (--max-batch-tokens) cuts a call into passes, bounding "
            "a pass's memory and the wait of requests behind it; the reference runs the whole call in one pass"
        )
    return lines
