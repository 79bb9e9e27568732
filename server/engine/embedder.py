"""One model on one backend, end to end: tokenize -> length-sorted token-budget batches -> forward -> pool.

Used by the server's inference workers and by `embedserve bench`, so both measure the same code.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from server.backends.base import (
    Backend,
    DevicePoolingBackend,
    ImageTextBackend,
    PooledTextBackend,
    TokenBatch,
    create_backend,
)
from server.engine.artefacts import backend_files
from server.engine.batching import bucket_length, pad_batch, plan_batches, power_of_two_chunks
from server.engine.images import ImageProcessing
from server.engine.models import ModelSpec, load_spec, resolve_model_dir
from server.engine.pooling import l2_normalize, pool
from server.engine.projection import load_projection, project
from server.engine.sparse import SparseHead, lexical_weights
from server.engine.tokenization import TextTokenizer, Tokenized
from server.hardware import resolve_device
from server.settings import EngineSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ForwardPass:
    inputs: int
    real_tokens: int
    padded_tokens: int
    seconds: float


@dataclass
class ForwardStats:
    """What one embedding call did, pass by pass (returned with its result, like TEI's InferMetadata)."""

    forward_passes: list[ForwardPass] = field(default_factory=list)

    @property
    def passes(self) -> int:
        return len(self.forward_passes)

    @property
    def real_tokens(self) -> int:
        return sum(p.real_tokens for p in self.forward_passes)

    @property
    def padded_tokens(self) -> int:
        return sum(p.padded_tokens for p in self.forward_passes)


def check_servable(spec: ModelSpec, settings: EngineSettings, backend: Backend) -> None:
    if spec.modality == "text+image" and not isinstance(backend, ImageTextBackend):
        raise NotImplementedError(
            f"{spec.id} is an image-text model ({spec.family}); the {backend.name} backend cannot run those yet "
            "(it is no ImageTextBackend): see the README's model support matrix"
        )
    if spec.trust_remote_code and not settings.trust_remote_code:
        raise PermissionError(
            f"{spec.id} runs modelling code from its own repository ({spec.family}); "
            "start with --trust-remote-code to allow it"
        )


def check_pooled_text(spec: ModelSpec, tokenizer: TextTokenizer, backend: Backend) -> None:
    """A runtime that pools by itself gives the right embedding only where its pooling is the model's and nothing
    follows it, and it is handed text, which round-trips to the same token ids only for WordPiece (BERT) tokenizers:
    other models are refused at load, with the reason, in /ready."""
    if not isinstance(backend, PooledTextBackend):
        return
    reasons = [
        reason
        for reason, refused in [
            (f"{spec.pooling} pooling (mean only)", spec.pooling != "mean"),
            ("no normalisation", not spec.normalize),
            ("Dense layers after pooling", bool(spec.dense_layers)),
            ("a sparse head", spec.sparse_head is not None),
            ("an image tower", spec.modality != "text"),
            (f"a {tokenizer.model_type} tokenizer (WordPiece only)", tokenizer.model_type != "WordPiece"),
        ]
        if refused
    ]
    if reasons:
        raise NotImplementedError(
            f"the {backend.name} backend pools by itself and is verified on BERT-family models only; {spec.id} has "
            + ", ".join(reasons)
        )


# Tokens per forward pass: on a CPU, passes past a few thousand tokens gain no speed and hold hundreds of MB of
# attention activations (ONNX Runtime on MiniLM, long texts: 2048 was the fastest of 1024-16384); a GPU needs
# large passes to fill it.
DEFAULT_BATCH_TOKENS = {"cpu": 2048, "cuda": 32768}


def resolve_batch_tokens(requested: int | None, device: str) -> int:
    return requested or DEFAULT_BATCH_TOKENS["cuda" if device.startswith("cuda") else "cpu"]


def resolve_dtype(requested: str, device: str, spec: ModelSpec) -> str:
    """fp32 on CPU; fp16 on CUDA unless the model breaks in fp16 (EmbeddingGemma), then bf16."""
    if requested == "float16" and not spec.float16:
        raise ValueError(f"{spec.id} gives wrong results (NaN) in float16; use --dtype bfloat16 or float32")
    if requested != "auto":
        return requested
    if not device.startswith("cuda"):
        return "float32"
    return "float16" if spec.float16 else "bfloat16"


@dataclass
class Encoded:
    dense: np.ndarray  # float32 [inputs, dims], unit length when the model normalises
    stats: ForwardStats
    sparse: list[dict[int, float]] | None = None  # token id -> weight per input, when asked for


class Embedder:
    def __init__(self, settings: EngineSettings, backend_name: str):
        started = time.monotonic()
        model_dir = resolve_model_dir(settings.model)
        self.spec: ModelSpec = load_spec(settings.model, model_dir, settings.max_tokens, settings.model_registry)
        self.backend: Backend = create_backend(backend_name)
        check_servable(self.spec, settings, self.backend)
        device = resolve_device(settings.device)
        self.settings = settings.model_copy(
            update={
                "dtype": resolve_dtype(settings.dtype, device, self.spec),
                "max_batch_tokens": resolve_batch_tokens(settings.max_batch_tokens, device),
            }
        )
        self.tokenizer = TextTokenizer(model_dir, self.spec.max_tokens)
        check_pooled_text(self.spec, self.tokenizer, self.backend)
        self.projection = load_projection(model_dir, self.spec.dense_layers)
        self.sparse_head = SparseHead.load(model_dir, self.spec.sparse_head) if self.spec.sparse_head else None
        self.image_text = self.spec.modality == "text+image"
        self.image_processing = ImageProcessing.from_model_dir(model_dir) if self.image_text else None
        self.model_dir = model_dir
        # What the backend loaded: the model's folder (torch) or its exported artefact (the bench's reference runners
        # load the same graph).
        self.files = backend_files(self.settings, model_dir, self.backend)
        self.backend.load(self.files, self.settings, device)
        self.load_seconds = time.monotonic() - started
        log.info(
            "loaded %s on %s (%s) in %.1f s", settings.model, self.backend.name, self.backend.device, self.load_seconds
        )

    def tokenize_texts(self, texts: list[str], input_type: str | None = None) -> Tokenized:
        prompt = self.spec.prompts.get(input_type or "", "")
        return self.tokenizer.tokenize([prompt + text for text in texts] if prompt else texts)

    def embed_token_ids(self, id_lists: list[list[int]], sparse: bool = False) -> Encoded:
        """Dense embeddings and, with `sparse` (models with a sparse head), lexical weights, from one forward."""
        if sparse and self.sparse_head is None:
            raise ValueError(f"{self.spec.id} has no sparse head")
        stats = ForwardStats()
        pooled: np.ndarray | None = None  # [inputs, hidden]; the hidden size is known after the first pass
        lexical: list[dict[int, float]] = [{} for _ in id_lists]
        max_tokens = self.spec.max_tokens
        fixed_length = self.spec.text_padding == "max_length"
        if fixed_length:  # SigLIP: every input padded to the model's length
            lengths = [max_tokens] * len(id_lists)
        elif self.backend.caches_per_shape:
            lengths = [bucket_length(len(ids), max_tokens) for ids in id_lists]
        else:
            lengths = [len(ids) for ids in id_lists]
        passes = plan_batches(lengths, self.settings.max_batch_tokens, self.settings.max_batch_inputs)
        if self.backend.memory_per_shape:
            passes = [chunk for indices in passes for chunk in power_of_two_chunks(indices)]
        for indices in passes:
            started = time.perf_counter()
            length = max(lengths[i] for i in indices)
            batch = pad_batch([id_lists[i] for i in indices], self.tokenizer.pad_id, self.spec.padding_side, length)
            if self.image_text:
                # Trained on padded text with no mask (SigLIP): the pads are part of the input.
                unmasked = TokenBatch(batch.input_ids, np.ones_like(batch.attention_mask)) if fixed_length else batch
                vectors = self.backend.text_features(unmasked)
            elif isinstance(self.backend, PooledTextBackend):
                vectors = self.backend.embed(self.tokenizer.decode([id_lists[i] for i in indices]))
            elif isinstance(self.backend, DevicePoolingBackend) and not sparse:  # the sparse head needs every token
                vectors = self.backend.forward_pooled(batch, self.spec.pooling)
            else:
                hidden = self.backend.forward(batch)
                vectors = pool(hidden, batch.attention_mask, self.spec.pooling)
            if pooled is None:
                pooled = np.empty((len(id_lists), vectors.shape[1]), dtype=np.float32)
            pooled[indices] = vectors
            if sparse:
                weights = self.sparse_head.token_weights(hidden)
                rows = lexical_weights(weights, batch.input_ids, batch.attention_mask, self.tokenizer.special_ids)
                for index, row in zip(indices, rows, strict=True):
                    lexical[index] = row
            seconds = time.perf_counter() - started
            stats.forward_passes.append(ForwardPass(len(indices), batch.real_tokens, batch.padded_tokens, seconds))
        output = project(pooled, self.projection)
        return Encoded(l2_normalize(output) if self.spec.normalize else output, stats, lexical if sparse else None)

    def embed_images(self, images: list[np.ndarray]) -> Encoded:
        """Unit-length embeddings of preprocessed images [3, H, W] (image-text models), in input order."""
        stats = ForwardStats()
        outputs = []
        for start in range(0, len(images), self.settings.max_batch_inputs):
            started = time.perf_counter()
            chunk = np.stack(images[start : start + self.settings.max_batch_inputs])
            outputs.append(self.backend.image_features(chunk))
            stats.forward_passes.append(ForwardPass(len(chunk), 0, 0, time.perf_counter() - started))
        return Encoded(l2_normalize(np.concatenate(outputs)), stats)

    def embed_texts(self, texts: list[str], input_type: str | None = None) -> Encoded:
        """Texts, with the model's prompt for `input_type`: `.dense` holds [inputs, dims] float32, in input order."""
        return self.embed_token_ids(self.tokenize_texts(texts, input_type).ids)
