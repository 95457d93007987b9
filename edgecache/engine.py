"""The engine shared by the front ends: storage layout, coalescing, hit-for-miss and invalidation.

The front end (the ASGI middleware) turns messages into calls on a ``Cache``; the ``Cache`` owns everything
that outlives one request.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cachetools import TTLCache

from edgecache.cdn import CdnConfig
from edgecache.cdn.response import CdnResponses
from edgecache.config import Settings
from edgecache.core.breaker import CircuitBreaker
from edgecache.core.entry import CacheObject, StoredResponse, VaryIndex, response_size, stale_now
from edgecache.core.headers import Fields
from edgecache.core.invalidation import DomainEvent, EventRules, Invalidation, SeenIds, new_invalidation
from edgecache.core.keys import (
    CacheKey,
    KeyRecipe,
    QueryFilter,
    path_tag,
    prefix_tag,
    uri_tag,
    variant_key,
    wire_bytes,
)
from edgecache.core.policy import Policy, request_vary_values
from edgecache.core.status import Fwd, Outcome, Reason
from edgecache.lease import Leases
from edgecache.observe.stats import CacheStats
from edgecache.shadow import Shadow
from edgecache.stores.base import Store
from edgecache.stores.memory import MemoryStore
from edgecache.stores.redis import RedisStore
from edgecache.stores.tiered import TieredStore

if TYPE_CHECKING:
    from edgecache.cdn.purge import CdnPurger
    from edgecache.shared import SharedTier

logger = logging.getLogger("edgecache")

Uri = tuple[bytes, bytes, bytes, bytes]
# How many recent invalidations are remembered to stop fills that began before them from storing.
INVALIDATION_LOG_SIZE = 4096
HIT_FOR_MISS_MAX_KEYS = 100_000


@dataclass(frozen=True, slots=True)
class Lookup:
    entry: StoredResponse | None
    fwd: Fwd | None  # how a miss is reported: uri-miss or vary-miss
    tier: Reason = Reason.L1  # which tier held the entry


_URI_MISS = Lookup(None, Fwd.URI_MISS)
_VARY_MISS = Lookup(None, Fwd.VARY_MISS)


class Flight:
    """One origin fetch that concurrent misses of the same key wait for."""

    __slots__ = ("done", "entry")

    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.entry: StoredResponse | None = None  # set only when the response was stored (so shareable)


OutcomeListener = Callable[[Outcome, str], None]


class Cache:
    """The state of one cache: its store, in-flight fetches and recent invalidations.

    The middleware creates one per instance; reach it as ``request.scope["edgecache.cache"]`` inside the
    app, or pass your own ``Cache`` to several front ends so they share it.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        store: Store | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings or Settings()
        s = self.settings
        self.policy = Policy(
            default_ttl=s.default_ttl,
            cacheable_statuses=s.cacheable_statuses,
            targeted_fields=s.targeted_fields,
            cache_authorized=s.cache_authorized,
            key_headers=s.key_headers,
            key_cookies=s.key_cookies,
            respect_request_cache_control=s.respect_request_cache_control,
            keep_ttl=s.keep_ttl,
            default_stale_while_revalidate=s.stale_while_revalidate,
            default_stale_if_error=s.stale_if_error,
            strip_tag_headers=s.strip_tag_headers,
        )
        self.recipe = KeyRecipe(headers=s.key_headers, cookies=s.key_cookies)
        self.query_filter = QueryFilter(ignore=s.query_ignore, allow=s.query_allow)
        self.clock = clock
        self.stats = CacheStats()
        self.shadow: Shadow | None = None
        if s.shadow is not None:
            self.shadow = Shadow(s.shadow, capacity=s.l1_max_bytes, clock=clock, policy=self.policy)
            self.stats.shadow = self.shadow.stats
        self.shared: SharedTier | None = None
        self.leases: Leases | None = None  # coalescing across nodes (coalesce_across_nodes)
        if store is None:
            store = MemoryStore(
                s.l1_max_bytes, clock=clock, max_object_bytes=s.max_object_bytes, on_evict=self.stats.evicted
            )
            if s.redis_url is not None:
                l2 = RedisStore.from_url(
                    s.redis_url,
                    namespace=s.namespace,
                    clock=clock,
                    max_object_bytes=s.max_object_bytes,
                    op_timeout=s.redis_timeout,
                    cluster=s.redis_cluster,
                )
                breaker = CircuitBreaker(s.redis_breaker_failures, s.redis_breaker_reset)
                store = tiered = TieredStore(store, l2, clock=clock, l1_max_ttl=s.l1_max_ttl, breaker=breaker)
                from edgecache.shared import SharedTier  # noqa: PLC0415 - it imports this module

                self.shared = SharedTier(self, store)
                if s.coalesce_across_nodes:
                    self.leases = Leases(
                        l2.client,
                        namespace=s.namespace,
                        ttl=s.lease_ttl,
                        wait=s.lease_wait,
                        op_timeout=s.redis_timeout,
                        hit_for_miss_ttl=s.hit_for_miss_ttl,
                        breaker=breaker,
                        ready=lambda: tiered.l2_ready,
                        settled=tiered.l2_settled,
                        clock=clock,
                        counters=self.stats.lease,
                    )
        self.store: Store = store
        self.flights: dict[str, Flight] = {}
        self.hit_for_miss: TTLCache[str, bool] = TTLCache(
            HIT_FOR_MISS_MAX_KEYS, ttl=s.hit_for_miss_ttl or 1e-9, timer=clock
        )
        self.listeners: list[OutcomeListener] = []
        # CDN asset rewriting (the front end applies it on the miss path) and the CDN's tag purge.
        self.cdn = cdn_responses(s)
        self.cdn_purger = cdn_purger(s, self.stats)
        self.event_rules: EventRules | None = None
        self._seen_events = SeenIds()
        self._background: set[asyncio.Task[Any]] = set()
        self._invalidation_seq = 0
        # Recent invalidations: (sequence number, when applied by the clock, tags or None for everything).
        # The sequence numbers guard fills in flight; the times let the proxy send refills of what was just
        # invalidated to its primary, since a read replica may still hold the old data.
        self._invalidations: deque[tuple[int, float, frozenset[str] | None]] = deque(
            maxlen=INVALIDATION_LOG_SIZE
        )

    # -- lookups and fills ----------------------------------------------------------------------------

    async def _get(self, key: str) -> tuple[CacheObject | None, Reason]:
        store = self.store
        if isinstance(store, TieredStore):
            return await store.get_tiered(key)
        return await store.get(key), Reason.L1

    async def _read_for_update(self, key: str) -> CacheObject | None:
        """``key``'s object, read to be rewritten: not a use of it (L1's admission counts requests)."""
        store = self.store
        if isinstance(store, TieredStore):
            return (await store.get_tiered(key, count_use=False))[0]
        if isinstance(store, MemoryStore):
            return store.peek(key)
        return await store.get(key)

    async def lookup(self, primary: CacheKey, request_fields: Fields) -> Lookup:
        found, tier = await self._get(primary.digest)
        if found is None:
            return _URI_MISS
        if found.key != primary.canonical:
            return _URI_MISS  # a foreign object under our digest: never served
        if isinstance(found, StoredResponse):
            return Lookup(found, None, tier)
        variant = variant_key(primary, found.vary, request_vary_values(found.vary, request_fields))
        entry, tier = await self._get(variant.digest)
        if not isinstance(entry, StoredResponse) or entry.key != variant.canonical:
            return _VARY_MISS
        return Lookup(entry, None, tier)

    def fill_token(self) -> int:
        """Taken when a fetch starts: ``store_entry`` refuses its result if its tags were purged since."""
        return self._invalidation_seq

    def _invalidated_since(self, token: int, tags: frozenset[str]) -> bool:
        if token == self._invalidation_seq:
            return False
        oldest = self._invalidations[0][0] if self._invalidations else self._invalidation_seq
        if oldest > token + 1:
            return True  # the log no longer reaches back to this fill: assume the worst
        log = self._invalidations
        return any(seq > token and (purged is None or purged & tags) for seq, _, purged in log)

    async def store_entry(self, primary: CacheKey, entry: StoredResponse, token: int) -> bool:
        """Store a response (and the URI's Vary index when it varies); False when it was refused."""
        if self._invalidated_since(token, entry.tags):
            return False  # its content predates an invalidation that covers it
        self.stats.stored_bytes += entry.size
        if not entry.vary:
            return await self.store.set(primary.digest, replace(entry, key=primary.canonical))
        variant = variant_key(primary, entry.vary, entry.vary_values)
        entry = replace(entry, key=variant.canonical)
        if not await self.store.set(variant.digest, entry):
            return False
        index = await self._read_for_update(primary.digest)
        variants: list[str] = []
        if isinstance(index, VaryIndex) and index.vary == entry.vary and index.key == primary.canonical:
            variants = [v for v in index.variants if v != variant.digest]
        elif isinstance(index, VaryIndex):
            await self.store.delete(*index.variants)  # the URI's Vary changed: old variants are unreachable
        variants.append(variant.digest)
        overflow = len(variants) - self.settings.max_variants
        if overflow > 0:
            await self.store.delete(*variants[:overflow])
            variants = variants[overflow:]
        internal = frozenset(t for t in entry.tags if t.startswith(("uri:", "path:")))
        previous_until = index.stored_until if isinstance(index, VaryIndex) else 0.0
        new_index = VaryIndex(
            vary=entry.vary,
            variants=tuple(variants),
            stored_until=max(previous_until, entry.stored_until),
            key=primary.canonical,
            tags=internal,
            size=response_size([], b"", primary.canonical) + 64 * len(variants),
        )
        return await self.store.set(primary.digest, new_index)

    def vary_matches(self, entry: StoredResponse, request_fields: Fields) -> bool:
        return not entry.vary or request_vary_values(entry.vary, request_fields) == entry.vary_values

    # -- invalidation -----------------------------------------------------------------------------------

    async def invalidate(
        self,
        *,
        tags: Iterable[str] = (),
        paths: Iterable[str] = (),
        prefixes: Iterable[str] = (),
        soft: bool = False,
        everything: bool = False,
    ) -> int:
        """Drop stored responses by tag (``Surrogate-Key``/``Cache-Tag``), by path (any host, any query)
        or by path prefix (on segment boundaries); ``soft`` marks them stale instead (served while one
        refresh runs, where the response allows stale use); ``everything`` purges all.

        With a Redis tier the invalidation is applied to L2 and published, so every node drops it from its
        L1 too. Returns how many stored objects this node removed or marked. Fills in flight that the
        invalidation covers do not store their (older) content afterwards.
        """
        invalidation = new_invalidation(
            tags=tuple(tags), paths=tuple(paths), prefixes=tuple(prefixes), soft=soft, everything=everything
        )
        if self.shared is not None:
            self.shared.claim_locally(invalidation)
        count = await self.apply_invalidation(invalidation, shared=True)
        if self.shared is not None:
            await self.shared.publish(invalidation)
        if self.cdn_purger is not None:
            # This node originated the purge: it alone asks the CDN (nodes applying it from the bus don't).
            self.cdn_purger.schedule(invalidation.tags, soft=invalidation.soft)
        return count

    async def apply_invalidation(self, invalidation: Invalidation, *, shared: bool) -> int:
        """Apply one invalidation to this node's L1 and, when ``shared``, to L2 as well."""
        tiered = self.store if isinstance(self.store, TieredStore) else None
        if invalidation.everything or "/" in invalidation.prefixes:
            self._record_invalidation(None)
            if tiered is None:
                await self.store.clear()
            else:
                if not shared and self.shared is not None:
                    # Another node bumped the generation: move to its keys now, not at the next check,
                    # or L2's old keys would keep answering (and refilling L1) until then.
                    await self.shared.check_generation()
                await tiered.clear_l1()
                if shared and self.shared is not None:
                    await self.shared.bump_generation()
            return 0
        purged = invalidation_tags(invalidation)
        if not purged:
            return 0
        self._record_invalidation(purged)
        if invalidation.soft:
            return await self._soften(purged, shared)
        if tiered is not None and not shared:
            return await tiered.purge_l1_tags(purged)
        return await self.store.purge_tags(purged)

    async def _soften(self, tags: frozenset[str], shared: bool) -> int:
        """Soft purge: the tagged responses become stale now, keeping their stale-while-revalidate window."""
        now = self.clock()
        if isinstance(self.store, TieredStore):
            self.store.note_invalidation(tags, soft=True)  # a soft purge removes nothing: no purge logs it
        memory = self.store.l1 if isinstance(self.store, TieredStore) else self.store
        count = 0
        if isinstance(memory, MemoryStore):
            for key in memory.keys_with_tags(tags):
                entry = memory.peek(key)  # not a use of the entry (L1's admission counts requests)
                if isinstance(entry, StoredResponse):
                    await memory.set(key, stale_now(entry, now))
                    count += 1
        if shared and isinstance(self.store, TieredStore):
            count += await self.store.soften_l2(tags, lambda entry: stale_now(entry, self.clock()))
        return count

    def note_external_invalidation(self, *, counted: bool = True) -> None:
        """Something outside this node may have changed anything (a generation change, or a lost
        subscription: ``counted=False``, it is no invalidation request): fills in flight must not store."""
        self._record_invalidation(None, counted=counted)
        if isinstance(self.store, TieredStore):
            self.store.note_invalidation(None)

    # -- domain events ----------------------------------------------------------------------------------

    def on_events(self, rules: Mapping[str, Sequence[str]]) -> None:
        """Map domain events to tags::

            cache.on_events({"payment.completed": ["user:{user_id}", "contract:{contract_id}"]})

        Raises ``ValueError`` naming a malformed template. Rules add to those given before.
        """
        merged = dict(self.event_rules.rules) if self.event_rules is not None else {}
        for event_type, templates in rules.items():
            merged[event_type] = [*merged.get(event_type, []), *templates]
        self.event_rules = EventRules(merged)

    async def publish_event(
        self, event_type: str, data: Mapping[str, Any], *, event_id: str | None = None
    ) -> None:
        """Publish a domain event: every node drops the tags the rules map it to, once per event id."""
        event = DomainEvent(id=event_id or uuid.uuid4().hex, type=event_type, data=dict(data))
        if self.cdn_purger is not None:
            mapped = self.invalidation_for_event(event)  # the publisher is the one node that asks the CDN
            if mapped is not None:
                self.cdn_purger.schedule(mapped.tags)
        if self.shared is not None:
            await self.shared.publish_event(event)
            return
        invalidation = self.invalidation_for_event(event)
        if invalidation is not None and self._seen_events.first_time(invalidation.id, time.monotonic()):
            await self.apply_invalidation(invalidation, shared=True)

    def invalidation_for_event(self, event: DomainEvent) -> Invalidation | None:
        if self.event_rules is None:
            return None
        tags, problems = self.event_rules.tags_for(event)
        for problem in problems:
            logger.warning("edgecache: event %s (%s): %s", event.id, event.type, problem)
        if not tags:
            return None
        return Invalidation(id=f"event:{event.id}", tags=tuple(tags))

    async def invalidate_uris(self, uris: Iterable[Uri]) -> int:
        """RFC 9111 §4.4: drop every stored response (all variants) of these target URIs."""
        return await self.invalidate(tags=[uri_tag(uri) for uri in uris])

    def _record_invalidation(self, tags: frozenset[str] | None, *, counted: bool = True) -> None:
        if counted:
            self.stats.invalidations += 1
        self._invalidation_seq += 1
        self._invalidations.append((self._invalidation_seq, self.clock(), tags))

    def invalidated_within(self, seconds: float, tags: frozenset[str], *, strict: bool = False) -> bool:
        """Whether an invalidation applied in the last ``seconds`` may have covered a response carrying
        ``tags`` (its internal URI, path and prefix tags). A purge-all counts; so does a purge by any other
        tag unless ``strict``, since which URIs carry a ``Surrogate-Key`` is known only from responses."""
        if seconds <= 0 or not self._invalidations:
            return False
        since = self.clock() - seconds
        for _, at, purged in reversed(self._invalidations):
            if at < since:
                return False
            if purged is None or purged & tags:
                return True
            if not strict and any(not t.startswith(_INTERNAL_TAG_PREFIXES) for t in purged):
                return True
        return False

    # -- background work and observation ----------------------------------------------------------------

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run work that outlives a request (stale-while-revalidate refreshes), keeping a reference."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Wait for background refreshes (tests and shutdown)."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def report_hit(self, reason: Reason, ttl: float, method: str) -> None:
        """The hit path's ``report``: counts without building an ``Outcome`` unless someone listens."""
        self.stats.hits[reason] += 1
        if self.listeners:
            outcome = Outcome(None, reason, ttl=int(ttl))
            for listener in self.listeners:
                listener(outcome, method)

    def report(self, outcome: Outcome, method: str) -> None:
        self.stats.count(outcome)
        for listener in self.listeners:
            listener(outcome, method)

    def start(self) -> None:
        """Start the shared tier's background work (subscriber, generation watch); idempotent, needs a
        running loop. The middleware calls it at lifespan start-up, or on the first request without one."""
        if self.shared is not None:
            self.shared.start()

    async def start_and_wait(self, within: float = 2.0) -> bool:
        """``start``, then wait (bounded) until the shared tier is usable; True when it is (or not needed)."""
        self.start()
        if self.shared is None:
            return True
        return await self.shared.wait_ready(within)

    async def explain(self, url: str, headers: Iterable[tuple[str, str]] = ()) -> dict[str, Any]:
        """What this cache holds for ``url`` (``/path?query``, or absolute): the key, the Vary layout and
        every stored variant with its age, freshness and tier, as JSON-ready data. Read-only: nothing is
        promoted, backfilled or refreshed. ``headers`` are request fields for ``key_headers``,
        ``key_cookies`` and choosing a variant. Raises ``ValueError`` for an unusable URL."""
        from edgecache.explain import explain  # noqa: PLC0415 - the admin listener's, not the hit path's

        return await explain(self, url, headers)

    async def aclose(self) -> None:
        if self.cdn_purger is not None:
            await self.cdn_purger.aclose()  # purges already asked for still reach the CDN (bounded)
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.shared is not None:
            await self.shared.aclose()  # flushes the write-behind: pending lease releases can then finish
        if self.leases is not None:
            await self.leases.aclose()
        await self.store.aclose()


