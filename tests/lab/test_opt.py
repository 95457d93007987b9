"""Belady's OPT against an exhaustive search over every eviction choice on small traces."""

from __future__ import annotations

import random
from functools import cache
from itertools import combinations

import pytest

from edgecache.lab.opt import belady, next_uses, upper_bound
from edgecache.lab.policies import POLICIES


def brute_force(keys: tuple[int, ...], capacity: int, weight: dict[int, int] | None = None) -> int:
    """The most hits any schedule gets: on a miss, store the object or not, evicting any set of residents.

    ``weight`` maps a key to its weight (default 1). Exponential: for traces of a dozen requests.
    """
    weight = weight or dict.fromkeys(keys, 1)

    @cache
    def best(i: int, resident: frozenset[int]) -> int:
        if i == len(keys):
            return 0
        key = keys[i]
        if key in resident:
            return 1 + best(i + 1, resident)
        options = [best(i + 1, resident)]  # bypass
        if weight[key] <= capacity:
            residents = sorted(resident)
            for n in range(len(residents) + 1):
                for evicted in combinations(residents, n):
                    kept = resident - frozenset(evicted)
                    if sum(weight[k] for k in kept) + weight[key] <= capacity:
                        options.append(best(i + 1, kept | {key}))
        return max(options)

    return best(0, frozenset())


def test_next_uses():
    assert next_uses([1, 2, 1, 1, 3]) == [2, 5, 3, 5, 5]


@pytest.mark.parametrize("seed", range(60))
def test_opt_is_exact_for_entry_capacities(seed):
    rng = random.Random(seed)
    keys = [rng.randrange(rng.randint(2, 6)) for _ in range(rng.randint(1, 12))]
    capacity = rng.randint(1, 3)
    hits, _ = belady(keys, [1] * len(keys), [1] * len(keys), capacity)
    assert hits == brute_force(tuple(keys), capacity)


def test_opt_on_a_hand_worked_trace():
    # capacity 2: 1 2 | 3 evicts 2 (next used furthest) | 1 hit | 2 miss, bypassed or evicting 3 | 3 ...
    keys = [1, 2, 3, 1, 2, 3, 1]
    hits, hit_bytes = belady(keys, [1] * 7, [10] * 7, 2)
    assert (hits, hit_bytes) == (brute_force(tuple(keys), 2), 10 * hits)
    assert hits == 3


@pytest.mark.parametrize("seed", range(40))
def test_byte_opt_is_feasible_so_a_lower_bound(seed):
    """With sizes the approximation is a real schedule: never more hits than the true optimum."""
    rng = random.Random(1000 + seed)
    universe = rng.randint(2, 5)
    weight = {k: rng.randint(1, 4) for k in range(universe)}
    keys = [rng.randrange(universe) for _ in range(rng.randint(1, 11))]
    capacity = rng.randint(1, 6)
    weights = [weight[k] for k in keys]
    hits, _ = belady(keys, weights, weights, capacity)
    by_size, _ = belady(keys, weights, weights, capacity, size_aware=True)
    best = brute_force(tuple(keys), capacity, weight)
    assert max(hits, by_size) <= best <= upper_bound(keys, weights, capacity)


def test_byte_opt_prefers_what_is_needed_soonest_and_bypasses_what_does_not_fit():
    # capacity 5: 1 (w4) then 2 (w3) does not fit beside 1; 1 is needed next, so 2 is bypassed.
    keys = [1, 2, 1, 2, 9]
    weights = [4, 3, 4, 3, 6]
    hits, hit_bytes = belady(keys, weights, weights, 5)
    assert (hits, hit_bytes) == (1, 4)


@pytest.mark.parametrize("name", list(POLICIES))
def test_no_policy_beats_opt(name):
    rng = random.Random(3)
    keys = [min(int(rng.paretovariate(0.6)), 300) for _ in range(5000)]
    ones = [1] * len(keys)
    optimum, _ = belady(keys, ones, ones, 20)
    policy = POLICIES[name](20, entries=20, ttl=1000.0)
    hits = sum(policy.access(k, 1, float(i)) for i, k in enumerate(keys))
    assert hits <= optimum


def test_zero_capacity_hits_nothing():
    assert belady([1, 1], [1, 1], [1, 1], 0) == (0, 0)


def test_upper_bound_by_hand():
    # Holding 1 (w2) from request 0 to 2 costs 2 × 2 = 4 byte-steps, 2 (w1) from 1 to 4 costs 1 × 3 = 3.
    # Capacity 1 (a budget of 1 × 5): 1 never fits, 2's interval does: one hit at most. Capacity 2 (budget
    # 10): both intervals fit.
    assert upper_bound([1, 2, 1, 3, 2], [2, 1, 2, 1, 1], 1) == 1
    assert upper_bound([1, 2, 1, 3, 2], [2, 1, 2, 1, 1], 2) == 2
    assert upper_bound([1, 1], [1, 1], 0) == 0


def test_size_aware_ranking_keeps_many_small_objects():
    # capacity 4: one large object (w4) or two small ones (w2) that are asked for a little later
    keys = [9, 1, 2, 9, 1, 2, 9, 1, 2]
    weights = [4, 2, 2] * 3
    plain, _ = belady(keys, weights, weights, 4)
    by_size, _ = belady(keys, weights, weights, 4, size_aware=True)
    assert (plain, by_size) == (2, 4)
    assert by_size == brute_force(tuple(keys), 4, {9: 4, 1: 2, 2: 2})
