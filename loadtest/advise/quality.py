"""A candidate's embeddings of the user's texts against the same model in fp32 (the reference): how close each
vector is, whether a search returns the same top 10, and, with relevance labels, how good that search is."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loadtest.advise.workload import Workload
from loadtest.bench.quality import recall_and_ndcg, search_overlap, top_k

K = 10


@dataclass(frozen=True)
class QualityFigures:
    min_cosine: float
    mean_cosine: float
    top10_overlap: float
    recall_at_10: float | None = None  # with --qrels only
    ndcg_at_10: float | None = None

    def shortfall(self, min_overlap: float, min_cosine: float) -> str | None:
        """Why these figures miss the bar, or None."""
        misses = []
        if self.top10_overlap < min_overlap:
            misses.append(
                f"top-10 overlap {self.top10_overlap:.3f} < {min_overlap:g} (by {min_overlap - self.top10_overlap:.3f})"
            )
        if self.min_cosine < min_cosine:
            misses.append(f"min cosine {self.min_cosine:.4f} < {min_cosine:g} (by {min_cosine - self.min_cosine:.4f})")
        return "; ".join(misses) or None


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def measure_quality(
    workload: Workload,
    documents: np.ndarray,
    queries: np.ndarray,
    reference_documents: np.ndarray,
    reference_queries: np.ndarray,
) -> QualityFigures:
    """Cosines over every text (documents and queries); overlap of each query's top 10 documents."""
    documents, queries = unit(documents), unit(queries)
    reference_documents, reference_queries = unit(reference_documents), unit(reference_queries)
    cosines = np.concatenate([(documents * reference_documents).sum(axis=1), (queries * reference_queries).sum(axis=1)])
    overlap = search_overlap(queries, documents, reference_queries, reference_documents, K)
    recall = ndcg = None
    if workload.qrels:
        recall, ndcg = labelled_search(workload, queries, documents)
    return QualityFigures(float(cosines.min()), float(cosines.mean()), overlap, recall, ndcg)


def labelled_search(workload: Workload, queries: np.ndarray, documents: np.ndarray) -> tuple[float, float]:
    """recall@10 and nDCG@10 of the labelled queries, over the documents kept (labelled ones always are)."""
    position = {record.id: index for index, record in enumerate(workload.documents)}
    labelled = [(index, record.id) for index, record in enumerate(workload.queries) if record.id in workload.qrels]
    if not labelled:
        return float("nan"), float("nan")
    ranked = top_k(queries[[index for index, _ in labelled]], documents, min(K, len(documents)))
    judged = [
        {position[document]: grade for document, grade in workload.qrels[query].items() if document in position}
        for _, query in labelled
    ]
    return recall_and_ndcg(ranked, judged, K)
