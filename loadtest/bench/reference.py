"""`embedserve bench --reference`: each backend beside the best-known way to run its framework in-process, on the
same texts and batch sizes, in alternated rounds, so that a ratio between backends measures the frameworks, not a
handicap of embedserve's.

The reference runners are sentence-transformers' own paths: `encode` on torch, and its ONNX and OpenVINO backends on
the very graph embedserve exported (a folder of links: the model's files, plus the artefact where sentence-transformers
looks for it); for onnx-int8, sentence-transformers' own int8 export of the fp32 graph, whose quality against fp32 is
measured beside ours. OpenVINO's runs at our float precision: left to itself it picks bf16 on CPUs with bf16
arithmetic, which is faster and less exact (`--dtype bfloat16` measures that on both sides). The Rust runtimes'
reference is embed-anything's own call on the model our backend loaded. Rounds alternate ours-reference-reference-ours,
so that a machine whose speed drifts over the minutes biases neither side.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from server.engine import Embedder, Encoded, ForwardStats, artefact_dir, cpu_flags, is_complete

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


def linked_folder(embedder: Embedder, runtime: str, folder: Path, graph: Path | None = None) -> Path:
    """The model's folder as sentence-transformers loads it, with embedserve's exported graph in it (from `graph`, an
    artefact folder, where it is not the one the embedder loaded)."""
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
            link.symlink_to(((graph or embedder.files) / name).resolve())
    return folder


def reference_encoder(
    embedder: Embedder, backend: str, folder: Path, texts: list[str]
) -> tuple[Callable[[list[str]], np.ndarray], str] | str:
    """The reference runner of `backend` and its description, or why there is none. sentence-transformers' `encode`
    on the same model and graph; for onnx-int8, sentence-transformers' own int8 export of the fp32 graph;
    embed-anything called directly for the Rust runtimes. `texts`: every text the timed cells will send."""
    runtime = backend.partition("-")[0]
    if runtime in RUST_RUNTIMES:
        return direct_rust_encoder(embedder, texts), (
            "embed-anything called directly (the same loaded model, the same texts cut to the model's limit)"
        )
    if runtime not in ("torch", *GRAPH_FILES):
        return f"no reference runner for {runtime} yet"
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return "sentence-transformers is not installed (pip install embedserve[dev])"
    options: dict = {} if runtime == "torch" else {"backend": GRAPH_FILES[runtime][0]}
    runner = "sentence-transformers" + ("" if runtime == "torch" else f" ({runtime} backend, the same graph)")
    if runtime == "openvino":
        options["model_kwargs"] = {"ov_config": {"INFERENCE_PRECISION_HINT": embedder.backend.precision}}
        runner += f", {embedder.backend.precision} as ours"
    if backend == "onnx-int8":
        options["model_kwargs"], runner = sentence_transformers_int8(embedder, folder)
    else:
        linked_folder(embedder, runtime, folder)
    model = SentenceTransformer(str(folder), device="cpu", **options)
    model.max_seq_length = embedder.spec.max_tokens

    def encode(texts: list[str]) -> np.ndarray:
        return model.encode(texts, batch_size=len(texts), normalize_embeddings=True, convert_to_numpy=True)

    return encode, runner


def sentence_transformers_int8(embedder: Embedder, folder: Path) -> tuple[dict, str]:
    """sentence-transformers' own int8 ONNX export (dynamic quantisation, its configuration for this CPU) of the fp32
    graph embedserve exported: the model_kwargs that load it, and its description."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.backend import export_dynamic_quantized_onnx_model

    fp32 = artefact_dir(embedder.settings.cache, embedder.settings.model, "onnx", "none")
    if not is_complete(fp32):
        raise FileNotFoundError(f"sentence-transformers quantises the fp32 ONNX export, not made yet: {fp32}")
    linked_folder(embedder, "onnx", folder, graph=fp32)
    config = st_quantization_config(cpu_flags())
    export_dynamic_quantized_onnx_model(
        SentenceTransformer(str(folder), device="cpu", backend="onnx"), config, str(folder)
    )
    return {"file_name": f"onnx/model_qint8_{config}.onnx"}, f"sentence-transformers' own int8 export ({config})"


def st_quantization_config(flags: frozenset[str]) -> str:
    """The name of sentence-transformers' dynamic int8 configuration for this CPU."""
    if platform.machine() in ("aarch64", "arm64"):
        return "arm64"
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    return "avx512" if "avx512f" in flags else "avx2"


