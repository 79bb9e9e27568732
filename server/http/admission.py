"""Admission control: whether a request to a backend is queued, or answered at once with 503 `server_overloaded` and
`Retry-After`, so that past its capacity a server answers the excess fast and keeps serving what it admitted.

Three bounds, all here:

- the count bound (`CountBoundMiddleware`, --max-queue): requests in flight per backend, per HTTP process;
- the expected wait (`Admission.admit`, --max-queue-wait-ms): the work queued ahead of a request, over the backend's
  measured throughput;
- the queue wait (`Admission.expire_late`): a request that still waited longer than that bound before its batch
  could start (a burst before anything was measured, or an estimate that was too kind) is answered the same way
  when its turn comes, not run and then answered 504.

A count of requests in flight (TEI's --max-concurrent-requests counts too) treats 2,048 long texts like one word, so
past capacity the queue grows for tens of seconds before anything is shed. So every request has a cost, its
estimated tokens, and each backend keeps, in memory shared by the HTTP processes and its worker (`BackendLoad`):

- the estimated tokens of the requests admitted and not yet answered (the HTTP processes add and remove them);
- how many estimated tokens a second the worker gets through while busy (the worker measures it at every batch),
  and the batch it is running now (so that the part of it already done is not counted as waiting);
- the model's token limit, so that an over-long input costs what it will be cut to (the worker writes it on load).

The ratio of the first to the second is the wait a new request would have before its own turn. The estimate
counts characters (about 4 per token in the WordPiece and BPE vocabularies of these models); both sides compute it
the same way, so its error cancels out of the ratio as long as the traffic's mix of languages stays the same.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from server.http.errors import OpenAIError, error_response
from server.http.processes import SPAWN
from server.metrics import server_metrics

CHARS_PER_TOKEN = 4
# Weight of the newest batch in the throughput estimate: a few batches follow a change of load or request mix.
RATE_SMOOTHING = 0.3


def estimated_tokens(inputs: list[str] | list[list[int]], max_tokens: int = 0) -> float:
    """A request's cost: characters / 4 + 2 special tokens per text, token ids as they are, each cut at the model's
    limit when it is known."""
    total = 0
    for item in inputs:
        size = len(item) // CHARS_PER_TOKEN + 2 if isinstance(item, str) else len(item)
        total += min(size, max_tokens) if max_tokens else size
    return float(total)


@dataclass
class BackendLoad:
    """One backend's load, shared by its worker and every HTTP process."""

    _queued: Any  # estimated tokens admitted and not yet answered
    _rate: Any  # estimated tokens per second while busy; 0 until the first batch is measured
    _max_tokens: Any
    _running: Any  # the batch in the worker now: its estimated tokens and when it started (0, 0: none)
    _batch_cost: Any  # the most estimated tokens one dynamic batch holds; 0: unbounded

    @classmethod
    def create(cls) -> BackendLoad:
        return cls(
            SPAWN.Value("d", 0.0),
            SPAWN.Value("d", 0.0),
            SPAWN.Value("i", 0),
            SPAWN.Array("d", 2),
            SPAWN.Value("d", 0.0),
        )

    def cost(self, inputs: list[str] | list[list[int]]) -> float:
        return estimated_tokens(inputs, self._max_tokens.value)

    @property
    def queued_tokens(self) -> float:
        return self._queued.value

    @property
    def tokens_per_second(self) -> float:
        return self._rate.value

    def expected_wait(self, tokens: float = 0.0, now: float | None = None) -> float | None:
        """Seconds until what is queued, and `tokens` more, would be done; None before any batch was measured.

        The batch the worker is running counts only for what it has left: a dynamic batch can hold seconds of work,
        most of it done by the time a new request asks."""
        rate = self._rate.value
        if rate <= 0:
            return None
        with self._running.get_lock():
            running, since = self._running[:]
        done = min(running, ((time.monotonic() if now is None else now) - since) * rate) if running else 0.0
        return max(0.0, self._queued.value - done + tokens) / rate

    def start_batch(self, tokens: float, now: float) -> None:
        """The worker, when a batch starts."""
        with self._running.get_lock():
            self._running[:] = [tokens, now]

    def end_batch(self) -> None:
        with self._running.get_lock():
            self._running[:] = [0.0, 0.0]

    def admit(self, tokens: float) -> None:
        with self._queued.get_lock():
            self._queued.value += tokens

    def release(self, tokens: float) -> None:
        with self._queued.get_lock():
            self._queued.value = max(0.0, self._queued.value - tokens)

    def set_limits(self, max_tokens: int, batch_cost: float) -> None:
        """The worker, once loaded: the model's token limit and its dynamic batches' cost budget."""
        self._max_tokens.value = max_tokens
        self._batch_cost.value = batch_cost

    def admission_bound(self, bound: float) -> float:
        """The expected wait past which a new request is shed: `bound`, less one batch's time (at most half of it).
        A request's batch can start only when the batch ahead of it ends, up to one batch later than the average
        says; without that margin, a queue held at the bound would see requests expire waiting for their batch."""
        rate, batch_cost = self._rate.value, self._batch_cost.value
        margin = batch_cost / rate if rate > 0 and batch_cost > 0 else 0.0
        return bound - min(margin, bound / 2)

    def record_batch(self, tokens: float, seconds: float) -> None:
        """The worker, after each batch: how fast it went through its estimated tokens."""
        if tokens <= 0 or seconds <= 0:
            return
        measured = tokens / seconds
        with self._rate.get_lock():
            rate = self._rate.value
            self._rate.value = measured if rate <= 0 else (1 - RATE_SMOOTHING) * rate + RATE_SMOOTHING * measured


