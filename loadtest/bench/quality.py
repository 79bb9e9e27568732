"""How close a backend's embeddings are to a reference's: the worst cosine over a set of texts, and what a search
would return, the top-10 documents per query, compared with the reference's top 10 (int8 must keep both)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from corpus.texts import texts


@dataclass(frozen=True)
class RetrievalSet:
    """Queries and documents drawn from the corpus: short questions and statements against 120-word documents."""

    queries: list[str]
    documents: list[str]

    @classmethod
    def from_corpus(cls, queries: int = 64, documents: int = 400) -> RetrievalSet:
        return cls(texts("short", queries, seed=101), texts("medium", documents, seed=102))

    @property
    def all_texts(self) -> list[str]:
        return self.queries + self.documents

    def split(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return vectors[: len(self.queries)], vectors[len(self.queries) :]


def min_cosine(vectors: np.ndarray, reference: np.ndarray) -> float:
    """The worst agreement over the inputs; both sides unit length."""
    return float((vectors * reference).sum(axis=1).min())


def top_k(queries: np.ndarray, documents: np.ndarray, k: int) -> np.ndarray:
    scores = queries @ documents.T
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def top_k_overlap(vectors: np.ndarray, reference: np.ndarray, retrieval: RetrievalSet, k: int = 10) -> float:
    """Mean share of each query's top-k documents that the reference's top k also holds (1.0: the same results)."""
    return search_overlap(*retrieval.split(vectors), *retrieval.split(reference), k)


def search_overlap(
    queries: np.ndarray, documents: np.ndarray, reference_queries: np.ndarray, reference_documents: np.ndarray, k: int
) -> float:
    """top_k_overlap of vectors already split into queries and documents."""
    k = min(k, len(documents))
    found, expected = top_k(queries, documents, k), top_k(reference_queries, reference_documents, k)
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, expected, strict=True)]))


def recall_and_ndcg(ranked: np.ndarray, judged: list[dict[int, int]], k: int = 10) -> tuple[float, float]:
    """Mean recall@k and nDCG@k (gains = grades, log2 discount) over the queries that have a relevant document.
    `ranked`: each query's documents, best first; `judged`: each query's {document index: grade}."""
    recalls, ndcgs = [], []
    for found, grades in zip(ranked, judged, strict=True):
        relevant = {document for document, grade in grades.items() if grade > 0}
        if not relevant:
            continue
        top = list(found[:k])
        recalls.append(len(relevant & set(top)) / len(relevant))
        dcg = sum(grades.get(document, 0) / np.log2(rank + 2) for rank, document in enumerate(top))
        ideal = sorted((grade for grade in grades.values() if grade > 0), reverse=True)[:k]
        ndcgs.append(dcg / sum(grade / np.log2(rank + 2) for rank, grade in enumerate(ideal)))
    if not recalls:
        return float("nan"), float("nan")
    return float(np.mean(recalls)), float(np.mean(ndcgs))
