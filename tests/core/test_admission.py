from __future__ import annotations

import pytest
from cachetools import LRUCache
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecache.core.admission import MAX_TRACKED_KEYS, AdmissionPolicy, FrequencySketch


def access(policy: AdmissionPolicy, key: str, weight: int = 1) -> tuple[bool, list[str]]:
    if policy.touch(key):
        return True, []
    return False, policy.add(key, weight)


# -- frequency sketch ------------------------------------------------------------------------------------


def test_sketch_first_sighting_only_sets_the_doorkeeper():
    sketch = FrequencySketch(1000)
    assert sketch.frequency("a") == 0
    sketch.increment("a")
    assert sketch.frequency("a") == 1
    sketch.increment("a")
    assert sketch.frequency("a") == 2


def test_sketch_counters_saturate_at_four_bits():
    sketch = FrequencySketch(1000)
    for _ in range(100):
        sketch.increment("hot")
    assert sketch.frequency("hot") == 16  # 15 in the counters + the doorkeeper bit


def test_sketch_halves_counts_and_clears_the_doorkeeper_every_sample_period():
    sketch = FrequencySketch(16)
    for _ in range(9):
        sketch.increment("hot")
    assert sketch.frequency("hot") == 9
    # Fill the rest of the period with other keys; the period ends on the sample_size-th increment.
    for i in range(sketch.sample_size - 9):
        sketch.increment(f"cold{i % 4}")
    assert sketch.frequency("hot") == 0  # the door bit is gone, so the key reads as unseen...
    sketch.increment("hot")
    assert sketch.frequency("hot") == 1 + 4  # ...and its counters (8, hence 4 after halving) come back


def test_sketch_memory_is_about_nine_bytes_per_tracked_key_and_capped():
    assert FrequencySketch(1000).memory_bytes == 9 * 1024
    assert FrequencySketch(10**9).memory_bytes == 9 * MAX_TRACKED_KEYS


# -- policy ----------------------------------------------------------------------------------------------


def test_rejects_a_non_positive_capacity():
    with pytest.raises(ValueError, match="capacity must be a positive integer"):
        AdmissionPolicy(0)


def test_touch_reports_residence_and_add_inserts():
    policy = AdmissionPolicy(10)
    assert policy.touch("a") is False
    assert policy.add("a", 3) == []
    assert policy.touch("a") is True
    assert "a" in policy
    assert len(policy) == 1
    assert policy.weight == 3


def test_object_heavier_than_the_capacity_is_rejected_alone():
    policy = AdmissionPolicy(10)
    policy.add("a", 5)
    assert policy.add("big", 11) == ["big"]
    assert "big" not in policy
    assert policy.weight == 5


def test_discard_forgets_a_key_and_its_weight():
    policy = AdmissionPolicy(10)
    policy.add("a", 4)
    policy.add("b", 2)
    policy.discard("a")
    policy.discard("never-added")
    assert "a" not in policy
    assert policy.weight == 2
    assert len(policy) == 1


def test_re_adding_a_resident_key_updates_its_weight():
    policy = AdmissionPolicy(10)
    policy.add("a", 4)
    assert policy.add("a", 7) == []
    assert policy.weight == 7
    assert len(policy) == 1


def test_a_one_hit_wonder_flood_does_not_evict_the_hot_set_while_lru_would():
    # 80 hot keys requested round-robin, each request followed by a key requested once (cache busting):
    # a hot key comes back after 160 distinct keys, beyond the reach of an LRU of 100.
    capacity = 100
    hot = [f"hot{i}" for i in range(80)]
    policy = AdmissionPolicy(capacity)
    lru: LRUCache[str, bool] = LRUCache(capacity)
    policy_hits = lru_hits = 0
    for i in range(20_000):
        for key in (hot[i % len(hot)], f"flood{i}"):
            hit, _ = access(policy, key)
            policy_hits += hit
            lru_hits += key in lru
            lru[key] = True

    assert sum(key in policy for key in hot) >= 75
    assert lru_hits == 0  # every hot key was evicted before it came back
    assert policy_hits >= 0.9 * 20_000


def test_a_large_candidate_must_beat_every_victim_it_would_displace():
    policy = AdmissionPolicy(10, adaptive=False, window=0.0)
    for key in ("a", "b", "c", "d", "e"):
        policy.add(key, 2)
    for _ in range(3):
        for key in ("a", "b", "c", "d", "e"):
            policy.touch(key)
    policy.touch("big")
    policy.touch("big")  # freq 2: below every resident (4 each)

    assert policy.add("big", 4) == ["big"]

    for _ in range(6):
        policy.touch("big")  # freq 8: above all of them
    evicted = policy.add("big", 4)
    assert len(evicted) == 2
    assert "big" in policy
    assert policy.weight == 10


def test_window_grows_on_a_recency_trace_and_shrinks_on_a_frequency_one():
    # Recency: a loop over 1.5x the capacity defeats LRU, a sliding working set rewards it.
    policy = AdmissionPolicy(100)
    start = policy.window_capacity
    for i in range(60_000):
        base = i // 50
        access(policy, f"k{base + i % 40}")
    assert policy.window_capacity > start


@settings(max_examples=200, deadline=None)
@given(
    capacity=st.integers(1, 30),
    operations=st.lists(
        st.tuples(st.sampled_from(["access", "discard"]), st.integers(0, 40), st.integers(0, 12)),
        max_size=300,
    ),
)
def test_weight_and_residence_stay_consistent(capacity: int, operations: list[tuple[str, int, int]]):
    policy = AdmissionPolicy(capacity)
    resident: dict[str, int] = {}
    for operation, number, weight in operations:
        key = f"k{number}"
        if operation == "discard":
            policy.discard(key)
            resident.pop(key, None)
            continue
        hit, evicted = access(policy, key, weight)
        assert hit == (key in resident)
        if not hit:
            resident[key] = weight
            for gone in evicted:
                assert gone in resident
                del resident[gone]
        assert policy.weight == sum(resident.values()) <= capacity
        assert len(policy) == len(resident)
        assert all(key in policy for key in resident)
