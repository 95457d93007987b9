"""The invalidation API: by Surrogate-Key / Cache-Tag tags and by path; tag headers hidden from clients."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response

from tests.middleware.conftest import Endpoint, HarnessFactory, cache_status, versioned


def product(header: str, value: str) -> Endpoint:
    return versioned({header: value, "cache-control": "max-age=600"})


async def test_invalidate_tag_drops_entries_tagged_by_surrogate_key(harness: HarnessFactory) -> None:
    h = harness(
        {
            "/p/1": product("surrogate-key", "product:1 products"),
            "/p/2": product("surrogate-key", "product:2"),
        }
    )
    await h.get("/p/1")
    await h.get("/p/2")
    removed = await h.cache.invalidate(tags=["product:1"])
    assert removed == 1
    assert (await h.get("/p/1")).text == "v2"
    assert (await h.get("/p/2")).text == "v1"


async def test_invalidate_tag_drops_entries_tagged_by_cache_tag(harness: HarnessFactory) -> None:
    h = harness(
        {"/p/1": product("cache-tag", "product:1, products"), "/p/2": product("cache-tag", "product:2")}
    )
    await h.get("/p/1")
    await h.get("/p/2")
    await h.cache.invalidate(tags=["product:1"])
    assert (await h.get("/p/1")).text == "v2"
    assert (await h.get("/p/2")).text == "v1"


async def test_invalidate_shared_tag_drops_every_tagged_entry(harness: HarnessFactory) -> None:
    h = harness(
        {"/p/1": product("surrogate-key", "product:1 products"), "/p/2": product("cache-tag", "products")}
    )
    await h.get("/p/1")
    await h.get("/p/2")
    await h.cache.invalidate(tags=["products"])
    assert (await h.get("/p/1")).text == "v2"
    assert (await h.get("/p/2")).text == "v2"


async def test_invalidate_path_drops_every_query_variant(harness: HarnessFactory) -> None:
    h = harness({"/p": versioned(), "/q": versioned()})
    for url in ("/p", "/p?a=1", "/p?a=2", "/q"):
        await h.get(url)
    await h.cache.invalidate(paths=["/p"])
    assert (await h.get("/p?a=1")).text == "v4"
    assert (await h.get("/p?a=2")).text == "v5"
    assert (await h.get("/p")).text == "v6"
    assert (await h.get("/q")).text == "v1"


async def test_invalidate_path_drops_vary_variants(harness: HarnessFactory) -> None:
    h = harness({"/p": versioned({"vary": "accept-language"})})
    await h.get("/p", headers={"accept-language": "en"})
    await h.get("/p", headers={"accept-language": "fr"})
    await h.cache.invalidate(paths=["/p"])
    assert h.stored_objects() == 0


async def test_tag_headers_are_removed_from_client_responses(harness: HarnessFactory) -> None:
    h = harness({"/p": versioned({"surrogate-key": "a b", "cache-tag": "c"})})
    miss = await h.get("/p")
    hit = await h.get("/p")
    for response in (miss, hit):
        assert "surrogate-key" not in response.headers
        assert "cache-tag" not in response.headers


async def test_tag_headers_are_removed_from_unstored_responses(harness: HarnessFactory) -> None:
    h = harness({"/p": versioned({"surrogate-key": "a", "cache-control": "no-store"})})
    response = await h.get("/p")
    assert "surrogate-key" not in response.headers


async def test_tag_headers_kept_when_strip_tag_headers_is_off(harness: HarnessFactory) -> None:
    h = harness({"/p": versioned({"surrogate-key": "a b"})}, strip_tag_headers=False)
    await h.get("/p")
    assert (await h.get("/p")).headers["surrogate-key"] == "a b"


async def test_fill_in_flight_during_invalidation_is_not_stored(harness: HarnessFactory) -> None:
    release = asyncio.Event()

    async def slow(request: Request) -> Response:
        await release.wait()
        return Response("old", headers={"surrogate-key": "product:1"})

    h = harness({"/p": slow})
    fill = asyncio.create_task(h.get("/p"))
    await asyncio.sleep(0.01)
    await h.cache.invalidate(tags=["product:1"])
    release.set()
    response = await fill
    assert response.text == "old"
    assert "detail=not-stored" in cache_status(response)
    assert h.stored_objects() == 0


async def test_app_can_invalidate_through_the_scope(harness: HarnessFactory) -> None:
    async def purge(request: Request) -> Response:
        await request.scope["edgecache.cache"].invalidate(tags=["product:1"])
        return Response("purged")

    h = harness({"/p/1": product("surrogate-key", "product:1"), "/admin/purge": purge})
    await h.get("/p/1")
    await h.get("/admin/purge", headers={"authorization": "Bearer admin"})
    assert (await h.get("/p/1")).text == "v2"


async def test_invalidate_path_with_non_ascii_characters(harness: HarnessFactory) -> None:
    h = harness({"/café": versioned()})
    await h.get("/café")
    await h.cache.invalidate(paths=["/café"])
    assert (await h.get("/café")).text == "v2"


async def test_invalidate_percent_encoded_path(harness: HarnessFactory) -> None:
    h = harness({"/café": versioned()})
    await h.get("/café")
    await h.cache.invalidate(paths=["/caf%C3%A9"])
    assert (await h.get("/café")).text == "v2"