def retry_after(wait: float, bound: float) -> str:
    """Whole seconds until the queue should have room again (at least 1), for the Retry-After header."""
    return str(max(1, math.ceil(wait - bound)))


@dataclass
class Expired:
    """A request that waited `waited` seconds, past its backend's wait bound, before its batch could start."""

    request: Any
    waited: float


class Admission:
    """One backend's expected-wait and queue-wait bounds. `admit` and `release` run in the HTTP processes (the
    LitServe change that calls them: server/http/litserve_changes.py), `expire_late` in the batching loop, when it
    takes a request from the queue."""

    def __init__(self, backend: str, model: str, load: BackendLoad, max_queue_wait_ms: float):
        self.backend = backend
        self.model = model
        self.load = load
        self.max_queue_wait = max_queue_wait_ms / 1000 or None  # None: no bound

    def admit(self, request: Any) -> Response | None:
        """Before the request is queued: None to queue it, or the 503 that sheds it at once because the work queued
        ahead of it for this backend would make it wait past the bound. Sets `request.cost`."""
        request.cost = self.load.cost(request.inputs())
        # The work queued ahead of it, not its own: a large request on an idle server is never shed.
        wait = self.load.expected_wait() if self.max_queue_wait else None
        if wait is not None and wait > self.load.admission_bound(self.max_queue_wait):
            return error_response(self.overloaded("expected_wait", f"would wait about {wait:.1f} s", wait))
        self.load.admit(request.cost)
        return None

    def release(self, request: Any) -> None:
        """Once the request is answered, however that went."""
        self.load.release(request.cost)

    def expire_late(self, request: Any, waited: float) -> Any:
        """The request as it is, or `Expired` when it waited past the bound before its batch could start."""
        if self.max_queue_wait and waited > self.max_queue_wait:
            return Expired(request, waited)
        return request

    def shed_expired(self, expired: Expired) -> OpenAIError:
        return self.overloaded(
            "queue_timeout", f"waited {expired.waited:.1f} s for its batch", self.load.expected_wait() or 0.0
        )

    def overloaded(self, reason: str, what: str, wait: float) -> OpenAIError:
        server_metrics().rejected.labels(self.backend, self.model, reason).inc()
        return OpenAIError(
            503,
            f"the `{self.backend}` backend is overloaded: this request {what}, past the {self.max_queue_wait:g} s "
            "bound (max_queue_wait_ms); retry after the Retry-After seconds",
            code="server_overloaded",
            headers={"Retry-After": retry_after(wait, self.max_queue_wait)},
        )


class CountBoundMiddleware:
    """The hard bound on requests in flight per backend (--max-queue), in each HTTP process: past it, 503 at once."""

    def __init__(self, app: ASGIApp, queue_limit: int, backend_by_path: dict[str, str], model: str):
        self.app = app
        self.queue_limit = queue_limit
        self.backend_by_path = backend_by_path
        self.model = model
        self.in_flight: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        backend = self.backend_by_path.get(scope.get("path", "")) if scope["type"] == "http" else None
        if backend is None or scope["method"] != "POST":  # not an embeddings route: the app answers it
            await self.app(scope, receive, send)
            return
        if self.in_flight[backend] >= self.queue_limit:
            server_metrics().rejected.labels(backend, self.model, "count_bound").inc()
            overloaded = OpenAIError(
                503,
                f"the server is at its limit of {self.queue_limit} requests in flight for this backend; retry shortly",
                code="server_overloaded",
                headers={"Retry-After": "1"},
            )
            await error_response(overloaded)(scope, receive, send)
            return
        self.in_flight[backend] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight[backend] -= 1
