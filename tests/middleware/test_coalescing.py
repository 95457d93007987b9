"""Request coalescing: concurrent misses share one fetch; unshareable responses and hit-for-miss don't
queue."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response

from tests.middleware.conftest import Endpoint, HarnessFactory, cache_status


def slow(headers: dict[str, str] | None = None, delay: float = 0.05) -> Endpoint:
    count = 0

    async def endpoint(request: Request) -> Response:
        nonlocal count
        count += 1
        mine = count
        await asyncio.sleep(delay)
        return Response(f"v{mine}", headers=headers)

    return endpoint


async def test_concurrent_misses_call_the_app_once(harness: HarnessFactory) -> None:
    h = harness({"/r": slow()})
    responses = await asyncio.gather(*(h.get("/r") for _ in range(20)))
    assert h.origin.calls["/r"] == 1
    assert {r.text for r in responses} == {"v1"}


async def test_coalesced_waiters_report_collapsed(harness: HarnessFactory) -> None:
    h = harness({"/r": slow()})
    responses = await asyncio.gather(*(h.get("/r") for _ in range(20)))
    statuses = [cache_status(r) for r in responses]
    assert statuses.count("edgecache; fwd=uri-miss; stored") == 1
    assert statuses.count("edgecache; fwd=uri-miss; ttl=60; collapsed") == 19


async def test_coalesced_waiters_get_age(harness: HarnessFactory) -> None:
    h = harness({"/r": slow()})
    responses = await asyncio.gather(*(h.get("/r") for _ in range(5)))
    assert {r.headers["age"] for r in responses} == {"0"}


async def test_coalesced_head_waiter_gets_no_body(harness: HarnessFactory) -> None:
    h = harness({"/r": slow()})
    get, head = await asyncio.gather(h.get("/r"), h.client.head("/r"))
    assert get.text == "v1"
    assert head.headers["content-length"] == "2"
    assert [b"".join(h.recorder.body_chunks(i)) for i in range(2)].count(b"") == 1
    assert h.origin.calls["/r"] == 1


async def test_private_response_is_not_handed_to_waiters(harness: HarnessFactory) -> None:
    h = harness({"/r": slow({"cache-control": "private, max-age=60"})})
    responses = await asyncio.gather(*(h.get("/r") for _ in range(5)))
    assert h.origin.calls["/r"] == 5
    assert sorted(r.text for r in responses) == ["v1", "v2", "v3", "v4", "v5"]
    assert not any("collapsed" in cache_status(r) for r in responses)


async def test_set_cookie_response_is_not_handed_to_waiters(harness: HarnessFactory) -> None:
    h = harness({"/r": slow({"cache-control": "max-age=60", "set-cookie": "id=1"})})
    responses = await asyncio.gather(*(h.get("/r") for _ in range(5)))
    assert h.origin.calls["/r"] == 5
    assert len({r.text for r in responses}) == 5


async def test_vary_mismatch_is_not_handed_to_waiters(harness: HarnessFactory) -> None:
    async def endpoint(request: Request) -> Response:
        await asyncio.sleep(0.05)
        lang = request.headers.get("accept-language", "-")
        return Response(lang, headers={"vary": "accept-language"})

    h = harness({"/r": endpoint})
    en, fr = await asyncio.gather(
        h.get("/r", headers={"accept-language": "en"}), h.get("/r", headers={"accept-language": "fr"})
    )
    assert (en.text, fr.text) == ("en", "fr")
    assert (await h.get("/r", headers={"accept-language": "fr"})).text == "fr"


async def test_leader_failure_sends_waiters_to_the_app(harness: HarnessFactory) -> None:
    count = 0

    async def endpoint(request: Request) -> Response:
        nonlocal count
        count += 1
        await asyncio.sleep(0.05)
        if count == 1:
            return Response("error", 500)
        return Response(f"v{count}")

    h = harness({"/r": endpoint})
    responses = await asyncio.gather(*(h.get("/r") for _ in range(3)))
    assert sorted(r.status_code for r in responses) == [200, 200, 500]


def gated_leader(release: asyncio.Event) -> Endpoint:
    """The first call waits for ``release`` and answers ``leader``; the others answer at once."""
    count = 0

    async def endpoint(request: Request) -> Response:
        nonlocal count
        count += 1
        if count == 1:
            await release.wait()
            return Response("leader")
        return Response(f"waiter{count}")

    return endpoint


async def test_slow_leader_sends_waiters_to_the_app_without_storing(harness: HarnessFactory) -> None:
    release = asyncio.Event()
    h = harness({"/r": gated_leader(release)}, coalesce_timeout=0.05)
    leader = asyncio.create_task(h.get("/r"))
    await asyncio.sleep(0.01)
    waiters = await asyncio.gather(*(h.get("/r") for _ in range(3)))
    assert sorted(r.text for r in waiters) == ["waiter2", "waiter3", "waiter4"]
    assert {cache_status(r) for r in waiters} == {"edgecache; fwd=uri-miss; detail=coalesce-timeout"}
    release.set()
    assert (await leader).text == "leader"
    assert (await h.get("/r")).text == "leader"


async def test_waiters_that_timed_out_leave_the_flight_to_the_leader(harness: HarnessFactory) -> None:
    release = asyncio.Event()
    h = harness({"/r": gated_leader(release)}, coalesce_timeout=0.2)
    leader = asyncio.create_task(h.get("/r"))
    await asyncio.sleep(0.01)
    await asyncio.gather(*(h.get("/r") for _ in range(3)))  # time out, fetch alone
    late = asyncio.create_task(h.get("/r"))  # arrives while the leader still works: waits for it
    await asyncio.sleep(0.02)
    release.set()
    await leader
    response = await late
    assert response.text == "leader"
    assert "collapsed" in cache_status(response)
    assert h.origin.calls["/r"] == 4


async def test_hit_for_miss_lets_concurrent_requests_call_the_app_in_parallel(
    harness: HarnessFactory,
) -> None:
    inside = 0
    all_inside = asyncio.Event()

    async def endpoint(request: Request) -> Response:
        nonlocal inside
        inside += 1
        if inside == 6:  # the first request, then five concurrent ones
            all_inside.set()
        if inside > 1:
            await asyncio.wait_for(all_inside.wait(), 2)  # a queued request would never get here in time
        return Response("private", headers={"cache-control": "private"})

    h = harness({"/r": endpoint})
    await h.get("/r")
    assert h.cache.hit_for_miss
    responses = await asyncio.gather(*(h.get("/r") for _ in range(5)))
    assert {r.status_code for r in responses} == {200}
    assert h.origin.calls["/r"] == 6


async def test_hit_for_miss_expires(harness: HarnessFactory) -> None:
    private = True

    async def endpoint(request: Request) -> Response:
        await asyncio.sleep(0.02)
        return Response("x", headers={"cache-control": "private" if private else "max-age=60"})

    h = harness({"/r": endpoint}, hit_for_miss_ttl=30)
    await h.get("/r")
    private = False
    h.clock.advance(31)
    await asyncio.gather(*(h.get("/r") for _ in range(5)))
    assert h.origin.calls["/r"] == 2


async def test_coalescing_can_be_switched_off(harness: HarnessFactory) -> None:
    h = harness({"/r": slow()}, coalesce=False)
    await asyncio.gather(*(h.get("/r") for _ in range(5)))
    assert h.origin.calls["/r"] == 5


async def test_waiter_arriving_after_an_invalidation_does_not_get_the_older_fill(
    harness: HarnessFactory,
) -> None:
    release = asyncio.Event()
    count = 0

    async def endpoint(request: Request) -> Response:
        nonlocal count
        if request.method == "POST":
            return Response("updated")
        count += 1
        mine = count
        if mine == 1:
            await release.wait()
        return Response(f"v{mine}")

    h = harness({"/r": endpoint})
    leader = asyncio.create_task(h.get("/r"))
    await asyncio.sleep(0.01)
    await h.client.post("/r")  # the resource changed while the leader's fetch was in flight
    waiter = asyncio.create_task(h.get("/r"))
    await asyncio.sleep(0.01)
    release.set()
    assert (await leader).text == "v1"
    assert (await waiter).text == "v2"
