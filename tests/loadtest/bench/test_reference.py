"""The reference column's arithmetic, the order its rounds alternate in, and what the Rust runtimes' reference is
handed."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from loadtest.bench.reference import ORDER, ReferenceCell, alternate, how_ours_ran, reference_encoder


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


def test_padding_counts_our_passes_tokens_over_one_pass_per_call_padded_to_its_longest():
    class Bucketing:
        """Pads every text to 8 tokens, one pass per text; a text's tokens are its words."""

        def tokenize_texts(self, texts):
            return SimpleNamespace(ids=[text.split() for text in texts])

        def embed_texts(self, texts):
            return SimpleNamespace(stats=SimpleNamespace(padded_tokens=8 * len(texts), passes=len(texts)))

    batches = [["a b c", "a b c d e f"], ["a b c d e f g h"]]
    # Ours 16 + 8 tokens in 2 + 1 passes; the reference's 2 x 6 + 1 x 8 tokens, one pass per call.
    assert how_ours_ran(Bucketing(), batches) == pytest.approx((24 / 20, 1.5))


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
    encode = reference_encoder(embedder, "candle", tmp_path, pool)
    assert tokenized == [pool]  # cut once, before any timed call
    assert encode(["h i j k", "a b c d e"]).shape == (2, 2)
    assert handed == [["h i j", "a b c"]] and tokenized == [pool]
