"""stale-while-revalidate, stale-if-error, origin timeouts and must-revalidate."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from tests.middleware.conftest import Endpoint, HarnessFactory, cache_status, status_params

SWR = "max-age=10, stale-while-revalidate=60"
SIE = "max-age=10, stale-if-error=60"


def scripted(cache_control: str, failure: str | None = None, gate: asyncio.Event | None = None) -> Endpoint:
    """Answers ``v1`` first; later calls fail as ``failure`` says, or answer ``v2``, ``v3`` …

    ``failure``: "raise", "503" or "hang" (wait forever). ``gate``: later calls wait for it first.
    """
    count = 0

    async def endpoint(request: Request) -> Response:
        nonlocal count
        count += 1
        if count > 1:
            if gate is not None:
                await gate.wait()
            if failure == "raise":
                raise RuntimeError("origin down")
            if failure == "503":
                return Response("unavailable", 503, headers={"cache-control": "max-age=60"})
            if failure == "hang":
                await asyncio.Event().wait()
        return Response(f"v{count}", headers={"cache-control": cache_control})

    return endpoint


# -- stale-while-revalidate ------------------------------------------------------------------------------


async def test_swr_serves_the_stale_entry_immediately(harness: HarnessFactory) -> None:
    gate = asyncio.Event()
    h = harness({"/r": scripted(SWR, gate=gate)})
    await h.get("/r")
    h.clock.advance(15)
    response = await asyncio.wait_for(h.get("/r"), 2)  # the refresh is held at the gate meanwhile
    assert response.text == "v1"
    assert cache_status(response) == "edgecache; hit; ttl=-5; detail=stale-while-revalidate"
    assert response.headers["age"] == "15"
    gate.set()
    await h.cache.drain()


async def test_swr_refreshes_in_the_background(harness: HarnessFactory) -> None:
    h = harness({"/r": scripted(SWR)})
    await h.get("/r")
    h.clock.advance(15)
    await h.get("/r")
    await h.cache.drain()
    assert h.origin.calls["/r"] == 2
    response = await h.get("/r")
    assert response.text == "v2"
    assert cache_status(response) == "edgecache; hit; ttl=10; detail=l1"


async def test_swr_refreshes_once_for_concurrent_stale_requests(harness: HarnessFactory) -> None:
    gate = asyncio.Event()
    h = harness({"/r": scripted(SWR, gate=gate)})
    await h.get("/r")
    h.clock.advance(15)
    responses = await asyncio.wait_for(asyncio.gather(*(h.get("/r") for _ in range(10))), 2)
    assert {r.text for r in responses} == {"v1"}
    gate.set()
    await h.cache.drain()
    assert h.origin.calls["/r"] == 2
    assert (await h.get("/r")).text == "v2"


async def test_swr_refreshes_once_for_sequential_stale_requests(harness: HarnessFactory) -> None:
    gate = asyncio.Event()
    h = harness({"/r": scripted(SWR, gate=gate)})
    await h.get("/r")
    h.clock.advance(15)
    for _ in range(5):
        assert (await h.get("/r")).text == "v1"
    gate.set()
    await h.cache.drain()
    assert h.origin.calls["/r"] == 2


async def test_swr_refreshes_once_without_coalescing(harness: HarnessFactory) -> None:
    gate = asyncio.Event()
    h = harness({"/r": scripted(SWR, gate=gate)}, coalesce=False)
    await h.get("/r")
    h.clock.advance(15)
    await asyncio.gather(*(h.get("/r") for _ in range(5)))
    gate.set()
    await h.cache.drain()
    assert h.origin.calls["/r"] == 2


async def test_swr_refresh_revalidates_with_the_stored_etag(harness: HarnessFactory) -> None:
    seen: list[str | None] = []

    async def endpoint(request: Request) -> Response:
        seen.append(request.headers.get("if-none-match"))
        headers = {"etag": '"e"', "cache-control": SWR}
        if request.headers.get("if-none-match") == '"e"':
            return Response(status_code=304, headers=headers)
        return Response("body", headers=headers)

    h = harness({"/r": endpoint})
    await h.get("/r")
    h.clock.advance(15)
    await h.get("/r")
    await h.cache.drain()
    assert seen == [None, '"e"']
    response = await h.get("/r")
    assert (response.text, cache_status(response)) == ("body", "edgecache; hit; ttl=10; detail=l1")


async def test_swr_window_passed_fetches_in_the_foreground(harness: HarnessFactory) -> None:
    h = harness({"/r": scripted(SWR)})
    await h.get("/r")
    h.clock.advance(71)
    response = await h.get("/r")
    assert response.text == "v2"
    assert cache_status(response).startswith("edgecache; fwd=")


async def test_swr_refresh_failure_keeps_the_stale_entry(harness: HarnessFactory) -> None:
    h = harness({"/r": scripted(SWR, failure="raise")})
    await h.get("/r")
    h.clock.advance(15)
    await h.get("/r")
    await h.cache.drain()
    assert (await h.get("/r")).text == "v1"


async def test_swr_from_the_stale_while_revalidate_option(harness: HarnessFactory) -> None:
    h = harness({"/r": scripted("max-age=10")}, stale_while_revalidate=30)
    await h.get("/r")
    h.clock.advance(15)
    assert (await h.get("/r")).text == "v1"
    await h.cache.drain()
    assert (await h.get("/r")).text == "v2"


# -- stale-if-error -------------------------------------------------------------------------------------


async def test_sie_serves_the_stored_response_when_the_app_raises(harness: HarnessFactory) -> None:
    h = harness({"/r": scripted(SIE, failure="raise")})
    await h.get("/r")
    h.clock.advance(15)
    response = await h.get("/r")
    assert (response.status_code, response.text) == (200, "v1")
    assert status_params(response) == ["edgecache", "fwd=stale", "ttl=-5", "detail=stale-if-error"]
    assert response.headers["age"] == "15"


async def test_sie_serves_the_stored_response_when_the_app_answers_503(harness: HarnessFactory) -> None:
    h = harness({"/r": scripted(SIE, failure="503")})
    await h.get("/r")
    h.clock.advance(15)
    response = await h.get("/r")
    assert (response.status_code, response.text) == (200, "v1")
    assert status_params(response)[:3] == ["edgecache", "fwd=stale", "fwd-status=503"]


async def test_sie_serves_the_stored_response_when_the_app_times_out(harness: HarnessFactory) -> None:
    h = harness({"/r": scripted(SIE, failure="hang")}, origin_timeout=0.05)
    await h.get("/r")
    h.clock.advance(15)
    response = await h.get("/r")
    assert (response.status_code, response.text) == (200, "v1")
    assert "detail=stale-if-error" in cache_status(response)


async def test_origin_timeout_without_stored_response_is_504(harness: HarnessFactory) -> None:
    async def hang(request: Request) -> Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    h = harness({"/r": hang}, origin_timeout=0.05)
    response = await h.get("/r")
    assert response.status_code == 504
    assert cache_status(response) == "edgecache; fwd=uri-miss; detail=origin-timeout"


async def test_origin_timeout_does_not_bound_a_slow_body(harness: HarnessFactory) -> None:
    async def slow_body(request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"a"
            await asyncio.sleep(0.1)
            yield b"b"

        return StreamingResponse(chunks())

    h = harness({"/r": slow_body}, origin_timeout=0.05)
    response = await h.get("/r")
    assert (response.status_code, response.text) == (200, "ab")


async def test_sie_error_response_never_replaces_the_stored_entry(harness: HarnessFactory) -> None:
    h = harness({"/r": scripted(SIE, failure="503")})
    await h.get("/r")
    h.clock.advance(15)
    await h.get("/r")
    h.clock.advance(10)
    response = await h.get("/r")
    assert response.text == "v1"
    assert h.origin.calls["/r"] == 3


async def test_error_with_freshness_is_never_stored(harness: HarnessFactory) -> None:
    h = harness({"/r": scripted("max-age=10", failure="503")})
    await h.get("/r")
    h.clock.advance(15)
    assert (await h.get("/r")).status_code == 503
    assert (await h.get("/r")).status_code == 503
    assert h.origin.calls["/r"] == 3


async def test_sie_window_passed_lets_the_error_through(harness: HarnessFactory) -> None:
    h = harness({"/r": scripted(SIE, failure="503")})
    await h.get("/r")
    h.clock.advance(71)
    response = await h.get("/r")
    assert response.status_code == 503


async def test_sie_from_the_stale_if_error_option(harness: HarnessFactory) -> None:
    h = harness({"/r": scripted("max-age=10", failure="503")}, stale_if_error=30)
    await h.get("/r")
    h.clock.advance(15)
    assert (await h.get("/r")).text == "v1"


async def test_app_error_without_stored_response_passes_through(harness: HarnessFactory) -> None:
    async def broken(request: Request) -> Response:
        raise RuntimeError("origin down")

    h = harness({"/r": broken}, raise_app_exceptions=False)
    response = await h.get("/r")
    assert response.status_code == 500
    assert cache_status(response) == "edgecache; fwd=uri-miss; detail=status"


async def test_sie_covers_a_bare_asgi_app_that_raises_before_responding(harness: HarnessFactory) -> None:
    calls = 0

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise RuntimeError("origin down")
        await Response("v1", headers={"cache-control": SIE})(scope, receive, send)

    h = harness(app)
    await h.get("/r")
    h.clock.advance(15)
    response = await h.get("/r")
    assert (response.status_code, response.text) == (200, "v1")
    assert "detail=stale-if-error" in cache_status(response)


async def test_app_returning_without_a_response_is_504(harness: HarnessFactory) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        return None

    h = harness(app)
    response = await h.get("/r")
    assert response.status_code == 504
    assert cache_status(response) == "edgecache; fwd=uri-miss; detail=origin-error"


# -- must-revalidate ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cache_control",
    ["max-age=10, must-revalidate, stale-if-error=60", "max-age=10, proxy-revalidate, stale-if-error=60"],
)
async def test_must_revalidate_lets_the_503_through(harness: HarnessFactory, cache_control: str) -> None:
    h = harness({"/r": scripted(cache_control, failure="503")})
    await h.get("/r")
    h.clock.advance(15)
    response = await h.get("/r")
    assert (response.status_code, response.text) == (503, "unavailable")


async def test_must_revalidate_lets_the_app_error_through(harness: HarnessFactory) -> None:
    h = harness(
        {"/r": scripted("max-age=10, must-revalidate, stale-if-error=60", failure="raise")},
        raise_app_exceptions=False,
    )
    await h.get("/r")
    h.clock.advance(15)
    response = await h.get("/r")
    assert response.status_code == 500
    assert "v1" not in response.text


async def test_must_revalidate_timeout_is_504(harness: HarnessFactory) -> None:
    h = harness(
        {"/r": scripted("max-age=10, must-revalidate, stale-if-error=60", failure="hang")},
        origin_timeout=0.05,
    )
    await h.get("/r")
    h.clock.advance(15)
    response = await h.get("/r")
    assert response.status_code == 504
    assert "detail=origin-timeout" in cache_status(response)


async def test_must_revalidate_forbids_swr(harness: HarnessFactory) -> None:
    h = harness({"/r": scripted("max-age=10, must-revalidate, stale-while-revalidate=60")})
    await h.get("/r")
    h.clock.advance(15)
    assert (await h.get("/r")).text == "v2"


async def test_swr_request_that_may_not_store_triggers_no_refresh(harness: HarnessFactory) -> None:
    h = harness({"/r": scripted(SWR)})
    await h.get("/r")
    h.clock.advance(15)
    response = await h.get("/r", headers={"x-forwarded-host": "evil.example"})
    await h.cache.drain()
    assert response.text == "v1"
    assert h.origin.calls["/r"] == 1  # its refresh could not have stored anything


async def test_swr_refresh_does_not_forward_the_triggering_request_conditionals(
    harness: HarnessFactory,
) -> None:
    h = harness({"/r": scripted(SWR)})
    await h.get("/r")
    h.clock.advance(15)
    await h.get("/r", headers={"if-none-match": '"client"', "range": "bytes=0-0"})
    await h.cache.drain()
    assert h.origin.last_header("if-none-match") == []
    assert h.origin.last_header("range") == []
    assert (await h.get("/r")).text == "v2"
