"""One backend's embeddings endpoint as a LitAPI: its own queue and inference worker process.

LitServe's hooks are used as meant: the HTTP process validates the body (pydantic) and admits it by expected wait
(`self.admission`, server/http/admission.py); the worker decodes (checks and tokenizes, in the engine), predicts one
dynamic batch across requests, and encodes each response.
"""

# No `from __future__ import annotations` here: LitServe reads decode_request's annotation to build the route,
# and needs the class itself, not its name.
import ctypes
import logging
import time
from dataclasses import dataclass

import litserve as ls
from starlette.responses import Response

from server.engine.embedder import Embedder
from server.engine.errors import EmbeddingRejected
from server.engine.requests import PreparedQuery, QueryResult, RequestLimits, embed_queries, prepare_query
from server.http.admission import Admission, BackendLoad, Expired
from server.http.errors import OpenAIError, error_response, from_rejection
from server.http.litserve_changes import DrainingBatchLoop, read_hook_signatures_once, settle_garbage_collector
from server.http.schemas import EmbeddingRequest, embeddings_response
from server.http.status import BackendStatus, ModelFacts
from server.metrics import server_metrics, start_process_sampler
from server.settings import ServeSettings

log = logging.getLogger(__name__)


def embeddings_path(backend: str) -> str:
    return f"/{backend}/v1/embeddings"


# A dynamic batch's estimated tokens, in forward passes' worth of the token budget (--max-batch-tokens).
BATCH_COST_PASSES = 4

_malloc_trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc only (not musl, not macOS)


def trim_heap() -> None:
    """glibc keeps what a large batch freed in its heaps; malloc_trim gives it back to the system, so a worker's
    memory returns to its steady level after a burst instead of growing. It can take milliseconds after a large
    batch, so the worker's sampler thread calls it once a second, not the batch loop after every batch, where it
    showed in a profile of single-text load."""
    if _malloc_trim is not None:
        _malloc_trim(0)


@dataclass
class Job:
    """One request in the worker: the engine's prepared query, and what its answer and metrics need."""

    query: PreparedQuery
    model: str
    encoding_format: str
    received_at: float
    cost: float  # estimated tokens, as admission counted them
    tokenization_seconds: float
    result: QueryResult | None = None
    queue_seconds: float = 0.0
    inference_seconds: float = 0.0

    def timing_headers(self) -> dict[str, str]:
        """TEI's per-response timings, in milliseconds: the same quantities as /metrics' queue wait and batch
        inference histograms (a batch's inference time is every one of its requests')."""
        return {
            "x-queue-time": f"{self.queue_seconds * 1000:.3f}",
            "x-tokenization-time": f"{self.tokenization_seconds * 1000:.3f}",
            "x-inference-time": f"{self.inference_seconds * 1000:.3f}",
        }


