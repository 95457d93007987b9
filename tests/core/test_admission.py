from __future__ import annotations

import random

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


def test_sketch_halve_halves_counts_and_clears_the_doorkeeper():
    sketch = FrequencySketch(16)
    for _ in range(9):
        sketch.increment("hot")
    assert sketch.frequency("hot") == 9

    sketch.halve()

    assert sketch.frequency("hot") == 4  # 8 in the counters, halved; the door bit is gone
    sketch.increment("hot")
    assert sketch.frequency("hot") == 5  # the first sighting of the period only sets the door bit


def test_sketch_raise_to_never_lowers_an_estimate():
    sketch = FrequencySketch(64)
    sketch.raise_to("a", 6)
    assert sketch.frequency("a") == 6
    sketch.raise_to("a", 3)
    assert sketch.frequency("a") == 6
    sketch.raise_to("a", 100)
    assert sketch.frequency("a") == 16


def test_policy_ages_frequencies_every_sample_period():
    policy = AdmissionPolicy(16, adaptive=False)
    policy.add("hot", 1)
    for _ in range(12):
        policy.touch("hot")
    assert policy._counts["hot"] == 12
    for i in range(policy.sketch.sample_size - 12):
        policy.touch(f"cold{i}")
    assert policy._counts["hot"] == 6


def test_sketch_memory_is_about_nine_bytes_per_tracked_key_and_capped():
    assert FrequencySketch(1000).memory_bytes == 9 * 1024
    assert FrequencySketch(10**9).memory_bytes == 9 * MAX_TRACKED_KEYS


# -- policy ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "window_hot", "named"),
    [(1.0, 0.2, "window"), (-0.1, 0.2, "window"), (0.01, 1.0, "window_hot"), (0.01, -0.5, "window_hot")],
)
def test_rejects_a_share_outside_zero_to_one(window: float, window_hot: float, named: str):
    with pytest.raises(ValueError, match=f"^{named} must be a fraction"):
        AdmissionPolicy(100, window=window, window_hot=window_hot)


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


def _main_of_five_hot_keys() -> AdmissionPolicy:
    """Capacity 10, no window: main holds a..e (weight 2 each), each asked for 4 times."""
    policy = AdmissionPolicy(10, adaptive=False, window=0.0)
    for key in ("a", "b", "c", "d", "e"):
        policy.touch(key)
        policy.add(key, 2)
    for _ in range(3):
        for key in ("a", "b", "c", "d", "e"):
            policy.touch(key)
    return policy


def test_the_newest_key_stays_until_the_next_add():
    policy = _main_of_five_hot_keys()
    policy.touch("new")

    evicted = policy.add("new", 4)  # no window: it overfills the window, main's two oldest make room

    assert "new" in policy
    assert len(evicted) == 2
    assert policy.weight == 10


def test_a_large_candidate_must_beat_every_victim_it_would_displace():
    policy = _main_of_five_hot_keys()
    for _ in range(2):
        policy.touch("big")  # 2 accesses: fewer than any resident (4)
    policy.add("big", 4)
    policy.touch("next")

    evicted = policy.add("next", 1)  # "big" leaves the window and meets the filter

    assert evicted == ["big"]
    assert policy.weight == 6 + 1


def test_a_large_candidate_more_frequent_than_its_victims_is_admitted():
    policy = _main_of_five_hot_keys()
    for _ in range(8):
        policy.touch("big")
    policy.add("big", 4)
    policy.touch("next")

    evicted = policy.add("next", 1)

    assert "big" in policy
    assert "big" not in evicted
    assert policy.weight <= 10


def test_window_grows_when_rejected_candidates_come_back():
    # A working set sliding over fresh keys: each key is asked for a few times in a row of
    # requests and never again. The frequency filter turns the new keys away; recency is what pays.
    policy = AdmissionPolicy(100)
    start = policy.window_capacity
    for i in range(60_000):
        access(policy, f"k{i // 50 + i % 60}")
    assert policy.window_capacity > 50 > start


def test_window_shrinks_on_skewed_traffic_with_one_hit_wonders():
    # Every other request is a key never seen again; the rest are skewed over 120 keys.
    policy = AdmissionPolicy(100, window=0.5)
    rng = random.Random(1)
    for i in range(60_000):
        access(policy, f"hot{int(120 * rng.random() ** 3)}" if i % 2 else f"once{i}")
    assert policy.window_capacity < 5


