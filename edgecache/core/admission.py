"""L1 admission and eviction: a weighted W-TinyLFU with an adaptive window (pure: no I/O, no clock).

Layout (as in Caffeine): a small LRU *window* takes every new key; what falls out of the window becomes a
*candidate* in the main region, a segmented LRU (*probation* then *protected*). When the cache is over
capacity, a candidate only stays if a frequency sketch says it has been asked for more often than the
entries it would push out; so one-hit wonders and scans pass through the window and leave, while the hot set
stays in main. A hit in probation promotes the entry to protected (80 % of main); protected overflow is
demoted back to probation.

Weighted admission: a candidate of weight ``w`` may need several victims. Victims are taken from the
least-recently-used end of probation, then of protected, until they free ``min(w, excess)``; the candidate is
admitted only if its estimated frequency is strictly greater than that of *every* victim (the most frequent
one decides). So a large object must be more popular than each thing it displaces; when it is not, the
candidate alone is evicted and the victims keep their places.

Adaptive window (hill climbing, as Caffeine sizes it): the hit ratio is sampled over windows of requests;
when a step improved it the window keeps moving the same way, otherwise it turns back; the step restarts
large when the hit ratio jumps by 5 points and otherwise decays. A recency-biased trace (popularity drift)
grows the window toward LRU; a frequency-biased one (Zipf, scans) shrinks it toward TinyLFU.

Frequency sketch: a count-min sketch of 4-bit counters (saturating at 15), four counters per key, with a
doorkeeper bit set in front of it (a key's first sighting in a period only sets its bit) and periodic aging:
after ``10 × tracked keys`` recorded accesses every counter is halved and the doorkeeper cleared, so old
popularity fades. Counters are held one per byte (halving is then one C-level ``bytes.translate``).

Memory: for ``n`` tracked keys (the capacity in entries when weights are 1, otherwise the resident count,
grown by doubling) the sketch holds ``8 × n`` counter bytes and ``n`` doorkeeper bytes (8 bits per key),
rounded up to powers of two: about 9 bytes per tracked key; ``n`` is capped at ``MAX_TRACKED_KEYS``
(2**20), so the sketch never exceeds ~9.4 MiB however many keys pass through. Resident entries themselves
cost one ordered-dict slot (key → weight) each, on top of the store's own dict.

Keys are hashed with Python's ``hash`` (cached on ``str`` objects, so the hit path pays for it once), which
is salted per process: two runs may differ by sketch collisions, never by more than noise.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["MAX_TRACKED_KEYS", "AdmissionPolicy", "FrequencySketch"]

MAX_TRACKED_KEYS = 1 << 20
_MIN_TRACKED_KEYS = 16
_COUNTERS_PER_KEY = 8  # table slots per tracked key; each key maps to 4 of them
_COUNTER_MAX = 15  # 4-bit counters
_SAMPLE_FACTOR = 10  # accesses per aging period, per tracked key (the TinyLFU paper's W/C = 10)
_HALVE = bytes(i >> 1 for i in range(256))
_LOW32 = 0xFFFFFFFF

_INITIAL_WINDOW = 0.01  # window share of the capacity before the climber moves it (Caffeine's 1 %)
_PROTECTED_SHARE = 0.8  # of the main region
_CLIMB_STEP = 0.0625  # restart step: 6.25 % of the capacity
_CLIMB_DECAY = 0.98
_CLIMB_RESTART = 0.05  # a hit-ratio change this large restarts the step at full size


class FrequencySketch:
    """Approximate access counts of keys in a bounded table (count-min, 4-bit counters, doorkeeper, aging)."""

    __slots__ = ("_door", "_door_mask", "_mask", "_samples", "_table", "sample_size", "tracked")

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
        self._samples = 0

    def increment(self, key: str) -> None:
        h = hash(key)
        self._samples += 1
        if self._samples >= self.sample_size:
            self._age()
        low, high = h & _LOW32, ((h >> 32) & _LOW32) | 1
        bit = (high >> 3) & self._door_mask
        door, byte, flag = self._door, bit >> 3, 1 << (bit & 7)
        if not door[byte] & flag:
            door[byte] |= flag  # first sighting in this period: remembered by the doorkeeper only
            return
        table, mask = self._table, self._mask
        # Double hashing (Kirsch-Mitzenmacher): four slots from two 32-bit halves.
        i = low & mask
        if table[i] < _COUNTER_MAX:
            table[i] += 1
        i = (low + high) & mask
        if table[i] < _COUNTER_MAX:
            table[i] += 1
        i = (low + 2 * high) & mask
        if table[i] < _COUNTER_MAX:
            table[i] += 1
        i = (low + 3 * high) & mask
        if table[i] < _COUNTER_MAX:
            table[i] += 1

    def frequency(self, key: str) -> int:
        """Estimated accesses this period (0-16): the least of the key's counters, plus its door bit."""
        h = hash(key)
        low, high = h & _LOW32, ((h >> 32) & _LOW32) | 1
        bit = (high >> 3) & self._door_mask
        if not self._door[bit >> 3] & (1 << (bit & 7)):
            return 0
        table, mask = self._table, self._mask
        return 1 + min(
            table[low & mask],
            table[(low + high) & mask],
            table[(low + 2 * high) & mask],
            table[(low + 3 * high) & mask],
        )

    def _age(self) -> None:
        self._table = self._table.translate(_HALVE)
        self._door = bytearray(len(self._door))
        self._samples //= 2

    @property
    def memory_bytes(self) -> int:
        return len(self._table) + len(self._door)


