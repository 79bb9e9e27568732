"""Prometheus metrics, in one place, added up correctly over LitServe's processes.

LitServe answers HTTP in forked front processes and runs each backend in its own spawned worker. In
prometheus_client's multiprocess mode every process writes its values to files in one directory, and /metrics
(answered by any front process) adds them up. prometheus_client chooses that mode when it is first imported, so
`use_multiprocess_dir` runs before anything creates the metrics: `ServerMetrics` imports the client lazily.

Names follow Prometheus' conventions: base units (`_seconds`, `_bytes`), `_total` for counters, and latency
buckets from 1 ms to 10 s, the range of an embedding request from one short text on a GPU to a large CPU batch.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from server.backends.base import Backend
    from server.engine.embedder import ForwardStats

log = logging.getLogger(__name__)
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
INPUT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
TOKEN_BUCKETS = tuple(2**power for power in range(4, 18))  # 16 ... 131072 padded tokens per pass
RATIO_BUCKETS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
PROCESS_SAMPLE_SECONDS = 1.0
# Why a request was shed with 503 server_overloaded (server/http/overload.py, server/http/admission.py).
REJECTION_REASONS = ("expected_wait", "queue_timeout", "count_bound")


def use_multiprocess_dir(directory: Path) -> None:
    """Names the directory that every server process writes its metric files to, emptied of an earlier run's."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROCESS_ENV] = str(directory)


class ServerMetrics:
    """Every metric the server exports. One instance per process (see `server_metrics()`)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        served = ["backend", "model"]
        # HTTP front processes: what clients see, rejections by admission control included.
        self.requests = Counter(
            "embedserve_requests", "Embedding requests answered, by HTTP status code", [*served, "code"]
        )
        self.request_duration = Histogram(
            "embedserve_request_duration_seconds",
            "Time from request received to response sent, by status class (2xx, 4xx, 5xx)",
            [*served, "status_class"],
            buckets=LATENCY_BUCKETS,
        )
        self.in_flight = Gauge(
            "embedserve_requests_in_flight",
            "Requests received and not yet answered",
            served,
            multiprocess_mode="livesum",
        )
        self.queue_limit = Gauge(
            "embedserve_queue_limit",
            "Requests in flight per backend and HTTP process beyond which the server answers 503 (max_queue)",
            served,
            multiprocess_mode="max",
        )
        self.rejected = Counter(
            "embedserve_rejected_requests",
            "Requests shed with 503 server_overloaded, by reason: expected_wait (the queued work would make it wait "
            "past max_queue_wait_ms), count_bound (max_queue requests in flight), queue_timeout (waited past "
            "max_queue_wait_ms before its batch started)",
            [*served, "reason"],
        )
        self.expected_wait = Gauge(
            "embedserve_expected_wait_seconds",
            "The wait a new request would have now: the work queued for the backend over its measured throughput",
            served,
            multiprocess_mode="livemax",
        )
        # Inference workers: where the time goes and what the batcher formed.
        self.queue_wait = Histogram(
            "embedserve_queue_wait_seconds",
            "Time a request waited between arrival and the start of its dynamic batch's inference (its checks and "
            "tokenization included)",
            served,
            buckets=LATENCY_BUCKETS,
        )
        self.tokenization_duration = Histogram(
            "embedserve_tokenization_duration_seconds",
            "Time to check and tokenize one request in its worker (part of its queue wait)",
            served,
            buckets=LATENCY_BUCKETS,
        )
        self.inference_duration = Histogram(
            "embedserve_inference_duration_seconds",
            "Time to embed one dynamic batch (all its forward passes and pooling)",
            served,
            buckets=LATENCY_BUCKETS,
        )
        self.forward_duration = Histogram(
            "embedserve_forward_duration_seconds",
            "Time of one forward pass, pooling included",
            served,
            buckets=LATENCY_BUCKETS,
        )
        self.batch_requests = Histogram(
            "embedserve_batch_requests", "Requests merged into one dynamic batch", served, buckets=INPUT_BUCKETS
        )
        self.batch_inputs = Histogram(
            "embedserve_forward_inputs", "Inputs in one forward pass", served, buckets=INPUT_BUCKETS
        )
        self.forward_tokens = Histogram(
            "embedserve_forward_tokens", "Padded tokens in one forward pass", served, buckets=TOKEN_BUCKETS
        )
        self.padding_ratio = Histogram(
            "embedserve_forward_padding_ratio",
            "Share of a forward pass's tokens that are padding",
            served,
            buckets=RATIO_BUCKETS,
        )
        self.inputs = Counter("embedserve_inputs", "Inputs embedded", served)
        self.tokens = Counter("embedserve_tokens", "Real (unpadded) tokens embedded", served)
        self.load_duration = Gauge(
            "embedserve_model_load_seconds",
            "Time the backend took to load the model",
            [*served, "device"],
            multiprocess_mode="max",
        )
        self.build_info = Gauge(
            "embedserve_build_info",
            "Always 1; the labels say what runs: embedserve, Python and runtime versions, device",
            [*served, "version", "python", "runtime", "runtime_version", "device"],
            multiprocess_mode="max",
        )
        # Each process samples itself (`start_process_sampler`): what the server's own machinery costs, by role.
        process = ["role", *served]
        self.resident_memory = Gauge(
            "embedserve_process_resident_memory_bytes",
            "Resident memory of the server's processes, by role (main, manager, http, worker) and backend",
            process,
            multiprocess_mode="livesum",
        )
        self.cpu_seconds = Gauge(
            "embedserve_process_cpu_seconds",
            "CPU seconds (user + system) the server's live processes used since they started, by role (main, "
            "manager, http, worker) and backend; rate() gives cores in use",
            process,
            multiprocess_mode="livesum",
        )
        self.device_memory_peak = Gauge(
            "embedserve_device_memory_peak_bytes",
            "Peak accelerator memory the runtime's allocator held (torch on CUDA)",
            [*served, "device"],
            multiprocess_mode="livemax",
        )

    # --- HTTP front ---------------------------------------------------------------------------------------------
    def observe_response(self, backend: str, model: str, status: int, seconds: float) -> None:
        self.requests.labels(backend, model, str(status)).inc()
        self.request_duration.labels(backend, model, f"{status // 100}xx").observe(seconds)

    # --- inference worker -----------------------------------------------------------------------------------------
    def observe_loaded(self, backend: Backend, model: str, load_seconds: float) -> None:
        from server import __version__

        runtime, runtime_version = backend.runtime
        self.load_duration.labels(backend.name, model, backend.device).set(load_seconds)
        self.build_info.labels(
            backend.name, model, __version__, platform.python_version(), runtime, runtime_version, backend.device
        ).set(1)

    def observe_batch(
        self, backend: str, model: str, waits: list[float], stats: ForwardStats, inference_seconds: float
    ) -> None:
        for wait in waits:
            self.queue_wait.labels(backend, model).observe(wait)
        self.batch_requests.labels(backend, model).observe(len(waits))
        self.inference_duration.labels(backend, model).observe(inference_seconds)
        for forward in stats.forward_passes:
            self.forward_duration.labels(backend, model).observe(forward.seconds)
            self.batch_inputs.labels(backend, model).observe(forward.inputs)
            self.forward_tokens.labels(backend, model).observe(forward.padded_tokens)
            if forward.padded_tokens:  # image passes have no tokens
                self.padding_ratio.labels(backend, model).observe(1 - forward.real_tokens / forward.padded_tokens)
            self.inputs.labels(backend, model).inc(forward.inputs)
            self.tokens.labels(backend, model).inc(forward.real_tokens)

    def sample_process(self, role: str, backend: str = "", model: str = "") -> None:
        process = psutil.Process()
        times = process.cpu_times()
        self.resident_memory.labels(role, backend, model).set(process.memory_info().rss)
        self.cpu_seconds.labels(role, backend, model).set(times.user + times.system)

    def sample_device_memory(self, backend: str, model: str, device: str, peak: int | None) -> None:
        if peak is not None:
            self.device_memory_peak.labels(backend, model, device).set(peak)


@functools.cache
def server_metrics() -> ServerMetrics:
    return ServerMetrics()


def start_process_sampler(
    role: str, backend: str = "", model: str = "", also: Callable[[], None] | None = None
) -> threading.Thread:
    """Samples this process's CPU and memory (and `also`) every second in the background, so that a worker busy in a
    long forward pass still reports them."""

    # Here, not in the thread: the first server_metrics() imports prometheus_client, and an import racing one in the
    # process's main thread (LitServe's manager runs this as its initializer) can meet the module half-initialised
    # ("cannot import name 'Counter'"), which ended the manager's sampler at random.
    metrics = server_metrics()

    def loop() -> None:
        while True:
            try:
                metrics.sample_process(role, backend, model)
                if also:
                    also()
            except Exception:  # one failed sample must not end the sampling
                log.exception("process sample failed")
            time.sleep(PROCESS_SAMPLE_SECONDS)

    thread = threading.Thread(target=loop, name=f"embedserve-{role}-sampler", daemon=True)
    thread.start()
    return thread


def render_metrics() -> tuple[bytes, str]:
    """The exposition text of every process (multiprocess mode) plus the GPUs NVML sees, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    if MULTIPROCESS_ENV in os.environ:
        MultiProcessCollector(registry)
    else:  # a single process (tests of this module): the default registry holds everything
        from prometheus_client import REGISTRY as registry  # noqa: N811
    output = generate_latest(registry) + generate_latest(_gpu_registry())
    return output, CONTENT_TYPE_LATEST


