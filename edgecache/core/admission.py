"""L1 admission and eviction: weighted W-TinyLFU, its window adaptive and segmented (pure: no I/O, no clock).

Layout (as in Caffeine): a small *window* takes every new key; what falls out of the window becomes a
*candidate* in the main region, a segmented LRU (*probation* then *protected*). When the cache is over
capacity, a candidate only stays if its frequency is higher than that of the entries it would push out; so
one-hit wonders and scans pass through the window and leave, while the hot set stays in main. A hit in
probation promotes the entry to protected (80 % of main); protected overflow is demoted back to probation.
The key just added always stays resident until the next ``add`` (a store can read what it just wrote),
even when it alone overfills the window; it meets the filter when it leaves the window.

The window is itself a segmented LRU (Caffeine's is a plain LRU): new keys enter its *cold* segment, a hit
there moves the entry to its *hot* segment (20 % of the window), whose overflow cools back to the cold one,
and the window drains cold entries first. It matters when adaptation has grown the window to most of the
capacity: a plain LRU there is exactly LRU, so the policy could at best tie LRU on recency-biased traffic
and, having paid for finding that out, ended below it (drift trace at 10 %: 71.62 % against LRU's 71.72 %).
A segmented LRU keeps what was hit twice from being flushed by what was seen once, and with it the adaptive
policy ends above LRU (71.93 %; on seeds 2 and 3, 72.01 % and 71.85 % against LRU's 71.82 % and 71.69 %:
``benchmarks/hitrate_table.py --seed N``). With the window small (skewed traffic) the segments change
little.

Weighted admission: a candidate of weight ``w`` may need several victims. Victims are taken from the
least-recently-used end of probation, then of protected, until they free ``min(w, excess)``; the candidate is
admitted only if its frequency is strictly greater than that of *every* victim (the most frequent one
decides). So a large object must be more popular than each thing it displaces; when it is not, the
candidate alone is evicted and the victims keep their places.

Adaptive window: two ghosts of the same small weight (5 % of the capacity, keys only) remember the last
candidates the filter turned away and main's last victims. A later miss on the first means a window bigger
by that much would have hit; on the second, a main bigger by that much would have. Every sample of accesses
the window moves toward the side whose ghost was missed more, by up to 15 % of the capacity (scaled by the
imbalance). This is hill climbing on a measured gradient. Caffeine's climber compares the hit ratio of
successive samples instead; measured here on a trace whose popularity drifts in steps, it could not tell the
trace's own jumps from the effect of its moves (66 % against LRU's 71.7 % at 10 %), while both ghosts see
the same jumps. Recency-biased traffic grows the window toward LRU; skewed traffic with one-hit wonders
shrinks it toward TinyLFU. When the window grows, main shrinks by losing its least recently used entries,
and until it is back within its share a hit in probation moves the entry to the window: otherwise main's
still-hot entries were flushed with its idle ones and each came back as a miss (measured on the drift trace
at 10 %: a 1 % window for 50,000 requests, then the whole capacity, ended the first 400,000 requests 510
hits behind LRU; with the move, 201 ahead). Faster climbers (steps proportional to the ghost-hit difference
or to its z-score, momentum, per-hit steps by ARC's rule, ghosts of 10 % to 100 %) were tried: each cost 0.3
to 4 points on another trace.

Frequencies: a count-min sketch of 4-bit counters (saturating at 15), four counters per key, with a
doorkeeper bit set in front of it (a key's first sighting in a period only sets its bit), records the
accesses of non-resident keys. A resident key has its own counter instead (the sketch's estimate when it
was added, plus its hits), because a hit in Python cannot afford four hashed counter updates; it goes back
into the sketch when the key leaves. Every ``10 x tracked keys`` accesses everything is halved and the
doorkeeper cleared (aging), so old popularity fades; the residents' counters are rebuilt in one pass then
(the request that triggers it pays for it: about 15 ms per 100,000 residents on the development machine,
once per million accesses or more at that size). Counters are held one per byte so that halving is one
C-level ``bytes.translate``. Sketch hashing is CRC-32 (deterministic: Python's ``hash`` is salted per
process, and simulations must give the same figures on every run); only misses, admissions and evictions
hash.

Memory: for ``n`` tracked keys (the capacity in entries when weights are 1, otherwise the resident count,
grown by doubling from 1024) the sketch holds ``8 x n`` counter bytes and ``n`` doorkeeper bytes (8 bits
per key), ``n`` rounded up to a power of two: 9 bytes per tracked key, capped at ``MAX_TRACKED_KEYS``
(2**20), so the sketch never exceeds 9 MiB however many keys pass through. Each resident costs two dict
slots here (its region's and its counter's) on top of the store's own; each ghost holds at most 5 % of the
capacity.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict

__all__ = ["MAX_TRACKED_KEYS", "AdmissionPolicy", "FrequencySketch"]

MAX_TRACKED_KEYS = 1 << 20
_MIN_TRACKED_KEYS = 16
_COUNTERS_PER_KEY = 8  # table slots per tracked key; each key maps to 4 of them
_COUNTER_MAX = 15  # 4-bit counters
_FREQUENCY_MAX = _COUNTER_MAX + 1  # with the doorkeeper bit: the highest estimate, residents capped alike
_INITIAL_TRACKED = 1024
_SAMPLE_FACTOR = 10  # accesses per aging period, per tracked key (the TinyLFU paper's W/C = 10)
_HALVE = bytes(i >> 1 for i in range(256))
_LOW32 = 0xFFFFFFFF

_INITIAL_WINDOW = 0.01  # window share of the capacity before adaptation moves it (Caffeine's 1 %)
_PROTECTED_SHARE = 0.8  # of the main region
_WINDOW_HOT_SHARE = 0.2  # of the window: the entries hit again while in it
_GHOST_SHARE = 0.05  # each ghost remembers this share of the capacity (in weight)
_ADAPT_STEP = 0.15  # largest window step, as a share of the capacity (when one ghost gets every hit)
_ADAPT_MIN_SAMPLE = 5000


def _hash(key: str) -> tuple[int, int]:
    """Two 32-bit hashes of ``key`` (the second odd): CRC-32, then a Fibonacci-hash mix of it.

    Not Python's ``hash``, which is salted per process: simulations must give the same figures every run.
    Only misses, admissions and evictions hash; a hit reads the resident's own counter.
    """
    low = zlib.crc32(key.encode("utf-8", "surrogatepass"))
    return low, (((low * 0x9E3779B97F4A7C15) >> 32) & _LOW32) | 1


def _adapt_sample(tracked: int) -> int:
    """Accesses between two window steps: half the tracked keys, at least enough to count some ghost hits."""
    return max(_ADAPT_MIN_SAMPLE, tracked // 2)


class FrequencySketch:
    """Approximate access counts of keys in a bounded table (count-min, 4-bit counters, doorkeeper).

    The owner calls ``halve`` every ``sample_size`` accesses (aging).
    """

    __slots__ = ("_door", "_door_mask", "_mask", "_table", "sample_size", "tracked")

    def __init__(self, tracked_keys: int) -> None:
        self.resize(tracked_keys)

    def resize(self, tracked_keys: int) -> None:
        """Size the tables for ``tracked_keys`` keys (clamped to [16, MAX_TRACKED_KEYS]); forgets counts."""
        tracked = 1 << (max(_MIN_TRACKED_KEYS, min(tracked_keys, MAX_TRACKED_KEYS)) - 1).bit_length()
        self.tracked = tracked
        self._table = bytearray(tracked * _COUNTERS_PER_KEY)
        self._mask = len(self._table) - 1
        self._door = bytearray(tracked)  # 8 bits per tracked key
        self._door_mask = tracked * 8 - 1
        self.sample_size = _SAMPLE_FACTOR * tracked

    def increment(self, key: str) -> None:
        low, high = _hash(key)
        bit = (high >> 3) & self._door_mask
        door, byte, flag = self._door, bit >> 3, 1 << (bit & 7)
        if not door[byte] & flag:
            door[byte] |= flag  # first sighting in this period: remembered by the doorkeeper only
            return
        table, mask = self._table, self._mask
        # Double hashing (Kirsch-Mitzenmacher): four slots from two 32-bit hashes.
        for i in (low & mask, (low + high) & mask, (low + 2 * high) & mask, (low + 3 * high) & mask):
            if table[i] < _COUNTER_MAX:
                table[i] += 1

    def raise_to(self, key: str, frequency: int) -> None:
        """Make the estimate of ``key`` at least ``frequency`` (a resident's own count, when it leaves)."""
        if frequency <= 0:
            return
        low, high = _hash(key)
        bit = (high >> 3) & self._door_mask
        self._door[bit >> 3] |= 1 << (bit & 7)
        count = min(frequency - 1, _COUNTER_MAX)
        table, mask = self._table, self._mask
        for i in (low & mask, (low + high) & mask, (low + 2 * high) & mask, (low + 3 * high) & mask):
            table[i] = max(table[i], count)

    def frequency(self, key: str) -> int:
        """Estimated accesses this period (0-16): the least of the key's counters, plus its door bit."""
        low, high = _hash(key)
        bit = (high >> 3) & self._door_mask
        table, mask = self._table, self._mask
        return (1 if self._door[bit >> 3] & (1 << (bit & 7)) else 0) + min(
            table[low & mask],
            table[(low + high) & mask],
            table[(low + 2 * high) & mask],
            table[(low + 3 * high) & mask],
        )

    def halve(self) -> None:
        """Aging: halve every counter (one C-level pass) and clear the doorkeeper."""
        self._table = self._table.translate(_HALVE)
        self._door = bytearray(len(self._door))

    @property
    def memory_bytes(self) -> int:
        return len(self._table) + len(self._door)


class AdmissionPolicy:
    """Decides which keys an L1 of ``capacity`` weight units keeps; the store holds the values.

    ``touch`` on every lookup (hit or miss), ``add`` after a miss was fetched, ``discard`` when the store
    drops a key itself. Weights are bytes in the store, 1 per entry in simulations.
    """

    def __init__(
        self,
        capacity: int,
        *,
        adaptive: bool = True,
        window: float = _INITIAL_WINDOW,
        window_hot: float = _WINDOW_HOT_SHARE,
    ) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be a positive integer, got {capacity!r}")
        if not 0.0 <= window < 1.0:
            raise ValueError(f"window must be a fraction in [0, 1), got {window!r}")
        if not 0.0 <= window_hot < 1.0:
            raise ValueError(f"window_hot must be a fraction in [0, 1), got {window_hot!r}")
        self.capacity = capacity
        self.adaptive = adaptive
        self.weight = 0
        # The window is a segmented LRU too: new keys enter its cold segment, a hit there moves the entry
        # to its hot segment (``window_hot`` of the window's weight), whose overflow cools back.
        self._window: OrderedDict[str, int] = OrderedDict()  # cold: key -> weight, least recently used first
        self._window_hot: OrderedDict[str, int] = OrderedDict()
        self._window_hot_share = window_hot
        self._probation: OrderedDict[str, int] = OrderedDict()
        self._protected: OrderedDict[str, int] = OrderedDict()
        # Resident key -> its accesses this period (sketch estimate at admission + hits since), so a hit
        # bumps one int instead of hashing into four sketch counters.
        self._counts: dict[str, int] = {}
        self._window_weight = 0  # both segments
        self._window_hot_weight = 0
        self._protected_weight = 0
        self._window_max = int(capacity * window)
        self._window_hot_max = int(self._window_max * window_hot)
        self._protected_max = int((capacity - self._window_max) * _PROTECTED_SHARE)
        # Weights of 1 (simulations): track `capacity` keys now; weighted: start small, grow with residents.
        self.sketch = FrequencySketch(min(capacity, _INITIAL_TRACKED))
        # One access counter drives both periodic jobs (aging, window steps): the hit path tests one bound.
        self._ticks = 0
        self._next_aging = self.sketch.sample_size
        self._adapt_sample = _adapt_sample(self.sketch.tracked)
        self._next_adapt = self._adapt_sample
        self._next_event = min(self._next_aging, self._next_adapt)
        # Two ghosts of the same small weight (keys only): the last candidates the filter turned away
        # (a window bigger by that much would have kept them) and main's last victims (a main bigger by
        # that much would have kept them). Misses on each are counted over a sample.
        self._ghost_capacity = max(1, int(_GHOST_SHARE * capacity))
        self._ghost_window: OrderedDict[str, int] = OrderedDict()
        self._ghost_main: OrderedDict[str, int] = OrderedDict()
        self._ghost_window_weight = 0
        self._ghost_main_weight = 0
        self._ghost_window_hits = 0
        self._ghost_main_hits = 0

    # -- public API ------------------------------------------------------------------------------------

    def __contains__(self, key: object) -> bool:
        return key in self._counts

    def __len__(self) -> int:
        return len(self._counts)

    @property
    def accesses(self) -> int:
        """Lookups recorded by ``touch`` so far (one per request a store serves or misses)."""
        return self._ticks

    @property
    def window_capacity(self) -> int:
        """The window's current share of the capacity, in weight units (moved by adaptation)."""
        return self._window_max

    @property
    def memory_bytes(self) -> int:
        """The sketch's tables (the per-key dicts are not counted: they scale with the residents)."""
        return self.sketch.memory_bytes

    def touch(self, key: str) -> bool:
        """Record an access to ``key``; True (and the key promoted) if it is resident."""
        self._ticks = ticks = self._ticks + 1
        if ticks >= self._next_event:
            self._periodic(ticks)
        counts = self._counts
        count = counts.get(key)
        if count is None:
            self.sketch.increment(key)
            return False
        counts[key] = count + 1
        protected = self._protected
        if key in protected:
            protected.move_to_end(key)
            return True
        hot = self._window_hot
        if key in hot:
            hot.move_to_end(key)
            return True
        window = self._window
        weight = window.get(key)
        if weight is None:
            weight = self._probation.pop(key)
            if self.weight - self._window_weight <= self.capacity - self._window_max:
                protected[key] = weight
                self._protected_weight += weight
                if self._protected_weight > self._protected_max:
                    self._demote_protected()
                return True
            # Main is over its share (the window grew and main has not shrunk yet): the entry just hit
            # moves to the window instead of being flushed with main's idle entries.
            self._window_weight += weight
        elif weight > self._window_hot_max:
            window.move_to_end(key)  # too heavy for the hot segment: for it the window is a plain LRU
            return True
        else:
            del window[key]
        hot[key] = weight
        self._window_hot_weight += weight
        if self._window_hot_weight > self._window_hot_max:
            self._cool_window()
        return True

    def add(self, key: str, weight: int) -> list[str]:
        """Insert ``key`` (after a miss); returns the keys evicted.

        The new key itself is only in the list when it is heavier than the whole capacity: it enters the
        window and stays resident at least until the next ``add`` (so what was just stored can be read),
        meeting the admission filter when it leaves the window. Adding a resident key updates its weight
        and makes it the most recent of its region.
        """
        if weight < 0:
            raise ValueError(f"weight must be >= 0, got {weight}")
        if weight > self.capacity:
            self.discard(key)
            return [key]
        if key in self._counts:
            self._reweigh(key, weight)
        else:
            if self._ghost_window_weight or self._ghost_main_weight:
                self._count_ghost_hit(key)
            self._counts[key] = self.sketch.frequency(key)
            self._window[key] = weight
            self._window_weight += weight
            self.weight += weight
            if len(self._counts) > self.sketch.tracked and self.sketch.tracked < MAX_TRACKED_KEYS:
                # Weighted: more residents than the sketch was sized for. A bigger sketch forgets
                # the non-residents' history (residents keep theirs in their own counters).
                self.sketch.resize(2 * self.sketch.tracked)
                self._next_aging = self._ticks + self.sketch.sample_size
                self._adapt_sample = _adapt_sample(self.sketch.tracked)
                self._next_event = min(self._next_aging, self._next_adapt)
        candidates = self._drain_window(key) if self._window_weight > self._window_max else []
        if self.weight <= self.capacity:
            return []
        return self._evict(candidates, key)

    def discard(self, key: str) -> None:
        """Forget ``key`` (deleted, expired or purged by the store); no-op if it is not resident.

        Its access count goes back to the sketch, so a popular key purged and fetched again is admitted.
        """
        count = self._counts.pop(key, None)
        if count is None:
            return
        self.sketch.raise_to(key, count)
        self.weight -= self._unlink(key)

    def clear(self) -> None:
        """Forget every resident key (the sketch keeps the history of the others)."""
        for region in (self._window, self._window_hot, self._probation, self._protected):
            region.clear()
        self._counts.clear()
        self.weight = self._window_weight = self._window_hot_weight = self._protected_weight = 0

    # -- internals -------------------------------------------------------------------------------------

    def _unlink(self, key: str) -> int:
        """Remove ``key`` from its region; returns its weight."""
        weight = self._window.pop(key, None)
        if weight is not None:
            self._window_weight -= weight
            return weight
        weight = self._window_hot.pop(key, None)
        if weight is not None:
            self._window_weight -= weight
            self._window_hot_weight -= weight
            return weight
        weight = self._protected.pop(key, None)
        if weight is not None:
            self._protected_weight -= weight
            return weight
        return self._probation.pop(key)

    def _periodic(self, ticks: int) -> None:
        if ticks >= self._next_aging:
            # Aging: halve all frequencies, the sketch's and the residents' alike.
            self._next_aging = ticks + self.sketch.sample_size
            self.sketch.halve()
            self._counts = {key: min(count, _FREQUENCY_MAX) >> 1 for key, count in self._counts.items()}
        if ticks >= self._next_adapt:
            self._next_adapt = ticks + self._adapt_sample
            if self.adaptive:
                self._adapt()
        self._next_event = min(self._next_aging, self._next_adapt)

    def _adapt(self) -> None:
        """Move the window toward the side whose ghost was missed more over the last sample."""
        window_hits, main_hits = self._ghost_window_hits, self._ghost_main_hits
        self._ghost_window_hits = self._ghost_main_hits = 0
        if window_hits != main_hits:
            share = (window_hits - main_hits) / (window_hits + main_hits)
            self._resize_window(int(_ADAPT_STEP * share * self.capacity))

    def _count_ghost_hit(self, key: str) -> None:
        weight = self._ghost_window.pop(key, None)
        if weight is not None:
            self._ghost_window_weight -= weight
            self._ghost_window_hits += 1
            return
        weight = self._ghost_main.pop(key, None)
        if weight is not None:
            self._ghost_main_weight -= weight
            self._ghost_main_hits += 1

    def _remember_rejected(self, key: str, weight: int) -> None:
        ghost = self._ghost_window
        ghost[key] = weight
        self._ghost_window_weight += weight
        while self._ghost_window_weight > self._ghost_capacity:
            self._ghost_window_weight -= ghost.popitem(last=False)[1]

    def _remember_victim(self, key: str, weight: int) -> None:
        ghost = self._ghost_main
        ghost[key] = weight
        self._ghost_main_weight += weight
        while self._ghost_main_weight > self._ghost_capacity:
            self._ghost_main_weight -= ghost.popitem(last=False)[1]

    def _reweigh(self, key: str, weight: int) -> None:
        for region in (self._window, self._window_hot, self._probation, self._protected):
            old = region.get(key)
            if old is not None:
                region[key] = weight
                region.move_to_end(key)
                delta = weight - old
                self.weight += delta
                if region is self._window_hot:
                    self._window_hot_weight += delta
                    if self._window_hot_weight > self._window_hot_max:
                        self._cool_window()
                if region is self._window or region is self._window_hot:
                    self._window_weight += delta
                elif region is self._protected:
                    self._protected_weight += delta
                return

    def _drain_window(self, keep: str | None = None) -> list[str]:
        """Move the window's least recently used keys to probation until it fits; they become candidates.

        The cold segment goes first, then the hot one. ``keep`` (the key being added) stays even when it
        alone overfills the window.
        """
        probation = self._probation
        candidates: list[str] = []
        for segment in (self._window, self._window_hot):
            while self._window_weight > self._window_max and segment:
                key = next(iter(segment))
                if key == keep:  # ``keep`` is its segment's newest: the segment holds nothing else
                    break
                weight = segment.pop(key)
                self._window_weight -= weight
                if segment is self._window_hot:
                    self._window_hot_weight -= weight
                probation[key] = weight
                candidates.append(key)
        return candidates

    def _cool_window(self) -> None:
        """The window's hot segment back within its share: its overflow joins the cold segment."""
        self._window_hot_weight = _spill(
            self._window_hot, self._window, self._window_hot_weight, self._window_hot_max
        )

    def _evict(self, candidates: list[str], keep: str) -> list[str]:
        evicted: list[str] = []
        probation, protected, counts = self._probation, self._protected, self._counts
        pending = iter(candidates)
        while self.weight > self.capacity:
            candidate = next(pending, None)
            if candidate is None:
                evicted.append(self._evict_lru(keep))
                continue
            weight = probation.get(candidate)
            if weight is None:
                continue
            need = min(weight, self.weight - self.capacity)
            victims: list[tuple[str, int]] = []
            freed = 0
            for region in (probation, protected):
                for victim, victim_weight in region.items():
                    if freed >= need:
                        break
                    if victim not in (candidate, keep):
                        victims.append((victim, victim_weight))
                        freed += victim_weight
            candidate_frequency = min(counts[candidate], _FREQUENCY_MAX)
            if freed >= need and all(counts[victim] < candidate_frequency for victim, _ in victims):
                for victim, victim_weight in victims:
                    self.discard(victim)
                    self._remember_victim(victim, victim_weight)
                    evicted.append(victim)
            else:
                self.discard(candidate)
                self._remember_rejected(candidate, weight)
                evicted.append(candidate)
        return evicted

    def _evict_lru(self, keep: str) -> str:
        """Eviction with no candidate pending: probation's LRU, then protected's, then the window's."""
        for region in (self._probation, self._protected, self._window, self._window_hot):
            for key, weight in region.items():
                if key != keep:
                    self.discard(key)
                    self._remember_victim(key, weight)
                    return key
        raise AssertionError("over capacity with only the new key resident")  # weight <= capacity

    def _demote_protected(self) -> None:
        """Protected back within its share: its overflow joins probation."""
        self._protected_weight = _spill(
            self._protected, self._probation, self._protected_weight, self._protected_max
        )

    def _resize_window(self, amount: int) -> None:
        # The window stays within [0, capacity - 1]: main always keeps room for at least one unit.
        target = max(0, min(self.capacity - 1, self._window_max + amount))
        self._window_max = target
        self._window_hot_max = int(target * self._window_hot_share)
        if self._window_hot_weight > self._window_hot_max:
            self._cool_window()
        self._protected_max = int((self.capacity - target) * _PROTECTED_SHARE)
        # Growing: the window fills with new keys while main loses its least recently used entries; until
        # main is back within its share, an entry hit in probation moves to the window (see ``touch``).
        # Shrinking: the window's overflow joins probation without an admission test (nothing is evicted).
        if self._window_weight > target:
            self._drain_window()
        if self._protected_weight > self._protected_max:
            self._demote_protected()


def _spill(upper: OrderedDict[str, int], lower: OrderedDict[str, int], weight: int, limit: int) -> int:
    """A segmented LRU's overflow: ``upper``'s least recently used entries move to ``lower``'s most recent
    end until ``upper`` (of ``weight``) is within ``limit``; returns ``upper``'s new weight."""
    while weight > limit and upper:
        key, entry_weight = upper.popitem(last=False)
        weight -= entry_weight
        lower[key] = entry_weight
    return weight
