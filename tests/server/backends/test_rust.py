"""The Rust runtimes through embed-anything (candle: Candle on the weights): parity with sentence-transformers,
long inputs cut as the model's limit cuts them, batched equal to single, the families they refuse and why, the
install path, and serving beside the Python runtimes."""

from __future__ import annotations

from importlib import metadata

import numpy as np
import pytest
import requests
from openai import OpenAI

from corpus.texts import varied_texts
from server.engine.embedder import Embedder
from server.settings import EngineSettings
from tests.helpers import MODEL, ROOT, export_in_this_process, start_server
from tests.server.tiny_models import FAMILIES, build_tiny_model

pytestmark = pytest.mark.slow
TEXTS = varied_texts(128, seed=1)  # the parity texts: single words to 400-word passages
RUST_BACKENDS = ["candle", "ort"]


@pytest.fixture(scope="module", params=RUST_BACKENDS)
def rust(request, exported) -> Embedder:
    return Embedder(EngineSettings(cache=exported), request.param)


@pytest.fixture(scope="module")
def reference(minilm_dir):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_dir), device="cpu")


def test_the_install_keeps_the_projects_onnxruntime():
    """embed-anything is installed without its pinned onnxruntime==1.22.0 (deploy/install.sh): ours stays."""
    assert metadata.version("embed-anything") == "0.7.1"
    constraints = (ROOT / "deploy" / "constraints.txt").read_text().splitlines()
    pinned = next(line.split("==")[1] for line in constraints if line.startswith("onnxruntime=="))
    assert metadata.version("onnxruntime") == pinned != "1.22.0"


def test_minilm_matches_sentence_transformers(rust, reference):
    assert rust.backend.runtime == ("embed-anything", "0.7.1")
    vectors = rust.embed_texts(TEXTS).dense
    expected = reference.encode(TEXTS, normalize_embeddings=True)
    assert (vectors * expected).sum(axis=1).min() >= 0.9999
    single = np.stack([rust.embed_texts([text]).dense[0] for text in TEXTS[:24]])
    assert (single * vectors[:24]).sum(axis=1).min() >= 0.9999, "batched and single results differ"
    assert (vectors @ vectors.T)[~np.eye(len(TEXTS), dtype=bool)].min() < 0.99


def test_long_inputs_are_cut_at_the_models_limit_as_sentence_transformers_cuts_them(rust, reference):
    """MiniLM's limit is 256 tokens; the runtimes alone would read 512. What comes after the limit changes nothing."""
    head = "vector search ranks documents by the distance between embeddings. " * 30  # past 256 tokens
    texts = [head + "cats", head + "a completely different ending about the ocean and its tides"]
    vectors = rust.embed_texts(texts).dense
    assert np.allclose(vectors[0], vectors[1], atol=1e-6)
    assert (vectors * reference.encode(texts, normalize_embeddings=True)).sum(axis=1).min() >= 0.9999


def test_the_hub_snapshot_links_the_models_files_and_holds_the_rewritten_one_alone(tmp_path, minilm_dir):
    from server.backends.rust import hub_cache_layout

    written = {"tokenizer_config.json": '{"max_length": 512}'}
    original = (minilm_dir / "tokenizer_config.json").read_text()
    for _ in range(2):  # built again over the first: the same snapshot, the model's folder untouched
        home, repo_id = hub_cache_layout(tmp_path, minilm_dir, written)
        snapshot = home / "hub" / f"models--{repo_id.replace('/', '--')}" / "snapshots" / "embedserve"
        assert (snapshot / "tokenizer_config.json").read_text() == written["tokenizer_config.json"]
        assert not (snapshot / "tokenizer_config.json").is_symlink()
        assert (snapshot / "model.safetensors").resolve() == (minilm_dir / "model.safetensors").resolve()
    assert (minilm_dir / "tokenizer_config.json").read_text() == original
    assert hub_cache_layout(tmp_path, minilm_dir)[1] != repo_id, "a snapshot of its own without the rewrite"


def test_the_text_of_our_token_ids_tokenizes_back_to_them(rust):
    """What the engine hands the runtime is the text of its own (prompted, truncated) token ids."""
    ids = rust.tokenize_texts(TEXTS).ids
    assert rust.tokenizer.tokenize(rust.tokenizer.decode(ids)).ids == ids


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory, minilm_dir) -> dict:
    root = tmp_path_factory.mktemp("tiny")
    models = {family: build_tiny_model(FAMILIES[family], root / family, minilm_dir) for family in FAMILIES}
    export_in_this_process([models["bert"]], root / "cache", backends=("onnx",))  # what `ort` runs
    return models


@pytest.mark.parametrize("backend", RUST_BACKENDS)
def test_a_tiny_bert_runs_and_other_families_are_refused_with_the_reason(backend, tiny_models):
    from sentence_transformers import SentenceTransformer

    cache = tiny_models["bert"].parent / "cache"
    settings = lambda family: EngineSettings(model=str(tiny_models[family]), cache=cache)  # noqa: E731
    bert = Embedder(settings("bert"), backend)
    expected = SentenceTransformer(str(tiny_models["bert"]), device="cpu").encode(TEXTS[:32])
    assert (bert.embed_texts(TEXTS[:32]).dense * expected).sum(axis=1).min() >= 0.9999
    refusals = {
        "gemma3": ["Dense layers", "a BPE tokenizer"],
        "qwen3": ["last pooling", "a BPE tokenizer"],
        "xlm-roberta": ["cls pooling", "a sparse head", "a Unigram tokenizer"],
        "modernbert": ["a BPE tokenizer"],
    }
    for family, reasons in refusals.items():
        with pytest.raises(NotImplementedError) as refused:
            Embedder(settings(family), backend)
        assert all(reason in str(refused.value) for reason in reasons), (family, refused.value)


def test_served_beside_the_python_runtimes(exported, tmp_path):
    server = start_server(exported, tmp_path, "--backends", f"onnx,{','.join(RUST_BACKENDS)}")
    try:
        states = requests.get(f"{server.url}/ready").json()["backends"]
        for backend in RUST_BACKENDS:
            state = states[backend]
            assert state["state"] == "ready" and state["dimensions"] == 384 and state["normalized"] is True
        by_backend = {
            backend: np.array(
                [
                    item.embedding
                    for item in OpenAI(base_url=f"{server.url}/{backend}/v1", api_key="unused", max_retries=0)
                    .embeddings.create(model=MODEL, input=TEXTS[:16], dimensions=128)
                    .data
                ]
            )
            for backend in ("onnx", *RUST_BACKENDS)
        }
        for backend in RUST_BACKENDS:
            assert by_backend[backend].shape == (16, 128)  # dimensions and re-normalisation above the backend
            assert (by_backend[backend] * by_backend["onnx"]).sum(axis=1).min() >= 0.9999
        for backend in RUST_BACKENDS:
            url = f"{server.url}/{backend}/v1/embeddings"
            ids = requests.post(url, json={"model": MODEL, "input": [[7592, 2088]]}).json()  # "hello world"
            text = requests.post(url, json={"model": MODEL, "input": "hello world"}).json()
            assert np.allclose(ids["data"][0]["embedding"], text["data"][0]["embedding"], atol=1e-6)
            assert ids["usage"]["prompt_tokens"] == text["usage"]["prompt_tokens"] == 4
    finally:
        server.stop()
