"""PyTorch backend: the transformers model itself, fp32 on CPU, fp16/bf16 on CUDA, SDPA attention."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel

from server.backends.base import TokenBatch
from server.settings import EngineSettings

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class TorchBackend:
    name = "torch"
    artefact = None  # transformers reads the model's own folder
    quantize = "none"
    caches_per_shape = True  # oneDNN primitives per shape
    memory_per_shape = False  # its soak drift stays under 2% with bucketed lengths alone
    runtime = ("torch", torch.__version__)

    def __init__(self) -> None:
        self.device = "cpu"
        self._model: torch.nn.Module | None = None

    def load(self, model_dir: Path, settings: EngineSettings, device: str) -> None:
        self.device = device
        if settings.cpu_threads:
            torch.set_num_threads(settings.cpu_threads)
        dtype = _DTYPES.get(settings.dtype, torch.float32)  # the Embedder resolves "auto" per device and model
        model = AutoModel.from_pretrained(
            model_dir, dtype=dtype, attn_implementation="sdpa", trust_remote_code=settings.trust_remote_code
        )
        self._model = model.to(device).eval()

    # Image-text models (CLIP, SigLIP): each tower's pooled and projected output, as transformers computes it.
    def text_features(self, batch: TokenBatch) -> np.ndarray:
        with torch.inference_mode():
            input_ids = torch.from_numpy(batch.input_ids).to(self.device)
            attention_mask = torch.from_numpy(batch.attention_mask).to(self.device)
            return (
                self._model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).float().cpu().numpy()
            )

    def image_features(self, pixels: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            dtype = next(self._model.parameters()).dtype
            pixel_values = torch.from_numpy(pixels).to(self.device, dtype=dtype)
            return self._model.get_image_features(pixel_values=pixel_values).float().cpu().numpy()

    def forward(self, batch: TokenBatch) -> np.ndarray:
        with torch.inference_mode():
            input_ids = torch.from_numpy(batch.input_ids).to(self.device, non_blocking=True)
            attention_mask = torch.from_numpy(batch.attention_mask).to(self.device, non_blocking=True)
            hidden = self._model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return hidden.float().cpu().numpy()

    def peak_device_memory_bytes(self) -> int | None:
        if not self.device.startswith("cuda"):
            return None
        return int(torch.cuda.max_memory_allocated(self.device))
