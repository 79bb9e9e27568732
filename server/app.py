"""Builds the LitServer: one LitAPI (own queue, own worker process) per backend, plus the routes around them.

LitServe's hooks are used as meant: the HTTP process validates the body (pydantic), the worker process decodes
(tokenizes, checks limits), predicts one dynamic batch across requests, and encodes each response.
"""

# No `from __future__ import annotations` here: LitServe reads decode_request's annotation to build the route,
# and needs the class itself, not its name.
import logging
import shutil
import signal
import tempfile
import time
from pathlib import Path

import litserve as ls
import numpy as np
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.responses import Response

from server.api import EmbeddingRequest, EmbeddingResult, OpenAIError, error_response, model_not_found, success_response
from server.backends.base import BackendVariant
from server.admission import AdmissionMiddleware
from server.embedder import Embedder, ForwardStats
from server.errors import install_error_handlers
from server.images import DATA_URI_PREFIX, BadImage, read_image_bytes
from server.metrics import server_metrics, start_memory_sampler, use_multiprocess_dir
from server.metrics_http import RequestMetricsMiddleware, install_metrics_route
from server.pooling import truncate_dimensions
from server.readiness import BackendStatus, install_status_routes
from server.settings import ServeSettings

log = logging.getLogger(__name__)


def embeddings_path(backend: str) -> str:
    return f"/{backend}/v1/embeddings"


class PreparedRequest:
    """A request that passed every check, tokenized: what predict() needs and encode_response() reports."""

    __slots__ = ("ids", "images", "image_slots", "prompt_tokens", "model", "dimensions", "encoding_format", "received_at")

    def __init__(
        self, ids: list[list[int]], request: EmbeddingRequest, images: dict[int, np.ndarray] | None = None
    ):
        self.ids = ids  # the text inputs, in order
        # Image inputs (image-text models) by their position in `input`; texts fill the other positions.
        self.images = list((images or {}).values())
        self.image_slots = list((images or {}).keys())
        self.received_at = request.received_at
        self.prompt_tokens = sum(len(i) for i in ids)
        self.model = request.model
        self.dimensions = request.dimensions
        self.encoding_format = request.encoding_format


