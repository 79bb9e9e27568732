"""ONNX Runtime backend: a graph exported with optimum into the cache; CUDA provider when the GPU build has one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from server.backends.base import BackendVariant, Quantization, TokenBatch, runtime_inputs, tower_files, tower_inputs
from server.settings import EngineSettings


class OnnxBackend:
    artefact = "onnx"
    caches_per_shape = False  # its kernels take any shape; its arena is shrunk after every run instead
    memory_per_shape = False
    runtime = ("onnxruntime", ort.__version__)

    def __init__(self, quantize: Quantization = "none") -> None:
        self.quantize = quantize
        self.name = BackendVariant("onnx", quantize).name
        self.device = "cpu"
        self._session: ort.InferenceSession | None = None
        self._towers: dict[str, ort.InferenceSession] = {}  # image-text models: "text" and "vision"

    def load(self, artefact: Path, settings: EngineSettings, device: str) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if settings.cpu_threads:
            options.intra_op_num_threads = settings.cpu_threads
        if not device.startswith("cuda"):
            # Memory patterns plan and hold one block per input shape seen; under varied traffic they kept a worker
            # above its steady level after a burst, for no measurable speed on MiniLM.
            options.enable_mem_pattern = False
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            device_id = int(device.partition(":")[2] or 0)
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device_id}))
        graphs = tower_files(artefact, ".onnx") or {"model": artefact / "model.onnx"}
        sessions = {
            name: ort.InferenceSession(str(path), options, providers=providers) for name, path in graphs.items()
        }
        self._session = sessions.pop("model", None)
        self._towers = sessions
        first = self._session or self._towers["text"]
        self.device = device if first.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        self._run_options = ort.RunOptions()
        if self.device == "cpu":
            # The CPU arena otherwise keeps the peak of the largest pass ever run; shrinking it after each run
            # returns that memory, for a small share of a long pass's time.
            self._run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        if self._session is not None:
            self._input_names = [i.name for i in self._session.get_inputs()]
            self._output_name = self._session.get_outputs()[0].name

    def forward(self, batch: TokenBatch) -> np.ndarray:
        (hidden,) = self._session.run([self._output_name], runtime_inputs(batch, self._input_names), self._run_options)
        return hidden

    def text_features(self, batch: TokenBatch) -> np.ndarray:
        return self._towers["text"].run(None, tower_inputs(batch), self._run_options)[0]

    def image_features(self, pixels: np.ndarray) -> np.ndarray:
        return self._towers["vision"].run(None, tower_inputs(pixels), self._run_options)[0]

    def peak_device_memory_bytes(self) -> int | None:
        return None  # ONNX Runtime's arena keeps no peak counter; NVML's device figure covers it
