"""HEAD answered from and filling the cache; byte ranges answered from full stored responses."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tests.middleware.conftest import HarnessFactory, cache_status, versioned, without

ALPHABET = b"abcdefghijklmnopqrstuvwxyz"


async def alphabet(request: Request) -> Response:
    return Response(ALPHABET, headers={"etag": '"abc"', "cache-control": "max-age=60"})


async def test_head_is_served_from_a_stored_get(harness: HarnessFactory) -> None:
    h = harness({"/r": alphabet})
    get = await h.get("/r")
    head = await h.client.head("/r")
    assert head.status_code == 200
    assert h.recorder.body_chunks() == [b""]
    assert h.origin.calls["/r"] == 1
    volatile = ("age", "cache-status")
    assert without(volatile, head.headers.multi_items()) == without(volatile, get.headers.multi_items())
    assert head.headers["content-length"] == "26"
    assert cache_status(head).startswith("edgecache; hit")


async def test_head_miss_fills_the_cache(harness: HarnessFactory) -> None:
    h = harness({"/r": alphabet})
    head = await h.client.head("/r")
    assert h.origin.last["method"] == "GET"
    assert h.recorder.body_chunks() == [b""]
    assert "stored" in cache_status(head)
    get = await h.get("/r")
    assert get.content == ALPHABET
    assert h.origin.calls["/r"] == 1


async def test_head_miss_of_an_unstorable_response_sends_no_body(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned({"cache-control": "no-store"})})
    await h.client.head("/r")
    assert b"".join(h.recorder.body_chunks()) == b""


async def test_range_is_answered_from_a_full_entry(harness: HarnessFactory) -> None:
    h = harness({"/r": alphabet})
    await h.get("/r")
    response = await h.get("/r", headers={"range": "bytes=0-9"})
    assert response.status_code == 206
    assert response.content == b"abcdefghij"
    assert response.headers["content-range"] == "bytes 0-9/26"
    assert response.headers["content-length"] == "10"
    assert h.origin.calls["/r"] == 1


async def test_suffix_range_is_answered_from_a_full_entry(harness: HarnessFactory) -> None:
    h = harness({"/r": alphabet})
    await h.get("/r")
    response = await h.get("/r", headers={"range": "bytes=-3"})
    assert (response.status_code, response.content) == (206, b"xyz")
    assert response.headers["content-range"] == "bytes 23-25/26"


async def test_range_on_a_miss_fetches_the_full_response_and_answers_the_range(
    harness: HarnessFactory,
) -> None:
    h = harness({"/r": alphabet})
    response = await h.get("/r", headers={"range": "bytes=5-7"})
    assert h.origin.last_header("range") == []
    assert (response.status_code, response.content) == (206, b"fgh")
    assert (await h.get("/r")).content == ALPHABET


async def test_if_range_with_other_etag_gets_the_full_response(harness: HarnessFactory) -> None:
    h = harness({"/r": alphabet})
    await h.get("/r")
    response = await h.get("/r", headers={"range": "bytes=0-9", "if-range": '"other"'})
    assert (response.status_code, response.content) == (200, ALPHABET)


async def test_app_206_is_never_stored(harness: HarnessFactory) -> None:
    async def partial(request: Request) -> Response:
        return Response(
            b"abc", 206, headers={"content-range": "bytes 0-2/26", "cache-control": "public, max-age=60"}
        )

    h = harness({"/r": partial})
    first = await h.get("/r")
    await h.get("/r")
    assert first.status_code == 206
    assert h.origin.calls["/r"] == 2
    assert cache_status(first) == "edgecache; fwd=uri-miss; detail=partial"


async def test_unsatisfiable_range_is_416(harness: HarnessFactory) -> None:
    h = harness({"/r": alphabet})
    await h.get("/r")
    response = await h.get("/r", headers={"range": "bytes=100-200"})
    assert response.status_code == 416
    assert response.headers["content-range"] == "bytes */26"
    assert response.content == b""
    assert h.origin.calls["/r"] == 1


async def test_multiple_ranges_get_the_full_response(harness: HarnessFactory) -> None:
    h = harness({"/r": alphabet})
    await h.get("/r")
    response = await h.get("/r", headers={"range": "bytes=0-1,4-5"})
    assert (response.status_code, response.content) == (200, ALPHABET)
