"""The small HTTP/1.1 client's closed loop against the echo server (loadtest/client/echo_server.py): keep-alive
requests, whole answers read with a Content-Length or chunked, every answer checked and failures counted by reason."""

from __future__ import annotations

import pytest

from loadtest.client.http_load import closed_loop


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
