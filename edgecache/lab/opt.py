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
evicting the residents with the furthest next uses frees enough room *and* each of those residents is needed
later than the new object; otherwise it is bypassed. That is a feasible offline schedule, so its hit ratio
is a **lower bound** on the true optimum (which is at least as high; FOO/PFOO-style bounds, Berger et al.
2018, put the gap at a few points on typical traces). Consequences for reports: the "gap to OPT" of a byte
capacity understates the true gap, and a policy may even come out slightly above this OPT.
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
    keys: Sequence[int], weights: Sequence[int], sizes: Sequence[int], capacity: int
) -> tuple[int, int]:
    """OPT's (hits, hit bytes) at ``capacity`` weight units: exact when every weight is 1 (see module doc)."""
    if capacity < 1:
        return 0, 0
    nxt = next_uses(keys)
    never = len(keys)
    resident: dict[int, int] = {}  # key -> its next use
    weight_of: dict[int, int] = {}
    heap: list[tuple[int, int]] = []  # (-next use, key); stale when resident[key] differs
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
                resident[key] = nu
                push(heap, (-nu, key))
            continue
        w = weights[i]
        if nu == never or w > capacity:
            continue
        # Collect the furthest-needed residents until the new object fits; keep them if any of them is
        # needed before the new object (then bypassing it is the better choice).
        victims: list[tuple[int, int]] = []
        freed = 0
        keep_new = True
        while used - freed + w > capacity:
            top = pop(heap)
            if resident.get(top[1]) != -top[0]:
                continue  # stale snapshot
            victims.append(top)
            freed += weight_of[top[1]]
            if -top[0] < nu:
                keep_new = False
                break
        if not keep_new:
            for top in victims:
                push(heap, top)
            continue
        for _, victim in victims:
            del resident[victim]
            used -= weight_of.pop(victim)
        resident[key] = nu
        weight_of[key] = w
        used += w
        push(heap, (-nu, key))
        if len(heap) > 4 * len(resident) + 1024:
            heap = [(-n, k) for k, n in resident.items()]
            heapq.heapify(heap)
    return hits, hit_bytes
