"""The in-process L1 tier: ``CacheObject``s bounded in bytes, kept or evicted by a W-TinyLFU admission
policy (``edgecache.core.admission``), with per-object expiry and a tag index."""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterable

from edgecache.core.admission import AdmissionPolicy
from edgecache.core.entry import CacheObject

# Stale heap entries (deleted or overwritten keys) are dropped when the heap grows past
# this many times the live entries, so the heap stays O(live entries) without an O(n) step per write.
_HEAP_SLACK_FACTOR = 2
_HEAP_SLACK_MIN = 64


class MemoryStore:
    """A dict of objects; the policy decides which keys stay (weights are object sizes in bytes).

    Every lookup is reported to the policy (``touch``: a hit promotes the key, a miss counts toward the
    key's frequency), every stored object is offered to it (``add``), and what it evicts is dropped here.
    So a flood of keys requested once does not push out the objects asked for again and again, as an LRU
    would.

    Expiry design: every write (and ``len``/``current_bytes``) first sweeps the objects whose
    ``stored_until`` has passed, found through a min-heap of expiry times, so when an insert needs room
    expired bytes are already gone and the policy only ever evicts among live objects. ``get`` also drops
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
        self._objects: dict[str, CacheObject] = {}
        self._policy = AdmissionPolicy(max_bytes)
        self._touch = self._policy.touch
        self._keys_by_tag: dict[str, set[str]] = {}
        # (stored_until, key); may hold stale pairs, each checked against the live object when popped.
        self._expiry_heap: list[tuple[float, str]] = []

    @property
    def policy(self) -> AdmissionPolicy:
        """The admission policy (read-only use: its window size, sketch memory)."""
        return self._policy

    @property
    def current_bytes(self) -> int:
        self._expire_due(self._clock())
        return self._policy.weight

    def __len__(self) -> int:
        self._expire_due(self._clock())
        return len(self._objects)

    async def get(self, key: str) -> CacheObject | None:
        return self.get_nowait(key)

    def get_nowait(self, key: str) -> CacheObject | None:
        """``get`` without the coroutine: the middleware's hit path calls this directly on an L1."""
        value = self._objects.get(key)
        if value is None:
            self._touch(key)  # a miss still counts toward the key's frequency
            return None
        if value.stored_until <= self._clock():
            self._evict(key, value)
            return None
        self._touch(key)
        return value

    def peek(self, key: str) -> CacheObject | None:
        """The live object under ``key`` without touching it: no use counted, no eviction (``explain``,
        and the plain hit path, which counts the use with ``record_use`` only when it serves the object:
        otherwise the full path's ``get`` counts it, and a request must count once)."""
        value = self._objects.get(key)  # not through get_nowait: that touches the admission policy
        return value if value is not None and value.stored_until > self._clock() else None

    def record_use(self, key: str) -> None:
        """Count one access to ``key`` in the admission policy (after a ``peek`` that served it)."""
        self._touch(key)

    async def set(self, key: str, value: CacheObject) -> bool:
        now = self._clock()
        self._expire_due(now)
        previous = self._objects.get(key)
        if value.size > self._max_object_bytes or value.stored_until <= now:
            # A rejected write still drops the older object: the caller meant to replace it.
            if previous is not None:
                self._remove(key, previous)
            self._compact_heap_if_sparse()
            return False
        if previous is not None:
            self._unindex_tags(key, previous)
        self._objects[key] = value
        for tag in value.tags:
            self._keys_by_tag.setdefault(tag, set()).add(key)
        heapq.heappush(self._expiry_heap, (value.stored_until, key))
        # An overwrite keeps the key's place and frequency in the policy (only its weight changes).
        for evicted in self._policy.add(key, value.size):
            gone = self._objects.pop(evicted)
            self._unindex_tags(evicted, gone)
            if self._on_evict is not None:
                self._on_evict(gone.size)
        self._compact_heap_if_sparse()
        return key in self._objects  # (the policy only turns away a key heavier than max_bytes)

    async def delete(self, *keys: str) -> int:
        self._expire_due(self._clock())
        removed = 0
        for key in keys:
            value = self._objects.get(key)
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
            value = self._objects.get(key)
            if value is not None:
                self._remove(key, value)
                removed += 1
        self._compact_heap_if_sparse()
        return removed

    async def clear(self) -> None:
        self._objects.clear()
        self._policy.clear()
        self._keys_by_tag.clear()
        self._expiry_heap.clear()

    async def aclose(self) -> None:
        pass

    def _remove(self, key: str, value: CacheObject) -> None:
        del self._objects[key]
        self._policy.discard(key)
        self._unindex_tags(key, value)

    def _evict(self, key: str, value: CacheObject) -> None:
        self._remove(key, value)
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
            value = self._objects.get(key)
            # The key may since have been deleted or rewritten with a later expiry.
            if value is not None and value.stored_until <= now:
                self._evict(key, value)

    def _compact_heap_if_sparse(self) -> None:
        if len(self._expiry_heap) <= _HEAP_SLACK_FACTOR * len(self._objects) + _HEAP_SLACK_MIN:
            return
        self._expiry_heap = [(value.stored_until, key) for key, value in self._objects.items()]
        heapq.heapify(self._expiry_heap)
