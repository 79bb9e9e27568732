"""Int8 with a calibration set, for the exporter: the calibration batches, SmoothQuant for ONNX Runtime, and NNCF's
static quantization for OpenVINO, each chosen by measurement on MiniLM (docs/results has the figures):

- ONNX Runtime: dynamic int8 of every MatMul, with int8 weights (signed: u8 activations x s8 weights is the pair its
  VNNI and AMX kernels take; u8 weights ran no faster than fp32). Per-batch activation ranges alone clip the
  feed-forward outliers; SmoothQuant (alpha 0.7) first moves them into the weights, calibrated on real inputs.
  Static QDQ was slower and less exact.
- OpenVINO: NNCF's static quantization (transformer model type, mixed preset, which applies SmoothQuant itself),
  with attention's ScaledDotProductAttention left to the plugin, which runs it in bf16 on CPUs that have it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from server.backends.base import runtime_inputs
from server.engine.batching import pad_batch
from server.engine.models import load_spec
from server.engine.tokenization import TextTokenizer

CALIBRATION_BATCH = 8
SMOOTHQUANT_ALPHA = 0.7


def calibration_batches(model: str, model_dir: Path, texts: list[str], input_names: list[str]) -> list[dict]:
    """The graph's feeds for `texts`: sorted by length into batches of 8, padded as the server pads them."""
    spec = load_spec(model, model_dir)
    tokenizer = TextTokenizer(model_dir, spec.max_tokens)
    ids = sorted(tokenizer.tokenize(texts).ids, key=len)
    return [
        runtime_inputs(
            pad_batch(ids[start : start + CALIBRATION_BATCH], tokenizer.pad_id, spec.padding_side), input_names
        )
        for start in range(0, len(ids), CALIBRATION_BATCH)
    ]


def smooth_onnx(source: Path, target: Path, calibration: list[dict], alpha: float = SMOOTHQUANT_ALPHA) -> int:
    """SmoothQuant on an ONNX graph: for every MatMul with a constant weight W, input channel j is divided by
    s_j = max|x_j|^alpha / max|W_j|^(1 - alpha) (a Mul before the MatMul) and W's row j multiplied by it. The
    product is unchanged; the activation outliers that per-tensor int8 ranges clip move into the per-channel
    quantised weights. max|x_j| is taken over the real (unpadded) tokens of the calibration batches. Returns how
    many MatMuls were smoothed."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(source))
    weights = {tensor.name: tensor for tensor in model.graph.initializer}
    targets = [node for node in model.graph.node if node.op_type == "MatMul" and node.input[1] in weights]
    peaks = _input_channel_peaks(model, targets, calibration)
    nodes = []
    for node in model.graph.node:
        if node in targets:
            weight = numpy_helper.to_array(weights[node.input[1]])
            scale = peaks[node.name] ** alpha / np.maximum(np.abs(weight).max(axis=1), 1e-5) ** (1 - alpha)
            scale = np.clip(scale, 1e-5, None).astype(np.float32)
            weights[node.input[1]].CopyFrom(numpy_helper.from_array(weight * scale[:, None], node.input[1]))
            inverse = numpy_helper.from_array(1 / scale, f"{node.name}/smooth_scale")
            model.graph.initializer.append(inverse)
            smoothed = f"{node.name}/smoothed_input"
            nodes.append(helper.make_node("Mul", [node.input[0], inverse.name], [smoothed], name=f"{node.name}/smooth"))
            node.input[0] = smoothed
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, str(target))
    return len(targets)


def _input_channel_peaks(model, targets: list, calibration: list[dict]) -> dict[str, np.ndarray]:
    """Per MatMul: the largest |x| of each input channel over the calibration batches' real tokens."""
    import onnx
    import onnxruntime
    from onnx import helper

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(helper.make_tensor_value_info(n.input[0], onnx.TensorProto.FLOAT, None) for n in targets)
    session = onnxruntime.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    peaks: dict[str, np.ndarray] = {}
    for feeds in calibration:
        real = feeds["attention_mask"].astype(bool)
        outputs = session.run([n.input[0] for n in targets], {k: v for k, v in feeds.items() if k in wanted})
        for node, values in zip(targets, outputs, strict=True):
            tokens = values[real] if values.ndim == 3 else values.reshape(-1, values.shape[-1])
            peaks[node.name] = np.maximum(peaks.get(node.name, 0.0), np.abs(tokens).max(axis=0))
    return peaks


def quantize_onnx(source: Path, target: Path, calibration: list[dict], scratch: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    smoothed = scratch / "smoothed.onnx"
    smooth_onnx(source, smoothed, calibration)
    quantize_dynamic(smoothed, target, weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"])


def quantize_openvino(source_xml: Path, target_xml: Path, calibration: list[dict]) -> None:
    import nncf
    import openvino

    model = openvino.Core().read_model(source_xml)
    names = {port.any_name for port in model.inputs}
    dataset = nncf.Dataset([{k: v for k, v in feeds.items() if k in names} for feeds in calibration])
    quantized = nncf.quantize(
        model,
        dataset,
        model_type=nncf.ModelType.TRANSFORMER,
        preset=nncf.QuantizationPreset.MIXED,
        subset_size=len(calibration),
        ignored_scope=nncf.IgnoredScope(types=["ScaledDotProductAttention"], validate=False),
    )
    openvino.save_model(quantized, target_xml)
