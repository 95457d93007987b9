"""Response bodies: streamed through when too large to store, stored whole when under the cap."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from tests.middleware.conftest import Endpoint, HarnessFactory, cache_status

CAP = 1000


def streaming(chunks: int, size: int, headers: dict[str, str] | None = None) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            for i in range(chunks):
                yield bytes([65 + i % 26]) * size

        return StreamingResponse(body(), headers=headers)

    return endpoint


def expected(chunks: int, size: int) -> bytes:
    return b"".join(bytes([65 + i % 26]) * size for i in range(chunks))


async def test_large_streaming_response_passes_through_whole(harness: HarnessFactory) -> None:
    h = harness({"/big": streaming(40, 250)}, max_object_bytes=CAP)
    response = await h.get("/big")
    assert response.content == expected(40, 250)
    assert cache_status(response) == "edgecache; fwd=uri-miss; detail=too-large"


async def test_large_streaming_response_is_not_stored(harness: HarnessFactory) -> None:
    h = harness({"/big": streaming(40, 250)}, max_object_bytes=CAP)
    await h.get("/big")
    assert h.stored_objects() == 0
    await h.get("/big")
    assert h.origin.calls["/big"] == 2


async def test_large_streaming_response_is_not_joined_in_memory(harness: HarnessFactory) -> None:
    h = harness({"/big": streaming(40, 250)}, max_object_bytes=CAP)
    await h.get("/big")
    chunks = [c for c in h.recorder.body_chunks() if c]
    # At most the held prefix (the cap plus one chunk) goes out at once; the rest chunk by chunk.
    assert max(len(c) for c in chunks) <= CAP + 250
    assert len(chunks) >= 40 - CAP // 250
    assert b"".join(chunks) == expected(40, 250)


async def test_large_content_length_streams_from_the_first_chunk(harness: HarnessFactory) -> None:
    async def big(request: Request) -> Response:
        return Response(b"x" * (CAP + 1))

    h = harness({"/big": big}, max_object_bytes=CAP)
    response = await h.get("/big")
    assert len(response.content) == CAP + 1
    assert cache_status(response) == "edgecache; fwd=uri-miss; detail=too-large"
    assert h.stored_objects() == 0


async def test_small_streaming_response_is_stored(harness: HarnessFactory) -> None:
    h = harness({"/small": streaming(3, 100)}, max_object_bytes=CAP)
    first = await h.get("/small")
    second = await h.get("/small")
    assert first.content == second.content == expected(3, 100)
    assert "stored" in cache_status(first)
    assert cache_status(second).startswith("edgecache; hit")
    assert h.origin.calls["/small"] == 1


async def test_body_under_the_cap_whose_stored_object_exceeds_it_streams_as_too_large(
    harness: HarnessFactory,
) -> None:
    h = harness({"/r": streaming(4, CAP // 4)}, max_object_bytes=CAP)  # body == cap; headers push it over
    response = await h.get("/r")
    assert response.content == expected(4, CAP // 4)
    assert cache_status(response) == "edgecache; fwd=uri-miss; detail=too-large"
    assert h.cache.hit_for_miss  # remembered: the next request does not wait behind a doomed fill


async def test_empty_body_is_stored(harness: HarnessFactory) -> None:
    async def empty(request: Request) -> Response:
        return Response(status_code=204)

    h = harness({"/r": empty})
    await h.get("/r")
    response = await h.get("/r")
    assert response.status_code == 204
    assert h.origin.calls["/r"] == 1