@functools.cache
def _gpu_registry():
    """Built on the first scrape, in the HTTP process: NVML is initialised once there."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    registry.register(NvmlCollector())
    return registry


class NvmlCollector:
    """Device memory and utilisation of every NVIDIA GPU, read through NVML at scrape time.

    Absent (no samples at all) where nvidia-ml-py is not installed or no driver answers: CPU-only hosts.
    """

    def __init__(self) -> None:
        self._nvml = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
        except Exception:  # noqa: BLE001 - no package, no driver or no GPU all mean "no GPU metrics"
            self._nvml = None

    def collect(self) -> Iterator:
        if self._nvml is None:
            return
        from prometheus_client.core import GaugeMetricFamily

        nvml = self._nvml
        used = GaugeMetricFamily("embedserve_gpu_memory_used_bytes", "GPU memory in use (NVML)", labels=["gpu", "name"])
        total = GaugeMetricFamily(
            "embedserve_gpu_memory_total_bytes", "GPU memory in all (NVML)", labels=["gpu", "name"]
        )
        utilization = GaugeMetricFamily(
            "embedserve_gpu_utilization_ratio", "Share of time a kernel ran on the GPU (NVML)", labels=["gpu", "name"]
        )
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name = nvml.nvmlDeviceGetName(handle)
            labels = [str(index), name.decode() if isinstance(name, bytes) else name]
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            used.add_metric(labels, memory.used)
            total.add_metric(labels, memory.total)
            utilization.add_metric(labels, nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100)
        yield from (used, total, utilization)
