"""Locust load for embedserve: plain `locust` (web UI) or `locust --headless -u 32 -r 8 -t 1m`; see locust.conf.
`python loadtest/locustfile.py --host http://127.0.0.1:8000 --backends onnx` runs one user in this process and
prints every request (Locust's `run_single_user`), for debugging.

Every user sends POST /<backend>/v1/embeddings with `--batch-size` texts of a `--profile`, drawn from the
repository's deterministic corpus with `--seed`, so two runs send the same requests. Every response is checked
(status, one embedding per input, the expected dimension); anything else is a Locust failure with its reason.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
from typing import ClassVar

import gevent
from locust import FastHttpUser, constant, events, task
from locust.runners import WorkerRunner

from loadtest.checks import embeddings_failure
from loadtest.corpus import texts
from server.settings import DEFAULT_MODEL

POOL_SIZE = 1024
log = logging.getLogger("embedserve.locust")


@events.init_command_line_parser.add_listener
def add_arguments(parser) -> None:
    parser.add_argument(
        "--backends",
        default="torch",
        include_in_web_ui=True,
        help="backends to hit, comma separated; users are spread evenly over them",
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, include_in_web_ui=True, help="model sent in each request")
    parser.add_argument("--batch-size", type=int, default=8, include_in_web_ui=True, help="inputs per request")
    parser.add_argument(
        "--text-profile",
        default="short",
        choices=["short", "medium", "long", "variable"],
        include_in_web_ui=True,
        help="text length: short ~16, medium ~128, long ~512 tokens, variable (normal lengths)",
    )
    parser.add_argument("--encoding-format", default="float", choices=["float", "base64"], include_in_web_ui=True)
    parser.add_argument(
        "--dimensions",
        type=int,
        default=0,
        include_in_web_ui=True,
        help="Matryoshka dimensions to ask for (0: the model's own)",
    )
    parser.add_argument(
        "--expected-dimensions",
        type=int,
        default=0,
        include_in_web_ui=True,
        help="dimension every embedding must have (0: --dimensions, else what /v1/models reports)",
    )
    parser.add_argument("--seed", type=int, default=0, include_in_web_ui=True, help="seed of the text choice")
    parser.add_argument(
        "--warmup",
        type=float,
        default=0,
        include_in_web_ui=True,
        help="seconds after start whose statistics are discarded",
    )


@events.test_start.add_listener
def start_warmup(environment, **_kwargs) -> None:
    warmup = environment.parsed_options.warmup
    if warmup > 0 and not isinstance(environment.runner, WorkerRunner):

        def reset_after_warmup() -> None:
            gevent.sleep(warmup)
            environment.runner.stats.reset_all()
            log.info("warm-up of %.0f s over: statistics reset", warmup)

        gevent.spawn(reset_after_warmup)


class EmbeddingUser(FastHttpUser):
    # Closed loop: each user sends its next request when the last one is answered, so users = concurrency.
    wait_time = constant(0)
    _numbers = itertools.count()
    # Shared by the users of one process: texts per (profile, seed), and each backend's output size.
    _pools: ClassVar[dict[tuple[str, int], list[str]]] = {}
    _served_dimensions: ClassVar[dict[str, int]] = {}

    def on_start(self) -> None:
        options = self.environment.parsed_options
        number = next(self._numbers)
        backends = [name.strip() for name in options.backends.split(",") if name.strip()]
        self.backend = backends[number % len(backends)]
        self.path = f"/{self.backend}/v1/embeddings"
        self.rng = random.Random(options.seed * 100_003 + number)
        key = (options.text_profile, options.seed)
        if key not in self._pools:
            self._pools[key] = texts(options.text_profile, POOL_SIZE, seed=options.seed)
        self.pool = self._pools[key]
        self.body = {"model": options.model, "encoding_format": options.encoding_format}
        if options.dimensions:
            self.body["dimensions"] = options.dimensions
        self.expected_dimensions = options.expected_dimensions or options.dimensions or self.served_dimensions()

    def served_dimensions(self) -> int | None:
        """The backend's output size from /v1/models, asked once per process and backend."""
        if self.backend not in self._served_dimensions:
            with self.client.get("/v1/models", name="/v1/models", catch_response=True) as response:
                try:
                    backends = response.json()["data"][0]["backends"]
                    self._served_dimensions[self.backend] = backends[self.backend]["dimensions"]
                except (KeyError, IndexError, ValueError, TypeError):
                    response.failure(f"/v1/models does not report the dimensions of {self.backend}")
                    return None
        return self._served_dimensions[self.backend]

    @task
    def embed(self) -> None:
        size = self.environment.parsed_options.batch_size
        start = self.rng.randrange(len(self.pool))
        batch = list(itertools.islice(itertools.cycle(self.pool), start, start + size))
        with self.client.post(
            self.path,
            data=json.dumps({**self.body, "input": batch}),
            name=self.path,
            headers={"Content-Type": "application/json"},
            catch_response=True,
        ) as response:
            try:
                body = response.json()
            except ValueError:
                body = None
            reason = embeddings_failure(
                response.status_code, body, size, self.expected_dimensions, self.body["encoding_format"]
            )
            if reason:
                response.failure(reason)
            else:
                response.success()


if __name__ == "__main__":
    from locust import run_single_user

    run_single_user(EmbeddingUser)
