"""The engine shared by the front ends: storage layout, coalescing, hit-for-miss and invalidation.

The front end (the ASGI middleware) turns messages into calls on a ``Cache``; the ``Cache`` owns everything
that outlives one request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote, urlsplit

from cachetools import TTLCache

from edgecache.config import Settings
from edgecache.core.entry import StoredResponse, VaryIndex, response_size
from edgecache.core.headers import Fields
from edgecache.core.keys import CacheKey, KeyRecipe, QueryFilter, path_tag, uri_tag, variant_key
from edgecache.core.policy import Policy, request_vary_values
from edgecache.core.status import Fwd, Outcome, Reason
from edgecache.observe.stats import CacheStats
from edgecache.stores.base import Store
from edgecache.stores.memory import MemoryStore

logger = logging.getLogger("edgecache")

Uri = tuple[bytes, bytes, bytes, bytes]
# How many recent invalidations are remembered to stop fills that began before them from storing.
INVALIDATION_LOG_SIZE = 4096
HIT_FOR_MISS_MAX_KEYS = 100_000


@dataclass(frozen=True, slots=True)
class Lookup:
    entry: StoredResponse | None
    fwd: Fwd | None  # how a miss is reported: uri-miss or vary-miss


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
        self.store: Store = store or MemoryStore(
            s.l1_max_bytes, clock=clock, max_object_bytes=s.max_object_bytes, on_evict=self.stats.evicted
        )
        self.flights: dict[str, Flight] = {}
        self.hit_for_miss: TTLCache[str, bool] = TTLCache(
            HIT_FOR_MISS_MAX_KEYS, ttl=s.hit_for_miss_ttl or 1e-9, timer=clock
        )
        self.listeners: list[OutcomeListener] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._invalidation_seq = 0
        self._invalidations: deque[tuple[int, frozenset[str] | None]] = deque(maxlen=INVALIDATION_LOG_SIZE)

    # -- lookups and fills ----------------------------------------------------------------------------

    async def lookup(self, primary: CacheKey, request_fields: Fields) -> Lookup:
        found = await self.store.get(primary.digest)
        if found is None:
            return _URI_MISS
        if found.key != primary.canonical:
            return _URI_MISS  # a foreign object under our digest: never served
        if isinstance(found, StoredResponse):
            return Lookup(found, None)
        variant = variant_key(primary, found.vary, request_vary_values(found.vary, request_fields))
        entry = await self.store.get(variant.digest)
        if not isinstance(entry, StoredResponse) or entry.key != variant.canonical:
            return _VARY_MISS
        return Lookup(entry, None)

    def fill_token(self) -> int:
        """Taken when a fetch starts: ``store_entry`` refuses its result if its tags were purged since."""
        return self._invalidation_seq

    def _invalidated_since(self, token: int, tags: frozenset[str]) -> bool:
        if token == self._invalidation_seq:
            return False
        oldest = self._invalidations[0][0] if self._invalidations else self._invalidation_seq
        if oldest > token + 1:
            return True  # the log no longer reaches back to this fill: assume the worst
        return any(seq > token and (purged is None or purged & tags) for seq, purged in self._invalidations)

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
        index = await self.store.get(primary.digest)
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
        self, *, tags: Iterable[str] = (), paths: Iterable[str] = (), everything: bool = False
    ) -> int:
        """Drop stored responses by tag (``Surrogate-Key``/``Cache-Tag``) or by path (any host, any query).

        Returns how many stored objects were removed. Fills in flight that the purge covers will not store
        their (older) content afterwards.
        """
        if everything:
            self._record_invalidation(None)
            await self.store.clear()
            return 0
        purged = frozenset(tags) | frozenset(path_tag(_wire_path(p)) for p in paths)
        if not purged:
            return 0
        self._record_invalidation(purged)
        return await self.store.purge_tags(purged)

    async def invalidate_uris(self, uris: Iterable[Uri]) -> int:
        """RFC 9111 §4.4: drop every stored response (all variants) of these target URIs."""
        return await self.invalidate(tags=[uri_tag(uri) for uri in uris])

    def _record_invalidation(self, tags: frozenset[str] | None) -> None:
        self.stats.invalidations += 1
        self._invalidation_seq += 1
        self._invalidations.append((self._invalidation_seq, tags))

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

    async def aclose(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.store.aclose()


# Every printable ASCII character but the space: left as it is in a path given to ``invalidate``.
_PATH_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))


def _wire_path(path: str) -> bytes:
    """A path as requests carry it (``raw_path``): other characters percent-encoded as UTF-8."""
    return quote(path, safe=_PATH_SAFE).encode("ascii")


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
