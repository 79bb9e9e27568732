"""Tiny random-weight models of each architecture family, saved the way their real hub repositories are: the
transformers weights and config, a tokenizer of the family's own type, and sentence-transformers module files
(modules.json, 1_Pooling/, 2_Dense/..., sentence_bert_config.json, config_sentence_transformers.json) in the
format those repositories carry.

Each tokenizer is trained here on the repository's corpus (a vocabulary of about a thousand), with the special
tokens, post-processing and tokenizer_config.json of the real repository: BERT's WordPiece is MiniLM's own; Qwen3
byte-level BPE that appends <|endoftext|> (last-token pooling reads it) and pads on the left with it; XLM-RoBERTa a
SentencePiece Unigram framed as <s> ... </s>, <pad> = 1; Gemma a SentencePiece BPE with byte fallback framed as
<bos> ... <eos>; ModernBERT a byte-level BPE framed as [CLS] ... [SEP], its special tokens after the vocabulary."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from tests.server.tiny_tokenizers import MINILM_FILES, write_tokenizer

HIDDEN = 64
MAX_SEQ_LENGTH = 128  # below the configs' 512 positions: truncation is the sentence-transformers limit's doing
IDENTITY = "torch.nn.modules.linear.Identity"


@dataclass(frozen=True)
class Family:
    name: str  # the real model it stands for, in the README's matrix
    config_class: str
    pooling: str  # sentence-transformers pooling mode: mean, cls, lasttoken
    extra_config: dict = field(default_factory=dict)
    dense: tuple[tuple[int, int], ...] = ()  # (in, out) per Dense layer after pooling
    prompts: dict[str, str] = field(default_factory=dict)
    padding_side: str = "right"
    sparse_head: bool = False  # BGE-M3's sparse_linear.pt beside the weights
    tokenizer: str = "wordpiece"  # a key of TOKENIZERS


FAMILIES = {
    "bert": Family("sentence-transformers/all-MiniLM-L6-v2", "BertConfig", "mean"),
    "gemma3": Family(
        "google/embeddinggemma-300m",
        "Gemma3TextConfig",
        "mean",
        extra_config={
            "num_key_value_heads": 1,
            "head_dim": 16,
            "use_bidirectional_attention": True,
            "sliding_window": 512,
            "query_pre_attn_scalar": 16,
        },
        dense=((HIDDEN, 4 * HIDDEN), (4 * HIDDEN, HIDDEN)),
        prompts={"query": "task: search result | query: ", "document": "title: none | text: "},
        tokenizer="gemma",
    ),
    "qwen3": Family(
        "Qwen/Qwen3-Embedding-0.6B",
        "Qwen3Config",
        "lasttoken",
        extra_config={"num_key_value_heads": 2, "head_dim": 16},
        prompts={
            "query": "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:"
        },
        padding_side="left",
        tokenizer="qwen3",
    ),
    "xlm-roberta": Family(
        "BAAI/bge-m3",
        "XLMRobertaConfig",
        "cls",
        sparse_head=True,
        tokenizer="xlm-roberta",
    ),
    "modernbert": Family(
        "lightonai/modernbert-embed-large",
        "ModernBertConfig",
        "mean",
        prompts={"query": "search_query: ", "document": "search_document: "},
        tokenizer="modernbert",
    ),
}


def build_tiny_model(family: Family, out: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    import torch
    import transformers
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    special_ids = write_tokenizer(family.tokenizer, out, tokenizer_dir, family.padding_side)
    # initializer_range 0.2, not 0.02: with near-zero weights a tiny model's CLS vector barely depends on the text,
    # and parity checks on near-identical vectors would prove nothing.
    config = getattr(transformers, family.config_class)(
        vocab_size=30522,  # at least every tokenizer's size
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=512,
        initializer_range=0.2,
        **special_ids,
        **family.extra_config,
    )
    transformers.AutoModel.from_config(config).save_pretrained(out)

    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
    pooling_dir = out / "1_Pooling"
    pooling_dir.mkdir()
    pooling_dir.joinpath("config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": HIDDEN,
                "pooling_mode_cls_token": family.pooling == "cls",
                "pooling_mode_mean_tokens": family.pooling == "mean",
                "pooling_mode_max_tokens": False,
                "pooling_mode_mean_sqrt_len_tokens": False,
                "pooling_mode_weightedmean_tokens": False,
                "pooling_mode_lasttoken": family.pooling == "lasttoken",
                "include_prompt": True,
            }
        )
    )
    modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"})
    for index, (in_features, out_features) in enumerate(family.dense, start=2):
        dense_dir = out / f"{index}_Dense"
        dense_dir.mkdir()
        dense_dir.joinpath("config.json").write_text(
            json.dumps(
                {
                    "in_features": in_features,
                    "out_features": out_features,
                    "bias": False,
                    "activation_function": IDENTITY,
                }
            )
        )
        save_file(
            {"linear.weight": torch.randn(out_features, in_features) / in_features**0.5},
            str(dense_dir / "model.safetensors"),
        )
        modules.append(
            {"idx": index, "name": str(index), "path": dense_dir.name, "type": "sentence_transformers.models.Dense"}
        )
    if family.sparse_head:
        torch.save(
            {"weight": torch.randn(1, HIDDEN) / HIDDEN**0.5, "bias": torch.tensor([0.05])}, out / "sparse_linear.pt"
        )
    normalize = len(modules)
    modules.append(
        {
            "idx": normalize,
            "name": str(normalize),
            "path": f"{normalize}_Normalize",
            "type": "sentence_transformers.models.Normalize",
        }
    )
    (out / "modules.json").write_text(json.dumps(modules, indent=2))
    (out / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": MAX_SEQ_LENGTH, "do_lower_case": False})
    )
    (out / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": family.prompts, "default_prompt_name": None, "similarity_fn_name": "cosine"})
    )
    return out


IMAGE_TEXT = {
    # CLIP pools at the first end-of-text token: MiniLM's [SEP] (102) plays it here.
    "clip": ("CLIPConfig", "CLIPImageProcessor", {"max_position_embeddings": 77, "eos_token_id": 102}),
    "siglip": ("SiglipConfig", "SiglipImageProcessor", {"max_position_embeddings": 64}),
}


def build_tiny_image_text_model(kind: str, out: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """A CLIP or SigLIP dual encoder with both towers, its image processor config and MiniLM's tokenizer."""
    import torch
    import transformers

    config_class, processor_class, text_extra = IMAGE_TEXT[kind]
    torch.manual_seed(seed)
    tower = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
    config = getattr(transformers, config_class)(
        text_config={**tower, "vocab_size": 30522, "pad_token_id": 0, **text_extra},
        vision_config={**tower, "image_size": 224, "patch_size": 32},
        **({"projection_dim": 16} if kind == "clip" else {}),
    )
    transformers.AutoModel.from_config(config).save_pretrained(out)
    getattr(transformers, processor_class)().save_pretrained(out)
    for name in MINILM_FILES:
        shutil.copy(tokenizer_dir / name, out / name)
    return out
