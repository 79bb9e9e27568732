"""Deterministic English-like texts by length profile, so two runs send the same requests.

Sentences are drawn from a fixed vocabulary and a few grammatical templates with a seeded RNG: varied enough to
exercise tokenizers and attention like real prose, with no data set to download.
"""

from __future__ import annotations

import random
from typing import Literal

SUBJECTS = (
    "the engineer",
    "a small team",
    "our search service",
    "the database",
    "every user",
    "the new model",
    "this library",
    "the cluster",
    "a customer",
    "the index",
    "the report",
    "my colleague",
    "the scheduler",
    "a researcher",
    "the museum",
    "the river",
    "an old farmer",
    "the orchestra",
    "the city council",
    "a student",
)
VERBS = (
    "reads",
    "writes",
    "rebuilds",
    "measures",
    "ignores",
    "describes",
    "improves",
    "compares",
    "stores",
    "predicts",
    "explains",
    "visits",
    "paints",
    "repairs",
    "questions",
    "translates",
    "collects",
    "sends",
)
OBJECTS = (
    "the quarterly numbers",
    "a long letter",
    "every document in the archive",
    "the latency budget",
    "three thousand photographs",
    "the recipe for sourdough bread",
    "a map of the northern coast",
    "the results of the experiment",
    "an unexpected error message",
    "the history of the bridge",
    "a list of open questions",
    "the embeddings of new products",
    "the weather forecast for tomorrow",
    "a poem about autumn",
    "the contract with the supplier",
    "the slow queries",
    "a broken bicycle",
)
TAILS = (
    "before the meeting starts",
    "after a long winter",
    "with great care",
    "in less than a minute",
    "because nobody else would",
    "while the servers were busy",
    "for the first time in years",
    "without asking anyone",
    "during the night shift",
    "as the rain began to fall",
    "on a quiet Sunday",
    "to prove a point",
    "despite the noise outside",
    "under strict deadlines",
    "at the edge of the forest",
)
QUESTIONS = (
    "How do I {verb} {obj}?",
    "Why does {subj} {verb_base} {obj}?",
    "Where can I find {obj}?",
    "What is the best way to {verb_base} {obj} {tail}?",
)

# The text profiles of every load tool (bench, sweep, soak, Locust): one set, so their figures compare.
TextProfile = Literal["short", "medium", "long", "variable"]
# Approximate token targets of the fixed-length profiles (MiniLM's WordPiece: ~1.3 tokens per word).
PROFILE_WORDS = {"short": 12, "medium": 100, "long": 390}
PROFILES: dict[str, str] = {
    "short": "~16 tokens",
    "medium": "~128 tokens",
    "long": "~512 tokens (past MiniLM's 256: truncated)",
    "variable": "normal lengths around ~200 tokens, from 4 to ~500",
}


def sentence(rng: random.Random) -> str:
    subj, verb, obj, tail = rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS), rng.choice(TAILS)
    if rng.random() < 0.25:
        template = rng.choice(QUESTIONS)
        return template.format(subj=subj, verb=verb.rstrip("s"), verb_base=verb.rstrip("s"), obj=obj, tail=tail)
    text = f"{subj} {verb} {obj} {tail}."
    return text[0].upper() + text[1:]


def text_of_words(rng: random.Random, words: int) -> str:
    parts: list[str] = []
    count = 0
    while count < words:
        part = sentence(rng)
        parts.append(part)
        count += len(part.split())
    return " ".join(parts)


def texts(profile: TextProfile, count: int, seed: int = 0) -> list[str]:
    """`count` texts of a profile: short, medium, long, or variable (normal lengths, as ModernBERT's tests)."""
    rng = random.Random(f"{profile}:{seed}")
    if profile == "variable":
        lengths = [max(3, int(rng.gauss(150, 75))) for _ in range(count)]
    else:
        lengths = [PROFILE_WORDS[profile]] * count
    return [text_of_words(rng, n) for n in lengths]


def varied_texts(count: int, seed: int = 0) -> list[str]:
    """A mix of single words, questions, sentences and multi-paragraph texts (parity tests, bench)."""
    rng = random.Random(f"varied:{seed}")
    out: list[str] = []
    for index in range(count):
        kind = index % 4
        if kind == 0:
            out.append(rng.choice(OBJECTS).split()[-1])
        elif kind == 1:
            out.append(sentence(rng))
        elif kind == 2:
            out.append(text_of_words(rng, rng.randint(20, 80)))
        else:
            out.append(text_of_words(rng, rng.randint(150, 400)))
    return out


def window(pool: list[str], start: int, size: int) -> list[str]:
    """`size` consecutive texts of `pool` from `start`, wrapping around: one load request's inputs."""
    return [pool[(start + offset) % len(pool)] for offset in range(size)]
