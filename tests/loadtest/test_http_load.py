"""The bench's small HTTP/1.1 client against a tiny echo server: keep-alive requests, whole answers read with a
Content-Length or chunked, every answer checked and failures counted by reason."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import pytest

from loadtest.http_load import closed_loop


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers each POST with its body: with a Content-Length, chunked for paths under /chunked, 503 for /busy."""
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while True:
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            path = head.split(" ", 2)[1]
            length = next(
                int(line.split(":")[1]) for line in head.split("\r\n") if line.lower().startswith("content-length:")
            )
            body = await reader.readexactly(length)
            if path == "/busy":
                writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
            elif path.startswith("/chunked"):
                halves = [body[: len(body) // 2], body[len(body) // 2 :]]
                chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in halves if part)
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()


@pytest.fixture(scope="module")
def echo_url():
    ready, holder = threading.Event(), {}

    async def main() -> None:
        server = await asyncio.start_server(_echo, "127.0.0.1", 0)
        holder["port"] = server.sockets[0].getsockname()[1]
        ready.set()
        await server.serve_forever()

    threading.Thread(target=lambda: asyncio.run(main()), daemon=True).start()
    assert ready.wait(10)
    return f"http://127.0.0.1:{holder['port']}"


def echoed(request: bytes, status: int, body: bytes) -> str | None:
    return None if status == 200 and body == request else f"HTTP {status}"


@pytest.mark.parametrize("path", ["/plain", "/chunked"])
def test_every_answer_is_read_whole_and_checked(echo_url, path):
    bodies = [b'{"input": "%d"}' % n for n in range(7)]
    result = closed_loop(echo_url, path, bodies, concurrency=3, seconds=0.3, check=echoed)
    assert result.passed > 10 and result.failures == {}
    assert len(result.latencies) == result.passed and all(latency > 0 for latency in result.latencies)
    assert result.seconds >= 0.3


def test_failures_are_counted_by_reason_and_not_timed(echo_url):
    result = closed_loop(echo_url, "/busy", [b"{}"], concurrency=2, seconds=0.2, check=echoed)
    assert result.passed == 0 and result.failed > 0 and set(result.failures) == {"HTTP 503"}