def cdn_responses(settings: Settings) -> CdnResponses | None:
    """The response rewriter for the configured CDN, or None when rewriting is off."""
    if settings.cdn_origin is None or not settings.cdn_paths:
        return None
    from edgecache import __version__  # noqa: PLC0415 - the package imports this module

    config = CdnConfig(
        origin=settings.cdn_origin,
        paths=settings.cdn_paths,
        public_hosts=settings.cdn_public_hosts,
        version=settings.cdn_version,
    )
    return CdnResponses(config, settings.cdn_max_rewrite_bytes, version=__version__)


def cdn_purger(settings: Settings, stats: CacheStats) -> CdnPurger | None:
    provider = settings.cdn_purge_provider
    if provider is None:
        return None
    target = settings.cdn_purge_service if provider == "fastly" else settings.cdn_purge_zone
    assert target is not None and settings.cdn_purge_token is not None  # Settings._check
    from edgecache.cdn.purge import CdnPurger  # noqa: PLC0415 - httpx only when purging at a CDN

    return CdnPurger(
        provider,
        target,
        settings.cdn_purge_token,
        timeout=settings.cdn_purge_timeout,
        counts=stats.cdn_purges,
    )


# The internal tags (keys.uri_tag, path_tag, prefix_tags) that a request's URI alone determines.
_INTERNAL_TAG_PREFIXES = ("uri:", "path:", "pfx:")


