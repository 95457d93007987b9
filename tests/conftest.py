"""Suite-wide fixtures: a real redis-server on a free loopback port, a three-node Redis Cluster and a Sentinel
deployment, each shared by the session and started only when a test asks for it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.redis_server import LocalCluster, RedisServer, SentinelDeployment


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


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    """A three-master Redis Cluster on loopback, shared by the session (tests flush it themselves)."""
    with LocalCluster(3) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[SentinelDeployment]:
    """A master, a replica and two sentinels, shared by the session; a test that fails over starts its own."""
    with SentinelDeployment() as deployment:
        yield deployment
