"""The setups advise considers (model x backend x dtype), and what each one gives on the user's texts in-process:
its vectors (for quality), tokens per text, and a first throughput figure (where the rate search starts)."""

from __future__ import annotations

import importlib.util
import resource
import time
from dataclasses import dataclass

import numpy as np

from loadtest.advise.workload import Workload
from loadtest.probe import fingerprint as fingerprints
from server.engine import BF16_FLAGS, Embedder, cpu_flags
from server.settings import EngineSettings

CPU_BACKENDS = ("torch", "onnx", "onnx-int8", "openvino", "openvino-int8", "openvino-int8-weights")
RUST_BACKENDS = ("candle", "ort")  # through embed-anything, when it is installed
# On a CUDA machine: half precision on torch, and ONNX Runtime's CUDA provider (fp32).
GPU_CANDIDATES = (("torch", "float16"), ("torch", "bfloat16"), ("onnx", "auto"))


@dataclass(frozen=True)
class Candidate:
    model: str
    backend: str
    dtype: str = "auto"  # the server's --dtype: auto is float32 on CPU

    @property
    def name(self) -> str:
        short = self.model.rstrip("/").rsplit("/", 1)[-1]
        return f"{short}/{self.backend}" + ("" if self.dtype == "auto" else f"-{self.dtype}")


def default_backends(device: str) -> list[tuple[str, str]]:
    """(backend, dtype) of every setup this machine can run: the CPU ones, the Rust ones where embed-anything is
    installed, and the GPU ones on CUDA."""
    if device.startswith("cuda"):
        return list(GPU_CANDIDATES)
    rust = RUST_BACKENDS if importlib.util.find_spec("embed_anything") else ()
    # OpenVINO's bf16 (its own default on such CPUs): faster, and slightly off fp32; quality decides.
    bf16 = [("openvino", "bfloat16")] if cpu_flags() & BF16_FLAGS else []
    return [(backend, "auto") for backend in (*CPU_BACKENDS, *rust)] + bf16


def candidates(models: list[str], backends: list[str], device: str) -> list[Candidate]:
    """--backends names backends (dtype auto); without it, every default setup of this machine."""
    setups = [(backend, "auto") for backend in backends] if backends else default_backends(device)
    return [Candidate(model, backend, dtype) for model in models for backend, dtype in setups]


@dataclass
class Embedded:
    """A candidate's in-process pass over the user's texts (in a child process: its peak RSS is its own)."""

    documents: np.ndarray
    queries: np.ndarray
    dimensions: int
    matryoshka_dimensions: tuple[int, ...]
    tokens_per_document: float  # real tokens, after the model's own truncation
    inputs_per_s: float  # documents embedded per second in-process, batched by the engine
    peak_rss_mb: float
    device: str
    fingerprint: np.ndarray  # the vectors of loadtest/probe/fingerprint.py's texts (drift between runs)


def embed_workload(settings: EngineSettings, backend: str, workload: Workload) -> Embedded:
    embedder = Embedder(settings, backend)
    embedder.embed_texts(workload.document_texts[:8])  # warm-up: first-call allocations and kernel selection
    started = time.perf_counter()
    encoded = embedder.embed_texts(workload.document_texts)
    seconds = time.perf_counter() - started
    queries = embedder.embed_texts(workload.query_texts, input_type="query")
    fingerprint = embedder.embed_texts(fingerprints.TEXTS).dense
    return Embedded(
        encoded.dense,
        queries.dense,
        embedder.spec.dimensions,
        embedder.spec.matryoshka_dimensions,
        encoded.stats.real_tokens / len(workload.documents),
        len(workload.documents) / seconds,
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        embedder.backend.device,
        fingerprint,
    )
