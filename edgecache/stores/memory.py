"""The in-process L1 tier: a byte-bounded LRU of ``CacheObject``s with per-object expiry and a tag index."""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterable

from cachetools import Cache, LRUCache

from edgecache.core.entry import CacheObject

# Stale heap entries (deleted or overwritten keys) are dropped when the heap grows past
# this many times the live entries, so the heap stays O(live entries) without an O(n) step per write.
_HEAP_SLACK_FACTOR = 2
_HEAP_SLACK_MIN = 64


def _size_of(value: CacheObject) -> int:
    return value.size


class _EvictingLRU(LRUCache[str, CacheObject]):
    """cachetools' LRU, with every eviction for space reported so the store can keep its indexes in step."""

    def __init__(self, max_bytes: int, on_evicted: Callable[[str, CacheObject], None]) -> None:
        super().__init__(maxsize=max_bytes, getsizeof=_size_of)
        self._on_evicted = on_evicted

    def popitem(self) -> tuple[str, CacheObject]:
        key, value = super().popitem()
        self._on_evicted(key, value)
        return key, value

    def peek(self, key: str) -> CacheObject | None:
        # Cache.__getitem__ reads without moving the key to the recently-used end.
        return Cache.__getitem__(self, key) if key in self else None


class MemoryStore:
    """Expiry design: every write (and ``len``/``current_bytes``) first sweeps the objects whose
    ``stored_until`` has passed, found through a min-heap of expiry times, so when an insert needs room
    expired bytes are already gone and LRU eviction only ever picks among live objects. ``get`` also drops
    an expired object it meets. The sweep is O(1) when nothing is due, and the hit path never touches the
    heap.
    """

    name = "l1"

    def __init__(
        self,
        max_bytes: int,
        *,
        clock: Callable[[], float] = time.time,
        max_object_bytes: int | None = None,
        on_evict: Callable[[int], None] | None = None,
    ) -> None:
        self._clock = clock
        self._max_object_bytes = max_bytes if max_object_bytes is None else min(max_object_bytes, max_bytes)
        self._on_evict = on_evict
        self._lru = _EvictingLRU(max_bytes, self._evicted_for_space)
        self._keys_by_tag: dict[str, set[str]] = {}
        # (stored_until, key); may hold stale pairs, each checked against the live object when popped.
        self._expiry_heap: list[tuple[float, str]] = []

    @property
    def current_bytes(self) -> int:
        self._expire_due(self._clock())
        return int(self._lru.currsize)

    def __len__(self) -> int:
        self._expire_due(self._clock())
        return len(self._lru)

    async def get(self, key: str) -> CacheObject | None:
        return self.get_nowait(key)

    def get_nowait(self, key: str) -> CacheObject | None:
        """``get`` without the coroutine: the middleware's hit path calls this directly on an L1."""
        lru = self._lru
        # `in` first: a miss raising KeyError inside cachetools costs ~1 µs, a membership test ~0.1 µs.
        if key not in lru:
            return None
        value = lru[key]
        if value.stored_until <= self._clock():
            self._evict(key, value)
            return None
        return value

    def peek(self, key: str) -> CacheObject | None:
        """The live object under ``key`` without touching it: no LRU promotion, no eviction (``explain``)."""
        value = self._lru.peek(key)
        return value if value is not None and value.stored_until > self._clock() else None

    async def set(self, key: str, value: CacheObject) -> bool:
        now = self._clock()
        self._expire_due(now)
        # A rejected write still drops the older object: the caller meant to replace it.
        previous = self._lru.peek(key)
        if previous is not None:
            self._remove(key, previous)
        if value.size > self._max_object_bytes or value.stored_until <= now:
            self._compact_heap_if_sparse()
            return False
        self._lru[key] = value  # may evict least recently used objects through popitem
        for tag in value.tags:
            self._keys_by_tag.setdefault(tag, set()).add(key)
        heapq.heappush(self._expiry_heap, (value.stored_until, key))
        self._compact_heap_if_sparse()
        return True

    async def delete(self, *keys: str) -> int:
        self._expire_due(self._clock())
        removed = 0
        for key in keys:
            value = self._lru.peek(key)
            if value is not None:
                self._remove(key, value)
                removed += 1
        self._compact_heap_if_sparse()
        return removed

    def keys_with_tags(self, tags: Iterable[str]) -> frozenset[str]:
        """Keys of the live objects carrying any of ``tags`` (for soft purges, which rewrite them)."""
        if isinstance(tags, str):
            tags = (tags,)
        found: set[str] = set()
        for tag in tags:
            found.update(self._keys_by_tag.get(tag, ()))
        return frozenset(found)

    async def purge_tags(self, tags: Iterable[str]) -> int:
        self._expire_due(self._clock())
        if isinstance(tags, str):  # a bare tag would otherwise be purged character by character
            tags = (tags,)
        doomed: set[str] = set()
        for tag in tags:
            doomed.update(self._keys_by_tag.get(tag, ()))
        removed = 0
        for key in doomed:
            value = self._lru.peek(key)
            if value is not None:
                self._remove(key, value)
                removed += 1
        self._compact_heap_if_sparse()
        return removed

    async def clear(self) -> None:
        self._lru.clear()
        self._keys_by_tag.clear()
        self._expiry_heap.clear()

    async def aclose(self) -> None:
        pass

    def _remove(self, key: str, value: CacheObject) -> None:
        del self._lru[key]
        self._unindex_tags(key, value)

    def _evict(self, key: str, value: CacheObject) -> None:
        self._remove(key, value)
        if self._on_evict is not None:
            self._on_evict(value.size)

    def _evicted_for_space(self, key: str, value: CacheObject) -> None:
        # cachetools has already removed the object itself.
        self._unindex_tags(key, value)
        if self._on_evict is not None:
            self._on_evict(value.size)

    def _unindex_tags(self, key: str, value: CacheObject) -> None:
        for tag in value.tags:
            keys = self._keys_by_tag.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._keys_by_tag[tag]

    def _expire_due(self, now: float) -> None:
        heap = self._expiry_heap
        while heap and heap[0][0] <= now:
            _, key = heapq.heappop(heap)
            value = self._lru.peek(key)
            # The key may since have been deleted or rewritten with a later expiry.
            if value is not None and value.stored_until <= now:
                self._evict(key, value)

    def _compact_heap_if_sparse(self) -> None:
        if len(self._expiry_heap) <= _HEAP_SLACK_FACTOR * len(self._lru) + _HEAP_SLACK_MIN:
            return
        live = ((self._lru.peek(key), key) for key in list(self._lru))
        self._expiry_heap = [(value.stored_until, key) for value, key in live if value is not None]
        heapq.heapify(self._expiry_heap)
