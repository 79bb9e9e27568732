"""Requests through the engine: each is checked and tokenized on its own (`prepare_query`); a dynamic batch of them is
embedded with one forward plan and split back per request (`embed_queries`).

No wire format here: the HTTP layer turns its body into an `EmbeddingQuery` and a `QueryResult` into its answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from server.engine.embedder import Embedder, ForwardStats
from server.engine.errors import InvalidInput, ModelNotServed
from server.engine.images import DATA_URI_PREFIX, BadImage, read_image_bytes
from server.engine.pooling import truncate_dimensions


@dataclass(frozen=True)
class EmbeddingQuery:
    """What the engine needs of one request, whatever its wire format."""

    inputs: list[str] | list[list[int]]  # texts (image-text models: some may be images), or token-id lists
    model: str
    dimensions: int | None = None
    sparse: bool = False
    truncate: bool = True
    input_type: str | None = None


@dataclass(frozen=True)
class RequestLimits:
    max_request_tokens: int
    allow_image_urls: bool = False


@dataclass
class PreparedQuery:
    """A query that passed every check, tokenized: what embed_queries() needs."""

    ids: list[list[int]]  # the text inputs, in order
    dimensions: int | None
    sparse: bool
    # Image inputs (image-text models) by their position in `inputs`; texts fill the other positions.
    images: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def prompt_tokens(self) -> int:
        return sum(len(ids) for ids in self.ids)


@dataclass
class QueryResult:
    vectors: np.ndarray  # float32 [inputs, dims], in input order
    prompt_tokens: int
    sparse: list[dict[int, float]] | None = None  # with sparse queries: token id -> weight per input


def prepare_query(embedder: Embedder, query: EmbeddingQuery, limits: RequestLimits) -> PreparedQuery:
    """Checks a query against the model and the limits, and tokenizes it; raises InvalidInput or ModelNotServed."""
    spec = embedder.spec
    if query.model not in spec.names:
        raise ModelNotServed(query.model, spec.names)
    if query.dimensions is not None and query.dimensions > spec.dimensions:
        raise InvalidInput(
            f"dimensions={query.dimensions} is larger than the model's {spec.dimensions}",
            param="dimensions",
            code="invalid_dimensions",
        )
    if query.sparse and embedder.sparse_head is None:
        raise InvalidInput(
            f"{spec.id} has no sparse head; encoding_format `sparse` needs a model such as BAAI/bge-m3",
            param="encoding_format",
            code="sparse_not_supported",
        )
    if query.sparse and query.dimensions is not None:
        raise InvalidInput("dimensions does not apply to sparse embeddings", param="dimensions")
    images: dict[int, np.ndarray] = {}
    text_slots = list(range(len(query.inputs)))
    if isinstance(query.inputs[0], str):
        images = _decode_images(embedder, query.inputs, limits.allow_image_urls)  # type: ignore[arg-type]
        text_slots = [index for index in text_slots if index not in images]
        texts = [query.inputs[index] for index in text_slots]
        tokenized = embedder.tokenize_texts(texts, query.input_type)  # type: ignore[arg-type]
    else:
        vocab = embedder.tokenizer.vocab_size
        for index, ids in enumerate(query.inputs):
            if any(not 0 <= token < vocab for token in ids):  # type: ignore[union-attr]
                raise InvalidInput(f"input[{index}] has token ids outside [0, {vocab})", param="input")
        tokenized = embedder.tokenizer.frame_token_ids(query.inputs)  # type: ignore[arg-type]
    if not query.truncate and any(tokenized.overflowed):
        index = text_slots[tokenized.overflowed.index(True)]
        raise InvalidInput(
            f"input[{index}] is longer than the model's limit of {spec.max_tokens} tokens and truncate is false",
            param="input",
            code="context_length_exceeded",
        )
    if tokenized.token_count > limits.max_request_tokens:
        raise InvalidInput(
            f"the request has {tokenized.token_count} tokens; at most {limits.max_request_tokens} allowed",
            param="input",
            code="max_tokens_per_request",
        )
    return PreparedQuery(tokenized.ids, query.dimensions, query.sparse, images)


def _decode_images(embedder: Embedder, inputs: list[str], allow_urls: bool) -> dict[int, np.ndarray]:
    """Position -> preprocessed pixels, for every input that is an image; a bad one is refused, naming it."""
    images = {}
    fetch_urls = embedder.image_text and allow_urls
    for index, item in enumerate(inputs):
        # A URL is text, unless the model takes images and image URLs are enabled.
        if not (item.startswith(DATA_URI_PREFIX) or (fetch_urls and item.startswith(("http://", "https://")))):
            continue
        if not embedder.image_text:
            raise InvalidInput(
                f"input[{index}] is an image; {embedder.spec.id} embeds text only",
                param="input",
                code="images_not_supported",
            )
        try:
            images[index] = embedder.image_processing(read_image_bytes(item, allow_urls))
        except BadImage as reason:
            raise InvalidInput(f"input[{index}]: {reason}", param="input", code="invalid_image") from None
    return images


def embed_queries(embedder: Embedder, queries: list[PreparedQuery]) -> tuple[list[QueryResult], ForwardStats]:
    """One forward plan for every input of every query; results split back per query, in input order."""
    all_ids = [ids for query in queries for ids in query.ids]
    all_images = [image for query in queries for image in query.images.values()]
    stats = ForwardStats()
    texts = images = None
    if all_ids:
        texts = embedder.embed_token_ids(all_ids, sparse=any(query.sparse for query in queries))
        stats.forward_passes += texts.stats.forward_passes
    if all_images:
        images = embedder.embed_images(all_images)
        stats.forward_passes += images.stats.forward_passes
    results = []
    text_offset = image_offset = 0
    for query in queries:
        own_texts = slice(text_offset, text_offset + len(query.ids))
        text_offset += len(query.ids)
        vectors = texts.dense[own_texts] if texts is not None else None
        if query.images:  # texts and images back in the order of the inputs
            is_image = np.zeros(len(query.ids) + len(query.images), dtype=bool)
            is_image[list(query.images)] = True
            merged = np.empty((len(is_image), embedder.spec.dimensions), dtype=np.float32)
            merged[is_image] = images.dense[image_offset : image_offset + len(query.images)]
            if vectors is not None:
                merged[~is_image] = vectors
            image_offset += len(query.images)
            vectors = merged
        sparse = texts.sparse[own_texts] if query.sparse else None
        results.append(QueryResult(truncate_dimensions(vectors, query.dimensions), query.prompt_tokens, sparse))
    return results, stats
