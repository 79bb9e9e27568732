"""Quality figures against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from loadtest.advise.quality import measure_quality
from loadtest.advise.workload import Record, Workload
from loadtest.bench.quality import recall_and_ndcg


def test_recall_and_ndcg_by_hand():
    # Query 1 finds d0, d1, d2; d1 (grade 2) and d5 (grade 1) are relevant. Query 2 has nothing relevant: left out.
    recall, ndcg = recall_and_ndcg(np.array([[0, 1, 2], [3, 4, 5]]), [{1: 2, 5: 1}, {3: 0}], k=3)
    ideal = 2 / math.log2(2) + 1 / math.log2(3)
    assert recall == pytest.approx(0.5)
    assert ndcg == pytest.approx((2 / math.log2(3)) / ideal)


def test_cosines_overlap_and_labelled_search_by_hand():
    """12 documents along the axes; two queries. The reference finds d0..d9 for both; the candidate's second query
    finds d11 in place of d9: overlap (10 + 9) / 20."""
    documents = np.eye(12, dtype=np.float32)
    reference_queries = np.zeros((2, 12), dtype=np.float32)
    reference_queries[:, :10] = np.linspace(2.0, 1.1, 10)  # d0 first ... d9 last, d10 and d11 at zero
    queries = reference_queries.copy()
    queries[1, 9], queries[1, 11] = 0.0, 1.05  # d9 out, d11 in at the bottom
    workload = Workload(
        [Record(f"d{i}", "") for i in range(12)],
        [Record("q1", ""), Record("q2", "")],
        {"q2": {"d11": 1, "d0": 1}},
    )
    figures = measure_quality(workload, documents, queries, documents, reference_queries)
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    second = float(unit(queries[1]) @ unit(reference_queries[1]))
    assert figures.min_cosine == pytest.approx(second)
    assert figures.mean_cosine == pytest.approx((12 + 1 + second) / 14)
    assert figures.top10_overlap == pytest.approx(19 / 20)
    # q2 finds both of its relevant documents (d0 first, d11 tenth).
    assert figures.recall_at_10 == pytest.approx(1.0)
    ideal = 1 + 1 / math.log2(3)
    assert figures.ndcg_at_10 == pytest.approx((1 + 1 / math.log2(11)) / ideal)
    assert figures.shortfall(0.95, 0.95) is None
    assert figures.shortfall(0.96, 0.95) == "top-10 overlap 0.950 < 0.96 (by 0.010)"
    assert figures.shortfall(0.9, 0.99) == f"min cosine {second:.4f} < 0.99 (by {0.99 - second:.4f})"
