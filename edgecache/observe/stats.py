"""Plain counters the engine bumps on every request; exporters read them at scrape time.

Counting into a dict costs a fraction of a prometheus_client ``inc()`` (which takes a lock), so the hit
path stays cheap however many exporters are attached.
"""

from __future__ import annotations

from collections import Counter

from edgecache.core.status import Outcome, Reason

_TIERS = {Reason.L1: "l1", Reason.L2: "l2"}


def tier_of(outcome: Outcome) -> str:
    """Which tier answered: ``l1``, ``l2``, or ``origin`` when the app (or upstream) produced the body."""
    if outcome.fwd is None:
        return _TIERS.get(outcome.reason, "l1") if outcome.reason is not None else "l1"
    if outcome.reason is Reason.STALE_IF_ERROR or outcome.reason is Reason.REVALIDATED:
        return "l1"  # the body came from storage although the app was asked
    if outcome.reason is Reason.LEASE:
        return "l2"  # another node's fetch, read from L2
    return "origin"


class ShadowStats:
    """What shadow mode counted: over the same GET/HEAD requests, the live hits and the shadow's."""

    __slots__ = ("live_hits", "requests", "shadow_hits", "spec")

    def __init__(self, spec: str) -> None:
        self.spec = spec  # the candidate configuration, e.g. "ttl=300,query=sorted,admission=on"
        self.requests = 0
        self.live_hits = 0
        self.shadow_hits = 0

    @property
    def live_hit_ratio(self) -> float:
        return self.live_hits / self.requests if self.requests else 0.0

    @property
    def shadow_hit_ratio(self) -> float:
        return self.shadow_hits / self.requests if self.requests else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "spec": self.spec,
            "requests": self.requests,
            "live_hits": self.live_hits,
            "shadow_hits": self.shadow_hits,
            "live_hit_ratio": self.live_hit_ratio,
            "shadow_hit_ratio": self.shadow_hit_ratio,
        }


class CacheStats:
    __slots__ = (
        "cdn",
        "cdn_purges",
        "coalesced",
        "evicted_bytes",
        "hits",
        "invalidations",
        "lease",
        "origin_fetches",
        "outcomes",
        "shadow",
        "stored_bytes",
    )

    def __init__(self) -> None:
        self.outcomes: Counter[tuple[str, str, str]] = Counter()  # (outcome, reason, tier) → requests
        self.hits: Counter[Reason] = Counter()  # hits, counted apart: the hit path builds no Outcome
        self.origin_fetches = 0  # calls made to the app / upstream
        self.coalesced = 0  # requests answered by another request's fetch
        self.stored_bytes = 0
        self.evicted_bytes = 0
        self.invalidations = 0  # invalidation requests applied (purges, unsafe-method drops)
        # Cross-node coalescing (edgecache.lease.Leases): won, took_over, stored, pass, timeout, unavailable,
        # release_errors, stored_missing (``=stored`` seen but nothing usable in L2).
        self.lease: Counter[str] = Counter()
        self.shadow: ShadowStats | None = None  # set when shadow mode runs
        # CDN asset rewriting: responses by result (rewritten, unchanged, or why the body passed untouched).
        self.cdn: Counter[str] = Counter()
        self.cdn_purges: Counter[tuple[str, str]] = Counter()  # (provider, ok | error) → provider calls

    def count(self, outcome: Outcome) -> None:
        reason = outcome.reason.value if outcome.reason is not None else ("stored" if outcome.stored else "")
        self.outcomes[(outcome.label, reason, tier_of(outcome))] += 1
        if outcome.collapsed:
            self.coalesced += 1

    def evicted(self, size: int) -> None:
        self.evicted_bytes += size

    def requests(self) -> Counter[tuple[str, str, str]]:
        """Every request by (outcome, reason, tier), hits included."""
        merged = Counter(self.outcomes)
        for reason, count in self.hits.items():
            merged[(Outcome(None, reason).label, reason.value, tier_of(Outcome(None, reason)))] += count
        return merged
