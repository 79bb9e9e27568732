"""A small HTTP/1.1 load generator on asyncio: closed loop (a number of users, each waiting for its answer) and open
loop (arrivals on a schedule, whatever the server does).

Why not Locust here: a Locust request with its checks costs about a millisecond of client CPU, which on a 2-core
machine is CPU taken from the server under test; this client sends pre-encoded bodies over keep-alive connections
and costs tens of microseconds per request. And Locust's users are closed loop: a slow answer delays its user's
next request, so a slow server lowers its own load and hides its tail (coordinated omission). The open loop here
sends each request when it is due and times it from that moment, so any backlog, in the server or in this client,
counts in the latency. Every response is still checked (`check`), never assumed.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

# What a `check` returns for a 503 server_overloaded with Retry-After: the server shed the request at once, as it
# should past its capacity. A category of its own: neither an answer that passed nor a failure.
SHED = "shed: 503 server_overloaded"
# Beyond this lag, as a share of the schedule's span, the generator did not keep to its schedule: part of what it
# measured is the client, not the server.
SCHEDULE_SLACK_PCT = 1.0


class ConnectionClosed(Exception):
    """The server closed the connection mid-response."""


def run_event_loop(main: Coroutine) -> None:
    """uvloop where installed (it comes with uvicorn's standard extras): about twice the requests per second of one
    generator process that asyncio's own loop holds."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


# How a keep-alive connection that the server closed while idle fails on its next request (uvicorn closes idle
# ones after 5 s): such a request is sent again on a new connection, as HTTP clients do.
STALE = (ConnectionClosed, ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError)


class KeepAliveConnection:
    """One HTTP/1.1 connection: requests are sent one after another, each answer read whole."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str):
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, url: str) -> KeepAliveConnection:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 80, limit=2**24)
        return cls(reader, writer, parts.netloc)

    async def post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        return await self.request("POST", path, body, headers)

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n"
        )
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionClosed()
        status = int(status_line.split(b" ", 2)[1])
        length, chunked = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if not chunked:
            return status, await self.reader.readexactly(length)
        chunks = []
        while size := int((await self.reader.readline()).split(b";")[0], 16):
            chunks.append(await self.reader.readexactly(size))
            await self.reader.readline()
        await self.reader.readline()
        return status, b"".join(chunks)

    def close(self) -> None:
        self.writer.close()


@dataclass
class LoadResult:
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # of the requests that passed their check
    failures: Counter[str] = field(default_factory=Counter)  # reason -> count

    @property
    def passed(self) -> int:
        return len(self.latencies)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    def add(self, other: LoadResult) -> None:
        """Another run of the same load, counted in: its time, answers and failures."""
        self.seconds += other.seconds
        self.latencies += other.latencies
        self.failures.update(other.failures)


def closed_loop(
    url: str,
    path: str,
    bodies: list[bytes],
    concurrency: int,
    seconds: float,
    check: Callable[[bytes, int, bytes], str | None],
    headers: dict[str, str] | None = None,
) -> LoadResult:
    """`concurrency` users, each sending its next body as soon as the last answer came, for `seconds`.

    `check(request body, status, response body)` returns why an answer is wrong, or None."""
    result = LoadResult()

    async def user(number: int, deadline: float) -> None:
        connection = await KeepAliveConnection.open(url)
        sent = number
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                request = bodies[sent % len(bodies)]
                status, body = await connection.post(path, request, headers)
                sent += concurrency
                reason = check(request, status, body)
                if reason:
                    result.failures[reason] += 1
                else:
                    result.latencies.append(time.perf_counter() - started)
        finally:
            connection.close()

    async def users() -> None:
        deadline = time.perf_counter() + seconds
        await asyncio.gather(*(user(number, deadline) for number in range(concurrency)))

    started = time.perf_counter()
    run_event_loop(users())
    result.seconds = time.perf_counter() - started
    return result


@dataclass
class Outcome:
    """One open-loop request. Times are seconds from the start of the schedule."""

    due: float
    begun: float | None = None  # when the generator got to it: later than `due` when the generator lags
    finished: float | None = None  # when its answer was read whole; None: no answer
    status: int = 0
    failure: str | None = None  # why the answer was wrong, or None

    @property
    def admitted(self) -> bool:
        """Answered, and not shed: the server took it in."""
        return self.finished is not None and self.failure != SHED

    @property
    def latency(self) -> float:
        """From the moment it was due, not from when it was sent: a backlog anywhere counts."""
        return self.finished - self.due

    @property
    def lag(self) -> float:
        return self.begun - self.due


@dataclass
class OpenLoopResult:
    span: float  # seconds the schedule covered
    outcomes: list[Outcome]

    def since(self, start: float) -> OpenLoopResult:
        """The requests due at or after `start` (drops a warm-up)."""
        return OpenLoopResult(self.span - start, [o for o in self.outcomes if o.due >= start])

    @property
    def answered(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.finished is not None]

    @property
    def passed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.finished is not None and o.failure is None]

    @property
    def shed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.failure == SHED]

    @property
    def failures(self) -> dict[str, int]:
        """Failures by reason; shed requests are not among them. A plain dict: the soak's report goes through
        dataclasses.asdict, which rebuilds a Counter from its (key, value) pairs as if they were elements."""
        return dict(Counter(o.failure for o in self.outcomes if o.failure and o.failure != SHED))

    @property
    def offered_rate(self) -> float:
        return len(self.outcomes) / self.span

    @property
    def elapsed(self) -> float:
        """From the first arrival's due time to the last answer: a server that falls behind stretches it."""
        answered = self.answered
        if not answered:
            return self.span
        return max(max(o.finished for o in answered) - self.outcomes[0].due, self.span)

    def rate_within(self, slo_seconds: float | None = None) -> float:
        """Correct answers per second (achieved rate); with an SLO, only those that met it (goodput)."""
        passed = self.passed
        if slo_seconds is not None:
            passed = [o for o in passed if o.latency <= slo_seconds]
        return len(passed) / self.elapsed

    @property
    def max_lag(self) -> float:
        return max((o.lag for o in self.outcomes if o.begun is not None), default=0.0)

    @property
    def behind_pct(self) -> float:
        """How far the generator fell behind its schedule at worst, as a share of the schedule's span.

        A lag shorter than the mean gap between arrivals counts as none: the generator was late by the operating
        system's scheduling jitter but had no request waiting behind that one, so it did not limit the rate. (In a
        short, slow run, one brief stall would otherwise pass for a generator that cannot keep up.) A generator
        that cannot keep up builds a backlog of many requests, which this still reports in full."""
        mean_gap = self.span / len(self.outcomes) if self.outcomes else 0.0
        lag = self.max_lag
        return 100 * lag / self.span if lag > mean_gap else 0.0

    @property
    def kept_schedule(self) -> bool:
        return self.behind_pct <= SCHEDULE_SLACK_PCT


def open_loop(
    url: str,
    schedule: Sequence[float],
    span: float,
    request: Callable[[int], tuple[str, bytes]],
    check: Callable[[int, int, bytes], str | None],
    headers: dict[str, str] | None = None,
    max_connections: int = 1024,
    grace: float = 60.0,
) -> OpenLoopResult:
    """Sends request `i` (`request(i)` -> path, body) when `schedule[i]` seconds of `span` have passed, on an idle
    keep-alive connection or a new one, however many are still waiting for answers (up to `max_connections`).

    `check(i, status, response body)` returns why an answer is wrong, SHED, or None. Requests still unanswered
    `grace` seconds after the last one was due fail with that reason."""
    outcomes = [Outcome(due) for due in schedule]

    async def run() -> None:
        idle: list[KeepAliveConnection] = []
        slots = asyncio.Semaphore(max_connections)
        start = time.perf_counter()

        async def send(index: int) -> None:
            outcome = outcomes[index]
            outcome.begun = time.perf_counter() - start
            path, body = request(index)
            async with slots:
                while True:
                    reused, connection = bool(idle), None
                    try:
                        connection = idle.pop() if idle else await KeepAliveConnection.open(url)
                        outcome.status, answer = await connection.post(path, body, headers)
                        break
                    except (OSError, ConnectionClosed, asyncio.IncompleteReadError) as error:
                        if connection:
                            connection.close()
                        if reused and isinstance(error, STALE):
                            continue  # the server closed this keep-alive connection while it sat idle: a new one
                        outcome.failure = f"connection: {type(error).__name__}"
                        return
                outcome.finished = time.perf_counter() - start
                idle.append(connection)
            outcome.failure = check(index, outcome.status, answer)

        tasks = []
        for index, due in enumerate(schedule):
            # a loop: uvloop's timers have millisecond resolution and can wake a little early
            while (delay := start + due - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(index)))
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace)
            for task in late:
                task.cancel()
        for outcome in outcomes:
            if outcome.finished is None and outcome.failure is None:
                outcome.failure = f"no answer within {grace:g} s of the last arrival"
        for connection in idle:
            connection.close()

    run_event_loop(run())
    return OpenLoopResult(span, outcomes)
