"""The user's files: read as documents, queries and labels, or refused with the file and line before anything starts."""

from __future__ import annotations

import json

import pytest

from loadtest.advise.workload import InputError, first_sentence, load_workload, read_qrels, read_records


def test_plain_lines_are_texts_numbered_from_one_and_blank_lines_skipped(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("first text\n\n  second text  \n")
    assert [(r.id, r.text) for r in read_records(path)] == [("1", "first text"), ("3", "second text")]


def test_jsonl_reads_text_with_its_id_and_a_beir_title(tmp_path):
    path = tmp_path / "corpus.jsonl"
    rows = [{"_id": "d1", "title": "Bridges", "text": "steel and stone"}, {"id": 7, "text": "rivers"}, {"text": "x"}]
    path.write_text("\n".join(json.dumps(row) for row in rows))
    assert [(r.id, r.text) for r in read_records(path)] == [
        ("d1", "Bridges. steel and stone"),
        ("7", "rivers"),
        ("3", "x"),
    ]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "no texts in it"),
        ("\n  \n", "no texts in it"),
        ('{"text": "ok"}\nnot json\n', ":2: not a JSON object"),
        ('{"text": "ok"}\n{"body": "no text field"}\n', ":2: no non-empty string `text` field"),
        ('{"text": ""}\n', ":1: no non-empty string `text` field"),
    ],
)
def test_a_bad_corpus_is_refused_with_its_file_and_line(tmp_path, content, expected):
    path = tmp_path / "corpus.jsonl"
    path.write_text(content)
    with pytest.raises(InputError, match=str(path).replace(".", r"\.") + ".*" + expected.replace("`", ".")):
        read_records(path)


def test_an_unreadable_corpus_is_refused_with_its_name(tmp_path):
    missing, binary = tmp_path / "missing.txt", tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    for path in (missing, binary):
        with pytest.raises(InputError, match=f"{path}: cannot read it"):
            read_records(path)


def test_qrels_in_trec_and_beir_formats(tmp_path):
    trec, beir, bad = tmp_path / "qrels.trec", tmp_path / "qrels.tsv", tmp_path / "bad.tsv"
    trec.write_text("q1 0 d1 2\nq1 0 d2 0\nq2 0 d3 1\n")
    beir.write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\nq2\td3\t1\n")
    assert read_qrels(trec) == {"q1": {"d1": 2, "d2": 0}, "q2": {"d3": 1}}
    assert read_qrels(beir) == {"q1": {"d1": 2}, "q2": {"d3": 1}}
    bad.write_text("q1 d1\n")
    with pytest.raises(InputError, match=f"{bad}:1: expected"):
        read_qrels(bad)
    bad.write_text("q1 d1 high\n")
    with pytest.raises(InputError, match=f"{bad}:1: the grade 'high' is not a number"):
        read_qrels(bad)


def test_queries_are_drawn_as_first_sentences_when_not_given(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"Sentence {i} opens. Then more follows." for i in range(100)))
    workload = load_workload(corpus, None, None, max_documents=50, seed=3)
    assert len(workload.documents) == 50 and len(workload.queries) == 50
    assert all(q.text.startswith("Sentence ") and q.text.endswith("opens.") for q in workload.queries)
    assert "first sentence" in workload.source and str(corpus) in workload.source
    assert first_sentence("No stop here") == "No stop here"


def test_a_sample_keeps_every_labelled_document(tmp_path):
    corpus, queries, qrels = tmp_path / "c.jsonl", tmp_path / "q.jsonl", tmp_path / "qrels.tsv"
    corpus.write_text("\n".join(json.dumps({"_id": f"d{i}", "text": f"document {i}"}) for i in range(200)))
    queries.write_text(json.dumps({"_id": "q1", "text": "which document"}))
    qrels.write_text("q1\td150\t1\nq1\td199\t1\n")
    workload = load_workload(corpus, queries, qrels, max_documents=20)
    ids = {record.id for record in workload.documents}
    assert len(ids) == 20 and {"d150", "d199"} <= ids


def test_labels_need_their_queries_and_must_name_some(tmp_path):
    corpus, queries, qrels = tmp_path / "c.txt", tmp_path / "q.txt", tmp_path / "qrels.tsv"
    corpus.write_text("a\nb\n")
    queries.write_text("what\n")
    qrels.write_text("q9 0 1 1\n")
    with pytest.raises(InputError, match="--qrels needs --queries"):
        load_workload(corpus, None, qrels, 100)
    with pytest.raises(InputError, match="none of its query ids"):
        load_workload(corpus, queries, qrels, 100)
    with pytest.raises(InputError, match="need the --corpus"):
        load_workload(None, queries, None, 100)


def test_the_built_in_corpus_says_so():
    workload = load_workload(None, None, None, 100)
    assert workload.source == "built-in corpus" and workload.documents and workload.queries
