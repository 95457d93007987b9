"""Hits, misses, Cache-Status, Age and freshness lifetimes."""

from __future__ import annotations

import httpx

from edgecache import Cache, CacheInterceptor, Settings
from tests.middleware.conftest import HarnessFactory, cache_status, versioned


async def test_second_get_is_a_hit_without_calling_the_app(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned()})
    first = await h.get("/r")
    second = await h.get("/r")
    assert (first.text, second.text) == ("v1", "v1")
    assert h.origin.calls["/r"] == 1


async def test_miss_that_is_stored_reports_fwd_uri_miss_and_stored(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned()})
    response = await h.get("/r")
    assert cache_status(response) == "edgecache; fwd=uri-miss; stored"


async def test_hit_reports_remaining_ttl_and_l1(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned()}, default_ttl=60)
    await h.get("/r")
    h.clock.advance(12)
    response = await h.get("/r")
    assert cache_status(response) == "edgecache; hit; ttl=48; detail=l1"


async def test_authorization_request_bypasses_with_its_reason(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned()})
    await h.get("/r", headers={"authorization": "Bearer a"})
    response = await h.get("/r", headers={"authorization": "Bearer a"})
    assert cache_status(response) == "edgecache; fwd=bypass; detail=request-authorization"
    assert h.origin.calls["/r"] == 2


async def test_cookie_request_bypasses_with_its_reason(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned()})
    await h.get("/r", headers={"cookie": "session=1"})
    response = await h.get("/r", headers={"cookie": "session=1"})
    assert cache_status(response) == "edgecache; fwd=bypass; detail=request-cookie"
    assert h.origin.calls["/r"] == 2


async def test_post_bypasses_with_method_reason(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned()})
    response = await h.client.post("/r")
    assert cache_status(response) == "edgecache; fwd=method; detail=method"


async def test_options_request_bypasses_with_method_reason(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned()})
    await h.client.options("/r")
    response = await h.client.options("/r")
    assert cache_status(response) == "edgecache; fwd=method; detail=method"
    assert h.origin.calls["/r"] == 2


async def test_age_header_grows_with_the_clock(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned()})
    await h.get("/r")
    assert (await h.get("/r")).headers["age"] == "0"
    h.clock.advance(7)
    assert (await h.get("/r")).headers["age"] == "7"
    h.clock.advance(20)
    assert (await h.get("/r")).headers["age"] == "27"


async def test_stored_miss_is_answered_from_storage_with_age(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned()})
    assert (await h.get("/r")).headers["age"] == "0"


async def test_age_from_the_app_counts_towards_the_served_age(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned({"cache-control": "max-age=100", "age": "30"})})
    await h.get("/r")
    h.clock.advance(5)
    response = await h.get("/r")
    assert response.headers.get_list("age") == ["35"]
    assert cache_status(response) == "edgecache; hit; ttl=65; detail=l1"


async def test_bypassed_response_has_no_age(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned()})
    response = await h.client.post("/r")
    assert "age" not in response.headers


async def test_default_ttl_applies_when_the_response_gives_no_freshness(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned()}, default_ttl=30)
    await h.get("/r")
    h.clock.advance(29)
    assert (await h.get("/r")).text == "v1"
    h.clock.advance(2)
    assert (await h.get("/r")).text == "v2"
    assert h.origin.calls["/r"] == 2


async def test_zero_default_ttl_stores_nothing_without_freshness(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned()}, default_ttl=0)
    await h.get("/r")
    await h.get("/r")
    assert h.origin.calls["/r"] == 2


async def test_explicit_max_age_wins_over_default_ttl(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned({"cache-control": "max-age=5"})}, default_ttl=60)
    await h.get("/r")
    h.clock.advance(6)
    assert (await h.get("/r")).text == "v2"


async def test_explicit_long_max_age_wins_over_short_default_ttl(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned({"cache-control": "max-age=600"})}, default_ttl=10)
    await h.get("/r")
    h.clock.advance(300)
    assert (await h.get("/r")).text == "v1"


async def test_max_age_zero_is_not_served_from_storage(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned({"cache-control": "max-age=0"})})
    await h.get("/r")
    assert (await h.get("/r")).text == "v2"


async def test_s_maxage_shortens_max_age(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned({"cache-control": "max-age=600, s-maxage=5"})})
    await h.get("/r")
    h.clock.advance(6)
    assert (await h.get("/r")).text == "v2"


async def test_s_maxage_lengthens_max_age(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned({"cache-control": "max-age=5, s-maxage=600"})})
    await h.get("/r")
    h.clock.advance(60)
    response = await h.get("/r")
    assert response.text == "v1"
    assert cache_status(response) == "edgecache; hit; ttl=540; detail=l1"


async def test_expired_entry_is_fetched_again(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned({"cache-control": "max-age=10"})})
    await h.get("/r")
    h.clock.advance(11)
    response = await h.get("/r")
    assert response.text == "v2"
    assert h.origin.calls["/r"] == 2
    assert "stored" in cache_status(response)


async def test_entry_refetched_after_expiry_is_served_again(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned({"cache-control": "max-age=10"})})
    await h.get("/r")
    h.clock.advance(11)
    await h.get("/r")
    assert (await h.get("/r")).text == "v2"
    assert h.origin.calls["/r"] == 2


async def test_app_reaches_the_cache_through_the_scope(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned()})
    await h.get("/r")
    assert h.origin.last["edgecache.cache"] is h.cache


async def test_key_host_makes_every_host_share_one_key() -> None:
    calls = 0

    async def app(scope, receive, send):
        nonlocal calls
        calls += 1
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    cache = Cache(Settings.load({"key_host": "origin.internal", "default_ttl": 60}, environ={}))
    wrapped = CacheInterceptor(app, cache=cache)
    transport = httpx.ASGITransport(app=wrapped)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        first = await client.get("/x", headers={"host": "a.example"})
        second = await client.get("/x", headers={"host": "b.example"})
        third = await client.get("/x", headers={"host": "c.example", "accept": "text/plain"})
    assert calls == 1
    assert first.headers["cache-status"] == "edgecache; fwd=uri-miss; stored"
    assert "hit" in second.headers["cache-status"]
    assert "hit" in third.headers["cache-status"]