def test_growing_the_window_keeps_main_entries_that_are_still_hit():
    # The window jumps from 1 % to the whole capacity (what adaptation does, in steps, on recency-biased
    # traffic). Main then shrinks by losing its least recently used entries; the ones still being hit
    # move to the window instead of being flushed with the idle ones (each flush would cost a miss).
    policy = AdmissionPolicy(100, adaptive=False)
    for round_ in range(5):
        for i in range(100):
            access(policy, f"cold{i}" if round_ < 4 else f"hot{i % 20}")
    hot = [f"hot{i}" for i in range(20)]
    assert all(key in policy for key in hot)
    policy._resize_window(policy.capacity)
    assert all(access(policy, key)[0] for key in hot)
    misses = 0
    for i in range(300):
        access(policy, f"new{i}")
        misses += not access(policy, hot[i % 20])[0]
    assert misses == 0
    assert policy.window_capacity == 99 and len(policy) == 100


@pytest.mark.parametrize(("window_hot", "kept"), [(0.2, True), (0.0, False)])
def test_a_key_hit_in_the_window_outlives_a_flood_of_new_keys(window_hot: float, kept: bool):
    # Main is full of keys more frequent than "again", so the filter would turn it away if it left the
    # window. Hit while in the window, it moves to the window's hot segment, which a flood of keys seen
    # once passes by; with a plain LRU window (window_hot=0, Caffeine's) the flood pushes it out.
    policy = AdmissionPolicy(100, adaptive=False, window=0.5, window_hot=window_hot)
    for _ in range(6):
        for i in range(100):
            access(policy, f"main{i % 50}")
    assert all(f"main{i}" in policy for i in range(50))
    assert access(policy, "again") == (False, [])
    assert access(policy, "again")[0]
    for i in range(200):
        access(policy, f"once{i}")
    assert ("again" in policy) is kept
    assert all(f"main{i}" in policy for i in range(50))


def test_the_hot_segment_drains_when_the_cold_one_holds_only_the_new_key():
    policy = AdmissionPolicy(100, adaptive=False, window=0.5)  # window 50, its hot segment 10
    access(policy, "hit", 10)
    assert access(policy, "hit")[0]  # now the hot segment's only entry; the cold segment is empty

    access(policy, "big", 45)  # the window holds 55: the cold segment has only "big", which stays

    assert "big" in policy._window and "hit" in policy._probation
    assert policy._window_weight == 45 and policy._window_hot_weight == 0
    _assert_region_weights(policy)


def test_an_entry_of_the_hot_segment_stored_again_heavier_than_it_cools():
    policy = AdmissionPolicy(100, adaptive=False, window=0.5)  # window 50, its hot segment 10
    access(policy, "a", 5)
    assert access(policy, "a")[0]
    assert "a" in policy._window_hot

    assert policy.add("a", 20) == []  # the response was replaced by a bigger one

    assert "a" in policy._window and policy._window_hot_weight == 0
    assert policy.weight == 20
    _assert_region_weights(policy)


@settings(max_examples=200, deadline=None)
@given(
    capacity=st.integers(1, 30),
    operations=st.lists(
        st.tuples(
            st.sampled_from(["access", "access", "discard", "resize"]), st.integers(0, 40), st.integers(0, 12)
        ),
        max_size=300,
    ),
    window=st.sampled_from([0.01, 0.3, 0.9]),
)
def test_weight_and_residence_stay_consistent(
    capacity: int, operations: list[tuple[str, int, int]], window: float
):
    policy = AdmissionPolicy(capacity, window=window)
    resident: dict[str, int] = {}
    for operation, number, weight in operations:
        key = f"k{number}"
        if operation == "discard":
            policy.discard(key)
            resident.pop(key, None)
            continue
        if operation == "resize":  # what adaptation does, by any amount: nothing is evicted
            policy._resize_window(number - 20)
            assert len(policy) == len(resident)
            _assert_region_weights(policy)
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
        _assert_region_weights(policy)


def _assert_region_weights(policy: AdmissionPolicy) -> None:
    hot = sum(policy._window_hot.values())
    assert policy._window_hot_weight == hot <= policy._window_hot_max
    assert policy._window_weight == sum(policy._window.values()) + hot
    assert policy._protected_weight == sum(policy._protected.values())
    assert policy.weight == policy._window_weight + policy._protected_weight + sum(policy._probation.values())
