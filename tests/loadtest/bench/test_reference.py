"""The reference column's arithmetic, the order its rounds alternate in, and what the Rust runtimes' reference is
handed."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from corpus.texts import varied_texts
from loadtest.bench.reference import ORDER, Recorded, ReferenceCell, alternate, how_ours_ran, reference_encoder
from server.engine.artefacts import artefact_dir
from tests.helpers import MODEL


def test_rounds_alternate_ours_reference_reference_ours_and_average_each_pair():
    calls: list[str] = []
    figures = iter([100.0, 50.0, 70.0, 80.0, 90.0, 60.0, 60.0, 110.0])

    def measure(side: str):
        def run() -> float:
            calls.append(side)
            return next(figures)

        return run

    rounds = alternate({"ours": measure("ours"), "reference": measure("reference")}, pairs=2)
    assert calls == list(ORDER) * 2 == ["ours", "reference", "reference", "ours"] * 2
    # Pair 1: ours 100 and 80, reference 50 and 70; pair 2: ours 90 and 110, reference 60 and 60.
    assert rounds == {"ours": [90.0, 100.0], "reference": [60.0, 60.0]}


def test_the_ratio_is_the_median_of_the_rounds_with_their_range():
    cell = ReferenceCell("short", 32, ours=[90.0, 100.0, 99.0], reference=[60.0, 100.0, 90.0])
    assert cell.ratios == pytest.approx([1.5, 1.0, 1.1])
    assert cell.ratio == pytest.approx(1.1) and cell.spread == pytest.approx((1.0, 1.5))


def test_padding_and_passes_come_from_the_timed_calls_against_one_pass_per_call_padded_to_its_longest():
    class Bucketing:
        """Pads every text to 8 tokens, one pass per text; a text's tokens are its words."""

        def tokenize_texts(self, texts):
            return SimpleNamespace(ids=[text.split() for text in texts])

        def embed_texts(self, texts):
            return SimpleNamespace(stats=SimpleNamespace(padded_tokens=8 * len(texts), passes=len(texts)))

    embedder = Bucketing()
    ours = Recorded(embedder)
    for batch in (["a b c", "a b c d e f"], ["a b c d e f g h"], ["a b c", "a b c d e f"]):  # the first one twice
        ours(batch)
    # Ours 16 + 8 tokens in 2 + 1 passes; the reference's 2 x 6 + 1 x 8 tokens, one pass per call.
    assert how_ours_ran(embedder, ours.stats) == pytest.approx((24 / 20, 1.5))


def test_the_rust_runtimes_reference_is_embed_anything_on_the_same_texts_cut_before_the_timing(tmp_path):
    handed: list[list[str]] = []
    tokenized: list[list[str]] = []

    def tokenize_texts(texts):
        tokenized.append(list(texts))
        return SimpleNamespace(ids=[text.split()[:3] for text in texts])  # a model limit of 3 tokens

    embedder = SimpleNamespace(
        tokenize_texts=tokenize_texts,
        tokenizer=SimpleNamespace(decode=lambda id_lists: [" ".join(ids) for ids in id_lists]),
        backend=SimpleNamespace(embed=lambda texts: handed.append(texts) or np.ones((len(texts), 2))),
    )
    pool = ["a b c d e", "f g", "h i j k"]
    encode, runner = reference_encoder(embedder, "candle", tmp_path, pool)
    assert tokenized == [pool] and runner.startswith("embed-anything called directly")  # cut before any timed call
    assert encode(["h i j k", "a b c d e"]).shape == (2, 2)
    assert handed == [["h i j", "a b c"]] and tokenized == [pool]
    encode(["a parity text, not sent by the cells", "f g"])  # cut when first seen, outside the timed cells
    assert handed[-1] == ["a parity text,", "f g"] and tokenized[-1] == ["a parity text, not sent by the cells"]


@pytest.mark.slow
def test_onnx_int8s_reference_is_sentence_transformers_own_int8_export_of_the_fp32_graph(exported, tmp_path):
    from server.engine import Embedder
    from server.settings import EngineSettings

    settings = EngineSettings(model=MODEL, cache=exported, allow_export=False, device="cpu")
    texts = varied_texts(16, seed=3)
    encode, runner = reference_encoder(Embedder(settings, "onnx-int8"), "onnx-int8", tmp_path, texts)
    assert runner.startswith("sentence-transformers' own int8 export")
    # Quantised here, from the fp32 export's graph.
    assert len(list((tmp_path / "onnx").glob("model_qint8_*.onnx"))) == 1
    fp32_graph = artefact_dir(exported, MODEL, "onnx", "none") / "model.onnx"
    assert (tmp_path / "onnx" / "model.onnx").resolve() == fp32_graph.resolve()
    fp32 = Embedder(settings, "onnx").embed_texts(texts).dense
    cosines = (encode(texts) * fp32).sum(axis=1)
    assert 0.9 < cosines.min() and cosines.max() < 1 - 1e-6  # int8: near fp32, and not fp32
