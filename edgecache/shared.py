"""What a node needs to share one cache with other nodes through Redis: the L2 tier's lifecycle, the
invalidation channel, domain events, and the generation token.

Redis pub/sub delivers at most once, so every way a message can be lost has a named answer:
- the subscriber disconnects (or its connection goes silent, caught by a heartbeat): L1 is flushed and
  bypassed until it is subscribed again, then flushed once more, so nothing stored meanwhile survives;
- a message is lost without a disconnect, Redis is flushed (FLUSHALL) or fails over to a replica that never
  saw the latest writes: the generation token ``<ns>:generation`` changes or disappears, which a check off
  the request path notices; the node then flushes L1 and moves to the token's key generation;
- a publish fails (Redis unreachable; this node's L2 purge failed too): the invalidation, or the one a
  domain event maps to, is applied to L2 and published again once a generation check reaches Redis;
- a node that missed everything still drops its L1 copies within ``l1_max_ttl``.

A node that cannot hear invalidations must not write to L2 either: its fills could carry what a purge it
missed removed, and L2 would then hand that to every node until the entry's TTL. So, while the channel is
down (before the first subscription, and from a noticed loss until resubscribed) L2 writes are paused; fills
still in flight when it comes back do not store; and when the loss is noticed, the L2 writes this node
made in the last ``recent_write_seconds`` (longer than a heartbeat takes to notice a silent connection) are
deleted again, since a message lost just before could have preceded them. The same re-deletion, limited to
the message's tags, closes the fill/invalidate race across nodes: see ``stores.tiered``.

Each message is applied once per ``id``: a node claims the L2 clean-up with ``SET <ns>:claim:<id> NX``
(the publisher claims its own messages before publishing), every node drops the matches from its L1.

Deployments (``redis_url``, see ``stores.redis_connect``):
- Sentinel: the subscriber and the publishers talk to the current master. A forced failover can leave the
  old master running, and taking writes and publishes, until Sentinel turns it into a replica, so the
  generation watcher also asks the sentinels where the master is: when it moved, L2's idle connections are
  dropped and the subscription is made again on the new master (an outage of the channel, as above).
- Redis Cluster: invalidations are sent with SPUBLISH, which only reaches the shard that owns
  ``<ns>:invalidate``; the subscriber connects to that shard's primary and listens to the channel both
  ways, sharded and classic, so a plain PUBLISH (redis-cli, another language) still works. Domain events
  stay on classic PUBLISH. A message heard both ways is applied once (per ``id``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import RedisError

from edgecache.bus.redis import (
    InvalidationSubscriber,
    cancel_until_done,
    publish_event,
    publish_invalidation,
    pubsub_client_factory,
    shard_owner_factory,
)
from edgecache.core.invalidation import (
    BadInvalidation,
    DomainEvent,
    Invalidation,
    SeenIds,
    parse_event,
    parse_invalidation,
)
from edgecache.engine import invalidation_tags
from edgecache.stores.tiered import PURGE_FENCE_SECONDS, TieredStore

if TYPE_CHECKING:
    from edgecache.engine import Cache

logger = logging.getLogger("edgecache")

CLAIM_TTL_MS = 10 * 60 * 1000  # a message id is claimed for ten minutes: far longer than any redelivery
UNPUBLISHED_MAX = 1024  # invalidations kept to publish again once Redis answers (the oldest go first)


class SharedTier:
    def __init__(self, cache: Cache, store: TieredStore) -> None:
        settings = cache.settings
        assert settings.redis_url is not None
        self.cache = cache
        self.store = store
        self.namespace = settings.namespace
        self.invalidate_channel = f"{self.namespace}:invalidate"
        self.events_channel = f"{self.namespace}:events"
        self.generation_key = f"{self.namespace}:generation"
        self._redis_url = settings.redis_url
        self._timeout = settings.redis_timeout
        self._interval = settings.generation_check_interval
        self.seen = SeenIds()
        self.generation: str | None = None
        self.counters: Counter[str] = Counter()
        client = store.l2.client
        self.cluster = isinstance(client, RedisCluster)
        # Its own connection: a subscribed connection cannot run other commands. No retries: the
        # subscriber reconnects with backoff by itself.
        connect_timeout = max(self._timeout, 1.0)
        factory: Callable[[], Redis | Awaitable[Redis]]
        if isinstance(client, RedisCluster):
            factory = shard_owner_factory(client, self.invalidate_channel, connect_timeout=connect_timeout)
        else:
            factory = pubsub_client_factory(self._redis_url, connect_timeout=connect_timeout)
        self.subscriber = InvalidationSubscriber(
            factory,
            {self.invalidate_channel: self._on_invalidation, self.events_channel: self._on_event},
            sharded=[self.invalidate_channel] if self.cluster else [],
            on_connected=self._on_connected,
            on_disconnected=self._on_disconnected,
            heartbeat=settings.subscriber_heartbeat,
        )
        self._watcher: asyncio.Task[None] | None = None
        # Invalidations that could not be published (Redis unreachable): applied to L2 and published again
        # as soon as a generation check reaches Redis.
        self._unpublished: deque[Invalidation] = deque(maxlen=UNPUBLISHED_MAX)
        self._subscribed = asyncio.Event()
        self._l1_waits_for_generation = False
        store.l2_ready = False  # until the key generation is known: see _adopt
        # Long enough to cover a message lost just before a heartbeat noticed the silence (two heartbeats).
        store.recent_write_seconds = max(PURGE_FENCE_SECONDS, 2 * settings.subscriber_heartbeat + 1.0)

    @property
    def redis(self) -> Any:
        return self.store.l2.client

    # -- lifecycle --------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._watcher is not None:
            return
        # Until the subscription is up, L1 must not serve: a purge published meanwhile would be missed.
        self.store.l1_bypass = True
        self.store.l2_writes_paused = True
        self.subscriber.start()
        self._watcher = asyncio.get_running_loop().create_task(self._watch_generation())

    @property
    def started(self) -> bool:
        return self._watcher is not None

    async def wait_ready(self, within: float) -> bool:
        """Wait (bounded) until L2 and the invalidation channel are usable; False if Redis is not there
        yet, in which case the node serves from the app and becomes shared as soon as Redis answers."""
        try:
            async with asyncio.timeout(within):
                await self._subscribed.wait()
        except TimeoutError:
            return False
        return self.store.l2_ready

    async def aclose(self) -> None:
        watcher = self._watcher
        # As for the subscriber: redis-py can swallow a cancellation (Python 3.11), and the watcher then
        # loops on; cancel again until it ends, bounded, so that shutdown never hangs on it.
        if watcher is not None and await cancel_until_done({watcher}):
            logger.error("edgecache: generation watcher did not stop; abandoning it")
        await self.subscriber.stop()
        await self.store.flush_writes()

    async def _on_connected(self) -> None:
        # L1 comes back only on the current key generation: after a Redis restart the first command on an
        # old pooled connection can fail, so try a few times, else leave it to the generation watcher.
        for _ in range(3):
            if await self.check_generation():
                await self._use_l1_again()
                return
            await asyncio.sleep(0.05)
        self._l1_waits_for_generation = True

    async def _use_l1_again(self) -> None:
        self._l1_waits_for_generation = False
        # A fill that began while the channel was down may predate a purge this node never heard of.
        self.cache.note_external_invalidation(counted=False)
        await self.store.clear_l1()  # whatever L1 took in while the channel was down is dropped
        self.store.l1_bypass = False
        self.store.l2_writes_paused = False
        self._subscribed.set()
        logger.info("edgecache: invalidation channel subscribed; L1 in use")

    async def _on_disconnected(self) -> None:
        self._l1_waits_for_generation = False
        self.store.l1_bypass = True
        # (Fills in flight need no refusal here: with L1 bypassed and L2 paused they store nothing, and
        # those still running once subscribed again are refused then, see _use_l1_again.)
        self.store.l2_writes_paused = True
        self._subscribed.clear()
        await self.store.clear_l1()
        self.counters["subscriber_disconnects"] += 1
        logger.warning(
            "edgecache: invalidation channel lost; L1 flushed and bypassed and L2 writes paused until "
            "resubscribed"
        )
        # A message lost before the loss was noticed may have preceded this node's latest L2 writes.
        await self.store.purge_recent_writes(None, before=self.cache.clock())

    # -- generation -------------------------------------------------------------------------------------

    async def _watch_generation(self) -> None:
        while True:
            try:
                await self._follow_sentinel_master()
                if await self.check_generation():
                    if self._l1_waits_for_generation and self.subscriber.connected:
                        await self._use_l1_again()
                    await self._publish_again()
                    await self.store.retry_pending_purges()
            except Exception:  # the watcher must outlive any single failure
                logger.exception("edgecache: generation check failed")
            await asyncio.sleep(self._interval)

    async def _follow_sentinel_master(self) -> None:
        """Behind Sentinel: ask where the master is; if the subscription is elsewhere, move it (see the
        module docstring). Asking also makes the L2 pool drop its idle connections to a former master."""
        pool = getattr(self.redis, "connection_pool", None)
        if not isinstance(pool, SentinelConnectionPool):
            return
        try:
            async with asyncio.timeout(self._timeout * 4):
                host, port = await pool.get_master_address()  # type: ignore[no-untyped-call]
        except (RedisError, OSError):
            self.counters["sentinel_errors"] += 1
            return
        subscribed_to = self.subscriber.address
        if subscribed_to is not None and subscribed_to != (str(host), int(port)):
            self.counters["master_moves"] += 1
            logger.warning(
                "edgecache: the Redis master moved to %s:%s; subscribing there (L1 flushed meanwhile)",
                host,
                port,
            )
            self.subscriber.reconnect()

    async def check_generation(self) -> bool:
        """Adopt the token in Redis; create one where there is none (first start, FLUSHALL, failover).
        False when Redis did not answer."""
        try:
            async with asyncio.timeout(self._timeout * 4):
                token = await self.redis.get(self.generation_key)
                if token is None:
                    await self.redis.set(self.generation_key, uuid.uuid4().hex, nx=True)
                    token = await self.redis.get(self.generation_key)
        except (RedisError, OSError):
            self.counters["generation_check_errors"] += 1
            return False
        if token is not None:
            await self._adopt(token.decode() if isinstance(token, bytes) else str(token))
        return True

    async def bump_generation(self) -> None:
        """Purge-all: a new token, so every node moves to fresh keys (old ones expire by their TTLs)."""
        token = uuid.uuid4().hex
        try:
            async with asyncio.timeout(self._timeout * 4):
                await self.redis.set(self.generation_key, token)
        except (RedisError, OSError):
            self.counters["generation_bump_errors"] += 1
            logger.warning("edgecache: purge-all could not reach Redis; only this node's L1 was flushed")
            return
        await self._adopt(token)

    async def _adopt(self, token: str) -> None:
        if token == self.generation:
            return
        previous, self.generation = self.generation, token
        self.store.l2.set_generation(token)
        self.store.l2_ready = True
        if previous is not None:
            self.counters["generation_changes"] += 1
            self.cache.note_external_invalidation()
            await self.store.clear_l1()
            logger.warning("edgecache: Redis generation changed; L1 flushed")

    # -- invalidation messages --------------------------------------------------------------------------

    def claim_locally(self, invalidation: Invalidation) -> None:
        """The publisher applies its own message before publishing it: its copy is not applied twice."""
        self.seen.first_time(invalidation.id, time.monotonic())

    async def publish(self, invalidation: Invalidation) -> None:
        """Publish; claim the L2 clean-up first only when this node's own L2 purge went through (with its
        breaker open it did not, and an unclaimed message lets a receiving node clean L2). Never raises."""
        try:
            async with asyncio.timeout(self._timeout * 4):
                if not self.store.has_pending_purges():
                    await self._claim(invalidation.id)
                await publish_invalidation(self.redis, self.namespace, invalidation, sharded=self.cluster)
        except (RedisError, OSError, TimeoutError):
            self.counters["publish_errors"] += 1
            self._unpublished.append(invalidation)
            logger.warning(
                "edgecache: could not publish invalidation %s; it is applied to L2 and published again "
                "once Redis answers (other nodes drop their L1 copies within l1_max_ttl anyway)",
                invalidation.id,
            )

    async def _publish_again(self) -> None:
        """Redis answers again: apply the invalidations that could not be published to L2 (their purge
        there failed too) and publish them, so neither L2 nor other nodes' L1 keep what they dropped."""
        for _ in range(len(self._unpublished)):
            invalidation = self._unpublished.popleft()
            self.counters["republished"] += 1
            await self.cache.apply_invalidation(invalidation, shared=True)
            await self.publish(invalidation)  # queued again if Redis went away meanwhile

    async def _claim(self, message_id: str) -> bool:
        claimed = await self.redis.set(f"{self.namespace}:claim:{message_id}", b"1", nx=True, px=CLAIM_TTL_MS)
        return bool(claimed)

    async def _on_invalidation(self, raw: bytes) -> None:
        try:
            invalidation = parse_invalidation(raw)
        except BadInvalidation as bad:
            self.counters[f"bad_message:{bad.reason}"] += 1
            logger.warning("edgecache: skipped invalidation message (%s): %.200r", bad.reason, raw)
            return
        await self._apply_remote(invalidation)

    async def _apply_remote(self, invalidation: Invalidation) -> None:
        if not self.seen.first_time(invalidation.id, time.monotonic()):
            self.counters["duplicate_messages"] += 1
            return
        self.counters["messages_applied"] += 1
        applied_at = self.cache.clock()
        # This node's L1 first: it is what the propagation time is about, and it needs no round trip.
        # Reads of L2 in the meantime are fenced (TieredStore._fenced) until the claimer has cleaned it.
        await self.cache.apply_invalidation(invalidation, shared=False)
        try:
            async with asyncio.timeout(self._timeout * 4):
                claimed = await self._claim(invalidation.id)
        except (RedisError, OSError, TimeoutError):
            claimed = False  # L2 unreachable: this node cannot clean it anyway
        if claimed:
            await self.cache.apply_invalidation(invalidation, shared=True)
        elif not invalidation.everything and "/" not in invalidation.prefixes:  # purge-all moved the keys
            # Another node cleaned L2, maybe before this node's latest writes landed: any of them that the
            # message covers may carry what it removed, so they go again (by key, idempotent). Soft purges
            # too: deleted rather than rewritten stale, which another node's fresh write could race.
            tags = invalidation_tags(invalidation)
            if tags:
                await self.store.purge_recent_writes(tags, before=applied_at)

    # -- domain events ----------------------------------------------------------------------------------

    async def publish_event(self, event: DomainEvent) -> None:
        try:
            async with asyncio.timeout(self._timeout * 4):
                await publish_event(self.redis, self.namespace, event)
        except (RedisError, OSError, TimeoutError):
            self.counters["publish_errors"] += 1
            logger.warning(
                "edgecache: could not publish event %s; applying it here, and to L2 and the other nodes "
                "(as the invalidation it maps to) once Redis answers",
                event.id,
            )
            invalidation = self.cache.invalidation_for_event(event)
            if invalidation is not None and self.seen.first_time(invalidation.id, time.monotonic()):
                self.counters["messages_applied"] += 1
                await self.cache.apply_invalidation(invalidation, shared=True)
                self._unpublished.append(invalidation)

    async def _on_event(self, raw: bytes) -> None:
        try:
            event = parse_event(raw)
        except BadInvalidation as bad:
            self.counters[f"bad_event:{bad.reason}"] += 1
            logger.warning("edgecache: skipped event message (%s): %.200r", bad.reason, raw)
            return
        invalidation = self.cache.invalidation_for_event(event)
        if invalidation is not None:
            await self._apply_remote(invalidation)