class AdmissionPolicy:
    """Decides which keys an L1 of ``capacity`` weight units keeps; the store holds the values.

    ``touch`` on every lookup (hit or miss), ``add`` after a miss was fetched, ``discard`` when the store
    drops a key itself. Weights are bytes in the store, 1 per entry in simulations.
    """

    def __init__(self, capacity: int, *, adaptive: bool = True, window: float = _INITIAL_WINDOW) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be a positive integer, got {capacity!r}")
        if not 0.0 <= window < 1.0:
            raise ValueError(f"window must be a fraction in [0, 1), got {window!r}")
        self.capacity = capacity
        self.adaptive = adaptive
        self.weight = 0
        self._window: OrderedDict[str, int] = OrderedDict()  # least recently used first
        self._probation: OrderedDict[str, int] = OrderedDict()
        self._protected: OrderedDict[str, int] = OrderedDict()
        self._window_weight = 0
        self._protected_weight = 0
        self._window_max = int(capacity * window)
        self._protected_max = int((capacity - self._window_max) * _PROTECTED_SHARE)
        # Weights of 1 (simulations): track `capacity` keys now; weighted: start small, grow with residents.
        self.sketch = FrequencySketch(min(capacity, 1024))
        # Hill climber state: requests and misses in the current sample, previous sample's hit ratio.
        self._requests = 0
        self._misses = 0
        self._previous_hit_ratio = 0.0
        self._step = -_CLIMB_STEP * capacity
        self._climb_sample = self.sketch.sample_size

    # -- public API ------------------------------------------------------------------------------------

    def __contains__(self, key: object) -> bool:
        return key in self._protected or key in self._window or key in self._probation

    def __len__(self) -> int:
        return len(self._window) + len(self._probation) + len(self._protected)

    @property
    def window_capacity(self) -> int:
        """Current window share of the capacity (moved by the hill climber)."""
        return self._window_max

    def touch(self, key: str) -> bool:
        """Record an access to ``key``; True (and the key promoted) if it is resident."""
        self.sketch.increment(key)
        self._requests += 1
        if self._requests >= self._climb_sample and self.adaptive:
            self._climb()
        protected = self._protected
        if key in protected:
            protected.move_to_end(key)
            return True
        window = self._window
        if key in window:
            window.move_to_end(key)
            return True
        weight = self._probation.pop(key, None)
        if weight is not None:
            protected[key] = weight
            self._protected_weight += weight
            if self._protected_weight > self._protected_max:
                self._demote_protected()
            return True
        self._misses += 1
        return False

    def add(self, key: str, weight: int) -> list[str]:
        """Insert ``key`` (after a miss); returns the keys evicted, ``key`` itself if it was not admitted.

        Adding a resident key updates its weight (and counts as a use).
        """
        if weight < 0:
            raise ValueError(f"weight must be >= 0, got {weight}")
        if key in self:
            self._reweigh(key, weight)
        elif weight > self.capacity:
            return [key]
        else:
            self._window[key] = weight
            self._window_weight += weight
            self.weight += weight
            if len(self) > self.sketch.tracked and self.sketch.tracked < MAX_TRACKED_KEYS:
                self.sketch.resize(2 * self.sketch.tracked)
                self._climb_sample = self.sketch.sample_size
        candidates = self._drain_window() if self._window_weight > self._window_max else []
        if self.weight <= self.capacity:
            return []
        return self._evict(candidates)

    def discard(self, key: str) -> None:
        """Forget ``key`` (deleted, expired or purged by the store); no-op if it is not resident."""
        weight = self._window.pop(key, None)
        if weight is not None:
            self._window_weight -= weight
        else:
            weight = self._protected.pop(key, None)
            if weight is not None:
                self._protected_weight -= weight
            else:
                weight = self._probation.pop(key, None)
                if weight is None:
                    return
        self.weight -= weight

    def clear(self) -> None:
        """Forget every resident key (the frequency history is kept)."""
        for region in (self._window, self._probation, self._protected):
            region.clear()
        self.weight = self._window_weight = self._protected_weight = 0

    # -- internals -------------------------------------------------------------------------------------

    def _reweigh(self, key: str, weight: int) -> None:
        for region in (self._window, self._probation, self._protected):
            old = region.get(key)
            if old is not None:
                region[key] = weight
                region.move_to_end(key)
                delta = weight - old
                self.weight += delta
                if region is self._window:
                    self._window_weight += delta
                elif region is self._protected:
                    self._protected_weight += delta
                return

    def _drain_window(self) -> list[str]:
        """Move the window's least recently used keys to probation until it fits; they become candidates."""
        window, probation = self._window, self._probation
        candidates: list[str] = []
        while self._window_weight > self._window_max and window:
            key, weight = window.popitem(last=False)
            self._window_weight -= weight
            probation[key] = weight
            candidates.append(key)
        return candidates

    def _evict(self, candidates: list[str]) -> list[str]:
        evicted: list[str] = []
        probation, protected, frequency = self._probation, self._protected, self.sketch.frequency
        pending = iter(candidates)
        while self.weight > self.capacity:
            candidate = next(pending, None)
            if candidate is None:
                evicted.append(self._evict_lru())
                continue
            weight = probation.get(candidate)
            if weight is None:
                continue
            need = min(weight, self.weight - self.capacity)
            victims: list[str] = []
            freed = 0
            for region in (probation, protected):
                for victim in region:
                    if freed >= need:
                        break
                    if victim != candidate:
                        victims.append(victim)
                        freed += region[victim]
            candidate_frequency = frequency(candidate)
            if freed >= need and all(frequency(victim) < candidate_frequency for victim in victims):
                for victim in victims:
                    self.discard(victim)
                evicted.extend(victims)
            else:
                self.discard(candidate)
                evicted.append(candidate)
        return evicted

    def _evict_lru(self) -> str:
        """Plain eviction when no candidate is pending: probation's LRU, then protected's, then window's."""
        for region in (self._probation, self._protected, self._window):
            if region:
                key = next(iter(region))
                self.discard(key)
                return key
        raise AssertionError("over capacity with nothing resident")  # weight tracks residents exactly

    def _demote_protected(self) -> None:
        protected, probation = self._protected, self._probation
        while self._protected_weight > self._protected_max and protected:
            key, weight = protected.popitem(last=False)
            self._protected_weight -= weight
            probation[key] = weight

    def _climb(self) -> None:
        """One hill-climbing step on the window size, from the hit ratio of the sample just completed."""
        hit_ratio = 1.0 - self._misses / self._requests
        change = hit_ratio - self._previous_hit_ratio
        amount = self._step if change >= 0 else -self._step
        if abs(change) >= _CLIMB_RESTART:
            self._step = _CLIMB_STEP * self.capacity * (1 if amount >= 0 else -1)
        else:
            self._step = _CLIMB_DECAY * amount
        self._previous_hit_ratio = hit_ratio
        self._requests = self._misses = 0
        self._resize_window(int(amount))

    def _resize_window(self, amount: int) -> None:
        # The window stays within [0, capacity - 1]: main always keeps room for at least one unit.
        target = max(0, min(self.capacity - 1, self._window_max + amount))
        if target == self._window_max:
            return
        growing = target > self._window_max
        self._window_max = target
        self._protected_max = int((self.capacity - target) * _PROTECTED_SHARE)
        if growing:
            # Give the window main's least valuable entries (probation first) as its oldest ones.
            window = self._window
            moved: list[tuple[str, int]] = []
            room = target - self._window_weight
            for region in (self._probation, self._protected):
                while region and room > 0:
                    key, weight = region.popitem(last=False)
                    if region is self._protected:
                        self._protected_weight -= weight
                    moved.append((key, weight))
                    room -= weight
            if moved:
                older = list(window.items())
                window.clear()
                window.update(moved)
                window.update(older)
                self._window_weight += sum(weight for _, weight in moved)
        else:
            self._drain_window()  # overflow joins probation without an admission test: nothing is evicted
        if self._protected_weight > self._protected_max:
            self._demote_protected()