class EmbeddingAPI(ls.LitAPI):
    def __init__(self, settings: ServeSettings, backend: str, status: BackendStatus):
        super().__init__(
            max_batch_size=settings.max_batch_requests,
            batch_timeout=settings.batch_timeout_ms / 1000,
            api_path=embeddings_path(backend),
        )
        self.settings = settings
        self.backend = backend
        self.status = status
        self.embedder = None

    def setup(self, device: str) -> None:
        self.metrics = server_metrics()
        start_memory_sampler(self._sample_memory)
        # A backend that cannot load reports why in /ready and answers 503; the other backends keep serving.
        try:
            self.embedder = Embedder(self.settings, self.backend)
        except Exception as exc:  # noqa: BLE001 - any load failure is reported, not raised
            log.exception("backend %s failed to load", self.backend)
            self.status.set_failed(f"{type(exc).__name__}: {exc}")
            return
        self.metrics.observe_loaded(self.embedder.backend, self.settings.model, self.embedder.load_seconds)
        self.status.set_ready(self.embedder.backend.device, self.embedder.load_seconds, self.embedder.spec.dimensions)

    def _sample_memory(self) -> None:
        if self.embedder is None:  # still loading, or failed to
            self.metrics.sample_memory("worker", self.backend, self.settings.model)
            return
        runtime = self.embedder.backend
        self.metrics.sample_memory(
            "worker", self.backend, self.settings.model, runtime.device, runtime.peak_device_memory_bytes()
        )

    def decode_request(self, request: EmbeddingRequest) -> PreparedRequest | OpenAIError:
        # Errors are returned, not raised: in a batched loop a raise would fail every request of the batch.
        try:
            return self._prepare(request)
        except OpenAIError as error:
            return error

    def _prepare(self, request: EmbeddingRequest) -> PreparedRequest:
        if self.embedder is None:
            raise OpenAIError(503, f"backend `{self.backend}` is not available: {self.status.detail()}")
        spec = self.embedder.spec
        if request.model not in spec.names:
            raise model_not_found(request.model, list(spec.names))
        if request.dimensions is not None and request.dimensions > spec.dimensions:
            raise OpenAIError(
                400,
                f"dimensions={request.dimensions} is larger than the model's {spec.dimensions}",
                param="dimensions",
                code="invalid_dimensions",
            )
        if request.encoding_format == "sparse" and self.embedder.sparse_head is None:
            raise OpenAIError(
                400,
                f"{spec.id} has no sparse head; encoding_format `sparse` needs a model such as BAAI/bge-m3",
                param="encoding_format",
                code="sparse_not_supported",
            )
        if request.encoding_format == "sparse" and request.dimensions is not None:
            raise OpenAIError(400, "dimensions does not apply to sparse embeddings", param="dimensions")
        inputs = request.inputs()
        images: dict[int, np.ndarray] = {}
        text_slots = list(range(len(inputs)))
        if isinstance(inputs[0], str):
            images = self._decode_images(inputs)  # type: ignore[arg-type]
            text_slots = [index for index in text_slots if index not in images]
            texts = [inputs[index] for index in text_slots]
            tokenized = self.embedder.tokenize_texts(texts, request.input_type)  # type: ignore[arg-type]
        else:
            vocab = self.embedder.tokenizer.vocab_size
            for index, ids in enumerate(inputs):
                if any(not 0 <= token < vocab for token in ids):  # type: ignore[union-attr]
                    raise OpenAIError(400, f"input[{index}] has token ids outside [0, {vocab})", param="input")
            tokenized = self.embedder.tokenizer.frame_token_ids(inputs)  # type: ignore[arg-type]
        if not request.truncate and any(tokenized.overflowed):
            index = text_slots[tokenized.overflowed.index(True)]
            raise OpenAIError(
                400,
                f"input[{index}] is longer than the model's limit of {spec.max_tokens} tokens and truncate is false",
                param="input",
                code="context_length_exceeded",
            )
        if tokenized.token_count > self.settings.max_request_tokens:
            raise OpenAIError(
                400,
                f"the request has {tokenized.token_count} tokens; at most {self.settings.max_request_tokens} allowed",
                param="input",
                code="max_tokens_per_request",
            )
        return PreparedRequest(tokenized.ids, request, images)

    def _decode_images(self, inputs: list[str]) -> dict[int, np.ndarray]:
        """Position -> preprocessed pixels, for every input that is an image; a bad one is a 400 naming it."""
        images = {}
        fetch_urls = self.embedder.image_text and self.settings.allow_image_urls
        for index, item in enumerate(inputs):
            # A URL is text, unless the model takes images and image URLs are enabled.
            if not (item.startswith(DATA_URI_PREFIX) or (fetch_urls and item.startswith(("http://", "https://")))):
                continue
            if not self.embedder.image_text:
                raise OpenAIError(
                    400, f"input[{index}] is an image; {self.embedder.spec.id} embeds text only",
                    param="input", code="images_not_supported",
                )
            try:
                data = read_image_bytes(item, self.settings.allow_image_urls)
                images[index] = self.embedder.image_processing(data)
            except BadImage as reason:
                raise OpenAIError(400, f"input[{index}]: {reason}", param="input", code="invalid_image") from None
        return images

    def batch(self, inputs: list) -> list:
        return inputs

    def predict(self, requests):
        if self.max_batch_size == 1:  # LitServe's unbatched loop hands over one request, not a list
            return self.embed_requests([requests])[0]
        return self.embed_requests(requests)

    def embed_requests(self, requests: list) -> list[EmbeddingResult | OpenAIError]:
        """One forward plan for every input of every request in the batch; results split back per request."""
        valid = [r for r in requests if isinstance(r, PreparedRequest)]
        all_ids = [ids for r in valid for ids in r.ids]
        all_images = [image for r in valid for image in r.images]
        started = time.monotonic()
        passes: list = []
        encoded = image_vectors = None
        if all_ids:
            encoded = self.embedder.encode(all_ids, sparse=any(r.encoding_format == "sparse" for r in valid))
            passes += self.embedder.last_stats.forward_passes
        if all_images:
            image_vectors = self.embedder.embed_images(all_images)
            passes += self.embedder.last_stats.forward_passes
        if passes:
            self.metrics.observe_batch(
                self.backend,
                self.settings.model,
                waits=[started - r.received_at for r in valid],
                stats=ForwardStats(passes),
                inference_seconds=time.monotonic() - started,
            )
        results: list[EmbeddingResult | OpenAIError] = []
        text_offset = image_offset = 0
        for request in requests:
            if isinstance(request, OpenAIError):
                results.append(request)
                continue
            texts = slice(text_offset, text_offset + len(request.ids))
            text_offset += len(request.ids)
            vectors = encoded.dense[texts] if encoded is not None else None
            if request.images:  # texts and images back in the order of `input`
                is_image = np.zeros(len(request.ids) + len(request.images), dtype=bool)
                is_image[request.image_slots] = True
                merged = np.empty((len(is_image), self.embedder.spec.dimensions), dtype=np.float32)
                merged[is_image] = image_vectors[image_offset : image_offset + len(request.images)]
                if vectors is not None:
                    merged[~is_image] = vectors
                image_offset += len(request.images)
                vectors = merged
            results.append(
                EmbeddingResult(
                    truncate_dimensions(vectors, request.dimensions),
                    request.prompt_tokens,
                    request.model,
                    request.encoding_format,
                    encoded.sparse[texts] if request.encoding_format == "sparse" else None,
                )
            )
        return results

    def unbatch(self, output: list) -> list:
        return output

    def encode_response(self, output: EmbeddingResult | OpenAIError) -> Response:
        return error_response(output) if isinstance(output, OpenAIError) else success_response(output)


