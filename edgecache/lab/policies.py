"""Cache replacement policies for the simulator, all behind one method: ``access(key, weight, now) -> hit``.

A policy holds at most ``capacity`` weight units: entries (every weight 1) or bytes (weight = object size).
On a miss it stores the object unless the object alone is heavier than the whole capacity; what it evicts is
its own business. ``now`` (seconds) is read by the TTL policy only. Keys are ints (see ``traces``).

- ``lru``: least recently used (``OrderedDict``).
- ``fifo``: first in, first out; hits do not reorder.
- ``lfu``: in-cache LFU. Counts start at 1 when an object is stored and are forgotten when it is evicted;
  no aging (this is the classic LFU, and why it collapses when popularity drifts). Ties between equally
  frequent objects go to the least recently used one. A heap with lazy deletion: O(log n) per access.
- ``ttl``: TTL-only: an object lives ``ttl`` seconds after it was stored and nothing else removes it; when
  the cache is full a new object is not stored (as a cache without an eviction policy behaves).
- ``w-tinylfu``: W-TinyLFU (Einziger, Friedman, Manes 2017) with a fixed window: the shipped policy
  (``edgecache.core.admission.AdmissionPolicy``) with its window adaptation off and its window not
  segmented, so a 1 % LRU window (as in Caffeine) in front of a segmented LRU main region (20 % probation,
  80 % protected); what leaves the window enters main only if a count-min sketch (4-bit counters,
  doorkeeper, halved every ``10 × tracked keys`` accesses) says it is more frequent than main's victims.
  Next to ``edgecache`` it shows what the adaptive, segmented window is worth.
- ``s3-fifo``: S3-FIFO (Yang et al., SOSP 2023): a small FIFO (10 %), a main FIFO (90 %) and a ghost FIFO
  of keys evicted from small (as much weight as main holds). An object accessed again while in small moves
  to main; main reinserts objects whose 2-bit counter is non-zero, decrementing it; a miss on a ghost key
  goes straight to main.
- ``edgecache``: the L1 this build of edgecache ships, ``edgecache.core.admission.AdmissionPolicy`` (the
  memory store's admission and eviction), driven through its ``touch``/``add``.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Protocol

from edgecache.core.admission import AdmissionPolicy


class Policy(Protocol):
    name: str

    def access(self, key: int, weight: int, now: float) -> bool: ...

    def resident(self) -> set[int]: ...


class LRU:
    name = "lru"

    def __init__(self, capacity: int, **_: object) -> None:
        self.capacity = capacity
        self.used = 0
        self._entries: OrderedDict[int, int] = OrderedDict()

    def access(self, key: int, weight: int, now: float) -> bool:
        entries = self._entries
        if key in entries:
            entries.move_to_end(key)
            return True
        return self._store(key, weight)

    def _store(self, key: int, weight: int) -> bool:
        """A miss: store ``key`` at the recent end, evicting from the old end (False: it was a miss)."""
        if weight > self.capacity:
            return False
        entries = self._entries
        entries[key] = weight
        self.used += weight
        while self.used > self.capacity:
            self.used -= entries.popitem(last=False)[1]
        return False

    def resident(self) -> set[int]:
        return set(self._entries)


class FIFO(LRU):
    name = "fifo"

    def access(self, key: int, weight: int, now: float) -> bool:
        if key in self._entries:
            return True
        return self._store(key, weight)


class LFU:
    name = "lfu"

    def __init__(self, capacity: int, **_: object) -> None:
        self.capacity = capacity
        self.used = 0
        # key -> [count, last access tick, weight]; the heap holds (count, tick, key) snapshots, and a
        # snapshot is current only while count and tick still match.
        self._entries: dict[int, list[int]] = {}
        self._heap: list[tuple[int, int, int]] = []
        self._tick = 0

    def access(self, key: int, weight: int, now: float) -> bool:
        self._tick = tick = self._tick + 1
        entries = self._entries
        entry = entries.get(key)
        heap = self._heap
        if entry is not None:
            entry[0] += 1
            entry[1] = tick
            heapq.heappush(heap, (entry[0], tick, key))
            if len(heap) > 4 * len(entries) + 64:
                self._compact()
            return True
        if weight > self.capacity:
            return False
        self.used += weight
        while self.used > self.capacity:
            count, seen, victim = heapq.heappop(heap)
            current = entries[victim]
            if current[0] == count and current[1] == seen:
                del entries[victim]
                self.used -= current[2]
        entries[key] = [1, tick, weight]
        heapq.heappush(heap, (1, tick, key))
        return False

    def _compact(self) -> None:
        self._heap = [(c, t, k) for k, (c, t, _) in self._entries.items()]
        heapq.heapify(self._heap)

    def resident(self) -> set[int]:
        return set(self._entries)


class TTLOnly:
    name = "ttl"

    def __init__(self, capacity: int, *, ttl: float = 60.0, **_: object) -> None:
        self.capacity = capacity
        self.ttl = ttl
        self.used = 0
        self._expires: dict[int, tuple[float, int]] = {}
        # One TTL for all, so objects expire in the order they were stored: a FIFO of (expiry, key).
        self._queue: deque[tuple[float, int]] = deque()

    def access(self, key: int, weight: int, now: float) -> bool:
        queue = self._queue
        expires = self._expires
        while queue and queue[0][0] <= now:
            _, old = queue.popleft()
            self.used -= expires.pop(old)[1]
        if key in expires:
            return True
        if self.used + weight > self.capacity:
            return False
        expiry = now + self.ttl
        expires[key] = (expiry, weight)
        queue.append((expiry, key))
        self.used += weight
        return False

    def resident(self) -> set[int]:
        return set(self._expires)

    def resident_at(self, now: float) -> set[int]:
        """What a request at ``now`` would find (``resident`` may still hold entries expired since)."""
        return {k for k, (expiry, _) in self._expires.items() if expiry > now}


class S3FIFO:
    name = "s3-fifo"

    def __init__(self, capacity: int, *, small: float = 0.1, **_: object) -> None:
        self.capacity = capacity
        self.small_capacity = max(1, int(capacity * small))
        self.ghost_capacity = max(1, capacity - self.small_capacity)
        self._small: OrderedDict[int, int] = OrderedDict()
        self._main: OrderedDict[int, int] = OrderedDict()
        self._ghost: OrderedDict[int, int] = OrderedDict()
        self._freq: dict[int, int] = {}
        self._small_used = self._main_used = self._ghost_used = 0

    def access(self, key: int, weight: int, now: float) -> bool:
        freq = self._freq
        f = freq.get(key)
        if f is not None:
            if f < 3:
                freq[key] = f + 1
            return True
        if weight > self.capacity:
            return False
        ghost = self._ghost
        if key in ghost:
            self._ghost_used -= ghost.pop(key)
            self._main[key] = weight
            self._main_used += weight
        else:
            self._small[key] = weight
            self._small_used += weight
        freq[key] = 0
        while self._small_used + self._main_used > self.capacity:
            self._evict()
        return False

    def _evict(self) -> None:
        freq = self._freq
        if (self._small_used >= self.small_capacity or not self._main) and self._small:
            key, w = self._small.popitem(last=False)
            self._small_used -= w
            if freq[key] > 0:  # asked for again while in small: worth keeping
                freq[key] = 0
                self._main[key] = w
                self._main_used += w
                return
            del freq[key]
            ghost = self._ghost
            ghost[key] = w
            self._ghost_used += w
            while self._ghost_used > self.ghost_capacity:
                self._ghost_used -= ghost.popitem(last=False)[1]
            return
        main = self._main
        while True:
            key, w = main.popitem(last=False)
            f = freq[key]
            if f > 0:
                freq[key] = f - 1
                main[key] = w  # reinserted: one more lap
            else:
                del freq[key]
                self._main_used -= w
                return

    def resident(self) -> set[int]:
        return set(self._freq)


# -- the shipped L1 -----------------------------------------------------------------------------------


class _L1(Protocol):
    def __contains__(self, key: object) -> bool: ...

    def touch(self, key: str) -> bool: ...

    def add(self, key: str, weight: int) -> list[str]: ...


def shipped_l1(capacity: int) -> tuple[_L1, str]:
    """The L1 policy of this build and a short description of it."""
    return AdmissionPolicy(capacity), "W-TinyLFU, adaptive segmented window (edgecache.core.admission)"


class _StrKeyed:
    """Adapter: an L1's ``touch``/``add`` as a simulator policy (keys passed as decimal strings)."""

    def __init__(self, capacity: int, l1: _L1) -> None:
        self.capacity = capacity
        self.l1 = l1
        self._keys: dict[int, str] = {}

    def access(self, key: int, weight: int, now: float) -> bool:
        # One str per key id, reused: the policy (like the store) sees the same str object each time.
        name = self._keys.get(key)
        if name is None:
            name = self._keys[key] = str(key)
        if self.l1.touch(name):
            return True
        if weight <= self.capacity:
            self.l1.add(name, weight)
        return False

    def resident(self) -> set[int]:
        return {key for key, name in self._keys.items() if name in self.l1}


