"""The invalidation bus on Redis pub/sub: a long-running subscriber that notices a dead or silent connection,
and the publishing helpers.

``InvalidationSubscriber`` states (one asyncio task)::

    connecting ──subscribed──▶ connected ──error / silent──▶ backing off ──sleep──▶ connecting
        ▲  │                    (on_connected)              (on_disconnected)            │
        │  └── error ──▶ backing off ─────────────────────────────────────────────────────┘

Each connection attempt builds a fresh client with ``client_factory`` (the subscriber owns it and closes
it; the factory may be async, e.g. to find the node that owns a sharded channel on Redis Cluster),
SUBSCRIBEs to every channel, SSUBSCRIBEs to the ``sharded`` ones as well (Redis 7 sharded pub/sub, one
connection for both kinds) and waits for the server's confirmations, all within ``connect_timeout``;
only then is the subscriber ``connected`` and ``on_connected()`` awaited. Pub/sub is fire-and-forget: a
message published while no connection is subscribed is lost, which is what ``on_disconnected()`` tells
the owner. The two callbacks strictly alternate, starting with ``on_connected`` (so ``on_disconnected`` is
called exactly once per outage, and not for attempts that never connected); ``stop()`` calls neither.

Liveness: whenever nothing (message, confirmation or PONG) has arrived for ``heartbeat`` seconds, a PING
goes out on the subscribed connection; if still nothing arrives within another ``heartbeat`` seconds the
connection is declared dead. That catches what a socket error never reports: a paused or hung server, a
black-holed network path, a half-open TCP connection. Any error, or silence, discards the client and its
pubsub (a fresh pair per attempt), and the client's retries are disabled on the subscribed connection, so a
reconnection that redis-py attempts by itself never carries on silently (which would hide an outage and
the messages lost in it).

Reconnecting: capped exponential backoff with jitter, ``delay = min(cap, base·2ⁿ)`` scaled by a random
factor in [0.5, 1], where ``n`` counts failures since the last connection that stayed up for at least
``cap`` seconds (so a connection that drops right after subscribing cannot make the loop spin).

A channel in ``sharded`` is heard both ways: a classic PUBLISH (which a Cluster broadcasts to every node)
and an SPUBLISH (which only reaches the shard that owns the channel's slot) call the same handler. When the
server ends the sharded subscription by itself (its slot moved to another node), or the owner asks for it
(``reconnect()``, e.g. the Sentinel master moved), the connection is dropped like any lost one.

Message handlers receive the raw payload bytes: parsing and validation are theirs (``parse_invalidation``,
``parse_event``). A handler that raises or overruns ``handler_timeout`` is logged and counted in
``handler_errors``; the loop goes on. Nothing escapes the task but cancellation.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, Final

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from edgecache.core.invalidation import (
    DomainEvent,
    Invalidation,
    encode_event,
    encode_invalidation,
    event_channel,
    invalidation_channel,
)
from edgecache.stores.redis_connect import plain_client

logger = logging.getLogger(__name__)

Handler = Callable[[bytes], Awaitable[None]]
Callback = Callable[[], Awaitable[None]]

DEFAULT_CONNECT_TIMEOUT: Final = 1.0
DEFAULT_HANDLER_TIMEOUT: Final = 10.0
_CLOSE_TIMEOUT: Final = 1.0
_MIN_READ: Final = 0.001  # the shortest read wait: no zero-timeout polling


class DeadConnection(Exception):
    """The subscribed connection stopped answering (no PONG within the heartbeat)."""


class Resubscribe(Exception):
    """The subscription must move: the server dropped a sharded channel, or ``reconnect()`` was called."""


def _subscriber_settings(connect_timeout: float, client_kwargs: dict[str, Any]) -> dict[str, Any]:
    """A subscriber's connection: short socket timeouts, keepalive, no retries and no redis-py health checks
    (the subscriber does its own); ``client_kwargs`` on top."""
    return {
        "socket_connect_timeout": connect_timeout,
        "socket_timeout": connect_timeout,
        "socket_keepalive": True,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
        **client_kwargs,
    }


def pubsub_client_factory(
    url: str, *, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT, **client_kwargs: Any
) -> Callable[[], Redis]:
    """A ``client_factory`` for ``InvalidationSubscriber``: a client for ``url`` (standalone, or the master
    of a ``redis+sentinel://`` service) with short socket timeouts, keepalive, no retries and no redis-py
    health checks (the subscriber does its own). Nothing connects until the subscriber does."""
    settings = _subscriber_settings(connect_timeout, client_kwargs)

    def make() -> Redis:
        return plain_client(url, **settings)

    return make


def shard_owner_factory(
    cluster: RedisCluster,
    channel: str,
    *,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    **client_kwargs: Any,
) -> Callable[[], Awaitable[Redis]]:
    """A ``client_factory`` for a Redis Cluster: each attempt reloads ``cluster``'s slot map (the one that
    a failed attempt may have outdated) and connects to the primary that owns ``channel``'s slot, the only
    node where SSUBSCRIBE to it is allowed. Same connection settings as ``pubsub_client_factory``."""
    settings = _subscriber_settings(connect_timeout, client_kwargs)
    connection = cluster.get_connection_kwargs()
    for name in ("username", "password", "ssl"):
        if connection.get(name) is not None:
            settings.setdefault(name, connection[name])

    async def make() -> Redis:
        await cluster.initialize()  # the first time: slot map and command table (a no-op afterwards)
        await cluster.nodes_manager.initialize()  # every time: the slot map as it is now
        node = cluster.get_node_from_key(channel)
        if node is None:
            raise ConnectionError(f"no cluster node owns the slot of {channel!r}")
        return Redis(host=node.host, port=int(node.port), **settings)

    return make


def publisher_client(url: str, *, timeout: float = DEFAULT_CONNECT_TIMEOUT, **client_kwargs: Any) -> Redis:
    """A client for publishing (standalone, or a ``redis+sentinel://`` service's master): connect and
    command timeouts of ``timeout`` seconds, no retries."""
    settings: dict[str, Any] = {
        "socket_connect_timeout": timeout,
        "socket_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
        **client_kwargs,
    }
    return plain_client(url, **settings)


async def publish_invalidation(
    client: Redis | RedisCluster, namespace: str, inv: Invalidation, *, sharded: bool = False
) -> int:
    """Publish ``inv`` (validated, see ``encode_invalidation``) on ``<namespace>:invalidate``; returns how
    many subscribers received it. ``sharded``: SPUBLISH (a cluster client sends it to the shard that owns
    the channel, whose subscribers are counted), else PUBLISH (on a Cluster, broadcast to every node; only
    the subscribers of the node that took it are counted)."""
    channel, payload = invalidation_channel(namespace), encode_invalidation(inv)
    if sharded:
        return int(await client.spublish(channel, payload))
    return int(await client.publish(channel, payload))


async def publish_event(client: Redis | RedisCluster, namespace: str, event: DomainEvent) -> int:
    """PUBLISH a domain event on ``<namespace>:events``; returns how many subscribers received it."""
    return int(await client.publish(event_channel(namespace), encode_event(event)))


def backoff_delay(failures: int, base: float, cap: float, jitter: float) -> float:
    """Seconds to wait after ``failures`` consecutive failures: ``min(cap, base·2ⁿ)`` scaled into its upper
    half by ``jitter`` (in [0, 1)), so nodes spread out but never retry sooner than half the step."""
    ceiling = min(cap, base * 2.0 ** min(max(failures, 0), 32))
    return ceiling * (0.5 + 0.5 * jitter)


def _current_task() -> object:
    return asyncio.current_task()


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "surrogateescape")  # a client that decodes responses


_DATA_TYPES: Final = (b"message", b"smessage")

STOP_ATTEMPTS = 20
STOP_WAIT = 0.1  # seconds per attempt: a stop returns within about two seconds whatever redis-py does


async def cancel_until_done(tasks: Collection[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
    """Cancel ``tasks`` again and again until they end, ``STOP_ATTEMPTS`` times ``STOP_WAIT`` seconds at
    most; returns those still running then.

    One ``cancel()`` is not enough: a wait_for inside redis-py can swallow a cancellation (Python 3.11) and
    the task then goes on. Bounded, so that shutdown never hangs on a task that talks to Redis."""
    pending = {task for task in tasks if not task.done()}
    for _ in range(STOP_ATTEMPTS):
        if not pending:
            break
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=STOP_WAIT)
        pending = {task for task in pending if not task.done()}
    return pending


class InvalidationSubscriber:
    """Subscribes to ``channels`` (name → async handler of the raw payload) and keeps that subscription
    alive until ``stop()``. See the module docstring for the state machine.

    ``sharded``: channels (among ``channels``) also subscribed with SSUBSCRIBE.
    ``heartbeat``: seconds of silence before a PING, and the seconds a PING may go unanswered.
    ``reconnect_backoff``: ``(base, cap)`` seconds. ``connect_timeout`` bounds connecting plus subscribing
    (default ``max(1, 2 × heartbeat)``). ``clock`` (monotonic seconds) measures silence.
    """

    def __init__(
        self,
        client_factory: Callable[[], Redis | Awaitable[Redis]],
        channels: Mapping[str, Handler],
        *,
        sharded: Collection[str] = (),
        on_connected: Callback,
        on_disconnected: Callback,
        heartbeat: float = 1.0,
        reconnect_backoff: tuple[float, float] = (0.05, 2.0),
        clock: Callable[[], float] = time.monotonic,
        connect_timeout: float | None = None,
        handler_timeout: float | None = DEFAULT_HANDLER_TIMEOUT,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if not channels:
            raise ValueError("InvalidationSubscriber needs at least one channel")
        if not heartbeat > 0:
            raise ValueError("heartbeat must be positive")
        base, cap = reconnect_backoff
        if not 0 < base <= cap:
            raise ValueError("reconnect_backoff must be (base, cap) with 0 < base <= cap")
        self._client_factory = client_factory
        self._channels = dict(channels)
        self._handlers: dict[bytes, Handler] = {name.encode(): h for name, h in channels.items()}
        if not set(sharded) <= set(channels):
            raise ValueError("every sharded channel must be one of the channels")
        self._sharded = tuple(sharded)
        self._reconnect_requested = False
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._heartbeat = heartbeat
        self._backoff_base = base
        self._backoff_cap = cap
        self._clock = clock
        self._connect_timeout = max(1.0, 2 * heartbeat) if connect_timeout is None else connect_timeout
        self._handler_timeout = handler_timeout
        self._jitter = jitter  # uniform in [0, 1): the random part of the backoff

        self._task: asyncio.Task[None] | None = None
        self._client: Redis | None = None
        self._pubsub: PubSub | None = None
        self._connected = False
        self._ever_connected = False
        self.messages = 0  # payloads passed to a handler
        self.handler_errors = 0  # handlers that raised or overran handler_timeout
        self.callback_errors = 0  # on_connected / on_disconnected that raised
        self.reconnects = 0  # connections established after the first
        self.disconnects = 0  # outages (on_disconnected calls)
        self.connect_failures = 0  # attempts that did not get as far as subscribed
        self.pings = 0  # heartbeat PINGs sent

    @property
    def connected(self) -> bool:
        """Subscribed, and no error or silence noticed since."""
        return self._connected

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(self._channels)

    @property
    def sharded(self) -> tuple[str, ...]:
        return self._sharded

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) of the subscribed connection, if any."""
        connection = self._pubsub.connection if self._pubsub is not None else None
        if connection is None or not self._connected:
            return None
        host, port = getattr(connection, "host", None), getattr(connection, "port", None)
        return (host, int(port)) if isinstance(host, str) and port is not None else None

    def reconnect(self) -> None:
        """Drop the current subscription (within one heartbeat) and subscribe again from scratch, through
        ``client_factory``: for when the owner knows the server moved (a Sentinel failover)."""
        if self._connected:
            self._reconnect_requested = True

    def start(self) -> None:
        """Start the task on the running loop (a no-op while it runs)."""
        if self.running:
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="edgecache-bus-subscriber")

    async def stop(self) -> None:
        """Cancel the task and close the connection; idempotent, calls no callback."""
        task, self._task = self._task, None
        if task is not None:
            if task is _current_task():
                task.cancel()  # from a handler or callback: the task ends (and closes) at its next await
                return
            if await cancel_until_done({task}):
                logger.error("edgecache bus: subscriber task did not stop; abandoning it")
            elif not task.cancelled() and task.exception() is not None:
                logger.error("edgecache bus: subscriber task failed", exc_info=task.exception())
        await self._close_connection()
        self._connected = False

    # -- the task ----------------------------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0  # since the last connection that stayed up
        down_since: float | None = None  # when the last subscription was lost
        try:
            while True:
                connected_at: float | None = None
                try:
                    early = await self._connect()
                    connected_at = self._clock()
                    if down_since is not None:
                        logger.info("edgecache bus: subscribed again after %.2f s", connected_at - down_since)
                    down_since = None
                    await self._became_connected()
                    for channel, data in early:
                        await self._dispatch(channel, data)
                    await self._read_forever()
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    self._log_failure(error, connected_at is not None, failures)
                    if connected_at is None:
                        self.connect_failures += 1
                await self._close_connection()
                if self._connected:
                    down_since = self._clock()
                    await self._became_disconnected()
                if connected_at is not None and self._clock() - connected_at >= self._backoff_cap:
                    failures = 0
                await asyncio.sleep(self._backoff(failures))
                failures += 1
        finally:
            self._connected = False
            await self._close_connection()

    def _log_failure(self, error: Exception, was_connected: bool, failures: int) -> None:
        description = f"{type(error).__name__}: {str(error) or 'timed out'}"
        if was_connected:
            logger.warning("edgecache bus: subscription lost (%s); reconnecting", description)
        elif failures % 30 == 0:  # the first failure, then about once a minute at the default cap
            logger.warning("edgecache bus: cannot subscribe (%s); retrying", description)
        else:
            logger.debug("edgecache bus: still cannot subscribe (%s), attempt %d", description, failures + 1)

    def _backoff(self, failures: int) -> float:
        return backoff_delay(failures, self._backoff_base, self._backoff_cap, self._jitter())

    async def _connect(self) -> list[tuple[bytes, bytes]]:
        """A fresh client and pubsub, subscribed to every channel; returns any message that came with the
        confirmations (normally none)."""
        early: list[tuple[bytes, bytes]] = []
        async with asyncio.timeout(self._connect_timeout):
            self._reconnect_requested = False
            made = self._client_factory()
            client: Redis = await made if inspect.isawaitable(made) else made
            self._client = client
            self._pubsub = pubsub = self._client.pubsub()
            await pubsub.connect()  # type: ignore[no-untyped-call]
            connection = pubsub.connection
            if connection is not None:
                # Never let redis-py reconnect and resubscribe by itself (see the module docstring).
                connection.retry = Retry(NoBackoff(), 0)
            await pubsub.subscribe(*self._channels)
            pending = {(b"subscribe", name) for name in self._handlers}
            if self._sharded:
                await pubsub.ssubscribe(*self._sharded)
                pending |= {(b"ssubscribe", name.encode()) for name in self._sharded}
            while pending:
                message = await pubsub.get_message(timeout=self._connect_timeout)
                if message is None:
                    continue
                kind = _as_bytes(message["type"])
                channel = _as_bytes(message["channel"])
                if kind in (b"subscribe", b"ssubscribe"):
                    pending.discard((kind, channel))
                elif kind in _DATA_TYPES:
                    early.append((channel, _as_bytes(message["data"])))
        return early

    async def _read_forever(self) -> None:
        pubsub = self._pubsub
        assert pubsub is not None
        heartbeat = self._heartbeat
        last_received = self._clock()
        ping_sent: float | None = None
        while True:
            if self._reconnect_requested:
                raise Resubscribe("asked to subscribe again")
            now = self._clock()
            if ping_sent is None:
                wait = last_received + heartbeat - now
                if wait <= 0:
                    async with asyncio.timeout(heartbeat):
                        await pubsub.ping()
                    self.pings += 1
                    ping_sent = self._clock()
                    continue
            else:
                wait = ping_sent + heartbeat - now
                if wait <= 0:
                    raise DeadConnection(f"no reply to PING within {heartbeat:g} s")
            wait = max(wait, _MIN_READ)
            # get_message returns None after ``wait``; the outer timeout is only a backstop.
            async with asyncio.timeout(wait + max(1.0, heartbeat)):
                message = await pubsub.get_message(timeout=wait)
            if message is None:
                continue
            last_received = self._clock()
            ping_sent = None
            kind = _as_bytes(message["type"])
            if kind in _DATA_TYPES:
                await self._dispatch(_as_bytes(message["channel"]), _as_bytes(message["data"]))
            elif kind == b"sunsubscribe":  # never asked for: the channel's slot moved to another node
                raise Resubscribe(f"the server dropped sharded channel {_as_bytes(message['channel'])!r}")

    async def _dispatch(self, channel: bytes, data: bytes) -> None:
        handler = self._handlers.get(channel)
        if handler is None:
            return
        self.messages += 1
        try:
            async with asyncio.timeout(self._handler_timeout):
                await handler(data)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.handler_errors += 1
            logger.exception("edgecache bus: handler for %s failed", channel.decode("utf-8", "replace"))

    async def _became_connected(self) -> None:
        if self._ever_connected:
            self.reconnects += 1
        self._ever_connected = True
        self._connected = True
        await self._callback(self._on_connected, "on_connected")

    async def _became_disconnected(self) -> None:
        self._connected = False
        self.disconnects += 1
        await self._callback(self._on_disconnected, "on_disconnected")

    async def _callback(self, callback: Callback, name: str) -> None:
        try:
            await callback()
        except asyncio.CancelledError:
            raise
        except Exception:
            self.callback_errors += 1
            logger.exception("edgecache bus: %s failed", name)

    async def _close_connection(self) -> None:
        pubsub, client = self._pubsub, self._client
        self._pubsub = self._client = None
        closers: list[Callable[[], Awaitable[None]]] = []
        if pubsub is not None:
            closers.append(pubsub.aclose)
        if client is not None:
            closers.append(client.aclose)
        for close in closers:
            try:
                async with asyncio.timeout(_CLOSE_TIMEOUT):
                    await close()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.debug("edgecache bus: error while closing the connection", exc_info=True)