class EmbeddingAPI(ls.LitAPI):
    def __init__(self, settings: ServeSettings, backend: str, status: BackendStatus, load: BackendLoad):
        super().__init__(
            max_batch_size=settings.max_batch_requests,
            batch_timeout=settings.batch_timeout_ms / 1000,
            api_path=embeddings_path(backend),
            loop=DrainingBatchLoop() if settings.max_batch_requests > 1 else "auto",
        )
        self.settings = settings
        self.backend = backend
        self.status = status
        self.load = load
        # Read by EmbeddingServer's route (admit, release) and by DrainingBatchLoop (expire_late).
        self.admission = Admission(backend, settings.model, load, settings.max_queue_wait_ms)
        self.limits = RequestLimits(settings.max_request_tokens, settings.allow_image_urls)
        self.embedder: Embedder | None = None
        self.max_batch_cost: float | None = None
        self._last_batch_end = 0.0

    def setup(self, device: str) -> None:
        """Loads the model; a backend that cannot reports why in /ready and answers 503, the others keep serving."""
        self.metrics = server_metrics()
        start_process_sampler("worker", self.backend, self.settings.model, also=self._sample_worker)
        try:
            self.embedder = Embedder(self.settings, self.backend)
        except Exception as exc:
            log.exception("backend %s failed to load", self.backend)
            self.status.set_failed(f"{type(exc).__name__}: {exc}")
            return
        # Read by DrainingBatchLoop: a dynamic batch holds at most this much work, so that a request admitted near
        # the wait bound is not then held for a batch of seconds more (all requests of a batch finish together).
        self.max_batch_cost = BATCH_COST_PASSES * self.embedder.settings.max_batch_tokens
        self.load.set_limits(self.embedder.spec.max_tokens, self.max_batch_cost)
        self.metrics.observe_loaded(self.embedder.backend, self.settings.model, self.embedder.load_seconds)
        facts = ModelFacts(
            dimensions=self.embedder.spec.dimensions,
            max_tokens=self.embedder.spec.max_tokens,
            vocab_size=self.embedder.tokenizer.vocab_size,
            sparse=self.embedder.sparse_head is not None,
            normalized=self.embedder.spec.normalize,
        )
        self.status.set_ready(self.embedder.backend.device, self.embedder.load_seconds, facts)
        read_hook_signatures_once(self)
        settle_garbage_collector()

    def _sample_worker(self) -> None:
        """Every second, beside the process's CPU and memory: the expected wait, the accelerator's memory, and the
        heap's free memory given back to the system."""
        trim_heap()
        wait = self.load.expected_wait()
        self.metrics.expected_wait.labels(self.backend, self.settings.model).set(wait or 0.0)
        if self.embedder is not None:  # None: still loading, or failed to
            runtime = self.embedder.backend
            self.metrics.sample_device_memory(
                self.backend, self.settings.model, runtime.device, runtime.peak_device_memory_bytes()
            )

    async def authorize(self) -> None:
        """Every request is allowed. An async dependency: LitServe's default is a sync one, run in a thread."""

    def decode_request(self, request: EmbeddingRequest) -> Job | OpenAIError:
        """Checks and tokenizes; errors are returned, not raised: in a batched loop a raise fails the whole batch."""
        if isinstance(request, Expired):
            return self.admission.shed_expired(request)
        if self.embedder is None:
            return OpenAIError(503, f"backend `{self.backend}` is not available: {self.status.detail()}")
        started = time.monotonic()
        try:
            query = prepare_query(self.embedder, request.to_query(), self.limits)
        except EmbeddingRejected as rejection:
            return from_rejection(rejection)
        tokenization = time.monotonic() - started
        self.metrics.tokenization_duration.labels(self.backend, self.settings.model).observe(tokenization)
        return Job(query, request.model, request.encoding_format, request.received_at, request.cost, tokenization)

    def batch(self, inputs: list) -> list:
        return inputs

    def predict(self, requests):
        if self.max_batch_size == 1:  # LitServe's unbatched loop hands over one request, not a list
            return self.embed_jobs([requests])[0]
        return self.embed_jobs(requests)

    def embed_jobs(self, requests: list) -> list:
        """Embeds every valid job of the dynamic batch with one forward plan; the errors pass through."""
        jobs = [job for job in requests if isinstance(job, Job)]
        if jobs:
            started = time.monotonic()
            self.load.start_batch(sum(job.cost for job in jobs), started)
            results, stats = embed_queries(self.embedder, [job.query for job in jobs])
            ended = time.monotonic()
            for job, result in zip(jobs, results, strict=True):
                job.result = result
                job.queue_seconds = started - job.received_at
                job.inference_seconds = ended - started
            if stats.passes:
                waits = [job.queue_seconds for job in jobs]
                self.metrics.observe_batch(self.backend, self.settings.model, waits, stats, ended - started)
            # The queue drains at the pace of the worker's whole cycle (tokenizing, inference, and the previous
            # batch's encoding), not of inference alone: from the end of the last batch, or from this batch's first
            # arrival when the worker sat idle.
            cycle_began = max(self._last_batch_end, min(job.received_at for job in jobs))
            self.load.record_batch(sum(job.cost for job in jobs), ended - cycle_began)
            self.load.end_batch()
            self._last_batch_end = ended
        return requests

    def unbatch(self, output: list) -> list:
        return output

    def encode_response(self, output: Job | OpenAIError) -> Response:
        if isinstance(output, OpenAIError):
            return error_response(output)
        return embeddings_response(output.result, output.model, output.encoding_format, output.timing_headers())
