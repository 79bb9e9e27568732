"""Dense projection layers after pooling (sentence-transformers' Dense modules, e.g. EmbeddingGemma's 768 -> 3072
-> 768), applied in numpy once for every backend: an export of the transformer alone leaves them out."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# sentence-transformers names the activation by its import path; these are the ones embedding models ship.
ACTIVATIONS = {
    "torch.nn.modules.linear.Identity": lambda x: x,
    "torch.nn.modules.activation.Tanh": np.tanh,
}


@dataclass(frozen=True)
class DenseLayer:
    weight: np.ndarray  # [out, in]
    bias: np.ndarray | None
    activation: str

    @classmethod
    def load(cls, directory: Path) -> DenseLayer:
        from safetensors.numpy import load_file

        config = json.loads((directory / "config.json").read_text())
        # Older sentence-transformers defaulted to Tanh when the config did not name an activation.
        activation = config.get("activation_function", "torch.nn.modules.activation.Tanh")
        if activation not in ACTIVATIONS:
            raise ValueError(f"{directory}: activation {activation!r} is not supported; known: {sorted(ACTIVATIONS)}")
        weights_path = directory / "model.safetensors"
        if not weights_path.is_file():
            raise FileNotFoundError(f"{directory}: no model.safetensors (pytorch_model.bin Dense weights need torch)")
        tensors = load_file(str(weights_path))
        weight = tensors["linear.weight"].astype(np.float32)
        if weight.shape != (config["out_features"], config["in_features"]):
            raise ValueError(f"{directory}: weight shape {weight.shape} does not match its config")
        bias = tensors.get("linear.bias")
        return cls(weight, None if bias is None else bias.astype(np.float32), activation)

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        out = vectors @ self.weight.T
        if self.bias is not None:
            out += self.bias
        return ACTIVATIONS[self.activation](out)


def load_projection(model_dir: Path, layer_dirs: tuple[str, ...]) -> list[DenseLayer]:
    return [DenseLayer.load(model_dir / name) for name in layer_dirs]


def project(vectors: np.ndarray, layers: list[DenseLayer]) -> np.ndarray:
    for layer in layers:
        vectors = layer(vectors)
    return vectors
