"""Each backend against sentence-transformers' own output for the same texts (the packaged MiniLM weights)."""

import numpy as np
import pytest

from corpus.texts import varied_texts
from server.engine.batching import bucket_length, plan_batches
from server.engine.embedder import Embedder
from server.settings import EngineSettings
from tests.helpers import MODEL

pytestmark = pytest.mark.slow

TEXTS = varied_texts(128)  # single words, questions, sentences, 150-400 word texts (over the 256-token limit)

# fp32 runtimes compute the same function; int8 trades a little accuracy for speed and size.
MIN_COSINE = {
    "torch": 0.9999,
    "onnx": 0.9999,
    "openvino": 0.9999,
    "onnx-int8": 0.99,
    "openvino-int8": 0.99,
    "openvino-int8-weights": 0.99,
}


@pytest.fixture(scope="module")
def reference(minilm_dir) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_dir), device="cpu").encode(TEXTS, normalize_embeddings=True)


@pytest.mark.parametrize("backend", list(MIN_COSINE))
def test_backend_matches_sentence_transformers(backend, exported, reference):
    embedder = Embedder(EngineSettings(model=MODEL, cache=exported, allow_export=False, device="cpu"), backend)
    vectors = embedder.embed_texts(TEXTS).dense
    assert vectors.shape == reference.shape
    cosines = (vectors * reference).sum(axis=1)
    assert cosines.min() >= MIN_COSINE[backend], f"{backend}: min cosine {cosines.min():.6f}"
    # Batched (length-sorted, padded) and one-by-one give the same embedding for each input.
    singles = np.concatenate([embedder.embed_texts([text]).dense for text in TEXTS[:16]])
    assert (singles * vectors[:16]).sum(axis=1).min() >= MIN_COSINE[backend]


def test_token_budget_changes_batching_not_results(exported):
    settings = dict(model=MODEL, cache=exported, allow_export=False, device="cpu")
    wide = Embedder(EngineSettings(**settings), "onnx")
    narrow = Embedder(EngineSettings(**settings, max_batch_tokens=300, max_batch_inputs=4), "onnx")
    a, b = wide.embed_texts(TEXTS), narrow.embed_texts(TEXTS)
    assert b.stats.passes > a.stats.passes
    assert b.stats.padded_tokens <= b.stats.passes * max(300, 256)
    np.testing.assert_allclose(a.dense, b.dense, atol=2e-5)


def test_openvino_runs_power_of_two_rows_with_the_same_results(exported, reference):
    settings = EngineSettings(model=MODEL, cache=exported, allow_export=False, device="cpu", max_batch_inputs=64)
    embedder = Embedder(settings, "openvino")
    ids = embedder.tokenize_texts(TEXTS[:93]).ids
    lengths = [bucket_length(len(row), embedder.spec.max_tokens) for row in ids]
    planned = plan_batches(lengths, embedder.settings.max_batch_tokens, 64)
    assert any(len(p) & (len(p) - 1) for p in planned), "every planned pass is a power of two already"
    encoded = embedder.embed_token_ids(ids)
    rows = [p.inputs for p in encoded.stats.forward_passes]
    assert sum(rows) == 93 and all(count & (count - 1) == 0 for count in rows), rows
    assert (encoded.dense * reference[:93]).sum(axis=1).min() >= MIN_COSINE["openvino"]


def test_torch_on_the_cpu_pads_to_the_longest_input_and_openvino_to_a_bucket(exported):
    """Length buckets bound OpenVINO's per-shape memory; on the CPU, torch's stays flat without them, so there they
    would only cost it padding (torch.py)."""
    settings = EngineSettings(model=MODEL, cache=exported, allow_export=False, device="cpu")
    embedders = {backend: Embedder(settings, backend) for backend in ("torch", "openvino")}
    lengths = [len(ids) for ids in embedders["torch"].tokenize_texts(TEXTS).ids]
    # The 8 shortest texts but one, with the next longer: a batch whose longest input is no bucket's length.
    by_length = sorted(range(len(TEXTS)), key=lengths.__getitem__)
    last = next(i for i in by_length[7:] if bucket_length(lengths[i], 256) != lengths[i])
    texts = [TEXTS[i] for i in (*by_length[:7], last)]
    for backend, padded_length in [("torch", lengths[last]), ("openvino", bucket_length(lengths[last], 256))]:
        passes = embedders[backend].embed_texts(texts).stats.forward_passes
        assert [(p.inputs, p.padded_tokens) for p in passes] == [(8, 8 * padded_length)], backend


def test_torch_pools_on_its_device_and_returns_no_hidden_states(exported, reference, monkeypatch):
    embedder = Embedder(EngineSettings(model=MODEL, cache=exported, allow_export=False, device="cpu"), "torch")

    def hidden_states_to_the_host(batch):
        raise AssertionError("a dense request brought [batch, seq, hidden] back to the host")

    monkeypatch.setattr(embedder.backend, "forward", hidden_states_to_the_host)
    vectors = embedder.embed_texts(TEXTS).dense
    assert (vectors * reference).sum(axis=1).min() >= MIN_COSINE["torch"]
