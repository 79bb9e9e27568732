"""A small closed-loop HTTP/1.1 load generator on asyncio, for measurements where the client's own CPU must stay out
of the figure (`embedserve bench`'s served section shares the machine with the server it measures).

Why not Locust here: a Locust request with its checks costs about a millisecond of client CPU, which on a 2-core
machine is CPU taken from the server under test; this client sends pre-encoded bodies over keep-alive connections
and costs tens of microseconds per request. Every response is still checked (`check`), never assumed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit


class ConnectionClosed(Exception):
    """The server closed the connection mid-response."""


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
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
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
    failures: dict[str, int] = field(default_factory=dict)  # reason -> count

    @property
    def passed(self) -> int:
        return len(self.latencies)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())


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
                    result.failures[reason] = result.failures.get(reason, 0) + 1
                else:
                    result.latencies.append(time.perf_counter() - started)
        finally:
            connection.close()

    async def users() -> None:
        deadline = time.perf_counter() + seconds
        await asyncio.gather(*(user(number, deadline) for number in range(concurrency)))

    started = time.perf_counter()
    asyncio.run(users())
    result.seconds = time.perf_counter() - started
    return result