def build_server(settings: ServeSettings) -> ls.LitServer:
    backends = [BackendVariant.parse(name).name for name in settings.backends]
    if len(set(backends)) != len(backends):
        raise ValueError(f"a backend is listed twice: {settings.backends}")
    if settings.default_backend_name not in backends:
        raise ValueError(f"default backend {settings.default_backend_name!r} is not among {backends}")
    statuses = {name: BackendStatus.create() for name in backends}
    apis = [EmbeddingAPI(settings, name, statuses[name]) for name in backends]
    server = ls.LitServer(
        apis,
        accelerator="cpu",  # each backend picks its own device in setup(); LitServe only schedules processes
        workers_per_device=1,
        timeout=settings.request_timeout_s,
        healthcheck_path="/litserve/health",
        info_path="/litserve/info",
    )
    app: FastAPI = server.app
    _route_default_backend(app, settings.default_backend_name)
    install_status_routes(app, settings.model, statuses)
    install_metrics_route(app)
    install_error_handlers(app)
    app.add_middleware(
        AdmissionMiddleware,
        queue_limit=settings.max_queue,
        max_body_bytes=settings.max_body_bytes,
        default_path=embeddings_path(settings.default_backend_name),
    )
    # Added last, so it runs first: it also counts what admission control turns away.
    backend_by_path = {embeddings_path(name): name for name in backends}
    backend_by_path["/v1/embeddings"] = settings.default_backend_name
    app.add_middleware(
        RequestMetricsMiddleware, backend_by_path=backend_by_path, model=settings.model, queue_limit=settings.max_queue
    )
    return server


def _route_default_backend(app: FastAPI, default_backend: str) -> None:
    """POST /v1/embeddings runs the very endpoint of the default backend (same queue, same worker)."""
    route = next(r for r in app.routes if isinstance(r, APIRoute) and r.path == embeddings_path(default_backend))
    app.add_api_route("/v1/embeddings", route.endpoint, methods=["POST"], summary=f"Embeddings ({default_backend})")


def run_server(settings: ServeSettings) -> None:
    metrics_dir = settings.metrics_dir or Path(tempfile.mkdtemp(prefix="embedserve-metrics-"))
    use_multiprocess_dir(metrics_dir)  # before any server process creates a metric
    # `docker stop` and process managers send SIGTERM: shut down as on Ctrl-C, workers and all.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    server = build_server(settings)
    try:
        server.run(
            host=settings.host,
            port=settings.port,
            num_api_servers=settings.api_servers,
            log_level=settings.log_level,
            generate_client_file=False,
        )
    finally:
        if settings.metrics_dir is None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
