"""Pooling, normalisation and Matryoshka truncation, written once for every backend (numpy in, numpy out)."""

from __future__ import annotations

import numpy as np

from server.engine.models import Pooling


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    weights = mask[..., None].astype(hidden.dtype)
    summed = (hidden * weights).sum(axis=1)
    return summed / np.clip(weights.sum(axis=1), 1e-9, None)


def cls_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return hidden[:, 0]


def last_token_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    # Correct for either padding side: the last position whose mask is 1.
    last = mask.shape[1] - 1 - np.argmax(mask[:, ::-1], axis=1)
    return hidden[np.arange(hidden.shape[0]), last]


POOLERS = {"mean": mean_pool, "cls": cls_pool, "last": last_token_pool}


def pool(hidden: np.ndarray, mask: np.ndarray, pooling: Pooling) -> np.ndarray:
    return POOLERS[pooling](hidden.astype(np.float32, copy=False), mask)


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.clip(norms, 1e-12, None)


def truncate_dimensions(vectors: np.ndarray, dimensions: int | None) -> np.ndarray:
    """Matryoshka truncation: keep the first `dimensions` values, then re-normalise to unit length."""
    if dimensions is None or dimensions >= vectors.shape[-1]:
        return vectors
    return l2_normalize(vectors[..., :dimensions])
