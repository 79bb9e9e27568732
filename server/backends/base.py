"""The Backend protocol and the registry that finds a backend by name.

A backend knows one runtime and nothing else: it loads a model for a device and turns a padded TokenBatch into
the model's last hidden states. Tokenization, pooling, normalisation and batching live above it, once. (A runtime
that only takes text and gives finished embeddings is a PooledTextBackend: the engine feeds it text and skips its
pooling.)
Adding a backend is one new module plus one line in BACKENDS.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from server.settings import EngineSettings, Quantization


@dataclass(frozen=True)
class TokenBatch:
    """One forward pass worth of inputs, padded to the batch's longest input."""

    input_ids: np.ndarray  # int64 [batch, seq]
    attention_mask: np.ndarray  # int64 [batch, seq]

    @property
    def real_tokens(self) -> int:
        return int(self.attention_mask.sum())

    @property
    def padded_tokens(self) -> int:
        return int(self.attention_mask.size)


# name -> "module:class"; imported only when asked for, so an ONNX-only server never imports torch.
BACKENDS: dict[str, str] = {
    "torch": "server.backends.torch:TorchBackend",
    "onnx": "server.backends.onnx:OnnxBackend",
    "openvino": "server.backends.openvino:OpenVinoBackend",
    "candle": "server.backends.rust:CandleBackend",
    "ort": "server.backends.rust:OrtBackend",
}


# The quantised variants each runtime has, named `<runtime>-<variant>`.
VARIANTS: dict[str, tuple[str, ...]] = {"onnx": ("int8",), "openvino": ("int8", "int8-weights")}


class Backend(Protocol):
    #: label reported in /ready, /v1/models and bench output, e.g. "onnx-int8"
    name: str
    #: the device the model actually runs on, e.g. "cpu" or "cuda:0"
    device: str
    #: the runtime's package and version, for the build-info metric, e.g. ("onnxruntime", "1.32.0")
    runtime: tuple[str, str]
    #: the exported format load() wants ("onnx", "openvino"), or None for the model's own folder (torch)
    artefact: str | None
    quantize: Quantization
    #: the runtime compiles or caches kernels per input shape, so the engine pads lengths to a few buckets
    caches_per_shape: bool
    #: the runtime keeps memory for every shape it has run, for good, so the engine also cuts each pass into
    #: power-of-two row counts: the set of shapes, and that memory, stop growing
    memory_per_shape: bool

    def load(self, files: Path, settings: EngineSettings, device: str) -> None:
        """Load from `files`: the model's folder, or the artefact folder the engine resolved for `artefact`."""
        ...

    def forward(self, batch: TokenBatch) -> np.ndarray:
        """Last hidden states, float32 [batch, seq, hidden]."""
        ...

    def peak_device_memory_bytes(self) -> int | None:
        """The runtime allocator's peak on an accelerator; None where the runtime does not say (or on CPU)."""
        ...


@runtime_checkable
class ImageTextBackend(Backend, Protocol):
    """A backend that also runs image-text models (CLIP, SigLIP): each tower's pooled, projected output.

    The graph runtimes load one exported graph per tower (TOWERS below), found by tower_files().
    """

    def text_features(self, batch: TokenBatch) -> np.ndarray:
        """[batch, dims]"""
        ...

    def image_features(self, pixels: np.ndarray) -> np.ndarray:
        """Preprocessed pixels [n, 3, H, W] -> [n, dims]"""
        ...


@runtime_checkable
class DevicePoolingBackend(Backend, Protocol):
    """A backend that pools on its own device, so that [batch, hidden] comes back to the host rather than the hidden
    states [batch, seq, hidden]: on a GPU, that copy and the host's pooling of it grow with every token."""

    def forward_pooled(self, batch: TokenBatch, pooling: str) -> np.ndarray:
        """float32 [batch, hidden], pooled ("mean", "cls" or "last") as server/engine/pooling.py pools"""
        ...


@runtime_checkable
class PooledTextBackend(Backend, Protocol):
    """A backend whose runtime takes text and gives the model's final embedding (its own tokenizer, pooling and
    normalisation), not hidden states: Candle and ONNX Runtime from Rust, through embed-anything. The engine hands
    it the texts of its own token ids (prompted and cut to the model's limit above it) and does not pool them again."""

    def embed(self, texts: list[str]) -> np.ndarray:
        """[texts, dims], unit length"""
        ...


@dataclass(frozen=True)
class BackendVariant:
    """A backend name as users write it: runtime plus optional variant suffix (`onnx-int8`)."""

    runtime: str
    quantize: Quantization = "none"

    @property
    def name(self) -> str:
        return self.runtime if self.quantize == "none" else f"{self.runtime}-{self.quantize}"

    @classmethod
    def parse(cls, name: str) -> BackendVariant:
        runtime, _, suffix = name.partition("-")
        if runtime not in BACKENDS:
            raise ValueError(f"unknown backend {name!r}; known: {', '.join(sorted(BACKENDS))} (+ variants)")
        if suffix and suffix not in VARIANTS.get(runtime, ()):
            known = ", ".join(f"{r}-{v}" for r, variants in VARIANTS.items() for v in variants)
            raise ValueError(f"unknown variant {name!r}; known: {known}")
        return cls(runtime=runtime, quantize=suffix or "none")


def create_backend(name: str) -> Backend:
    variant = BackendVariant.parse(name)
    module_name, class_name = BACKENDS[variant.runtime].split(":")
    backend_class = getattr(importlib.import_module(module_name), class_name)
    return backend_class(quantize=variant.quantize) if variant.quantize != "none" else backend_class()


def runtime_inputs(batch: TokenBatch, input_names: list[str]) -> dict[str, np.ndarray]:
    """Feeds for a graph runtime (ONNX Runtime, OpenVINO) by input name; BERT-style graphs also want segment ids."""
    available = {
        "input_ids": batch.input_ids,
        "attention_mask": batch.attention_mask,
        "token_type_ids": np.zeros_like(batch.input_ids),
        # Counting real tokens keeps positions right under left padding too.
        "position_ids": np.clip(np.cumsum(batch.attention_mask, axis=1) - 1, 0, None),
    }
    missing = [name for name in input_names if name not in available]
    if missing:
        raise RuntimeError(f"the exported graph wants inputs this server cannot feed: {missing}")
    return {name: available[name] for name in input_names}


# An image-text model's exported graphs: tower -> its input names (export.py writes them, graph backends feed them).
TOWERS = {"text": ("input_ids", "attention_mask"), "vision": ("pixel_values",)}


def tower_files(artefact: Path, suffix: str) -> dict[str, Path]:
    """An image-text model's exported graphs, tower -> file ({} for a text model's single graph)."""
    files = {tower: artefact / f"{tower}{suffix}" for tower in TOWERS}
    return files if all(path.is_file() for path in files.values()) else {}


def tower_inputs(inputs: TokenBatch | np.ndarray) -> dict[str, np.ndarray]:
    """Feeds of an exported tower: token ids and mask for the text tower, float32 pixels for the vision tower."""
    if isinstance(inputs, TokenBatch):
        return {"input_ids": inputs.input_ids, "attention_mask": inputs.attention_mask}
    return {"pixel_values": inputs.astype(np.float32, copy=False)}
