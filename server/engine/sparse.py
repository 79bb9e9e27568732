"""Sparse lexical weights (BGE-M3): one weight per token, ReLU(sparse_linear(last hidden state)), special tokens
dropped, and for a token that occurs several times its largest weight, as FlagEmbedding computes them.

The head ships beside the weights as `sparse_linear.pt` (a torch state dict: weight [1, hidden], bias [1]);
a `.safetensors` file of the same name is read without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class SparseHead:
    weight: np.ndarray  # [hidden]
    bias: float

    @classmethod
    def load(cls, model_dir: Path, filename: str) -> SparseHead:
        path = model_dir / filename
        safetensors_path = path.with_suffix(".safetensors")
        if safetensors_path.is_file():
            from safetensors.numpy import load_file

            tensors = load_file(str(safetensors_path))
        elif path.is_file():
            try:
                import torch
            except ImportError as exc:
                raise RuntimeError(
                    f"{path} is a torch file: install torch, or convert it to {safetensors_path.name}"
                ) from exc
            tensors = {k: v.float().numpy() for k, v in torch.load(path, map_location="cpu", weights_only=True).items()}
        else:
            raise FileNotFoundError(f"the model's sparse head {filename} is not in {model_dir}")
        weight = np.asarray(tensors["weight"], dtype=np.float32).reshape(-1)
        bias = float(np.asarray(tensors.get("bias", [0.0]), dtype=np.float32).reshape(-1)[0])
        return cls(weight, bias)

    def token_weights(self, hidden: np.ndarray) -> np.ndarray:
        """[batch, seq] non-negative weights from last hidden states [batch, seq, hidden]."""
        return np.maximum(hidden.astype(np.float32, copy=False) @ self.weight + self.bias, 0.0)


def lexical_weights(
    weights: np.ndarray, input_ids: np.ndarray, mask: np.ndarray, skip_ids: frozenset[int]
) -> list[dict[int, float]]:
    """Per row: token id -> its largest weight, without padding, special tokens or zero weights."""
    rows = []
    for row_weights, row_ids, row_mask in zip(weights, input_ids, mask, strict=True):
        lexical: dict[int, float] = {}
        for weight, token, real in zip(row_weights.tolist(), row_ids.tolist(), row_mask.tolist(), strict=True):
            if real and weight > 0 and token not in skip_ids and weight > lexical.get(token, 0.0):
                lexical[token] = weight
        rows.append(lexical)
    return rows
