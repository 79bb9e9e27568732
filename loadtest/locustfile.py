"""Locust load for embedserve: plain `locust` (web UI) or `locust --headless -u 32 -r 8 -t 1m`; see locust.conf.
`python loadtest/locustfile.py --host http://127.0.0.1:8000 --backends onnx` runs one user in this process and
prints every request (Locust's `run_single_user`), for debugging.

With no flags, the users ask the server's /v1/models what it serves and spread over its ready backends with its
model; `--backends` and `--model` choose instead. Every user sends POST /<backend>/v1/embeddings with
`--batch-size` texts of a `--text-profile`, drawn from the repository's deterministic corpus with `--seed`, so two
runs send the same requests. Every response is checked (status, one embedding per input, the expected dimension);
anything else is a Locust failure with its reason. A server run with API keys gets `--api-key` (EMBEDSERVE_API_KEY).

Locust's users are closed loop (each waits for its answer before it sends again). Open-loop arrivals at a fixed
rate are `embedserve sweep --rates` (loadtest/sweep/open_cell.py).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
from pathlib import Path
from typing import ClassVar

import gevent
from locust import FastHttpUser, constant, events, task
from locust.runners import WorkerRunner

from corpus.texts import PROFILES, texts, window
from loadtest.client.api_key import API_KEY_ENV, authorization
from loadtest.client.checks import FAILED, PASSED, SHED_MARK, embeddings_failure
from loadtest.client.http_load import SHED
from loadtest.probe.discovery import Served, parse_models

POOL_SIZE = 1024
# A request the server shed (503 server_overloaded) is counted under its path with this suffix: a row of its own in
# Locust's statistics, neither a failure nor a served request.
SHED_SUFFIX = " (shed)"
log = logging.getLogger("embedserve.locust")


@events.init_command_line_parser.add_listener
def add_arguments(parser) -> None:
    parser.add_argument(
        "--backends",
        default="",
        include_in_web_ui=True,
        help="backends to hit, comma separated; users are spread evenly over them (default: every ready backend "
        "the server's /v1/models lists)",
    )
    parser.add_argument(
        "--model", default="", include_in_web_ui=True, help="model sent in each request (default: the served one)"
    )
    parser.add_argument("--batch-size", type=int, default=8, include_in_web_ui=True, help="inputs per request")
    parser.add_argument(
        "--text-profile",
        default="short",
        choices=list(PROFILES),
        include_in_web_ui=True,
        help="text length: " + ", ".join(f"{name} {words}" for name, words in PROFILES.items()),
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
    parser.add_argument(
        "--embeddings-path",
        default="",
        include_in_web_ui=True,
        help="POST here instead of /<backend>/v1/embeddings: another OpenAI-compatible server (/v1/embeddings for "
        "TEI and vLLM, /embeddings for Infinity); give --model and --expected-dimensions too",
    )
    parser.add_argument(
        "--unit-norm", action="store_true", help="with --embeddings-path: every embedding must be unit length"
    )
    parser.add_argument("--seed", type=int, default=0, include_in_web_ui=True, help="seed of the text choice")
    parser.add_argument(
        "--warmup",
        type=float,
        default=0,
        include_in_web_ui=True,
        help="seconds after start whose statistics are discarded",
    )
    parser.add_argument(
        "--api-key",
        default="",
        env_var=API_KEY_ENV,
        is_secret=True,
        include_in_web_ui=True,
        help="the server's API key, sent as `Authorization: Bearer` (env EMBEDSERVE_API_KEY: with a list, the first)",
    )
    parser.add_argument(
        "--latency-file",
        default="",
        help="write every measured request's latency (ms) and outcome (1 passed, 0 failed, s shed), one per line, "
        "to PATH.<pid>",
    )


# Every measured request's latency (ms) and outcome, in this process, for --latency-file (Locust's percentiles are
# rounded, and its CSV files can miss the last second).
measured: list[tuple[float, str]] = []


@events.request.add_listener
def record_latency(name: str, response_time: float, exception=None, **_kwargs) -> None:
    if name.endswith(SHED_SUFFIX):
        measured.append((response_time, SHED_MARK))
    elif name != "/v1/models":
        measured.append((response_time, FAILED if exception else PASSED))


@events.test_start.add_listener
def start_warmup(environment, **_kwargs) -> None:
    warmup = environment.parsed_options.warmup
    if warmup > 0:

        def reset_after_warmup() -> None:
            gevent.sleep(warmup)
            measured.clear()  # in every process; Locust's statistics once, where they are kept
            if not isinstance(environment.runner, WorkerRunner):
                environment.runner.stats.reset_all()
                log.info("warm-up of %.0f s over: statistics reset", warmup)

        gevent.spawn(reset_after_warmup)


@events.test_stop.add_listener
def write_latencies(environment, **_kwargs) -> None:
    prefix = environment.parsed_options.latency_file
    if prefix and measured:
        lines = (f"{latency:.3f} {outcome}" for latency, outcome in measured)
        Path(f"{prefix}.{os.getpid()}").write_text("\n".join(lines) + "\n")


class EmbeddingUser(FastHttpUser):
    # Closed loop: each user sends its next request when the last one is answered, so users = concurrency.
    wait_time = constant(0)
    _numbers = itertools.count()
    # Shared by the users of one process: texts per (profile, seed), and what the server serves.
    _pools: ClassVar[dict[tuple[str, int], list[str]]] = {}
    _served: ClassVar[list[Served]] = []

    def on_start(self) -> None:
        options = self.environment.parsed_options
        number = next(self._numbers)
        self.authorization = authorization(options.api_key)
        backends = [name.strip() for name in options.backends.split(",") if name.strip()]
        served = self.served() if not options.embeddings_path else None
        if not backends:  # a peer has no backends: its path names its users
            backends = served.ready_backends if served else [options.embeddings_path] if options.embeddings_path else []
        if not backends:
            raise RuntimeError("no backend to load: the server lists none ready in /v1/models; give --backends")
        self.backend = backends[number % len(backends)]
        self.path = options.embeddings_path or f"/{self.backend}/v1/embeddings"
        self.rng = random.Random(options.seed * 100_003 + number)
        key = (options.text_profile, options.seed)
        if key not in self._pools:
            self._pools[key] = texts(options.text_profile, POOL_SIZE, seed=options.seed)
        self.pool = self._pools[key]
        model = options.model or (served.model if served else "")
        self.body = {"model": model, "encoding_format": options.encoding_format}
        if options.dimensions:
            self.body["dimensions"] = options.dimensions
        self.expected_dimensions = (
            options.expected_dimensions or options.dimensions or (served.dimensions(self.backend) if served else None)
        )
        self.unit_norm = served.normalized(self.backend) if served else options.unit_norm

    def served(self) -> Served | None:
        """The server's /v1/models, asked once per process (a failure of its own when it cannot be read)."""
        if not self._served:
            with self.client.get(
                "/v1/models", name="/v1/models", headers=self.authorization, catch_response=True
            ) as response:
                try:
                    self._served[:] = [parse_models(response.json())]
                except ValueError as error:
                    response.failure(f"/v1/models: {error}")
                    return None
        return self._served[0]

    @task
    def embed(self) -> None:
        size = self.environment.parsed_options.batch_size
        start = self.rng.randrange(len(self.pool))
        batch = window(self.pool, start, size)
        with self.client.post(
            self.path,
            data=json.dumps({**self.body, "input": batch}),
            name=self.path,
            headers={"Content-Type": "application/json", **self.authorization},
            catch_response=True,
        ) as response:
            try:
                body = response.json()
            except ValueError:
                body = None
            reason = embeddings_failure(
                response.status_code,
                body,
                size,
                self.expected_dimensions,
                self.body["encoding_format"],
                self.unit_norm,
            )
            if reason == SHED:
                response.request_meta["name"] = self.path + SHED_SUFFIX
                response.success()
            elif reason:
                response.failure(reason)
            else:
                response.success()


if __name__ == "__main__":
    from locust import run_single_user

    run_single_user(EmbeddingUser)
