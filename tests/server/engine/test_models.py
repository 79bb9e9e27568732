"""The model registry: built-in entries, the user's own entries, both sentence-transformers file formats, and the
rules a model imposes (dtype, custom code, modality)."""

from __future__ import annotations

import json

import pytest

from server.engine.embedder import check_servable, resolve_dtype
from server.engine.models import find_entry, load_spec, registry, spec_from_files
from server.settings import EngineSettings

ZOO = [
    "sentence-transformers/all-MiniLM-L6-v2",
    "google/embeddinggemma-300m",
    "Qwen/Qwen3-Embedding-0.6B",
    "BAAI/bge-m3",
    "lightonai/modernbert-embed-large",
    "jinaai/jina-embeddings-v2-base-zh",
    "openai/clip-vit-base-patch16",
    "google/siglip-base-patch16-224",
]


def write_repo(path, files: dict) -> None:
    for name, content in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(json.dumps(content))


def test_builtin_registry_holds_the_zoo_with_unique_names():
    entries = registry()
    assert set(ZOO) <= set(entries)
    names = [name for model, entry in entries.items() for name in (model, *entry.get("aliases", ()))]
    assert len(names) == len(set(names))
    assert find_entry("embeddinggemma-300m")[0] == "google/embeddinggemma-300m"


def test_registry_entry_overrides_the_files(tmp_path):
    write_repo(
        tmp_path,
        {
            "config.json": {"hidden_size": 1024, "max_position_embeddings": 40960},
            "modules.json": [{"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}],
            "1_Pooling/config.json": {"word_embedding_dimension": 1024, "pooling_mode_mean_tokens": True},
        },
    )
    spec = load_spec("Qwen/Qwen3-Embedding-0.6B", tmp_path, max_tokens_cap=8192)
    assert (spec.pooling, spec.padding_side, spec.dimensions, spec.max_tokens) == ("last", "left", 1024, 8192)
    assert spec.prompts["query"].startswith("Instruct:") and 32 in spec.matryoshka_dimensions
    gemma = load_spec("google/embeddinggemma-300m", tmp_path)
    assert gemma.float16 is False and gemma.prompts["document"] == "title: none | text: "


def test_user_registry_adds_and_overrides_entries(tmp_path):
    user = tmp_path / "mine.yaml"
    user.write_text(
        "acme/encoder:\n  pooling: cls\n  max_tokens: 64\n  aliases: [acme]\nBAAI/bge-m3:\n  max_tokens: 1024\n"
    )
    write_repo(tmp_path, {"config.json": {"hidden_size": 32}})
    acme = load_spec("acme", tmp_path, extra_registry=user)
    assert (acme.id, acme.pooling, acme.max_tokens, acme.dimensions) == ("acme/encoder", "cls", 64, 32)
    assert load_spec("BAAI/bge-m3", tmp_path, extra_registry=user).max_tokens == 1024
    bad = tmp_path / "bad.yaml"
    bad.write_text("x/y:\n  poolin: cls\n")
    with pytest.raises(ValueError, match="unknown keys \\['poolin'\\]"):
        registry(bad)


def test_sentence_transformers_5_7_file_format(tmp_path):
    write_repo(
        tmp_path,
        {
            "config.json": {"hidden_size": 64, "max_position_embeddings": 512},
            "modules.json": [
                {"path": "1_Pooling", "type": "x.Pooling"},
                {"path": "2_Dense", "type": "x.Dense"},
                {"path": "3_Normalize", "type": "x.Normalize"},
            ],
            "1_Pooling/config.json": {"embedding_dimension": 64, "pooling_mode": "lasttoken"},
            "2_Dense/config.json": {"in_features": 64, "out_features": 32},
            "tokenizer_config.json": {"model_max_length": 128},
        },
    )
    spec = spec_from_files("local", tmp_path)
    assert (spec.pooling, spec.dimensions, spec.max_tokens, spec.dense_layers) == ("last", 32, 128, ("2_Dense",))


def test_dtype_follows_device_and_model(tmp_path):
    write_repo(tmp_path, {"config.json": {"hidden_size": 8}})
    gemma, minilm = load_spec("google/embeddinggemma-300m", tmp_path), load_spec("all-MiniLM-L6-v2", tmp_path)
    assert resolve_dtype("auto", "cpu", gemma) == "float32"
    assert resolve_dtype("auto", "cuda:0", gemma) == "bfloat16"
    assert resolve_dtype("auto", "cuda:0", minilm) == "float16"
    with pytest.raises(ValueError, match="float16"):
        resolve_dtype("float16", "cuda:0", gemma)


def test_custom_code_needs_consent_and_image_models_need_a_backend_with_image_towers(tmp_path):
    from types import SimpleNamespace

    from server.backends.base import create_backend

    write_repo(tmp_path, {"config.json": {"hidden_size": 8}})
    torch_backend = create_backend("torch")
    text_only_backend = SimpleNamespace(name="text-only")  # a backend without text_features/image_features
    jina = load_spec("jinaai/jina-embeddings-v2-base-zh", tmp_path)
    with pytest.raises(PermissionError, match="--trust-remote-code"):
        check_servable(jina, EngineSettings(), torch_backend)
    check_servable(jina, EngineSettings(trust_remote_code=True), torch_backend)
    clip = load_spec("openai/clip-vit-base-patch16", tmp_path)
    assert clip.modality == "text+image"
    check_servable(clip, EngineSettings(), torch_backend)
    check_servable(clip, EngineSettings(), create_backend("onnx"))
    with pytest.raises(NotImplementedError, match="the text-only backend cannot run those yet"):
        check_servable(clip, EngineSettings(), text_only_backend)


def test_dual_encoder_config_is_read_as_an_image_text_model(tmp_path):
    write_repo(
        tmp_path,
        {
            "config.json": {
                "model_type": "clip",
                "projection_dim": 512,
                "text_config": {"hidden_size": 512, "max_position_embeddings": 77},
                "vision_config": {"hidden_size": 768},
            }
        },
    )
    spec = spec_from_files("local-clip", tmp_path)
    assert (spec.modality, spec.dimensions, spec.max_tokens, spec.family) == ("text+image", 512, 77, "clip")
