"""A tiny HTTP/1.1 server that answers every POST with its own body: what the load generator is measured against
(how fast can one generator process send and read, when the server costs nearly nothing) and tested against.

Paths: /busy answers 503; paths under /chunked answer with chunked transfer encoding; /close echoes and then
closes the connection, as a server does with an idle keep-alive connection; anything else echoes with a
Content-Length. `python -m loadtest.client.echo_server PORT` serves on 127.0.0.1 until killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

from loadtest.probe.launcher import free_port


async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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
            if path == "/close":
                writer.close()
                return


async def serve(port: int) -> None:
    server = await asyncio.start_server(answer, "127.0.0.1", port, backlog=4096)
    await server.serve_forever()


@contextlib.contextmanager
def echo_server_process() -> Iterator[str]:
    """An echo server in its own process (so it does not share the generator's interpreter); yields its URL."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "loadtest.client.echo_server", str(port)])
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the echo server did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.kill()
        process.wait()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