def direct_rust_encoder(embedder: Embedder, texts: list[str]) -> Callable[[list[str]], np.ndarray]:
    """embed-anything's own call on the very model our backend loaded. Our engine hands it each text cut to the
    model's limit (tokenized, cut, decoded: inside the timed call); the reference gets the same cut texts, made before
    the timing, so both embed the same text and the ratio is what our engine's work around the runtime costs."""
    cut: dict[str, str] = {}

    def cut_to_the_limit(texts: list[str]) -> None:
        new = [text for text in dict.fromkeys(texts) if text not in cut]
        if new:
            cut.update(zip(new, embedder.tokenizer.decode(embedder.tokenize_texts(new).ids), strict=True))

    def encode(batch: list[str]) -> np.ndarray:
        cut_to_the_limit(batch)  # a no-op for the cells' texts (cut below); the parity texts come later, untimed
        return embedder.backend.embed([cut[text] for text in batch])

    cut_to_the_limit(texts)

    return encode


def inputs_per_s(encode: Callable[[list[str]], object], batches: list[list[str]], seconds: float) -> float:
    """Whole calls of `encode` on `batches` in turn for `seconds` (at least one)."""
    inputs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or not inputs:
        batch = batches[(inputs // len(batches[0])) % len(batches)]
        encode(batch)
        inputs += len(batch)
    return inputs / (time.perf_counter() - started)


class Recorded:
    """Our engine's calls, as timed, keeping each call's forward statistics: the padding and passes columns come from
    the very calls measured, not from more of them."""

    def __init__(self, embedder: Embedder):
        self.embedder = embedder
        self.stats: dict[tuple[str, ...], ForwardStats] = {}

    def __call__(self, batch: list[str]) -> Encoded:
        encoded = self.embedder.embed_texts(batch)
        self.stats[tuple(batch)] = encoded.stats
        return encoded


def how_ours_ran(embedder: Embedder, stats: dict[tuple[str, ...], ForwardStats]) -> tuple[float, float]:
    """What our engine ran that the reference did not, over the calls `stats` holds: padded tokens over those of one
    pass per call padded to its longest input (the reference's), and forward passes per call (the token budget cuts
    a call of long texts)."""
    theirs = sum(len(batch) * max(map(len, embedder.tokenize_texts(list(batch)).ids)) for batch in stats)
    ours = sum(s.padded_tokens for s in stats.values())
    return ours / theirs, sum(s.passes for s in stats.values()) / len(stats)


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
    # A quantised reference's vectors of the bench's quality texts: its own quality against fp32, beside ours.
    parity_vectors: np.ndarray | None = None
    retrieval_vectors: np.ndarray | None = None


def measure_reference(
    embedder: Embedder, backend: str, profiles: dict[str, list[str]], batch_sizes: list[int], seconds: float,
    pairs: int, parity_texts: list[str], retrieval_texts: list[str], folder: Path,
) -> ReferenceRun:  # fmt: skip
    """`profiles`: each profile's pool of texts. Cells of `seconds` per side and round, `pairs` pairs of rounds."""
    try:
        loaded = reference_encoder(embedder, backend, folder, [text for pool in profiles.values() for text in pool])
    except Exception as error:  # noqa: BLE001 - reported in the table; the bench's own figures stand
        loaded = f"the reference runner did not load: {type(error).__name__}: {error}"
    if isinstance(loaded, str):
        return ReferenceRun(error=loaded)
    encode, runner = loaded
    cells = []
    for profile, pool in profiles.items():
        for batch_size in batch_sizes:
            batches = [pool[i : i + batch_size] for i in range(0, len(pool) - batch_size + 1, batch_size)]
            encode(batches[0])  # warm-up, as ours had
            ours = Recorded(embedder)
            figures = alternate(
                {
                    "ours": lambda: inputs_per_s(ours, batches, seconds),  # noqa: B023
                    "reference": lambda: inputs_per_s(encode, batches, seconds),  # noqa: B023
                },
                pairs,
            )
            padding, passes = how_ours_ran(embedder, ours.stats)
            cells.append(ReferenceCell(profile, batch_size, figures["ours"], figures["reference"], padding, passes))
    ours, theirs = embedder.embed_texts(parity_texts).dense, encode(parity_texts)
    run = ReferenceRun(runner, cells, float((ours * theirs).sum(axis=1).min()))
    if embedder.backend.quantize != "none":  # a lossy reference: its own quality is measured as ours is
        run.parity_vectors, run.retrieval_vectors = theirs, encode(retrieval_texts)
    return run
