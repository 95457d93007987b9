"""Request Cache-Control directives (RFC 9111 §5.2.1) as the middleware honours them."""

from __future__ import annotations

from tests.middleware.conftest import HarnessFactory, cache_status, versioned


async def test_only_if_cached_miss_is_504_without_calling_the_app(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned()})
    response = await h.get("/r", headers={"cache-control": "only-if-cached"})
    assert response.status_code == 504
    assert cache_status(response) == "edgecache; fwd=uri-miss; detail=only-if-cached"
    assert h.origin.total == 0


async def test_only_if_cached_hit_is_served(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned()})
    await h.get("/r")
    response = await h.get("/r", headers={"cache-control": "only-if-cached"})
    assert (response.status_code, response.text) == (200, "v1")


async def test_only_if_cached_with_no_cache_never_calls_the_app(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned()})
    await h.get("/r")
    response = await h.get("/r", headers={"cache-control": "no-cache, only-if-cached"})
    assert response.status_code == 504
    assert h.origin.calls["/r"] == 1


async def test_only_if_cached_stale_entry_is_504(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned({"cache-control": "max-age=10", "etag": '"e"'})})
    await h.get("/r")
    h.clock.advance(20)
    response = await h.get("/r", headers={"cache-control": "only-if-cached"})
    assert response.status_code == 504
    assert h.origin.calls["/r"] == 1


async def test_max_stale_serves_a_stale_entry(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned({"cache-control": "max-age=10", "etag": '"e"'})})
    await h.get("/r")
    h.clock.advance(20)
    response = await h.get("/r", headers={"cache-control": "max-stale=30"})
    assert response.text == "v1"
    assert cache_status(response) == "edgecache; hit; ttl=-10; detail=max-stale"


async def test_request_max_age_refetches_an_older_entry(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned()})
    await h.get("/r")
    h.clock.advance(20)
    response = await h.get("/r", headers={"cache-control": "max-age=5"})
    assert response.text == "v2"
    assert cache_status(response).startswith("edgecache; fwd=request")


async def test_request_no_store_is_answered_but_not_stored(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned()})
    first = await h.get("/r", headers={"cache-control": "no-store"})
    assert cache_status(first) == "edgecache; fwd=uri-miss; detail=request-no-store"
    assert (await h.get("/r")).text == "v2"


async def test_request_directives_ignored_when_configured(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned()}, respect_request_cache_control=False)
    await h.get("/r")
    assert (await h.get("/r", headers={"cache-control": "no-cache"})).text == "v1"
