"""The exporter: a Hugging Face model -> an ONNX / OpenVINO artefact (optionally int8) in the cache.

A tool the engine calls: `python -m server.engine.export` (what `embedserve export` runs too), in a child process
started by `artefacts.ensure_artefact`; it needs torch and optimum, which a server never imports for it.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

from server.backends.base import TOWERS
from server.engine.artefacts import EXPORT_VERSION, MARKER, artefact_dir, is_complete
from server.engine.quantization import calibration_batches, quantize_onnx, quantize_openvino
from server.settings import LOG_FORMAT, ExportSettings, parse_cli

# Another seed than the bench's parity texts, which judge what this calibrates.
CALIBRATION_SEED = 2024
CALIBRATION_TEXTS = 256


def calibration_texts(settings: ExportSettings) -> list[str]:
    """--calibration-file's lines, else texts of the shared corpus (single words to 400-word passages)."""
    if settings.calibration_file:
        return [line for line in settings.calibration_file.read_text().splitlines() if line.strip()]
    from corpus.texts import varied_texts

    return varied_texts(CALIBRATION_TEXTS, seed=CALIBRATION_SEED)


def run_export(settings: ExportSettings) -> Path:
    """`embedserve export` and the engine's child process: export, then print the artefact's folder."""
    print(
        f"exporting {settings.model} for {settings.backend} (quantize={settings.quantize}) ...",
        file=sys.stderr,
        flush=True,
    )
    target = export(settings, calibration_texts(settings))
    print(target)
    return target


def export(settings: ExportSettings, calibration_texts: list[str] | None = None) -> Path:
    """Write the artefact for one model/runtime/quantisation; atomic: a half-written export is never used.

    `calibration_texts`: what int8 calibrates on (`run_export` passes `calibration_texts(settings)`)."""
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
        if settings.quantize == "int8" and not calibration_texts:
            raise ValueError("int8 needs calibration texts")
        versions = exporters[settings.backend](model_dir, staging, settings, Path(scratch), calibration_texts)
        marker = {"model": settings.model, "runtime": settings.backend, "quantize": settings.quantize}
        (staging / MARKER).write_text(json.dumps({**marker, "export_version": EXPORT_VERSION, **versions}))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    return target


def _export_onnx(
    model_dir: Path, out: Path, settings: ExportSettings, scratch: Path, calibration_texts: list[str] | None
) -> dict:
    import onnx
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
        graph = fp32_dir / "model.onnx"
        names = [tensor.name for tensor in onnx.load(str(graph), load_external_data=False).graph.input]
        calibration = calibration_batches(settings.model, model_dir, calibration_texts, names)
        quantize_onnx(graph, out / "model.onnx", calibration, scratch)
    else:
        for item in fp32_dir.iterdir():
            shutil.move(str(item), out / item.name)
    return {"onnxruntime": onnxruntime.__version__}


def _export_openvino(
    model_dir: Path, out: Path, settings: ExportSettings, scratch: Path, calibration_texts: list[str] | None
) -> dict:
    import openvino
    from optimum.intel import OVModelForFeatureExtraction, OVWeightQuantizationConfig

    # int8-weights: weight-only compression (nncf), no calibration: a smaller model, activations in float.
    weights_only = OVWeightQuantizationConfig(bits=8) if settings.quantize == "int8-weights" else None
    model = OVModelForFeatureExtraction.from_pretrained(
        model_dir,
        export=True,
        compile=False,
        load_in_8bit=False,
        quantization_config=weights_only,
        trust_remote_code=settings.trust_remote_code,
    )
    if settings.quantize != "int8":
        model.save_pretrained(out)
        return {"openvino": openvino.__version__}
    fp32_dir = scratch / "fp32"
    model.save_pretrained(fp32_dir)
    graph = fp32_dir / "openvino_model.xml"
    names = [port.any_name for port in openvino.Core().read_model(graph).inputs]
    calibration = calibration_batches(settings.model, model_dir, calibration_texts, names)
    out.mkdir(parents=True)
    quantize_openvino(graph, out / "openvino_model.xml", calibration)
    shutil.copy(fp32_dir / "config.json", out / "config.json")
    return {"openvino": openvino.__version__, "nncf": version("nncf")}


# Image-text models (CLIP, SigLIP): one graph per tower, each ending in the tower's pooled, projected features,
# traced from transformers' own get_text_features / get_image_features. optimum exports the dual model as one
# graph that wants text and pixels together, which a request with only texts (or only images) cannot feed.
def _export_towers_onnx(
    model_dir: Path, out: Path, settings: ExportSettings, scratch: Path, calibration_texts: list[str] | None = None
) -> dict:
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


def _export_towers_openvino(
    model_dir: Path, out: Path, settings: ExportSettings, scratch: Path, calibration_texts: list[str] | None = None
) -> dict:
    import openvino

    onnx_dir = scratch / "towers-onnx"
    _export_towers_onnx(model_dir, onnx_dir, settings, scratch)
    out.mkdir(parents=True)
    for tower in TOWERS:
        openvino.save_model(openvino.convert_model(onnx_dir / f"{tower}.onnx"), out / f"{tower}.xml")
    return {"openvino": openvino.__version__}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    run_export(parse_cli(ExportSettings, "python -m server.engine.export"))
