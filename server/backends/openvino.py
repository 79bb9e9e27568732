"""OpenVINO backend: an IR exported with optimum-intel into the cache, compiled for the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openvino as ov

from server.backends.base import BackendVariant, Quantization, TokenBatch, runtime_inputs, tower_files, tower_inputs
from server.hardware import BF16_FLAGS, cpu_flags
from server.settings import EngineSettings


class OpenVinoBackend:
    artefact = "openvino"
    caches_per_shape = True  # compiled kernels per shape (CPU_RUNTIME_CACHE)
    # Memory kept for every new (rows, length) shape and never given back (faster still with
    # CPU_RUNTIME_CACHE_CAPACITY 0, which rebuilds executors): under mixed traffic the worker grows with each shape.
    memory_per_shape = True
    runtime = ("openvino", ov.__version__.partition("-")[0])

    def __init__(self, quantize: Quantization = "none") -> None:
        self.quantize = quantize
        self.name = BackendVariant("openvino", quantize).name
        # OpenVINO's GPU plugin targets Intel GPUs; on an NVIDIA host this backend stays on the CPU.
        self.device = "cpu"

    def load(self, artefact: Path, settings: EngineSettings, device: str) -> None:
        core = ov.Core()
        self.precision = float_precision(self.quantize, settings.dtype, cpu_flags())
        config = {"PERFORMANCE_HINT": settings.openvino_hint, "INFERENCE_PRECISION_HINT": self.precision}
        if settings.cpu_threads:
            config["INFERENCE_NUM_THREADS"] = settings.cpu_threads
        graphs = tower_files(artefact, ".xml") or {"model": artefact / "openvino_model.xml"}
        self._requests = {
            name: core.compile_model(core.read_model(path), "CPU", config).create_infer_request()
            for name, path in graphs.items()
        }
        if "model" in self._requests:
            self._request = self._requests["model"]
            self._input_names = [port.any_name for port in self._request.model_inputs]

    def forward(self, batch: TokenBatch) -> np.ndarray:
        self._request.infer(runtime_inputs(batch, self._input_names))
        return np.asarray(self._request.get_output_tensor(0).data, dtype=np.float32)

    def text_features(self, batch: TokenBatch) -> np.ndarray:
        return self._run_tower("text", tower_inputs(batch))

    def image_features(self, pixels: np.ndarray) -> np.ndarray:
        return self._run_tower("vision", tower_inputs(pixels))

    def _run_tower(self, tower: str, inputs: dict[str, np.ndarray]) -> np.ndarray:
        request = self._requests[tower]
        request.infer(inputs)
        return np.array(request.get_output_tensor(0).data, dtype=np.float32)  # a copy: the buffer is reused

    def peak_device_memory_bytes(self) -> int | None:
        return None  # runs on the CPU only (see device above)


def float_precision(quantize: Quantization, dtype: str, flags: frozenset[str]) -> str:
    """The precision of the float ops. By default f32, even though OpenVINO itself picks bf16 on CPUs with
    AVX512-BF16 or AMX: that loses fp32 parity (min cosine 0.99997 on MiniLM), so it is asked for by name
    (`--dtype bfloat16`), and advise weighs its speed against its quality. (On an AVX512-BF16 EPYC it ran MiniLM
    1.8x faster at 32 short texts.) The calibrated int8 variant is lossy already, so its float ops (attention above
    all) run in bf16 where AMX runs bf16 matrix products, faster there at the same parity. A CUDA host's float16
    default does not apply: this backend runs on the CPU."""
    if dtype == "bfloat16":
        if not flags & BF16_FLAGS:  # rather than OpenVINO quietly running f32
            raise ValueError("OpenVINO runs bfloat16 on CPUs with AVX512-BF16 or AMX; this CPU has neither")
        return "bf16"
    return "bf16" if quantize == "int8" and "amx_bf16" in flags else "f32"
