"""Admission by expected wait: shed a request at once when the work already queued for its backend would make it
wait longer than `--max-queue-wait-ms`.

A count of requests in flight (TEI's --max-concurrent-requests, and embedserve's own --max-queue, which stays as a
hard bound) treats 2,048 long texts like one word, so past capacity the queue grows for tens of seconds before
anything is shed. Here every request has a cost, its estimated tokens, and each backend keeps, in memory shared by
the HTTP processes and its worker:

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
import multiprocessing as mp
import time
from dataclasses import dataclass
from typing import Any

CHARS_PER_TOKEN = 4
# Weight of the newest batch in the throughput estimate: a few batches follow a change of load or request mix.
RATE_SMOOTHING = 0.3
# Spawn context: LitServe spawns the workers, and forks the HTTP processes; both must share these values.
_SPAWN = mp.get_context("spawn")


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
    _queued: Any  # estimated tokens admitted and not yet answered
    _rate: Any  # estimated tokens per second while busy; 0 until the first batch is measured
    _max_tokens: Any
    _running: Any  # the batch in the worker now: its estimated tokens and when it started (0, 0: none)
    _batch_cost: Any  # the most estimated tokens one dynamic batch holds; 0: unbounded

    @classmethod
    def create(cls) -> BackendLoad:
        return cls(
            _SPAWN.Value("d", 0.0),
            _SPAWN.Value("d", 0.0),
            _SPAWN.Value("i", 0),
            _SPAWN.Array("d", 2),
            _SPAWN.Value("d", 0.0),
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
