"""L1 (memory) in front of L2 (Redis): reads fall through, L2 hits backfill L1, writes reach L2 off the
request path, and a circuit breaker keeps a failing Redis from costing requests anything but a miss.

Failure rules, in one place:
- every L2 call is bounded by the Redis store's own short timeout and raises ``StoreUnavailable``; here it
  becomes a miss (reads), a dropped write (writes, counted), or a purge retried later (invalidations);
- after ``failure_threshold`` failures in a row the breaker opens and L2 is skipped entirely (L1 → origin)
  until a single probe, ``reset_after`` seconds later, finds it healthy again;
- an L1 copy never outlives ``l1_max_ttl``, so no failure (a lost invalidation message, a partition) can
  keep a stale L1 entry alive for long;
- while the invalidation channel is down (``l1_bypass``), L1 is neither read nor written: only L2, which
  purges still reach, answers; and (``l2_writes_paused``) this node writes nothing to L2, since it cannot
  learn of an invalidation that its fills would undo there.

The fill/invalidate race across nodes (node A fills key K, node B purges K's tags meanwhile, A's older
response reaches L2 after the L2 clean-up) is closed in three places, by what A knows when:
- the fill is still running when A applies the purge: the engine's fill token refuses the store;
- the write is queued or in flight: the purge log (``_purged_since``) drops it, or deletes it again once
  written; soft purges count too (``note_invalidation``);
- the write already landed in L2 before A heard of the purge (B's clean-up ran first): A remembers its
  recent L2 writes (``recent_writes``: key, tags, landing time, for ``recent_write_seconds``) and, applying
  a purge it did not clean L2 for, deletes the matching ones from L2 again (``purge_recent_writes``:
  idempotent, one single-key UNLINK each, so Redis Cluster safe). Until then, a node that applied the purge
  refuses that copy (the purge fence compares the fill's ``request_time``, not its response time).
A Redis-side guard (purge epochs per tag, checked by the write script) was not chosen: on Cluster an entry and
its tags live in different slots, so no script can check them atomically, and comparing epochs with a fill's
start needs one clock for all nodes (Redis TIME, a round trip at every fill).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Coroutine, Iterable
from dataclasses import replace
from typing import Any, TypeVar

from redis.exceptions import OutOfMemoryError, ReadOnlyError

from edgecache.core.breaker import BreakerState, CircuitBreaker
from edgecache.core.entry import CacheObject, StoredResponse, stale_now
from edgecache.core.status import Reason
from edgecache.stores.memory import MemoryStore
from edgecache.stores.redis import RedisStore, StoreUnavailable

logger = logging.getLogger("edgecache")

PENDING_PURGES_MAX = 1024
# How long after a purge an older response read from L2 is refused (see TieredStore._fenced): longer than
# any node takes to clean L2 after a message, short enough to cost little.
PURGE_FENCE_SECONDS = 10.0
# This node's recent L2 writes, kept to delete them again when a purge turns out to have preceded them (see
# the module docstring). 8192 writes within ``recent_write_seconds``: beyond that, a purge falls back to a
# full L2 purge of its tags, so an overflow costs Redis work, never correctness.
RECENT_WRITES_MAX = 8192
# Each deletion of a recent write runs off the request path (in the subscriber's handler): a roomier bound.
REDELETE_TIMEOUT = 1.0
T = TypeVar("T")


def l1_copy(value: CacheObject, now: float, l1_max_ttl: float) -> CacheObject:
    """The object as L1 keeps it: its lifetime in L1 capped at ``l1_max_ttl`` from now."""
    cap = now + l1_max_ttl
    return value if value.stored_until <= cap else replace(value, stored_until=cap)


class TieredStore:
    name = "tiered"

    def __init__(
        self,
        l1: MemoryStore,
        l2: RedisStore,
        *,
        clock: Callable[[], float] = time.time,
        l1_max_ttl: float = 30.0,
        breaker: CircuitBreaker | None = None,
        write_queue_size: int = 1024,
        recent_writes_max: int = RECENT_WRITES_MAX,
    ) -> None:
        self.l1 = l1
        self.l2 = l2
        self._clock = clock
        self.l1_max_ttl = l1_max_ttl
        self.breaker = breaker or CircuitBreaker()
        self.l1_bypass = False
        # False until the shared tier knows the key generation: L2 is not used before (see shared.py).
        self.l2_ready = True
        self._writes: asyncio.Queue[tuple[str, CacheObject, int]] = asyncio.Queue(write_queue_size)
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._purge_seq = 0
        # Purges since recent writes were queued: a queued write whose tags were purged meanwhile is
        # dropped, so an invalidation is never undone by a write that was already on its way.
        self._purges: deque[tuple[int, frozenset[str] | None, frozenset[str]]] = deque(maxlen=4096)
        self._pending_purges: deque[tuple[frozenset[str], tuple[str, ...]]] = deque(maxlen=PENDING_PURGES_MAX)
        self._retrying_purges = False
        # Keys with a write still queued for L2: until it lands, L2 may hold an older object for them.
        self._queued_keys: Counter[str] = Counter()
        self._settled: dict[str, asyncio.Event] = {}  # set when a key's queued writes have all been tried
        self.counters: Counter[str] = Counter()
        self._fences: deque[tuple[float, frozenset[str] | None, frozenset[str]]] = deque(maxlen=4096)
        # Soft purges: an older L2 response read shortly after one is served stale, as the claimer's
        # rewrite of L2 will make it, instead of fresh.
        self._soft_fences: deque[tuple[float, frozenset[str]]] = deque(maxlen=4096)
        # Set while this node cannot hear invalidations (the shared tier's subscription is down).
        self.l2_writes_paused = False
        self.recent_write_seconds = PURGE_FENCE_SECONDS
        self._recent_writes: deque[tuple[float, str, frozenset[str]]] = deque(maxlen=recent_writes_max)
        self._recent_forgotten_at = float("-inf")  # landing time of the newest write pushed out of the log
        # Deletions of recent writes that L2 did not take: retried with the pending purges (but, unlike
        # those, they do not hide L2 entries meanwhile: the purge fences do, on the nodes that matter).
        self._deferred_redeletes: deque[tuple[float, frozenset[str]]] = deque(maxlen=PENDING_PURGES_MAX)

    # -- reads ------------------------------------------------------------------------------------------

    def get_nowait(self, key: str) -> CacheObject | None:
        """L1 only, synchronously (None also means "ask ``get``", which may find it in L2)."""
        if self.l1_bypass:
            return None
        return self.l1.get_nowait(key)

    def peek(self, key: str) -> CacheObject | None:
        """L1's live object, no use counted (``MemoryStore.peek``); None also means "ask ``get``"."""
        if self.l1_bypass:
            return None
        return self.l1.peek(key)

    def record_use(self, key: str) -> None:
        if not self.l1_bypass:
            self.l1.record_use(key)

    async def get(self, key: str) -> CacheObject | None:
        return (await self.get_tiered(key))[0]

    async def get_tiered(self, key: str, *, count_use: bool = True) -> tuple[CacheObject | None, Reason]:
        """The object and the tier that held it; ``count_use=False`` for a read that is not a request's
        (the engine reading a Vary index it is about to rewrite): L1's admission policy does not see it."""
        if not self.l1_bypass:
            found = self.l1.get_nowait(key) if count_use else self.l1.peek(key)
            if found is not None:
                return found, Reason.L1
        if key in self._queued_keys:
            # This node's own newer write (one L1 did not keep) is still on its way: L2 may hold the
            # object it replaced, which must be neither served nor backfilled.
            return None, Reason.L2
        seq = self._purge_seq
        value = await self._l2_call("get", self.l2.get(key))
        if value is None:
            return None, Reason.L2
        if self._pending_purge_covers(key, value.tags):
            return None, Reason.L2  # purged while L2 was down; the purge has not reached L2 yet
        if self._fenced(key, value):
            return None, Reason.L2
        value = self._softened(value)
        if not self.l1_bypass and not self._purged_since(seq, key, value.tags):
            # (a purge that ran during the read may have missed this copy: it must not enter L1)
            # Backfill with the remaining lifetime (the entry carries its own age), capped for L1.
            await self.l1.set(key, l1_copy(value, self._clock(), self.l1_max_ttl))
        return value, Reason.L2

    async def peek_tiers(self, key: str) -> tuple[CacheObject | None, CacheObject | None]:
        """What L1 and L2 each hold under ``key``, read-only: no L1 promotion, no backfill (``explain``).
        L2 is asked through the breaker; None there also means it could not be asked."""
        return self.l1.peek(key), await self._l2_call("peek", self.l2.get(key))

    # -- writes -----------------------------------------------------------------------------------------

    async def set(self, key: str, value: CacheObject) -> bool:
        now = self._clock()
        stored = False
        if not self.l1_bypass:
            stored = await self.l1.set(key, l1_copy(value, now, self.l1_max_ttl))
        if self.l2_writes_paused:
            # Accepted, as a write queued for an unreachable L2 is: the response may still be shared with
            # the requests that waited for it (coalescing); it is only kept out of the shared tier.
            self.counters["l2_write_paused"] += 1
            return stored or value.stored_until > now
        try:
            self._writes.put_nowait((key, value, self._purge_seq))
        except asyncio.QueueFull:
            self.counters["l2_write_dropped"] += 1  # L2 is slow or down: L1 still serves this node
            return stored
        self._queued_keys[key] += 1
        self._ensure_writer()
        # Still queued when already expired: L2 must drop the older object, as a rejected set does.
        return stored or value.stored_until > now

    def _ensure_writer(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_behind())

    async def _write_behind(self) -> None:
        # ``_closing`` too, not only the cancellation: redis-py can swallow a cancellation that arrives
        # during a pipeline, and the writer would then wait on the queue forever.
        while not self._closing:
            key, value, seq = await self._writes.get()
            try:
                if self._purged_since(seq, key, value.tags):
                    self.counters["l2_write_superseded"] += 1
                    continue
                written = await self._l2_call("set", self.l2.set(key, value))
                if written is not False:  # True, or None: a timed-out write may still have landed
                    self._remember_write(key, value.tags)
                if written is not False and self._purged_since(seq, key, value.tags):
                    # A purge ran while the write was in flight and may have missed it: undo the write.
                    self.counters["l2_write_superseded"] += 1
                    if await self._l2_call("delete", self.l2.delete(key)) is None:
                        self._pending_purges.append((frozenset(), (key,)))
                await self.retry_pending_purges()
            except Exception:  # the writer must outlive any single bad write
                logger.exception("edgecache l2: write-behind failed")
            finally:
                self._queued_keys[key] -= 1
                if self._queued_keys[key] <= 0:
                    del self._queued_keys[key]
                    settled = self._settled.pop(key, None)
                    if settled is not None:
                        settled.set()
                self._writes.task_done()

    def _remember_write(self, key: str, tags: frozenset[str]) -> None:
        writes = self._recent_writes
        if len(writes) == writes.maxlen:
            self._recent_forgotten_at = writes[0][0]
        writes.append((self._clock(), key, tags))

    def recent_writes(self, tags: frozenset[str] | None = None) -> tuple[frozenset[str], bool]:
        """Keys this node wrote to L2 within ``recent_write_seconds`` carrying any of ``tags`` (all of them
        when None), and whether the log is complete for that span (False: some were pushed out)."""
        writes = self._recent_writes
        since = self._clock() - self.recent_write_seconds
        while writes and writes[0][0] < since:
            writes.popleft()
        keys = frozenset(key for _, key, written in writes if tags is None or written & tags)
        return keys, self._recent_forgotten_at < since

    async def purge_recent_writes(self, tags: frozenset[str] | None, *, before: float) -> int:
        """Delete from L2 this node's recent writes carrying any of ``tags`` (all when None) whose request
        began before ``before``: a purge this node applies late may have been cleaned from L2 before they
        landed. What L2 holds under such a key now is deleted only if it is such an older response (or not a
        response), and only if unchanged since read (an atomic single-key check): another node's newer
        write stays. Idempotent; retried when L2 does not answer. When the log overflowed, ``tags`` are
        purged from L2 in full instead (more than needed, never less)."""
        keys, complete = self.recent_writes(tags)
        if not complete:
            self.counters["recent_writes_overflow"] += 1
            if tags is not None:
                return await self.purge_l2_tags(tags)
            logger.warning(
                "edgecache l2: more recent writes than remembered; only the last %d deleted again",
                self._recent_writes.maxlen,
            )
        if not keys:
            return 0
        self.counters["recent_writes_checked"] += len(keys)
        result = await self._l2_call("delete", self._unlink_older(sorted(keys), before))
        if result is None:
            self._deferred_redeletes.append((before, keys))
            return 0
        self.counters["recent_writes_purged"] += result
        return result

    async def _unlink_older(self, keys: Collection[str], before: float) -> int:
        return await self.l2.unlink_requested_before(keys, before, within=REDELETE_TIMEOUT)

    def _purged_since(self, seq: int, key: str, tags: frozenset[str]) -> bool:
        if seq == self._purge_seq:
            return False
        oldest = self._purges[0][0] if self._purges else self._purge_seq
        if oldest > seq + 1:
            return True  # the log no longer reaches back that far: assume the worst
        return any(
            s > seq and (purged_tags is None or purged_tags & tags or key in keys)
            for s, purged_tags, keys in self._purges
        )

    def _pending_purge_covers(self, key: str, tags: frozenset[str]) -> bool:
        return any(key in keys or purged & tags for purged, keys in self._pending_purges)

    def has_pending_purges(self) -> bool:
        """Whether some purge has not reached L2 yet (L2 was down or its breaker open)."""
        return bool(self._pending_purges)

    def _fenced(self, key: str, value: CacheObject) -> bool:
        """A response produced before a purge that covers it, read from L2 shortly after the purge.

        The node that receives a purge drops its L1 at once, but another node cleans L2 a moment later:
        until then L2 can still hand out what was purged. For ``PURGE_FENCE_SECONDS`` after a purge, an L2
        response older than the purge is treated as a miss (neither served nor copied into L1).
        """
        fences = self._fences
        if not fences or not isinstance(value, StoredResponse):
            return False
        _drop_older(fences, self._clock() - PURGE_FENCE_SECONDS)
        # The request time: a fill that began before the purge may carry what the purge removed, however
        # late its response arrived (another node's write that landed after the L2 clean-up).
        return any(
            at > value.request_time and (tags is None or tags & value.tags or key in keys)
            for at, tags, keys in fences
        )

    def _softened(self, value: CacheObject) -> CacheObject:
        """A response produced before a soft purge that covers it, read from L2 shortly after the purge: made
        stale as of the purge (the soft purge's ``_fenced``)."""
        fences = self._soft_fences
        if not fences or not isinstance(value, StoredResponse):
            return value
        _drop_older(fences, self._clock() - PURGE_FENCE_SECONDS)
        for at, tags in fences:
            if at > value.request_time and tags & value.tags:
                return stale_now(value, at)
        return value

    async def l2_settled(self, key: str, within: float) -> bool:
        """Wait (at most ``within`` seconds) until no write of ``key`` is queued for L2 any more, so that
        another node reading L2 now finds what this node stored (when the write succeeded)."""
        if key not in self._queued_keys:
            return True
        settled = self._settled.setdefault(key, asyncio.Event())
        try:
            async with asyncio.timeout(within):
                await settled.wait()
        except TimeoutError:
            return False
        return True

    async def flush_writes(self) -> None:
        """Wait until every queued L2 write has been attempted (tests, shutdown)."""
        if self._writer is not None and not self._writer.done():
            await self._writes.join()

    # -- removal ----------------------------------------------------------------------------------------

    def note_invalidation(self, tags: frozenset[str] | None, *, soft: bool = False) -> None:
        """An invalidation that removes nothing from this store was applied (the engine calls this for soft
        purges and for outside changes; the purge methods log their own): writes queued or in flight
        before it are not written after it, and after a soft one an older L2 copy is served stale."""
        self._purge_seq += 1
        self._purges.append((self._purge_seq, tags, frozenset()))
        if soft and tags:
            self._soft_fences.append((self._clock(), tags))

    def _record_purge(self, tags: frozenset[str] | None, keys: frozenset[str] = frozenset()) -> None:
        if tags is not None:  # flushes are not fenced: L2 itself was not purged, and purge-all moves keys
            self._fences.append((self._clock(), tags, keys))
        self._purge_seq += 1
        self._purges.append((self._purge_seq, tags, keys))

    async def delete(self, *keys: str) -> int:
        self._record_purge(frozenset(), frozenset(keys))
        removed = await self.l1.delete(*keys)
        result = await self._l2_call("delete", self.l2.delete(*keys))
        if result is None:
            self._pending_purges.append((frozenset(), keys))
        return max(removed, result or 0)

    async def purge_tags(self, tags: Iterable[str]) -> int:
        tag_set = frozenset((tags,) if isinstance(tags, str) else tags)
        self._record_purge(tag_set)
        removed = await self.l1.purge_tags(tag_set)
        return max(removed, await self.purge_l2_tags(tag_set))

    async def purge_l1_tags(self, tags: Iterable[str]) -> int:
        """Only this node's L1 (an invalidation another node already applied to L2)."""
        tag_set = frozenset((tags,) if isinstance(tags, str) else tags)
        self._record_purge(tag_set)
        return await self.l1.purge_tags(tag_set)

    async def purge_l2_tags(self, tags: frozenset[str]) -> int:
        result = await self._l2_call("purge", self.l2.purge_tags(tags))
        if result is None:
            self._pending_purges.append((tags, ()))  # retried when L2 answers again
            return 0
        return result

    async def soften_l2(
        self, tags: frozenset[str], soften: Callable[[StoredResponse], StoredResponse]
    ) -> int:
        """Rewrite the L2 responses carrying ``tags`` with ``soften`` (a soft purge); returns how many."""
        keys = await self._l2_call("soften", self.l2.keys_with_tags(tags))
        count = 0
        for key in keys or ():
            entry = await self._l2_call("get", self.l2.get(key))
            if isinstance(entry, StoredResponse) and await self._l2_call(
                "set", self.l2.set(key, soften(entry))
            ):
                count += 1
        return count

    async def retry_pending_purges(self) -> None:
        """Apply to L2 the purges it missed; called after each L2 write and by the shared tier's watcher,
        so that a node taking no writes still catches up."""
        # One retry at a time: two callers awaiting Redis on the same queue head would both pop it, and
        # the second pop would drop a purge that never reached L2. The one running drains what is added.
        if self._retrying_purges:
            return
        self._retrying_purges = True
        try:
            await self._drain_pending_purges()
        finally:
            self._retrying_purges = False

    async def _drain_pending_purges(self) -> None:
        while self._pending_purges:  # _l2_call asks the breaker (and lets a half-open probe through)
            tags, keys = self._pending_purges[0]
            if tags and await self._l2_call("purge", self.l2.purge_tags(tags)) is None:
                return
            if keys and await self._l2_call("delete", self.l2.delete(*keys)) is None:
                return
            self._pending_purges.popleft()
        while self._deferred_redeletes:
            before, written = self._deferred_redeletes[0]
            result = await self._l2_call("delete", self._unlink_older(sorted(written), before))
            if result is None:
                return
            self.counters["recent_writes_purged"] += result
            self._deferred_redeletes.popleft()

    async def clear(self) -> None:
        self._record_purge(None)
        await self.l1.clear()
        await self._l2_call("clear", self.l2.clear())

    async def clear_l1(self) -> None:
        self._record_purge(None)
        await self.l1.clear()

    def keys_with_tags(self, tags: Iterable[str]) -> frozenset[str]:
        return self.l1.keys_with_tags(tags)

    # -- Redis calls through the breaker ----------------------------------------------------------------

    async def _l2_call(self, what: str, operation: Coroutine[Any, Any, T]) -> T | None:
        if not self.l2_ready:
            operation.close()
            self.counters[f"l2_{what}_not_ready"] += 1
            return None
        if not self.breaker.allow(self._clock()):
            operation.close()
            self.counters[f"l2_{what}_skipped"] += 1
            return None
        probe = self.breaker.state is BreakerState.HALF_OPEN
        try:
            result = await operation
        except StoreUnavailable as error:
            if isinstance(error.__cause__, OutOfMemoryError | ReadOnlyError):
                # Redis answered: it is up and only refuses writes, so reads must keep reaching it.
                self.breaker.succeeded()
            else:
                self.breaker.failed(self._clock())
            self.counters[f"l2_{what}_errors"] += 1
            logger.warning("edgecache l2: %s failed: %s", what, error)
            return None
        except BaseException:
            if probe:  # a cancelled probe must not leave the breaker half-open (skipping L2) for good
                self.breaker.probing = False
            raise
        self.breaker.succeeded()
        return result

    async def aclose(self) -> None:
        self._closing = True
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        await self.l1.aclose()
        await self.l2.aclose()


def _drop_older(fences: deque[Any], before: float) -> None:
    """Drop the fences set before ``before`` (the oldest come first: they are appended as time goes)."""
    while fences and fences[0][0] < before:
        fences.popleft()
