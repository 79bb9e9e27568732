"""What advise measures with: the user's texts (corpus, queries, optional relevance labels) and request shape.

Read and checked before anything starts, so that a bad file stops the run with its name and line, not an hour in.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from corpus.texts import texts

# The built-in corpus, when the user gives none: documents of mixed lengths, and short queries.
BUILT_IN_DOCUMENTS = 600
BUILT_IN_QUERIES = 64
# Queries drawn from the corpus when none are given: the first sentence of this many documents.
DRAWN_QUERIES = 64


class InputError(ValueError):
    """A user's file cannot be used: the message names the file and, where it can, the line."""


@dataclass(frozen=True)
class Record:
    id: str
    text: str


def read_records(path: Path) -> list[Record]:
    """One text per line, or JSONL objects with a `text` field (ids from `_id` or `id`, else the line number)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read it: {error}") from None
    records = []
    jsonl = next((line.lstrip().startswith("{") for line in lines if line.strip()), False)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if not jsonl:
            records.append(Record(str(number), line.strip()))
            continue
        try:
            item = json.loads(line)
        except ValueError as error:
            raise InputError(f"{path}:{number}: not a JSON object ({error}); a JSONL file has one per line") from None
        text = item.get("text") if isinstance(item, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"{path}:{number}: no non-empty string `text` field")
        title = item.get("title")
        if isinstance(title, str) and title.strip():  # BEIR corpora keep a title apart from the text
            text = f"{title.strip()}. {text}"
        records.append(Record(str(item.get("_id", item.get("id", number))), text.strip()))
    if not records:
        raise InputError(f"{path}: no texts in it (one per line, or JSONL with a `text` field)")
    return records


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """query id -> {document id: grade}: TREC (`qid 0 docid grade`) or BEIR TSV (`query-id corpus-id score`, with
    or without its header line)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read it: {error}") from None
    qrels: dict[str, dict[str, int]] = {}
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields or (number == 1 and fields[0] == "query-id"):
            continue
        if len(fields) == 4:
            query, _, document, grade = fields
        elif len(fields) == 3:
            query, document, grade = fields
        else:
            raise InputError(f"{path}:{number}: expected `qid 0 docid grade` or `query-id corpus-id score`")
        try:
            qrels.setdefault(query, {})[document] = int(float(grade))
        except ValueError:
            raise InputError(f"{path}:{number}: the grade {grade!r} is not a number") from None
    if not qrels:
        raise InputError(f"{path}: no relevance labels in it")
    return qrels


def first_sentence(text: str) -> str:
    match = re.match(r"(.+?[.!?])(\s|$)", text)
    return (match[1] if match else text).strip()


@dataclass
class Workload:
    documents: list[Record]
    queries: list[Record]
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)
    source: str = "built-in corpus"  # what the report says the texts were

    @property
    def document_texts(self) -> list[str]:
        return [record.text for record in self.documents]

    @property
    def query_texts(self) -> list[str]:
        return [record.text for record in self.queries]

    def request_inputs(self, rng: random.Random, count: int) -> list[str]:
        """`count` texts of a request: consecutive corpus texts from a random start (as an indexer sends them)."""
        start = rng.randrange(len(self.documents))
        return [self.documents[(start + i) % len(self.documents)].text for i in range(count)]


def load_workload(
    corpus: Path | None,
    queries: Path | None,
    qrels: Path | None,
    max_documents: int,
    seed: int = 0,
) -> Workload:
    if corpus is None:
        if queries or qrels:
            raise InputError("--queries and --qrels need the --corpus they belong to")
        documents = texts("variable", BUILT_IN_DOCUMENTS, seed=102)
        questions = texts("short", BUILT_IN_QUERIES, seed=101)
        return Workload(
            [Record(str(i), t) for i, t in enumerate(documents, 1)],
            [Record(str(i), t) for i, t in enumerate(questions, 1)],
        )
    documents = read_records(corpus)
    labels = read_qrels(qrels) if qrels else {}
    if len(documents) > max_documents:
        # Labelled documents stay, so that recall can be measured; the rest is a seeded sample.
        wanted = {document for judged in labels.values() for document in judged}
        kept = [record for record in documents if record.id in wanted]
        rest = [record for record in documents if record.id not in wanted]
        kept += random.Random(seed).sample(rest, max(0, max_documents - len(kept)))
        documents = kept
    if queries is not None:
        questions = read_records(queries)
        source = f"{corpus} ({len(documents)} texts) and {queries} ({len(questions)} queries)"
    else:
        if labels:
            raise InputError("--qrels needs --queries: the labels name queries by id")
        sample = random.Random(seed).sample(documents, min(DRAWN_QUERIES, len(documents)))
        questions = [Record(f"q{record.id}", first_sentence(record.text)) for record in sample]
        source = f"{corpus} ({len(documents)} texts; queries: the first sentence of {len(questions)} of them)"
    if labels:
        unknown = set(labels) - {record.id for record in questions}
        if unknown == set(labels):
            raise InputError(f"{qrels}: none of its query ids is in {queries} (first: {sorted(unknown)[0]!r})")
    return Workload(documents, questions, labels, source)
