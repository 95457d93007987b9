"""Replacement policies: one contract every policy meets, then hand-worked traces per policy."""

from __future__ import annotations

import random

import pytest

from edgecache.core.admission import AdmissionPolicy
from edgecache.lab.policies import (
    FIFO,
    LFU,
    LRU,
    POLICIES,
    S3FIFO,
    Edgecache,
    Policy,
    TTLOnly,
    WTinyLFU,
    shipped_l1,
)
from edgecache.lab.traces import TraceSpec, generate


def _hits(
    policy: Policy,
    keys: list[int],
    weights: list[int] | None = None,
    times: list[float] | None = None,
) -> list[bool]:
    weights = weights or [1] * len(keys)
    times = times or [float(i) for i in range(len(keys))]
    return [policy.access(k, w, t) for k, w, t in zip(keys, weights, times, strict=True)]


# -- the contract ---------------------------------------------------------------------------------------


def _resident(policy: Policy, now: float) -> set[int]:
    return policy.resident_at(now) if isinstance(policy, TTLOnly) else policy.resident()


@pytest.mark.parametrize("name", list(POLICIES))
@pytest.mark.parametrize("capacity", [1, 7, 50])
def test_contract_entries(name, capacity):
    """A hit exactly when the key is resident; never more residents than the capacity."""
    rng = random.Random(capacity)
    policy = POLICIES[name](capacity, entries=capacity, ttl=30.0)
    hits = 0
    for i in range(3000):
        key = min(int(rng.paretovariate(0.7)), 200)
        before = _resident(policy, i * 0.1)
        hit = policy.access(key, 1, i * 0.1)
        assert hit == (key in before)
        assert len(policy.resident()) <= capacity
        hits += hit
    assert hits > 0  # the trace is skewed enough that every policy hits sometimes


@pytest.mark.parametrize("name", list(POLICIES))
def test_contract_bytes(name):
    """Weighted: resident weight within the capacity; an object heavier than the cache is never stored."""
    rng = random.Random(5)
    capacity = 10_000
    sizes = {k: rng.choice([100, 700, 3000, 20_000]) for k in range(100)}
    policy = POLICIES[name](capacity, entries=10, ttl=30.0)
    for i in range(3000):
        key = min(int(rng.paretovariate(0.8)), 99)
        before = _resident(policy, i * 0.1)
        assert policy.access(key, sizes[key], i * 0.1) == (key in before)
        resident = policy.resident()
        assert sum(sizes[k] for k in resident) <= capacity
        assert all(sizes[k] <= capacity for k in resident)


# -- hand-worked traces -----------------------------------------------------------------------------------

TRACE = [1, 2, 1, 3, 2, 1]


def test_lru():
    policy = LRU(2)
    # 1 2 | 1 hit (order 2,1) | 3 evicts 2 | 2 evicts 1 | 1 evicts 3
    assert _hits(policy, TRACE) == [False, False, True, False, False, False]
    assert policy.resident() == {2, 1}


def test_fifo_hits_do_not_reorder():
    policy = FIFO(2)
    # 1 2 | 1 hit (order stays 1,2) | 3 evicts 1 | 2 hit | 1 evicts 2
    assert _hits(policy, TRACE) == [False, False, True, False, True, False]
    assert policy.resident() == {3, 1}


def test_lfu_evicts_the_least_frequent():
    policy = LFU(2)
    # 1 2 | 1 (count 2) | 3 evicts 2 (count 1) | 2 evicts 3 (count 1) | 1 hit
    assert _hits(policy, TRACE) == [False, False, True, False, False, True]
    assert policy.resident() == {1, 2}


def test_lfu_breaks_ties_by_recency_and_forgets_evicted_counts():
    policy = LFU(2)
    # 1 and 2 both count 1: 3 evicts 1, the less recent. Then 1 comes back with a count of 1 (its old count
    # was forgotten) and evicts 3 (count 1, older than 2's second access).
    assert _hits(policy, [1, 2, 3, 2, 1, 2]) == [False, False, False, True, False, True]
    assert policy.resident() == {1, 2}


def test_lfu_heap_stays_bounded_on_long_runs():
    policy = LFU(3)
    _hits(policy, [1, 2, 3] * 2000)
    assert len(policy._heap) <= 4 * 3 + 64 + 1


