"""Prometheus export of a ``Cache``'s counters, read at scrape time.

    from prometheus_client import REGISTRY, make_asgi_app
    REGISTRY.register(CacheCollector(cache))
    app.mount("/metrics", make_asgi_app())

Labels are the outcome, the reason token (the ``Cache-Status`` detail) and the tier; never a raw path, key
or user.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edgecache.cdn.response import RESULTS
from edgecache.engine import Cache


class CacheCollector(Collector):
    def __init__(self, cache: Cache, prefix: str = "edgecache") -> None:
        self.cache = cache
        self.prefix = prefix

    def collect(self) -> Iterator[Metric]:
        stats = self.cache.stats
        p = self.prefix
        requests = CounterMetricFamily(
            f"{p}_requests",
            "Requests by cache outcome, reason and answering tier",
            labels=["outcome", "reason", "tier"],
        )
        for (outcome, reason, tier), count in sorted(stats.requests().items()):
            requests.add_metric([outcome, reason, tier], count)
        yield requests
        yield CounterMetricFamily(
            f"{p}_origin_fetches", "Calls made to the app or upstream", value=stats.origin_fetches
        )
        yield CounterMetricFamily(
            f"{p}_coalesced_waiters",
            "Requests answered by a concurrent request's fetch",
            value=stats.coalesced,
        )
        if stats.lease or self.cache.leases is not None:
            leases = CounterMetricFamily(
                f"{p}_lease",
                "Cross-node coalescing: lease acquisitions and waits by result",
                labels=["result"],
            )
            for result, count in sorted(stats.lease.items()):
                leases.add_metric([result], count)
            yield leases
        if self.cache.leases is not None:
            yield GaugeMetricFamily(
                f"{p}_lease_waiting",
                "Requests acquiring or waiting for a cross-node lease now",
                value=self.cache.leases.waiting,
            )
        yield CounterMetricFamily(f"{p}_stored_bytes", "Bytes of responses stored", value=stats.stored_bytes)
        yield CounterMetricFamily(
            f"{p}_evicted_bytes", "Bytes evicted from L1 for space or expiry", value=stats.evicted_bytes
        )
        yield CounterMetricFamily(f"{p}_invalidations", "Invalidations applied", value=stats.invalidations)
        shadow = stats.shadow
        if shadow is not None:
            yield CounterMetricFamily(
                f"{p}_shadow_requests", "GET/HEAD requests seen by shadow mode", value=shadow.requests
            )
            hits = CounterMetricFamily(
                f"{p}_shadow_hits",
                "Of those, hits: served from the live cache (live) or that the shadow configuration "
                "would have served (shadow)",
                labels=["cache"],
            )
            hits.add_metric(["live"], shadow.live_hits)
            hits.add_metric(["shadow"], shadow.shadow_hits)
            yield hits
            ratio = GaugeMetricFamily(
                f"{p}_shadow_hit_ratio", "Hit ratio over the requests shadow mode saw", labels=["cache"]
            )
            ratio.add_metric(["live"], shadow.live_hit_ratio)
            ratio.add_metric(["shadow"], shadow.shadow_hit_ratio)
            yield ratio
        if self.cache.cdn is not None:
            rewrites = CounterMetricFamily(
                f"{p}_cdn_responses",
                "Responses of rewritable types by CDN rewrite result (passed-through ones by reason)",
                labels=["result"],
            )
            for result in RESULTS:
                rewrites.add_metric([result], stats.cdn[result])
            yield rewrites
        if stats.cdn_purges or self.cache.cdn_purger is not None:
            purges = CounterMetricFamily(
                f"{p}_cdn_purge_calls",
                "Tag purge calls made to the CDN provider",
                labels=["provider", "outcome"],
            )
            for (provider, outcome), count in sorted(stats.cdn_purges.items()):
                purges.add_metric([provider, outcome], count)
            yield purges
        size = getattr(self.cache.store, "current_bytes", None)
        if isinstance(size, int):
            yield GaugeMetricFamily(f"{p}_l1_bytes", "Bytes held by the in-memory tier", value=size)
