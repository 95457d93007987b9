"""Suite-wide fixtures: a real redis-server on a free loopback port, shared by the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    # Fails (does not skip) when redis-server is missing: CI installs it, so a skip would hide a gap.
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session server's URL, running, unpaused and flushed (a previous test may have stopped it)."""
    redis_server.reset()
    return redis_server.url