def invalidation_tags(invalidation: Invalidation) -> frozenset[str]:
    """The stored-object tags an invalidation drops: its tags, and the internal path and prefix tags."""
    tags = set(invalidation.tags)
    tags.update(path_tag(wire_bytes(p)) for p in invalidation.paths)
    for prefix in invalidation.prefixes:
        tag = prefix_tag(wire_bytes(prefix))
        if tag is not None:
            tags.add(tag)
    return frozenset(tags)


def same_origin_targets(location_values: Iterable[str], uri: Uri) -> list[Uri]:
    """URIs named by ``Location``/``Content-Location`` that share the request's origin (RFC 9111 §4.4)."""
    scheme, host, path = (part.decode("latin-1") for part in uri[:3])
    targets: list[Uri] = []
    for raw in location_values:
        value = raw.strip()
        if not value:
            continue
        try:
            parts = urlsplit(value)
        except ValueError:
            continue
        if parts.scheme or parts.netloc:
            if parts.scheme.lower() != scheme or parts.netloc.lower() != host:
                continue  # another origin: never invalidated from here (it could be a denial of service)
            target_path = parts.path or "/"
        elif value.startswith("/"):
            target_path = parts.path
        else:
            target_path = path.rsplit("/", 1)[0] + "/" + parts.path  # relative to the request's directory
        targets.append(
            (
                uri[0],
                uri[1],
                target_path.encode("latin-1", "replace"),
                parts.query.encode("latin-1", "replace"),
            )
        )
    return targets
