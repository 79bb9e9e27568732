"""Silent vector drift: every bench, sweep and advise run keeps each backend's embeddings of the same 64 texts
(`fingerprint.npz`, float32, small), and `embedserve report A B` flags a backend whose vectors moved between two runs,
as a library upgrade can do without an error anywhere (vLLM's pooling regression #52630; Infinity after a
transformers upgrade, #590 and #649)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from corpus.texts import varied_texts
from loadtest.client.openai_api import embed

TEXTS = varied_texts(64, seed=64)
FILE = "fingerprint.npz"
# Below this cosine between the two runs' vectors of one text, a backend's embeddings have moved.
MIN_COSINE = 0.999


def served_fingerprints(endpoints: dict[str, tuple[str, str]]) -> dict[str, np.ndarray]:
    """Each endpoint's vectors of TEXTS, asked of a running server: name -> (its embeddings URL, the model to ask)."""
    return {name: embed(url, model, TEXTS) for name, (url, model) in endpoints.items()}


def save(path: Path, vectors: dict[str, np.ndarray]) -> Path:
    """Adds to (or replaces in) the run's file: advise writes a candidate's vectors as soon as it is measured."""
    kept = load(path) if path.exists() else {}
    kept.update(vectors)
    np.savez_compressed(path, **{name.replace("/", "__"): array for name, array in kept.items()})
    return path


def load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as stored:
        return {name.replace("__", "/"): stored[name] for name in stored.files}


def drift(before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> dict[str, float]:
    """Worst cosine between the two runs' vectors of one text, for every backend both runs have (and the same
    dimensions: a different model is no drift, it is another model)."""
    moved = {}
    for name in sorted(before.keys() & after.keys()):
        a, b = before[name], after[name]
        if a.shape != b.shape:
            moved[name] = float("nan")
            continue
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
        moved[name] = float((a * b).sum(axis=1).min())
    return moved


def drift_lines(run: Path, baseline: Path) -> list[str]:
    """What `embedserve report RUN BASELINE` prints about drift: one line per backend, the moved ones marked."""
    if not (run / FILE).exists() or not (baseline / FILE).exists():
        return [f"vector drift: not checked ({FILE} missing in {run if not (run / FILE).exists() else baseline})"]
    lines = []
    for name, cosine in drift(load(baseline / FILE), load(run / FILE)).items():
        if cosine != cosine:  # nan
            lines.append(f"VECTOR DRIFT {name}: its vectors changed shape between the runs")
        elif cosine < MIN_COSINE:
            lines.append(f"VECTOR DRIFT {name}: min cosine {cosine:.6f} < {MIN_COSINE} against the baseline")
        else:
            lines.append(f"vectors of {name} unchanged (min cosine {cosine:.6f})")
    return lines or ["vector drift: the two runs share no backend"]
