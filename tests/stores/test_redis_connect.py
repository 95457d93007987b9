"""Which deployment ``redis_url`` names: the ``redis+sentinel://`` form, its errors (as ``ConfigError`` naming
the option), and clients built from it against a real Sentinel deployment (tests/redis_server.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from edgecache import Settings
from edgecache.bus.redis import publisher_client
from edgecache.config import ConfigError
from edgecache.stores.redis import RedisStore
from edgecache.stores.redis_connect import BadRedisUrl, SentinelUrl, check_redis_url, parse_sentinel_url
from tests.redis_server import SentinelDeployment, free_port


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis+sentinel://s1/main", SentinelUrl((("s1", 26379),), "main")),
        (
            "redis+sentinel://s1:26380,10.0.0.2,[::1]:5000/main/3",
            SentinelUrl((("s1", 26380), ("10.0.0.2", 26379), ("::1", 5000)), "main", db=3),
        ),
        (
            "redis+sentinel://app:p%40ss%3Aword@s1,s2/cache.eu-1/",
            SentinelUrl((("s1", 26379), ("s2", 26379)), "cache.eu-1", username="app", password="p@ss:word"),
        ),
        ("REDIS+SENTINEL://:secret@s1/main", SentinelUrl((("s1", 26379),), "main", password="secret")),
    ],
)
def test_sentinel_urls_are_parsed(url: str, expected: SentinelUrl) -> None:
    assert parse_sentinel_url(url) == expected
    check_redis_url(url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://s1", "expected /<service_name>"),
        ("redis+sentinel://s1/", "expected /<service_name>"),
        ("redis+sentinel://s1/a/b/c", "expected /<service_name>"),
        ("redis+sentinel://s1/main/zero", "database 'zero' is not a number"),
        ("redis+sentinel://s1:port/main", "'s1:port' is not host[:port]"),
        ("redis+sentinel://s1:70000/main", "port 70000 is out of range"),
        ("redis+sentinel://s1,,s2/main", "'' is not host[:port]"),
        ("redis+sentinel://s1/main?db=2", "no query string"),
        ("redis+sentinel://s1/my%20master", "'my master' is not a service name"),
        ("sentinel://s1/main", "expected a redis://, rediss://, unix:// or redis+sentinel:// URL"),
    ],
)
def test_a_bad_redis_url_is_a_config_error_that_says_why(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=r"^redis_url: ") as error:
        Settings.load({"redis_url": url}, environ={})
    assert message in str(error.value)
    with pytest.raises(BadRedisUrl):
        RedisStore.from_url(url)


def test_a_sentinel_url_is_not_a_cluster() -> None:
    with pytest.raises(ConfigError, match="redis_url: a redis\\+sentinel:// URL names a Sentinel deployment"):
        Settings.load({"redis_url": "redis+sentinel://s1/main", "redis_cluster": True}, environ={})


def test_a_bad_url_never_shows_its_password() -> None:
    with pytest.raises(ConfigError) as error:
        Settings.load({"redis_url": "redis+sentinel://app:hunter2@s1/main/x"}, environ={})
    assert "hunter2" not in str(error.value)


@pytest.fixture
async def sentinel_store(redis_sentinel: SentinelDeployment) -> AsyncIterator[RedisStore]:
    redis_sentinel.reset()
    # The first sentinel named does not exist: each new connection skips it for the next one.
    dead = f"127.0.0.1:{free_port()}"
    live = ",".join(f"{s.host}:{s.port}" for s in redis_sentinel.sentinels)
    store = RedisStore.from_url(f"redis+sentinel://{dead},{live}/{redis_sentinel.service}", op_timeout=2.0)
    yield store
    await store.aclose()


async def test_a_sentinel_that_does_not_answer_is_skipped(
    sentinel_store: RedisStore, redis_sentinel: SentinelDeployment
) -> None:
    await sentinel_store.connect()
    await sentinel_store.client.set("probe", b"1")
    with redis_sentinel.current_master().admin_client() as admin:
        assert admin.get("probe") == b"1"


async def test_closing_a_sentinel_client_closes_its_sentinel_connections(
    redis_sentinel: SentinelDeployment,
) -> None:
    client = publisher_client(redis_sentinel.url, timeout=2.0)
    await client.ping()  # asked the first sentinel where the master is

    def discovery_connections() -> int:
        """Connections to the sentinels whose last command asked for the masters: the client's."""
        count = 0
        for sentinel in redis_sentinel.sentinels:
            with sentinel.admin_client() as admin:
                count += sum(1 for c in admin.client_list() if c["cmd"] == "sentinel|masters")
        return count

    assert discovery_connections() == 1
    await client.aclose()
    deadline = time.monotonic() + 5.0  # the server notices a closed socket at its next event-loop turn
    while discovery_connections() != 0:
        assert time.monotonic() < deadline, "the sentinel connection is still open"
        await asyncio.sleep(0.01)
