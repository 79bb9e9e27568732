"""The exporter: a Hugging Face model -> an ONNX / OpenVINO artefact (optionally int8) in the cache.

A tool the engine calls (`embedserve export`, run in a child process by `artefacts.ensure_artefact`); it needs torch
and optimum, which a server never imports for it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from server.backends.base import TOWERS
from server.engine.artefacts import MARKER, artefact_dir, is_complete
from server.settings import ExportSettings


def export(settings: ExportSettings) -> Path:
    """Write the artefact for one model/runtime/quantisation; atomic: a half-written export is never used."""
    from server.engine.models import is_dual_encoder, resolve_model_dir

    target = artefact_dir(settings.cache, settings.model, settings.backend, settings.quantize)
    if is_complete(target) and not settings.force:
        return target
    model_dir = resolve_model_dir(settings.model)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".partial-") as scratch:
        staging = Path(scratch) / "out"
        exporters = {"onnx": _export_onnx, "openvino": _export_openvino}
        if is_dual_encoder(json.loads((model_dir / "config.json").read_text())):
            exporters = {"onnx": _export_towers_onnx, "openvino": _export_towers_openvino}
        versions = exporters[settings.backend](model_dir, staging, settings, Path(scratch))
        (staging / MARKER).write_text(
            json.dumps(
                {"model": settings.model, "runtime": settings.backend, "quantize": settings.quantize, **versions}
            )
        )
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    return target


def _export_onnx(model_dir: Path, out: Path, settings: ExportSettings, scratch: Path) -> dict:
    import onnxruntime
    from optimum.exporters.onnx import main_export

    fp32_dir = scratch / "fp32"
    main_export(
        str(model_dir),
        output=fp32_dir,
        task="feature-extraction",
        library_name="transformers",
        do_validation=False,
        trust_remote_code=settings.trust_remote_code,
    )
    out.mkdir(parents=True)
    if settings.quantize == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # Dynamic quantisation needs no calibration data: weights go int8 offline, activations per batch.
        quantize_dynamic(
            fp32_dir / "model.onnx",
            out / "model.onnx",
            weight_type=QuantType.QUInt8,
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            nodes_to_exclude=_feed_forward_matmuls(fp32_dir / "model.onnx"),
        )
    else:
        for item in fp32_dir.iterdir():
            shutil.move(str(item), out / item.name)
    return {"onnxruntime": onnxruntime.__version__}


# Per-batch int8 ranges clip the feed-forward block's activation outliers (post-GELU) badly. Measured on MiniLM,
# batched, against fp32: min cosine 0.987 with every MatMul int8, 0.990 with the FFN output fp32, 0.993 with the
# whole FFN fp32. So only attention projections go int8; the FFN stays fp32.
_FFN_NAME_PARTS = ("/intermediate/", "/mlp/")


def _feed_forward_matmuls(model_path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [
        node.name
        for node in graph.node
        if node.op_type == "MatMul"
        and (
            any(part in node.name for part in _FFN_NAME_PARTS)
            or ("/output/dense/" in node.name and "/attention/" not in node.name)
        )
    ]


def _export_openvino(model_dir: Path, out: Path, settings: ExportSettings, scratch: Path) -> dict:
    import openvino
    from optimum.intel import OVModelForFeatureExtraction, OVWeightQuantizationConfig

    # int8 here is weight-only compression (nncf): no calibration set needed, activations stay fp32.
    quantization = OVWeightQuantizationConfig(bits=8) if settings.quantize == "int8" else None
    model = OVModelForFeatureExtraction.from_pretrained(
        model_dir,
        export=True,
        compile=False,
        load_in_8bit=False,
        quantization_config=quantization,
        trust_remote_code=settings.trust_remote_code,
    )
    model.save_pretrained(out)
    return {"openvino": openvino.__version__}


# Image-text models (CLIP, SigLIP): one graph per tower, each ending in the tower's pooled, projected features,
# traced from transformers' own get_text_features / get_image_features. optimum exports the dual model as one
# graph that wants text and pixels together, which a request with only texts (or only images) cannot feed.
def _export_towers_onnx(model_dir: Path, out: Path, settings: ExportSettings, scratch: Path) -> dict:
    import onnxruntime
    import torch
    from transformers import AutoModel

    if settings.quantize != "none":
        raise ValueError("int8 exports of image-text models are not supported; use the fp32 backend")
    model = AutoModel.from_pretrained(model_dir, trust_remote_code=settings.trust_remote_code).eval()

    class Tower(torch.nn.Module):
        def __init__(self, features) -> None:
            super().__init__()
            self.model = model  # a submodule, so that the weights are traced as parameters
            self.features = features

        def forward(self, *inputs):
            return self.features(self.model, *inputs)

    vision = model.config.vision_config
    ids = torch.ones((2, 8), dtype=torch.long)
    examples = {
        "text": (
            Tower(lambda m, ids, mask: m.get_text_features(input_ids=ids, attention_mask=mask)),
            (ids, torch.ones_like(ids)),
        ),
        "vision": (
            Tower(lambda m, pixels: m.get_image_features(pixel_values=pixels)),
            (torch.zeros((2, 3, vision.image_size, vision.image_size)),),
        ),
    }
    out.mkdir(parents=True)
    for tower, (module, inputs) in examples.items():
        names = TOWERS[tower]
        axes = {name: {0: "batch", 1: "sequence"} if name != "pixel_values" else {0: "batch"} for name in names}
        # The TorchScript exporter: the dynamo one needs onnxscript, which nothing else here does.
        with torch.no_grad():
            torch.onnx.export(
                module,
                inputs,
                str(out / f"{tower}.onnx"),
                input_names=list(names),
                output_names=["embeddings"],
                dynamic_axes={**axes, "embeddings": {0: "batch"}},
                dynamo=False,
            )
    return {"onnxruntime": onnxruntime.__version__}


def _export_towers_openvino(model_dir: Path, out: Path, settings: ExportSettings, scratch: Path) -> dict:
    import openvino

    onnx_dir = scratch / "towers-onnx"
    _export_towers_onnx(model_dir, onnx_dir, settings, scratch)
    out.mkdir(parents=True)
    for tower in TOWERS:
        openvino.save_model(openvino.convert_model(onnx_dir / f"{tower}.onnx"), out / f"{tower}.xml")
    return {"openvino": openvino.__version__}
