"""CUDA paths: run on a GPU host (the device machine); skipped cleanly elsewhere."""

import numpy as np
import pytest

from corpus.texts import varied_texts

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

TEXTS = varied_texts(128)


@pytest.fixture(scope="module")
def reference(minilm_dir):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_dir), device="cpu").encode(TEXTS, normalize_embeddings=True)


@pytest.mark.parametrize("dtype, min_cosine", [("float32", 0.9999), ("float16", 0.999), ("bfloat16", 0.99)])
def test_torch_backend_on_cuda_matches_cpu_reference(minilm_dir, reference, dtype, min_cosine):
    from server.engine.embedder import Embedder
    from server.settings import EngineSettings

    embedder = Embedder(EngineSettings(model=str(minilm_dir), device="cuda", dtype=dtype), "torch")
    assert embedder.backend.device == "cuda:0"
    vectors = embedder.embed_texts(TEXTS).dense
    assert np.isfinite(vectors).all()
    assert (vectors * reference).sum(axis=1).min() >= min_cosine


def test_auto_device_picks_the_gpu_and_fp16(minilm_dir):
    from server.engine.embedder import Embedder
    from server.settings import EngineSettings

    embedder = Embedder(EngineSettings(model=str(minilm_dir)), "torch")
    assert embedder.backend.device == "cuda:0"
    assert next(embedder.backend._model.parameters()).dtype == torch.float16
