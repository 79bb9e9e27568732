"""Tokenizers of each zoo family's real type, trained tiny on the repository's corpus, saved as their repositories
save them (tokenizer.json with the family's special tokens and post-processor, tokenizer_config.json).

`write_tokenizer` returns the special-token ids the model's config.json must agree with (pad, bos, eos, ...).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from corpus.texts import varied_texts

VOCAB = 1000
MINILM_FILES = ("tokenizer.json", "vocab.txt", "special_tokens_map.json", "tokenizer_config.json")


def _corpus() -> list[str]:
    return varied_texts(400, seed=77)


def _qwen3():
    """Byte-level BPE; <|endoftext|> after the vocabulary, appended to every sequence (Qwen3-Embedding's
    tokenizer.json does so: its last-token pooling reads that token), and the pad token, on the left."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(
        _corpus(), trainers.BpeTrainer(vocab_size=VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    )
    tokenizer.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    end = tokenizer.token_to_id("<|endoftext|>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A:0 <|endoftext|>:0",
        pair="$A:0 <|endoftext|>:0 $B:1 <|endoftext|>:1",
        special_tokens=[("<|endoftext|>", end)],
    )
    config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "padding_side": "left",
        "model_max_length": 32768,
    }
    return tokenizer, config, {"pad_token_id": end, "eos_token_id": end}


def _xlm_roberta():
    """SentencePiece Unigram (Metaspace), <s>=0 <pad>=1 </s>=2 <unk>=3 first, framed <s> ... </s>."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.train_from_iterator(
        _corpus(), trainers.UnigramTrainer(vocab_size=VOCAB, special_tokens=specials, unk_token="<unk>")
    )
    tokenizer.add_special_tokens(["<mask>"])
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    config = {
        "tokenizer_class": "XLMRobertaTokenizer",
        "bos_token": "<s>",
        "cls_token": "<s>",
        "eos_token": "</s>",
        "sep_token": "</s>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "mask_token": "<mask>",
        "model_max_length": 8192,
    }
    return tokenizer, config, {"pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2}


def _gemma():
    """SentencePiece BPE with byte fallback, <pad>=0 <eos>=1 <bos>=2 <unk>=3 first, framed <bos> ... <eos> (the
    tokenizer_config's add_bos_token and add_eos_token, which transformers' Gemma tokenizer applies)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never")
    tokenizer.decoder = decoders.Sequence([decoders.Metaspace(prepend_scheme="never"), decoders.ByteFallback()])
    byte_tokens = [f"<0x{value:02X}>" for value in range(256)]
    tokenizer.train_from_iterator(
        _corpus(), trainers.BpeTrainer(vocab_size=VOCAB + 256, special_tokens=specials + byte_tokens)
    )
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos>:0 $A:0 <eos>:0",
        pair="<bos>:0 $A:0 <eos>:0 <bos>:1 $B:1 <eos>:1",
        special_tokens=[("<bos>", 2), ("<eos>", 1)],
    )
    config = {
        "tokenizer_class": "GemmaTokenizer",
        "add_bos_token": True,
        "add_eos_token": True,
        "bos_token": "<bos>",
        "eos_token": "<eos>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "padding_side": "right",
        "model_max_length": 2048,
    }
    return tokenizer, config, {"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2}


def _modernbert():
    """Byte-level BPE (OLMo's), its special tokens after the vocabulary, framed [CLS] ... [SEP]."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(
        _corpus(), trainers.BpeTrainer(vocab_size=VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    )
    tokenizer.add_special_tokens(["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"])
    ids = {name: tokenizer.token_to_id(f"[{name}]") for name in ("CLS", "SEP", "PAD")}
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["CLS"]), ("[SEP]", ids["SEP"])],
    )
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "unk_token": "[UNK]",
        "mask_token": "[MASK]",
        "model_max_length": 8192,
        "model_input_names": ["input_ids", "attention_mask"],
    }
    special = {"pad_token_id": ids["PAD"], "cls_token_id": ids["CLS"], "sep_token_id": ids["SEP"]}
    return tokenizer, config, {**special, "bos_token_id": ids["CLS"], "eos_token_id": ids["SEP"]}


TOKENIZERS: dict[str, Callable] = {
    "qwen3": _qwen3,
    "xlm-roberta": _xlm_roberta,
    "gemma": _gemma,
    "modernbert": _modernbert,
}


def write_tokenizer(kind: str, out: Path, minilm_dir: Path, padding_side: str) -> dict[str, int]:
    """The tokenizer files of `kind` in `out`; returns the special-token ids for the model's config."""
    if kind == "wordpiece":
        for name in MINILM_FILES:
            shutil.copy(minilm_dir / name, out / name)
        config = json.loads((out / "tokenizer_config.json").read_text())
        config["padding_side"] = padding_side
        (out / "tokenizer_config.json").write_text(json.dumps(config))
        return {"pad_token_id": 0}
    tokenizer, config, special_ids = TOKENIZERS[kind]()
    tokenizer.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return special_ids
