"""What a soak sends and how each answer is judged: requests of 1 to --max-inputs distinct texts of mixed lengths,
to every backend in turn, with a share of invalid ones; and each text's reference vector, taken alone on each
backend before the load, which every later answer must match (so an answer that went to the wrong request, or
vectors shuffled within one, is a failure)."""

from __future__ import annotations

import asyncio
import json
import random
import sys
from dataclasses import dataclass

import numpy as np

from corpus.texts import texts
from loadtest.client.checks import embeddings_failure, shed
from loadtest.client.http_load import SHED, KeepAliveConnection
from loadtest.settings import SoakSettings


@dataclass(frozen=True)
class BadRequest:
    name: str
    body: bytes
    status: int


def bad_requests(model: str) -> list[BadRequest]:
    """Invalid requests a client could send, with the status the README's error table promises for each."""
    as_json = lambda document: json.dumps(document).encode()  # noqa: E731
    return [
        BadRequest("empty input list", as_json({"model": model, "input": []}), 400),
        BadRequest("empty string", as_json({"model": model, "input": ""}), 400),
        BadRequest("unknown model", as_json({"model": "no-such/model", "input": "hello"}), 404),
        BadRequest("body is not JSON", b'{"model": "x", "input": ', 400),
        BadRequest("zero dimensions", as_json({"model": model, "input": "hello", "dimensions": 0}), 400),
        BadRequest("input of the wrong type", as_json({"model": model, "input": {"text": "hello"}}), 400),
    ]


@dataclass(frozen=True)
class SoakRequest:
    backend: str
    body: bytes
    text_ids: tuple[int, ...] = ()  # the inputs, by index into the soak's texts
    bad: BadRequest | None = None


def plan_requests(
    settings: SoakSettings, backends: list[str], model: str, pool: list[str], count: int
) -> list[SoakRequest]:
    """One request per arrival, seeded: backends in turn, 1..max_inputs distinct texts of `pool`, a share of bad
    ones."""
    rng = random.Random(f"soak:{settings.seed}")
    bad = bad_requests(model)
    planned = []
    for index in range(count):
        backend = backends[index % len(backends)]
        if rng.random() < settings.bad_share:
            choice = rng.choice(bad)
            planned.append(SoakRequest(backend, choice.body, bad=choice))
            continue
        ids = tuple(rng.sample(range(len(pool)), rng.randint(1, min(settings.max_inputs, len(pool)))))
        body = {"model": model, "input": [pool[i] for i in ids]}
        planned.append(SoakRequest(backend, json.dumps(body).encode(), text_ids=ids))
    return planned


def openai_error_shape(answer: object) -> bool:
    error = answer.get("error") if isinstance(answer, dict) else None
    return (
        isinstance(error, dict)
        and isinstance(error.get("message"), str)
        and bool(error["message"])
        and isinstance(error.get("type"), str)
        and "param" in error
        and "code" in error
    )


class AnswerCheck:
    """Checks each answer against the references of its own request's inputs."""

    def __init__(self, planned: list[SoakRequest], references: dict[str, np.ndarray], min_cosine: float):
        self.planned, self.references, self.min_cosine = planned, references, min_cosine

    def __call__(self, index: int, status: int, body: bytes) -> str | None:
        request = self.planned[index]
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        if shed(status, answer):
            return SHED
        if request.bad:
            if status != request.bad.status:
                return f"{request.bad.name}: HTTP {status}, expected {request.bad.status}"
            if not openai_error_shape(answer):
                return f"{request.bad.name}: the error is not in OpenAI's shape"
            return None
        expected = self.references[request.backend][list(request.text_ids)]
        failure = embeddings_failure(status, answer, len(request.text_ids), expected.shape[1], "float")
        if failure:
            return failure
        vectors = np.asarray([item["embedding"] for item in answer["data"]], dtype=np.float32)
        cosines = (vectors * expected).sum(axis=1) / (
            np.linalg.norm(vectors, axis=1) * np.linalg.norm(expected, axis=1) + 1e-12
        )
        if cosines.min() < self.min_cosine:
            return "a vector is not its own input's: answers mixed up between or within requests"
        return None


def take_references(url: str, backends: list[str], model: str, pool: list[str]) -> dict[str, np.ndarray]:
    """Each text alone on each backend, one request per input: the vectors every later answer must match."""

    async def one_backend(backend: str) -> np.ndarray:
        connection = await KeepAliveConnection.open(url)
        try:
            vectors = []
            for text in pool:
                body = json.dumps({"model": model, "input": [text]}).encode()
                status, answer = await connection.post(f"/{backend}/v1/embeddings", body)
                if status != 200:
                    raise RuntimeError(f"reference of {backend} failed: HTTP {status} {answer[:300]!r}")
                vectors.append(json.loads(answer)["data"][0]["embedding"])
            return np.asarray(vectors, dtype=np.float32)
        finally:
            connection.close()

    async def every_backend() -> list[np.ndarray]:
        return await asyncio.gather(*(one_backend(backend) for backend in backends))

    return dict(zip(backends, asyncio.run(every_backend()), strict=True))


@dataclass
class Target:
    """What a soak sends and checks against: the server, its backends and model, the texts and their references."""

    url: str
    backends: list[str]
    model: str
    pool: list[str]
    references: dict[str, np.ndarray]

    @classmethod
    def take(cls, settings: SoakSettings, url: str, backends: list[str], model: str) -> Target:
        pool = texts(settings.profile, settings.texts, seed=settings.seed)
        print(f"references: {len(pool)} texts, each alone, on {', '.join(backends)} ...", file=sys.stderr, flush=True)
        return cls(url, backends, model, pool, take_references(url, backends, model, pool))
