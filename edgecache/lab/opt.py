"""Belady's OPT: the offline optimum, the upper bound no online policy can pass.

Entry capacities (every object weighs 1): exact. On a miss the cache keeps, among its residents and the new
object, the ``capacity`` objects asked for again soonest: it evicts the resident whose next use is furthest,
or does not store the new object at all (a *bypass*) if the new object's own next use is further still.
An object never asked for again is never stored, and a resident's last use drops it. With unit weights this
greedy choice maximises hits (Belady 1966; Mattson et al. 1970); ``tests/lab/test_opt.py`` checks it against
an exhaustive search on small traces. Next uses come from one backward pass; residents sit in a max-heap on
next use with lazy deletion: O(n log n).

Byte capacities (weights = object sizes): the exact problem is NP-hard, and this module gives a documented
**approximation that errs low**. It runs the same rule with sizes — a missed object is stored only if
evicting the residents ranked first for eviction frees enough room *and* each of them ranks above the new
object; otherwise it is bypassed — under two rankings, furthest next use and ``size × distance to the next
use``, and keeps the better result. Each is a feasible offline schedule, so the result is a **lower
bound** on the true optimum. Consequences for reports: the "gap to OPT" of a byte capacity
understates the true gap, and a policy may even come out slightly above this OPT.

To bracket the optimum from above, :func:`upper_bound` relaxes it as PFOO-U does (Berger, Beckmann,
Harchol-Balter 2018): a hit at a request needs the object held since the previous request for it, which
costs ``size × interval`` byte-steps, and a cache of ``capacity`` bytes has ``capacity × n`` byte-steps in
all over ``n`` requests. Keeping only that total budget (not the limit at every instant) and taking the
cheapest intervals first gives at least as many hits as any real schedule. The true byte-capacity OPT lies
between the two.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence


def next_uses(keys: Sequence[int]) -> list[int]:
    """For each request, the index of the next request for the same key, or ``len(keys)`` for never."""
    n = len(keys)
    result = [n] * n
    last: dict[int, int] = {}
    for i in range(n - 1, -1, -1):
        k = keys[i]
        result[i] = last.get(k, n)
        last[k] = i
    return result


def belady(
    keys: Sequence[int],
    weights: Sequence[int],
    sizes: Sequence[int],
    capacity: int,
    *,
    size_aware: bool = False,
) -> tuple[int, int]:
    """OPT's (hits, hit bytes) at ``capacity`` weight units: exact when every weight is 1 (see module doc).

    ``size_aware`` ranks residents by ``weight × requests until the next use`` (as of their last request)
    instead of by next use alone: for byte capacities it keeps many small objects rather than one large one.
    Either ranking gives a feasible schedule, so a lower bound; with unit weights use the plain one (exact).
    """
    if capacity < 1:
        return 0, 0
    nxt = next_uses(keys)
    never = len(keys)
    resident: dict[int, int] = {}  # key -> its eviction priority (higher goes first)
    weight_of: dict[int, int] = {}
    heap: list[tuple[int, int]] = []  # (-priority, key); stale when resident[key] differs
    push, pop = heapq.heappush, heapq.heappop
    used = hits = hit_bytes = 0
    for i, key in enumerate(keys):
        nu = nxt[i]
        if key in resident:
            hits += 1
            hit_bytes += sizes[i]
            if nu == never:  # its last use: free the room now
                del resident[key]
                used -= weight_of.pop(key)
            else:
                priority = (nu - i) * weight_of[key] if size_aware else nu
                resident[key] = priority
                push(heap, (-priority, key))
            continue
        w = weights[i]
        if nu == never or w > capacity:
            continue
        priority = (nu - i) * w if size_aware else nu
        # Collect the residents ranked first for eviction until the new object fits; keep them all if any
        # ranks below the new object (then not storing the new one is the better choice).
        victims: list[tuple[int, int]] = []
        chosen: set[int] = set()
        freed = 0
        keep_new = True
        while used - freed + w > capacity:
            top = pop(heap)
            if resident.get(top[1]) != -top[0] or top[1] in chosen:
                continue  # stale snapshot (or a duplicate of one already taken)
            victims.append(top)
            chosen.add(top[1])
            freed += weight_of[top[1]]
            if -top[0] < priority:
                keep_new = False
                break
        if not keep_new:
            for top in victims:
                push(heap, top)
            continue
        for _, victim in victims:
            del resident[victim]
            used -= weight_of.pop(victim)
        resident[key] = priority
        weight_of[key] = w
        used += w
        push(heap, (-priority, key))
        if len(heap) > 4 * len(resident) + 1024:
            heap = [(-p, k) for k, p in resident.items()]
            heapq.heapify(heap)
    return hits, hit_bytes


def upper_bound(keys: Sequence[int], weights: Sequence[int], capacity: int) -> int:
    """An upper bound on OPT's hits at ``capacity`` weight units (the budget relaxation in the module doc)."""
    if capacity < 1:
        return 0
    nxt = next_uses(keys)
    n = len(keys)
    costs = sorted(weights[i] * (nxt[i] - i) for i in range(n) if nxt[i] < n and weights[i] <= capacity)
    budget = capacity * n
    hits = 0
    for cost in costs:
        if cost > budget:
            break
        budget -= cost
        hits += 1
    return hits
