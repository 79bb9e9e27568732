"""PyTorch backend: the transformers model itself, fp32 on CPU, fp16/bf16 on CUDA, SDPA attention; it pools on the
model's device."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel

from server.backends.base import TokenBatch
from server.settings import EngineSettings

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# server/engine/pooling.py's poolers, on the model's device: tensors in, tensors out.
def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


def _last_token_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    last = mask.shape[1] - 1 - mask.flip(1).argmax(dim=1)  # either padding side: the last position whose mask is 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


_POOLERS = {"mean": _mean_pool, "cls": lambda hidden, mask: hidden[:, 0], "last": _last_token_pool}


class TorchBackend:
    name = "torch"
    artefact = None  # transformers reads the model's own folder
    quantize = "none"
    # Length buckets on CUDA only (set at load). On the CPU they bounded oneDNN's per-shape memory but cost 9-12% of
    # throughput on 32 short texts against sentence-transformers; with exact lengths, glibc's heap trim (the worker's
    # sampler runs it once a second) holds that memory as flat (MiniLM, 1,600 passes of random shapes trimmed every
    # 20: 670-790 MB, as bucketed; untrimmed it grew past 1 GB). On CUDA they stay: not yet measured without them.
    caches_per_shape = False
    memory_per_shape = False
    runtime = ("torch", torch.__version__)

    def __init__(self) -> None:
        self.device = "cpu"
        self._model: torch.nn.Module | None = None

    def load(self, model_dir: Path, settings: EngineSettings, device: str) -> None:
        self.device = device
        self.caches_per_shape = device.startswith("cuda")
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
            hidden, _ = self._hidden_states(batch)
            return hidden.float().cpu().numpy()

    def forward_pooled(self, batch: TokenBatch, pooling: str) -> np.ndarray:
        with torch.inference_mode():
            hidden, attention_mask = self._hidden_states(batch)
            return _POOLERS[pooling](hidden.float(), attention_mask).cpu().numpy()

    def _hidden_states(self, batch: TokenBatch) -> tuple[torch.Tensor, torch.Tensor]:
        input_ids = torch.from_numpy(batch.input_ids).to(self.device, non_blocking=True)
        attention_mask = torch.from_numpy(batch.attention_mask).to(self.device, non_blocking=True)
        return self._model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state, attention_mask

    def peak_device_memory_bytes(self) -> int | None:
        if not self.device.startswith("cuda"):
            return None
        return int(torch.cuda.max_memory_allocated(self.device))
