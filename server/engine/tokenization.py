"""Tokenization on the hot path with Hugging Face `tokenizers` (Rust, batch-parallel), not transformers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer


@dataclass(frozen=True)
class Tokenized:
    """Token ids per input (special tokens included) and which inputs were longer than the limit."""

    ids: list[list[int]]
    overflowed: list[bool]

    @property
    def token_count(self) -> int:
        return sum(len(ids) for ids in self.ids)


def load_fast_tokenizer(model_dir: Path) -> Tokenizer:
    path = model_dir / "tokenizer.json"
    if path.is_file():
        return Tokenizer.from_file(str(path))
    # Repositories that ship only a slow tokenizer (vocab.txt, SigLIP's spiece.model): transformers converts it
    # once at load (SentencePiece models need the sentencepiece package for that).
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise FileNotFoundError(
            f"{model_dir} has no tokenizer.json, and converting its tokenizer needs transformers"
        ) from exc
    return AutoTokenizer.from_pretrained(model_dir, use_fast=True).backend_tokenizer


class TextTokenizer:
    def __init__(self, model_dir: Path, max_tokens: int):
        self.max_tokens = max_tokens
        self._tokenizer = load_fast_tokenizer(model_dir)
        padding = self._tokenizer.padding
        self.pad_id = padding["pad_id"] if padding else self._pad_id_from_config(model_dir)
        # We pad per batch ourselves (to the batch's longest input, not a fixed length).
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_tokens)
        self.vocab_size = self._tokenizer.get_vocab_size()
        #: the tokenizer model's kind: WordPiece, BPE, Unigram, WordLevel
        self.model_type = type(self._tokenizer.model).__name__
        self._prefix, self._suffix = self._special_token_frame()
        # [CLS], [SEP], [PAD], [UNK], <s>, </s>, ...: what lexical weights leave out.
        self.special_ids = frozenset(
            token_id for token_id, token in self._tokenizer.get_added_tokens_decoder().items() if token.special
        ) | {self.pad_id}

    def _pad_id_from_config(self, model_dir: Path) -> int:
        config_path = model_dir / "tokenizer_config.json"
        pad_token = json.loads(config_path.read_text()).get("pad_token") if config_path.is_file() else None
        if isinstance(pad_token, dict):
            pad_token = pad_token.get("content")
        pad_id = self._tokenizer.token_to_id(pad_token) if pad_token else None
        return pad_id if pad_id is not None else 0

    def _special_token_frame(self) -> tuple[list[int], list[int]]:
        """The special tokens the post-processor puts before and after one sequence (e.g. [CLS] … [SEP])."""
        framed = self._tokenizer.encode("hello", add_special_tokens=True).ids
        bare = self._tokenizer.encode("hello", add_special_tokens=False).ids
        for start in range(len(framed) - len(bare) + 1):
            if framed[start : start + len(bare)] == bare:
                return framed[:start], framed[start + len(bare) :]
        return [], []

    def tokenize(self, texts: list[str]) -> Tokenized:
        encodings = self._tokenizer.encode_batch(texts, add_special_tokens=True)
        return Tokenized(
            ids=[encoding.ids for encoding in encodings],
            overflowed=[bool(encoding.overflowing) for encoding in encodings],
        )

    def decode(self, id_lists: list[list[int]]) -> list[str]:
        """The texts of token ids, special tokens left out: what a runtime with its own tokenizer is given. Exact
        for WordPiece (BERT), whose pre-tokenizer splits at spaces and punctuation anyway: the text of the ids
        tokenizes back to the same ids (tests/server/backends/test_rust.py checks it)."""
        return self._tokenizer.decode_batch(id_lists, skip_special_tokens=True)

    def frame_token_ids(self, id_lists: list[list[int]]) -> Tokenized:
        """Client-given token ids get the same special tokens and truncation as text would."""
        room = self.max_tokens - len(self._prefix) - len(self._suffix)
        return Tokenized(
            ids=[self._prefix + ids[:room] + self._suffix for ids in id_lists],
            overflowed=[len(ids) > room for ids in id_lists],
        )
