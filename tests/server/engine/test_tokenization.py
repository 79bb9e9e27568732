from server.engine.tokenization import TextTokenizer


def test_token_ids_get_the_same_frame_as_text(minilm_dir, plain_tokenizer):
    tokenizer = TextTokenizer(minilm_dir, max_tokens=256)
    plain = plain_tokenizer
    text = "Embeddings turn text into vectors."
    bare_ids = plain.encode(text, add_special_tokens=False).ids
    assert tokenizer.frame_token_ids([bare_ids]).ids == tokenizer.tokenize([text]).ids
    assert tokenizer.tokenize([text]).ids[0][0] == plain.token_to_id("[CLS]")


def test_truncation_marks_overflow_and_keeps_special_tokens(minilm_dir):
    tokenizer = TextTokenizer(minilm_dir, max_tokens=16)
    result = tokenizer.tokenize(["word " * 40, "short text"])
    assert result.overflowed == [True, False]
    assert len(result.ids[0]) == 16
    assert result.ids[0][-1] == result.ids[1][-1]  # [SEP] survives the cut
    framed = tokenizer.frame_token_ids([list(range(1000, 1040)), [1000]])
    assert framed.overflowed == [True, False]
    assert len(framed.ids[0]) == 16
    assert result.token_count == len(result.ids[0]) + len(result.ids[1])


def test_pad_id_comes_from_the_tokenizer(minilm_dir):
    assert TextTokenizer(minilm_dir, 256).pad_id == 0


def test_a_repository_without_tokenizer_json_gets_its_slow_tokenizer_converted(minilm_dir, tmp_path):
    import shutil

    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm_dir / name, tmp_path / name)
    converted = TextTokenizer(tmp_path, 256)
    original = TextTokenizer(minilm_dir, 256)
    texts = ["Converted tokenizers must agree.", "naïve café déjà vu", "a " * 300]
    assert converted.tokenize(texts).ids == original.tokenize(texts).ids
