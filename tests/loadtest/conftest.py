"""The load-testing side's fixtures: the echo server that the load generator is tested against."""

from __future__ import annotations

import pytest

from loadtest.client.echo_server import echo_server_process


@pytest.fixture(scope="session")
def echo_url():
    with echo_server_process() as url:
        yield url
