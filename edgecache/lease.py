"""Coalescing across nodes: a Redis lease per cache key, so that N nodes missing one key make one origin call.

Only a node's local leader takes part (its other concurrent misses wait for it through the local ``Flight``
as before), so a node has at most one request per key asking Redis. It runs one single-key script::

    SET <ns>:lease:<digest> <token> NX PX <lease_ttl>, else GET it

- it got the lease: it fetches from the origin, renewing the lease every ``lease_ttl / 3`` while the fetch
  lasts. When done it waits (bounded) until its L2 write has landed, then replaces its token, compare-and-set
  in one script, by ``=stored`` (waiters read L2), ``=pass`` (not shareable: waiters go to the origin at once;
  it stays for ``hit_for_miss_ttl`` so later misses elsewhere don't wait either), or deletes it (origin error,
  refused fill, cancelled request: one waiter takes over). The release runs off the request path.
- another node holds it: look again after 2, 4, 8, 16 ms, then every 25 ms (``core.lease.poll_delay``). A look
  is the same script, so a lease that expired because its holder died is taken by the next waiter that
  looks: still one origin call.
- ``lease_wait`` bounds the whole wait; then, or on any Redis error, with L2's circuit breaker not closed, or
  before the shared tier knows the key generation, the node falls back to local coalescing: it fetches itself.

Why polling rather than pub/sub: a waiter has to look at the lease key anyway to notice a dead holder (no
message ever comes from a dead node), pub/sub delivers at most once, and one cheap single-key script every
25 ms from at most one request per node and key costs Redis little. It needs no extra connection or
subscription, and behaves the same on standalone, Sentinel and Cluster (where classic ``PUBLISH`` would
be broadcast to every shard). The price is up to 25 ms (plus the L2 write) added to a waiter after the fill.

Every call is bounded by ``redis_timeout``; a cancelled call disconnects its connection in redis-py, so no
unread reply is left in the pool. A request cancelled while it holds the lease releases it in the background.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError, ResponseError

from edgecache.bus.redis import cancel_until_done
from edgecache.core.breaker import BreakerState, CircuitBreaker
from edgecache.core.lease import LeaseState, lease_key, poll_delay, read_state, release_value

logger = logging.getLogger("edgecache")

# KEYS[1] lease; ARGV: token, ttl ms. Returns the token when taken, else what the key holds.
_ACQUIRE: Final = (
    "if redis.call('SET',KEYS[1],ARGV[1],'NX','PX',ARGV[2]) then return ARGV[1] end "
    "return redis.call('GET',KEYS[1])"
)
# KEYS[1] lease; ARGV: token, ttl ms. Extends only our own lease.
_RENEW: Final = (
    "if redis.call('GET',KEYS[1])==ARGV[1] then return redis.call('PEXPIRE',KEYS[1],ARGV[2]) end return 0"
)
# KEYS[1] lease; ARGV: token, marker ('' to delete), marker ttl ms. Only our own lease is touched: one that
# expired and was taken by another node meanwhile stays theirs.
_RELEASE: Final = (
    "if redis.call('GET',KEYS[1])~=ARGV[1] then return 0 end "
    "if ARGV[2]=='' then return redis.call('DEL',KEYS[1]) end "
    "redis.call('SET',KEYS[1],ARGV[2],'PX',ARGV[3]) return 1"
)


class LeaseUnavailable(Exception):
    """Redis did not answer in time, refused the connection, or failed the script."""


class LeaseOutcome(StrEnum):
    WON = "won"  # this request fetches, and releases the lease when done
    STORED = "stored"  # another node stored the response: read L2
    PASS = "pass"  # another node found it not shareable: fetch now
    FALLBACK = "fallback"  # waited too long, or Redis unusable: fetch (local coalescing still applies)


@dataclass(slots=True)
class Lease:
    key: str
    token: bytes
    renewer: asyncio.Task[None]


class Leases:
    """The lease protocol of one node (see the module docstring).

    ``counters`` (shared with ``CacheStats.lease``) counts: ``won`` (taken at once), ``took_over`` (taken
    after waiting: the holder failed or died), ``stored`` and ``pass`` (woken by the holder's marker),
    ``timeout`` (``lease_wait`` passed), ``unavailable`` (Redis error or breaker open), ``release_errors``.
    ``waiting`` is how many requests are acquiring or waiting right now.
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        namespace: str,
        ttl: float,
        wait: float,
        op_timeout: float,
        hit_for_miss_ttl: float = 0.0,
        breaker: CircuitBreaker | None = None,
        ready: Callable[[], bool] | None = None,
        settled: Callable[[str, float], Awaitable[bool]] | None = None,
        clock: Callable[[], float] = time.time,
        counters: Counter[str] | None = None,
    ) -> None:
        self._client = client
        self.namespace = namespace
        self.ttl = ttl
        self.wait = wait
        self._ttl_ms = max(1, int(ttl * 1000))
        self._op_timeout = op_timeout
        self._hit_for_miss_ttl = hit_for_miss_ttl
        self._breaker = breaker
        self._ready = ready
        self._settled = settled
        self._clock = clock
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self.waiting = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._releases: set[asyncio.Task[None]] = set()
        self._closing = False

    def key(self, digest: str) -> str:
        return lease_key(self.namespace, digest)

    def usable(self) -> bool:
        """False while L2 is not ready or its breaker is not closed: then nobody waits on Redis."""
        if self._ready is not None and not self._ready():
            return False
        return self._breaker is None or self._breaker.state is BreakerState.CLOSED

    # -- acquiring --------------------------------------------------------------------------------------

    async def acquire(self, digest: str) -> tuple[LeaseOutcome, Lease | None]:
        """Take the lease of ``digest`` or wait (at most ``wait`` seconds) for its holder's outcome."""
        if not self.usable():
            self.counters["unavailable"] += 1
            return LeaseOutcome.FALLBACK, None
        key = self.key(digest)
        token = b"h:" + uuid.uuid4().hex.encode()
        loop = asyncio.get_running_loop()
        # The bound is checked here, not only by cancelling the wait: Python 3.11 can lose a cancellation
        # that lands while redis-py completes a send, and the wait must end anyway.
        deadline = loop.time() + self.wait
        attempt = 0
        self.waiting += 1
        try:
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    raise TimeoutError
                value = await self._call(_ACQUIRE, key, token, self._ttl_ms, within=left)
                state = read_state(value if isinstance(value, bytes) else None, token)
                if state is LeaseState.WON:
                    self.counters["took_over" if attempt else "won"] += 1
                    return LeaseOutcome.WON, self._hold(key, token)
                if state is LeaseState.STORED:
                    self.counters["stored"] += 1
                    return LeaseOutcome.STORED, None
                if state is LeaseState.PASS:
                    self.counters["pass"] += 1
                    return LeaseOutcome.PASS, None
                await asyncio.sleep(max(0.0, min(poll_delay(attempt), deadline - loop.time())))
                attempt += 1
        except TimeoutError:
            self.counters["timeout"] += 1
            # The attempt cut short may have taken the lease without our knowing: give it back.
            self._spawn(self._drop(key, token), self._releases)
            return LeaseOutcome.FALLBACK, None
        except LeaseUnavailable as error:
            self.counters["unavailable"] += 1
            # A timed-out script may still run later (a paused server answers nothing but runs it).
            self._spawn(self._drop(key, token), self._releases)
            logger.warning("edgecache: lease unavailable, coalescing locally only: %s", error)
            return LeaseOutcome.FALLBACK, None
        except BaseException:
            self._spawn(self._drop(key, token), self._releases)  # cancelled: as for a timeout
            raise
        finally:
            self.waiting -= 1

    def _hold(self, key: str, token: bytes) -> Lease:
        renewer = asyncio.get_running_loop().create_task(self._renew(key, token))
        self._tasks.add(renewer)
        renewer.add_done_callback(self._tasks.discard)
        return Lease(key, token, renewer)

    async def _renew(self, key: str, token: bytes) -> None:
        """Keep the lease while its holder fetches; a dead holder stops renewing and its lease expires."""
        while not self._closing:
            await asyncio.sleep(self.ttl / 3)
            try:
                if not await self._call(_RENEW, key, token, self._ttl_ms):
                    return  # it expired (and may be someone else's now): nothing left to keep
            except LeaseUnavailable:
                continue  # the next renewal may get through; if none does, it expires as it should

    # -- releasing --------------------------------------------------------------------------------------

    def release(self, lease: Lease, digest: str, *, stored: bool, unshareable: bool) -> None:
        """The holder is done (off the request path): leave ``=stored`` once L2 has the entry, ``=pass`` for
        a response that is not shareable, or nothing (waiters take over)."""
        self._spawn(self._release(lease, digest, stored, unshareable), self._releases)

    async def _release(self, lease: Lease, digest: str, stored: bool, unshareable: bool) -> None:
        try:
            if stored and self._settled is not None:
                # Waiters read L2 as soon as they see ``=stored``: the write-behind must have landed first.
                # (The lease is still renewed meanwhile.)
                stored = await self._settled(digest, self.ttl)
            marker = release_value(
                stored=stored, unshareable=unshareable, hit_for_miss_ttl=self._hit_for_miss_ttl
            )
            value, ttl_ms = marker if marker is not None else (b"", 0)
            await self._call(_RELEASE, lease.key, lease.token, value, ttl_ms)
        except LeaseUnavailable:
            self.counters["release_errors"] += 1  # it expires within lease_ttl; a waiter then takes over
        finally:
            lease.renewer.cancel()

    async def _drop(self, key: str, token: bytes) -> None:
        try:
            await self._call(_RELEASE, key, token, b"", 0)
        except LeaseUnavailable:
            self.counters["release_errors"] += 1

    # -- Redis ------------------------------------------------------------------------------------------

    async def _call(self, script: str, key: str, *args: bytes | int, within: float | None = None) -> Any:
        """One script, bounded by ``redis_timeout`` (or the shorter ``within``: a waiter's deadline, which
        raises ``TimeoutError`` and says nothing against Redis)."""
        limit = self._op_timeout if within is None else min(self._op_timeout, within)
        try:
            async with asyncio.timeout(limit):
                return await self._client.execute_command("EVAL", script, 1, key, *args)
        except TimeoutError:
            if limit < self._op_timeout:
                raise
            self._failed()
            raise LeaseUnavailable(f"redis did not answer within {limit:g} s") from None
        except (RedisError, OSError) as error:
            if not isinstance(error, ResponseError):  # a ResponseError is an answer: Redis is up
                self._failed()
            raise LeaseUnavailable(f"redis {type(error).__name__}: {error}") from error

    def _failed(self) -> None:
        if self._breaker is not None:
            self._breaker.failed(self._clock())  # the same breaker as L2's: one Redis

    def _spawn(self, coroutine: Coroutine[Any, Any, None], group: set[asyncio.Task[None]]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        group.add(task)
        task.add_done_callback(group.discard)

    async def aclose(self) -> None:
        """Let pending releases finish (each is bounded by the Redis timeout), then stop renewing."""
        self._closing = True
        if self._releases:
            await asyncio.wait(set(self._releases), timeout=self._op_timeout * 2 + self.ttl)
        await cancel_until_done({*self._releases, *self._tasks})  # within about two seconds
