"""`embedserve bench --reference`: each backend beside the best-known way to run its framework in-process, on the
same texts and batch sizes, in alternated rounds, so that a ratio between backends measures the frameworks, not a
handicap of embedserve's.

The reference runners are sentence-transformers' own paths: `encode` on torch, and its ONNX and OpenVINO backends on
the very graph embedserve exported (a folder of links: the model's files, plus the artefact where sentence-transformers
looks for it). OpenVINO's runs at our float precision: left to itself it picks bf16 on CPUs with bf16 arithmetic,
which is faster and less exact (`--dtype bfloat16` measures that on both sides). The Rust runtimes' reference is
embed-anything's own call on the model our backend loaded. Rounds alternate
ours-reference-reference-ours, so that a machine whose speed drifts over the minutes biases neither side.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from server.engine import Embedder

# sentence-transformers' backend name and the files it loads from <folder>/<backend>/, per runtime.
GRAPH_FILES = {
    "onnx": ("onnx", ("model.onnx",)),
    "openvino": ("openvino", ("openvino_model.xml", "openvino_model.bin")),
}
# Runtimes in Rust through embed-anything (server/backends/rust.py): their reference is embed-anything's own call.
RUST_RUNTIMES = ("candle", "ort")
# Ours, then the reference, in this order per pair of rounds.
ORDER = ("ours", "reference", "reference", "ours")


@dataclass(frozen=True)
class ReferenceCell:
    """Ours against the reference on one profile and batch size: inputs/s of each round."""

    profile: str
    batch_size: int
    ours: list[float]
    reference: list[float]
    padding: float = 1.0  # tokens ours ran over the reference's (which pads each call to its longest input)
    passes: float = 1.0  # our forward passes per call (the reference runs one: its batch size is the call's)

    @property
    def ratios(self) -> list[float]:
        """Ours over the reference, round by round (the rounds of one pair are each other's neighbours)."""
        return [a / b for a, b in zip(self.ours, self.reference, strict=True)]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def spread(self) -> tuple[float, float]:
        return min(self.ratios), max(self.ratios)


def linked_folder(embedder: Embedder, runtime: str, folder: Path) -> Path:
    """The model's folder as sentence-transformers loads it, with embedserve's exported graph in it."""
    folder.mkdir(parents=True, exist_ok=True)
    for item in embedder.model_dir.iterdir():
        if not (folder / item.name).exists():
            (folder / item.name).symlink_to(item.resolve())
    if runtime in GRAPH_FILES:
        subfolder, names = GRAPH_FILES[runtime]
        if (folder / subfolder).is_symlink():  # a model folder that ships its own export: ours replaces it
            (folder / subfolder).unlink()
        (folder / subfolder).mkdir(exist_ok=True)
        for name in names:
            link = folder / subfolder / name
            link.unlink(missing_ok=True)
            link.symlink_to((embedder.files / name).resolve())
    return folder


def reference_encoder(
    embedder: Embedder, runtime: str, folder: Path, texts: list[str]
) -> Callable[[list[str]], np.ndarray] | str:
    """sentence-transformers' `encode` on the same model and graph, embed-anything called directly for the Rust
    runtimes, or why there is none. `texts`: every text the cells will send."""
    if runtime in RUST_RUNTIMES:
        return direct_rust_encoder(embedder, texts)
    if runtime not in ("torch", *GRAPH_FILES):
        return f"no reference runner for {runtime} yet"
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return "sentence-transformers is not installed (pip install embedserve[dev])"
    options = {} if runtime == "torch" else {"backend": GRAPH_FILES[runtime][0]}
    if runtime == "openvino":
        options["model_kwargs"] = {"ov_config": {"INFERENCE_PRECISION_HINT": embedder.backend.precision}}
    model = SentenceTransformer(str(linked_folder(embedder, runtime, folder)), device="cpu", **options)
    model.max_seq_length = embedder.spec.max_tokens

    def encode(texts: list[str]) -> np.ndarray:
        return model.encode(texts, batch_size=len(texts), normalize_embeddings=True, convert_to_numpy=True)

    return encode


def direct_rust_encoder(embedder: Embedder, texts: list[str]) -> Callable[[list[str]], np.ndarray]:
    """embed-anything's own call on the very model our backend loaded. Our engine hands it each text cut to the
    model's limit (tokenized, cut, decoded: inside the timed call); the reference gets the same cut texts, made before
    the timing, so both embed the same text and the ratio is what our engine's work around the runtime costs."""
    cut = dict(zip(texts, embedder.tokenizer.decode(embedder.tokenize_texts(texts).ids), strict=True))

    def encode(batch: list[str]) -> np.ndarray:
        return embedder.backend.embed([cut[text] for text in batch])

    return encode


def inputs_per_s(encode: Callable[[list[str]], object], batches: list[list[str]], seconds: float) -> float:
    """Whole calls of `encode` on `batches` in turn for `seconds` (at least one)."""
    inputs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or not inputs:
        batch = batches[(inputs // len(batches[0])) % len(batches)]
        encode(batch)
        inputs += len(batch)
    return inputs / (time.perf_counter() - started)


def how_ours_ran(embedder: Embedder, batches: list[list[str]]) -> tuple[float, float]:
    """What our engine ran that the reference did not: padded tokens over those of one pass per call padded to its
    longest input (the reference's), and forward passes per call (the token budget cuts a call of long texts)."""
    stats = [embedder.embed_texts(batch).stats for batch in batches]
    theirs = sum(len(batch) * max(map(len, embedder.tokenize_texts(batch).ids)) for batch in batches)
    return sum(s.padded_tokens for s in stats) / theirs, sum(s.passes for s in stats) / len(batches)


def alternate(measure: dict[str, Callable[[], float]], pairs: int) -> dict[str, list[float]]:
    """`pairs` x ORDER: each side measured twice per pair, its two figures averaged into that pair's round."""
    figures: dict[str, list[float]] = {side: [] for side in measure}
    for _ in range(pairs):
        taken: dict[str, list[float]] = {side: [] for side in measure}
        for side in ORDER:
            taken[side].append(measure[side]())
        for side, values in taken.items():
            figures[side].append(sum(values) / len(values))
    return figures


@dataclass
class ReferenceRun:
    """One backend against its reference runner: every cell, and how close the two outputs are."""

    runner: str = ""
    cells: list[ReferenceCell] | None = None
    parity: float | None = None  # the worst cosine between ours and the reference's vectors of the parity texts
    error: str = ""


def measure_reference(
    embedder: Embedder, backend: str, profiles: dict[str, list[str]], batch_sizes: list[int], seconds: float,
    pairs: int, parity_texts: list[str], folder: Path,
) -> ReferenceRun:  # fmt: skip
    """`profiles`: each profile's pool of texts. Cells of `seconds` per side and round, `pairs` pairs of rounds."""
    runtime = backend.partition("-")[0]
    try:
        encode = reference_encoder(embedder, runtime, folder, [text for pool in profiles.values() for text in pool])
    except Exception as error:  # noqa: BLE001 - reported in the table; the bench's own figures stand
        encode = f"the reference runner did not load: {type(error).__name__}: {error}"
    if isinstance(encode, str):
        return ReferenceRun(error=encode)
    runner = "sentence-transformers" + ("" if runtime == "torch" else f" ({runtime} backend, the same graph)")
    if runtime in RUST_RUNTIMES:
        runner = "embed-anything called directly (the same loaded model, the same texts cut to the model's limit)"
    if runtime == "openvino":
        runner += f", {embedder.backend.precision} as ours"
    cells = []
    for profile, pool in profiles.items():
        for batch_size in batch_sizes:
            batches = [pool[i : i + batch_size] for i in range(0, len(pool) - batch_size + 1, batch_size)]
            encode(batches[0])  # warm-up, as ours had
            figures = alternate(
                {
                    "ours": lambda: inputs_per_s(embedder.embed_texts, batches, seconds),  # noqa: B023
                    "reference": lambda: inputs_per_s(encode, batches, seconds),  # noqa: B023
                },
                pairs,
            )
            padding, passes = how_ours_ran(embedder, batches)
            cells.append(ReferenceCell(profile, batch_size, figures["ours"], figures["reference"], padding, passes))
    ours, theirs = embedder.embed_texts(parity_texts).dense, encode(parity_texts)
    return ReferenceRun(runner, cells, float((ours * theirs).sum(axis=1).min()))
