"""Shadow mode: a candidate configuration simulated beside the live cache on the same requests."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from edgecache import Settings
from edgecache.config import ConfigError
from edgecache.observe.prometheus import CacheCollector
from edgecache.shadow import ShadowSpec
from tests.middleware.conftest import HarnessFactory, versioned


def counts(h) -> tuple[int, int, int]:
    shadow = h.cache.stats.shadow
    assert shadow is not None
    return shadow.requests, shadow.live_hits, shadow.shadow_hits


async def test_off_by_default(harness: HarnessFactory) -> None:
    h = harness({"/p": versioned()})
    await h.get("/p")
    assert h.cache.shadow is None
    assert h.cache.stats.shadow is None


async def test_sorted_query_would_hit_where_the_live_key_misses(harness: HarnessFactory) -> None:
    h = harness({"/p": versioned()}, shadow="query=sorted")

    await h.get("/p?a=1&b=2")
    await h.get("/p?b=2&a=1")  # the live key keeps parameter order: a miss

    assert h.origin.calls["/p"] == 2  # the shadow serves nothing
    assert counts(h) == (2, 0, 1)


async def test_ignored_parameters_share_the_shadow_key(harness: HarnessFactory) -> None:
    h = harness({"/p": versioned()}, shadow={"ignore": "utm_*|fbclid"})

    await h.get("/p?a=1&utm_source=mail")
    await h.get("/p?fbclid=x&a=1&utm_medium=y")
    await h.get("/p?a=2")

    assert counts(h) == (3, 0, 1)


async def test_live_hits_are_counted_over_the_same_requests(harness: HarnessFactory) -> None:
    h = harness({"/p": versioned()}, shadow="query=keep")

    for _ in range(4):
        await h.get("/p")

    assert counts(h) == (4, 3, 3)
    assert h.cache.stats.shadow is not None
    assert h.cache.stats.shadow.as_dict()["shadow_hit_ratio"] == 0.75


async def test_longer_ttl_override_would_hit_after_the_live_copy_expired(harness: HarnessFactory) -> None:
    h = harness({"/p": versioned({"cache-control": "max-age=60"})}, shadow="ttl=300")

    await h.get("/p")
    h.clock.advance(61)
    await h.get("/p")  # live: expired, fetched again
    h.clock.advance(240)
    await h.get("/p")  # shadow: 301 s after its copy was stored, expired too

    assert counts(h) == (3, 0, 1)


async def test_shorter_ttl_override_would_miss_where_the_live_copy_hits(harness: HarnessFactory) -> None:
    h = harness({"/p": versioned({"cache-control": "max-age=60"})}, shadow="ttl=10")

    await h.get("/p")
    h.clock.advance(11)
    await h.get("/p")

    assert counts(h) == (2, 1, 0)


async def test_lifetime_of_a_live_hit_is_its_ttl_plus_its_age(harness: HarnessFactory) -> None:
    # The shadow first sees the URL when the live copy is already 30 s old: the object it would store
    # lives the full 60 s from then (it would have fetched it fresh), not the 30 s the live copy has left.
    h = harness({"/p": versioned({"cache-control": "max-age=60"})}, shadow="query=drop")
    await h.get("/p?x=1")
    h.clock.advance(30)
    await h.get("/p?x=1")  # shadow: first sight of its key "…/p?" would be a miss (it was "…/p?" too)

    h.clock.advance(45)  # 75 s after the fill: the live copy expired; the shadow's stored at 0 s did too
    await h.get("/p?x=2")

    assert counts(h) == (3, 1, 1)


async def test_responses_the_live_cache_would_not_store_are_not_stored(harness: HarnessFactory) -> None:
    h = harness({"/p": versioned({"cache-control": "no-store"})}, shadow="ttl=300")

    await h.get("/p")
    await h.get("/p")

    assert counts(h) == (2, 0, 0)


async def test_unsafe_methods_are_not_counted(harness: HarnessFactory) -> None:
    h = harness({"/p": versioned()}, shadow="query=sorted")

    await h.client.post("/p")
    await h.get("/p")

    assert counts(h) == (1, 0, 0)


async def test_smaller_capacity_without_admission_evicts_least_recently_used(harness: HarnessFactory) -> None:
    h = harness({"/a": versioned(), "/b": versioned()}, shadow="admission=off,capacity=400")

    await h.get("/a")
    await h.get("/b")  # each response weighs at least 256 bytes: /a is evicted
    await h.get("/a")

    assert counts(h) == (3, 1, 0)
    assert len(h.cache.shadow.policy) == 1  # type: ignore[union-attr]


async def test_both_hit_ratios_are_exported_to_prometheus(harness: HarnessFactory) -> None:
    h = harness({"/p": versioned()}, shadow="query=sorted")
    await h.get("/p?a=1&b=2")
    await h.get("/p?b=2&a=1")
    registry = CollectorRegistry()
    registry.register(CacheCollector(h.cache))

    text = generate_latest(registry).decode()

    assert "edgecache_shadow_requests_total 2.0" in text
    assert 'edgecache_shadow_hits_total{cache="live"} 0.0' in text
    assert 'edgecache_shadow_hits_total{cache="shadow"} 1.0' in text
    assert 'edgecache_shadow_hit_ratio{cache="shadow"} 0.5' in text


def test_spec_from_a_string_a_mapping_or_the_environment() -> None:
    assert Settings.load({"shadow": "ttl=300,query=sorted,admission=off,capacity=1MiB"}).shadow == ShadowSpec(
        ttl=300.0, query="sorted", admission=False, capacity=1024 * 1024
    )
    assert Settings.load({"shadow": {"ignore": ["utm_*"]}}).shadow == ShadowSpec(ignore=frozenset({"utm_*"}))
    assert Settings.load({}, environ={"EDGECACHE_SHADOW": "query=drop"}).shadow == ShadowSpec(query="drop")
    assert Settings.load({"shadow": "off"}).shadow is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("ttl=300,color=blue", "unknown shadow setting"),
        ("query=shuffled", "shadow query must be one of keep, sorted, drop"),
        ("ttl=-1", "shadow ttl must be a non-negative"),
        ("admission=maybe", "shadow admission must be on or off"),
        ("capacity=10", "shadow capacity must be at least 256 bytes"),
        ("ttl", "expected name=value pairs"),
    ],
)
def test_bad_spec_names_the_option(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"option shadow: {message}"):
        Settings.load({"shadow": value}, environ={})
