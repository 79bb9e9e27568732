import pytest

from server.engine.artefacts import artefact_dir, ensure_artefact
from server.settings import EngineSettings


def test_artefacts_are_keyed_by_model_runtime_and_variant(tmp_path):
    hub = artefact_dir(tmp_path, "org/name", "onnx", "int8")
    assert hub == tmp_path / "org--name" / "onnx-int8"
    local_a, local_b = tmp_path / "a" / "model", tmp_path / "b" / "model"
    local_a.mkdir(parents=True), local_b.mkdir(parents=True)
    assert artefact_dir(tmp_path, str(local_a), "openvino", "none") != artefact_dir(
        tmp_path, str(local_b), "openvino", "none"
    )


def test_missing_artefact_without_export_names_the_command(tmp_path):
    settings = EngineSettings(cache=tmp_path, allow_export=False)
    with pytest.raises(FileNotFoundError, match="embedserve export"):
        ensure_artefact(settings, "onnx", "none")


@pytest.mark.slow
def test_serve_exports_on_first_use(tmp_path, minilm_dir):
    from sentence_transformers import SentenceTransformer

    from server.engine.embedder import Embedder

    embedder = Embedder(EngineSettings(cache=tmp_path), "openvino")
    assert (artefact_dir(tmp_path, embedder.settings.model, "openvino", "none") / "openvino_model.xml").is_file()
    texts = ["hello", "an exported model embeds as the original does"]
    expected = SentenceTransformer(str(minilm_dir), device="cpu").encode(texts, normalize_embeddings=True)
    assert (embedder.embed_texts(texts).dense * expected).sum(axis=1).min() >= 0.9999