def test_ttl_expires_and_does_not_evict():
    policy = TTLOnly(10, ttl=2.5)
    # stored at t=0, expires at 2.5: hits at 1 and 2, a miss at 3 (stored again)
    assert _hits(policy, [1, 1, 1, 1]) == [False, True, True, False]
    full = TTLOnly(1, ttl=100.0)
    # a full TTL-only cache stores nothing new: 2 is not stored, 1 stays
    assert _hits(full, [1, 2, 1, 2]) == [False, False, True, False]
    assert full.resident() == {1}


def test_w_tinylfu_keeps_the_frequent_key_against_new_ones():
    policy = WTinyLFU(2, entries=2)  # window 0 (the newest key stays there until the next add), main 2
    # 1 ×3 (estimated frequency 3); 2 pushes 1 from the window into main; 3 pushes 2 out of the window: 2
    # (frequency 1) loses against main's victim 1 (frequency 3) and is dropped. LRU would have dropped 1.
    assert _hits(policy, [1, 1, 1, 2, 3, 1]) == [False, True, True, False, False, True]
    assert policy.resident() == {1, 3}
    assert _hits(LRU(2), [1, 1, 1, 2, 3, 1]) == [False, True, True, False, False, False]


def test_s3_fifo_small_main_and_ghost():
    policy = S3FIFO(4)  # small 1, main 3, ghost 3
    # 1 (then a hit: freq 1), 2 3 4 fill; 5 overflows: 1 leaves small for main (it was hit), 2 (never hit)
    # leaves for the ghost. 2 again: a ghost hit goes straight to main, and 3 leaves small for the ghost.
    assert _hits(policy, [1, 1, 2, 3, 4, 5]) == [False, True, False, False, False, False]
    assert policy.resident() == {1, 3, 4, 5}
    assert not policy.access(2, 1, 0.0)
    assert policy.resident() == {1, 2, 4, 5}
    assert set(policy._main) == {1, 2}
    assert set(policy._ghost) == {3}


@pytest.mark.parametrize("policy_class", [WTinyLFU, S3FIFO])
def test_admission_policies_resist_a_scan(policy_class):
    """A warm hot set survives a scan of one-hit wonders twice the cache's size; under LRU it does not."""
    hot = list(range(50))
    warm = hot * 5
    scan = list(range(1000, 1200))
    after = hot
    for cls, expect_kept in ((policy_class, 40), (LRU, 0)):
        policy = cls(100, entries=100)
        _hits(policy, warm + scan)
        kept = sum(_hits(policy, after))
        if cls is LRU:
            assert kept == expect_kept
        else:
            assert kept >= expect_kept


def test_w_tinylfu_is_the_shipped_policy_with_a_fixed_window():
    """The lab's W-TinyLFU is core.admission's policy with adaptation off and a plain LRU window (its
    sketch, aging and admission are tested in tests/core/test_admission.py): the window stays at 1 % while
    the shipped L1's moves, and the hits are those of ``AdmissionPolicy(adaptive=False, window_hot=0.0)``
    driven directly."""
    trace = generate(TraceSpec(keys=2000, requests=30_000, alpha=0.9, seed=1))
    fixed, adaptive = WTinyLFU(200), Edgecache(200)
    direct = AdmissionPolicy(200, adaptive=False, window_hot=0.0)
    fixed_hits = sum(_hits(fixed, trace.keys))
    _hits(adaptive, trace.keys)
    direct_hits = 0
    for key in map(str, trace.keys):
        if direct.touch(key):
            direct_hits += 1
        else:
            direct.add(key, 1)
    assert fixed_hits == direct_hits
    assert fixed.policy.window_capacity == 2  # 1 % of 200
    assert isinstance(adaptive.l1, AdmissionPolicy)
    assert adaptive.l1.window_capacity != 2  # the ghosts moved the shipped window


def test_edgecache_adapter_drives_the_shipped_l1():
    _, description = shipped_l1(10)
    trace = generate(TraceSpec(keys=500, requests=20_000, alpha=1.0))
    ours = Edgecache(20)
    lru = LRU(20)
    a = sum(_hits(ours, trace.keys))
    b = sum(_hits(lru, trace.keys))
    assert ours.description == description
    assert description.startswith("W-TinyLFU")
    assert a > b
