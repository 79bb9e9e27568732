"""Calibrated int8 (server/engine/quantization.py): the calibration batches, SmoothQuant's exactness in fp32, what the
int8 artefacts hold, and that int8 keeps what a search returns."""

from __future__ import annotations

import numpy as np
import pytest

from corpus.texts import varied_texts
from loadtest.bench.quality import RetrievalSet, top_k_overlap
from server.backends.openvino import float_precision
from server.engine.artefacts import artefact_dir
from server.engine.embedder import Embedder
from server.engine.quantization import calibration_batches, smooth_onnx
from server.hardware import BF16_FLAGS, cpu_flags
from server.settings import EngineSettings
from tests.helpers import MODEL

NAMES = ["input_ids", "attention_mask", "token_type_ids"]


def test_calibration_batches_are_sorted_by_length_and_padded_as_the_server_pads(minilm_dir, plain_tokenizer):
    texts = varied_texts(40, seed=9)
    batches = calibration_batches(MODEL, minilm_dir, texts, NAMES)
    assert len(batches) == 5 and all(set(batch) == set(NAMES) for batch in batches)
    lengths = [int(row.sum()) for batch in batches for row in batch["attention_mask"]]
    assert lengths == sorted(lengths) and sum(lengths) > 0
    expected = sorted(min(len(plain_tokenizer.encode(t).ids), 256) for t in texts)
    assert lengths == expected  # special tokens included, truncated to the model's 256
    for batch in batches:
        mask = batch["attention_mask"]
        assert mask.shape[1] == mask.sum(axis=1).max()  # padded to its longest input, right-padded
        assert (batch["input_ids"][mask == 0] == 0).all() and (mask[:, 0] == 1).all()


@pytest.mark.slow
def test_smoothing_moves_scale_into_the_weights_without_changing_the_fp32_function(exported, minilm_dir, tmp_path):
    import onnx
    import onnxruntime

    original = artefact_dir(exported, MODEL, "onnx", "none") / "model.onnx"
    batches = calibration_batches(MODEL, minilm_dir, varied_texts(32, seed=4), NAMES)
    smoothed = tmp_path / "smoothed.onnx"
    assert smooth_onnx(original, smoothed, batches) == 6 * 6  # MiniLM: 6 layers of Q, K, V, out, FFN in, FFN out
    assert sum(node.op_type == "Mul" and node.name.endswith("/smooth") for node in onnx.load(smoothed).graph.node) == 36
    sessions = [onnxruntime.InferenceSession(str(path)) for path in (original, smoothed)]
    for batch in calibration_batches(MODEL, minilm_dir, varied_texts(16, seed=8), NAMES):
        before, after = (session.run(None, batch)[0] for session in sessions)
        np.testing.assert_allclose(after, before, atol=2e-4, rtol=1e-3)


@pytest.mark.slow
def test_int8_artefacts_hold_int8_arithmetic(exported):
    import onnx
    import openvino

    graph = onnx.load(artefact_dir(exported, MODEL, "onnx", "int8") / "model.onnx").graph
    onnx_ops = {node.op_type for node in graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= onnx_ops or "DynamicQuantizeMatMul" in onnx_ops, onnx_ops
    ir = artefact_dir(exported, MODEL, "openvino", "int8") / "openvino_model.xml"
    ov_ops = {op.get_type_name() for op in openvino.Core().read_model(ir).get_ops()}
    assert "FakeQuantize" in ov_ops


@pytest.fixture(scope="module")
def retrieval_reference(minilm_dir):
    from sentence_transformers import SentenceTransformer

    retrieval = RetrievalSet.from_corpus()
    model = SentenceTransformer(str(minilm_dir), device="cpu")
    return retrieval, model.encode(retrieval.all_texts, normalize_embeddings=True)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnx-int8", "openvino-int8", "openvino-int8-weights"])
def test_int8_keeps_nine_in_ten_of_each_querys_top_ten(backend, exported, retrieval_reference):
    retrieval, reference = retrieval_reference
    embedder = Embedder(EngineSettings(model=MODEL, cache=exported, allow_export=False, device="cpu"), backend)
    overlap = top_k_overlap(embedder.embed_texts(retrieval.all_texts).dense, reference, retrieval)
    assert overlap >= 0.9, f"{backend}: top-10 overlap {overlap:.3f}"
    if backend.startswith("openvino"):
        compiled = embedder.backend._request.get_compiled_model()
        expected = float_precision(embedder.backend.quantize, "float32", cpu_flags())
        assert compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == expected


@pytest.mark.parametrize(
    ("quantize", "dtype", "flags", "precision"),
    [
        ("int8", "float32", {"avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16"}, "bf16"),
        ("int8", "float32", {"avx512_vnni", "avx512_bf16"}, "f32"),  # bf16 without AMX ran slower than f32
        ("int8", "float32", set(), "f32"),
        ("none", "float32", {"avx512_bf16", "amx_bf16"}, "f32"),  # fp32 keeps its parity, even where bf16 is fast
        ("none", "float16", {"avx512_bf16"}, "f32"),  # a CUDA host's default dtype: this backend stays on the CPU
        ("int8-weights", "float32", {"avx512_bf16", "amx_bf16"}, "f32"),
        ("none", "bfloat16", {"avx512_bf16"}, "bf16"),  # asked for by name
        ("int8", "bfloat16", {"avx512_bf16"}, "bf16"),
    ],
)
def test_openvino_runs_float_ops_in_bf16_where_asked_or_where_amx_makes_int8_faster(quantize, dtype, flags, precision):
    assert float_precision(quantize, dtype, frozenset(flags)) == precision


def test_openvino_bfloat16_on_a_cpu_without_bf16_arithmetic_is_refused_not_run_in_f32():
    with pytest.raises(ValueError, match="AVX512-BF16 or AMX"):
        float_precision("none", "bfloat16", frozenset({"avx2", "avx512_vnni"}))


@pytest.mark.slow
@pytest.mark.skipif(not cpu_flags() & BF16_FLAGS, reason="this CPU has no bf16 arithmetic")
def test_openvino_bfloat16_compiles_in_bf16_and_stays_close_to_float32(exported, retrieval_reference):
    retrieval, reference = retrieval_reference
    settings = EngineSettings(model=MODEL, cache=exported, allow_export=False, device="cpu", dtype="bfloat16")
    embedder = Embedder(settings, "openvino")
    compiled = embedder.backend._request.get_compiled_model()
    assert compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == "bf16"
    vectors = embedder.embed_texts(retrieval.all_texts).dense
    cosines = (vectors * reference).sum(axis=1)
    assert 0.999 < cosines.min() < 1 - 1e-7  # close to fp32, but not fp32: the bf16 arithmetic did run