class WTinyLFU(_StrKeyed):
    """The shipped admission policy with a fixed window (``entries`` is not needed: it sizes itself)."""

    name = "w-tinylfu"

    def __init__(self, capacity: int, **_: object) -> None:
        self.policy = AdmissionPolicy(capacity, adaptive=False, window_hot=0.0)
        super().__init__(capacity, self.policy)


class Edgecache(_StrKeyed):
    """The L1 this build ships (``shipped_l1``)."""

    name = "edgecache"

    def __init__(self, capacity: int, **_: object) -> None:
        l1, self.description = shipped_l1(capacity)
        super().__init__(capacity, l1)


PolicyFactory = Callable[..., Policy]
POLICIES: dict[str, PolicyFactory] = {
    "lru": LRU,
    "lfu": LFU,
    "fifo": FIFO,
    "ttl": TTLOnly,
    "w-tinylfu": WTinyLFU,
    "s3-fifo": S3FIFO,
    "edgecache": Edgecache,
}


def make_policy(name: str, capacity: int, *, entries: int, ttl: float) -> Policy:
    """A fresh policy by name; ``entries`` estimates how many objects fit (sketch sizing)."""
    try:
        factory = POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; expected one of {', '.join(POLICIES)}, opt") from None
    return factory(capacity, entries=entries, ttl=ttl)
