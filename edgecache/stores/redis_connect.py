"""Which Redis deployment ``redis_url`` names, and the clients edgecache builds for it.

Three deployments:

- standalone: ``redis://``, ``rediss://`` or ``unix://`` (redis-py's own URL forms);
- Redis Cluster: one of those URLs naming any node, with ``redis_cluster`` set (redis-py's cluster client
  finds the others);
- Sentinel: ``redis+sentinel://[user:password@]host1:26379,host2:26379/<service_name>[/<db>]``. The hosts are
  the sentinels (port 26379 when left out); the credentials and ``db`` are the data nodes'. Every new
  connection asks the sentinels, in order, where the master is now, so a failover needs no restart.

``sentinel_client`` makes a master client that also closes its sentinel connections when closed (redis-py's
``master_for`` leaves them open).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff

SENTINEL_SCHEME: Final = "redis+sentinel://"
DEFAULT_SENTINEL_PORT: Final = 26379
URL_SCHEMES: Final = ("redis://", "rediss://", "unix://", SENTINEL_SCHEME)
_HOST_PORT = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]/]+))(?::(?P<port>\d{1,5}))?$")
_SERVICE_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")


class BadRedisUrl(ValueError):
    """``redis_url`` cannot be used; the message says why, without the password."""


@dataclass(frozen=True)
class SentinelUrl:
    sentinels: tuple[tuple[str, int], ...]
    service_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None


def is_sentinel_url(url: str) -> bool:
    return url.lower().startswith(SENTINEL_SCHEME)


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Parse ``redis+sentinel://[user:password@]host[:port][,host[:port]…]/<service_name>[/<db>]``."""
    if not is_sentinel_url(url):
        raise BadRedisUrl(f"a Sentinel URL starts with {SENTINEL_SCHEME}")
    rest = url[len(SENTINEL_SCHEME) :]
    if "?" in rest or "#" in rest:
        raise BadRedisUrl("a Sentinel URL takes no query string or fragment")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    sentinels: list[tuple[str, int]] = []
    for item in hosts.split(","):
        match = _HOST_PORT.match(item.strip())
        if match is None:
            raise BadRedisUrl(f"Sentinel URL: {item.strip()!r} is not host[:port]")
        port = int(match["port"]) if match["port"] else DEFAULT_SENTINEL_PORT
        if not 0 < port < 65536:
            raise BadRedisUrl(f"Sentinel URL: port {port} is out of range")
        sentinels.append((match["v6"] or match["host"], port))
    parts = path.split("/") if slash else []
    if parts and parts[-1] == "":
        parts.pop()  # a trailing slash
    if not 1 <= len(parts) <= 2:
        raise BadRedisUrl("Sentinel URL: expected /<service_name> or /<service_name>/<db> after the hosts")
    service_name = unquote(parts[0])
    if not _SERVICE_NAME.match(service_name):
        raise BadRedisUrl(f"Sentinel URL: {service_name!r} is not a service name (A-Z a-z 0-9 _ . -)")
    db = 0
    if len(parts) == 2:
        if not parts[1].isdigit():
            raise BadRedisUrl(f"Sentinel URL: database {parts[1]!r} is not a number")
        db = int(parts[1])
    return SentinelUrl(tuple(sentinels), service_name, db, username, password)


def check_redis_url(url: str, *, cluster: bool = False) -> None:
    """Raise ``BadRedisUrl`` unless ``url`` names a deployment edgecache can use (module docstring)."""
    if not url.lower().startswith(URL_SCHEMES):
        raise BadRedisUrl("expected a redis://, rediss://, unix:// or redis+sentinel:// URL")
    if is_sentinel_url(url):
        if cluster:
            raise BadRedisUrl("a redis+sentinel:// URL names a Sentinel deployment, not a Redis Cluster")
        parse_sentinel_url(url)


class SentinelMaster(Redis):
    """A client of the current master of a Sentinel service; closing it closes the sentinel connections."""

    sentinel_manager: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            await super().aclose(close_connection_pool)
        finally:
            sentinel, self.sentinel_manager = self.sentinel_manager, None
            if sentinel is not None:
                await sentinel.aclose()


class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's master discovery with a bounded pool that waits (at most its ``timeout``) for a free
    connection, as the standalone request-path client does, instead of failing at once when all are busy."""


def sentinel_client(url: str, *, blocking_pool: bool = False, **connection_kwargs: Any) -> SentinelMaster:
    """A master client for a ``redis+sentinel://`` URL. ``connection_kwargs`` configure the data
    connections; the sentinels get the same socket timeouts and no retries: a sentinel that does not
    answer is skipped for the next one, so a dead one costs one connect timeout per new connection.
    ``blocking_pool``: see ``BlockingSentinelPool`` (its wait is the ``timeout`` keyword)."""
    parsed = parse_sentinel_url(url)
    sentinel_kwargs: dict[str, Any] = {
        name: value for name, value in connection_kwargs.items() if name.startswith("socket_")
    }
    sentinel_kwargs["retry"] = Retry(NoBackoff(), 0)
    sentinel = Sentinel(list(parsed.sentinels), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
    settings: dict[str, Any] = {"db": parsed.db, **connection_kwargs}
    if parsed.username is not None:
        settings["username"] = parsed.username
    if parsed.password is not None:
        settings["password"] = parsed.password
    pool_class = BlockingSentinelPool if blocking_pool else SentinelConnectionPool
    client = sentinel.master_for(
        parsed.service_name, redis_class=SentinelMaster, connection_pool_class=pool_class, **settings
    )
    assert isinstance(client, SentinelMaster)
    client.sentinel_manager = sentinel
    return client


def plain_client(url: str, **connection_kwargs: Any) -> Redis:
    """One non-cluster client for ``url``: redis-py's for a standalone server, the master's for Sentinel."""
    if is_sentinel_url(url):
        return sentinel_client(url, **connection_kwargs)
    return Redis.from_url(url, **connection_kwargs)
