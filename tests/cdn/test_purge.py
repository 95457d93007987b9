"""Tag purges at the CDN (Fastly surrogate keys, Cloudflare cache tags), against respx only.

Every test runs inside ``respx.mock`` with ``assert_all_mocked``: a call that no route matches raises
instead of reaching any network, and ``assert_all_called`` fails a test whose expected call never came.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
import respx

from edgecache import Cache, Settings
from edgecache.cdn.purge import CLOUDFLARE_API, FASTLY_API, CdnPurger
from edgecache.cli import main
from edgecache.core.invalidation import new_invalidation

FASTLY_URL = f"{FASTLY_API}/service/svc-1/purge"
CLOUDFLARE_URL = f"{CLOUDFLARE_API}/zones/zone-1/purge_cache"
FASTLY = {"cdn_purge_provider": "fastly", "cdn_purge_service": "svc-1", "cdn_purge_token": "fastly-key"}
CLOUDFLARE = {"cdn_purge_provider": "cloudflare", "cdn_purge_zone": "zone-1", "cdn_purge_token": "cf-token"}
CF_OK = {"success": True, "errors": [], "messages": [], "result": {"id": "zone-1"}}


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_mocked=True, assert_all_called=True) as router:
        yield router


@pytest.fixture
async def make_cache() -> AsyncIterator[Callable[..., Cache]]:
    made: list[Cache] = []

    def make(**options: object) -> Cache:
        cache = Cache(Settings.load(options, environ={}))
        made.append(cache)
        return cache

    yield make
    for cache in made:
        await cache.aclose()


async def test_fastly_purges_surrogate_keys_with_its_key(mock: respx.MockRouter) -> None:
    route = mock.post(FASTLY_URL).mock(return_value=httpx.Response(200, json={"status": "ok"}))
    purger = CdnPurger("fastly", "svc-1", "fastly-key")
    assert await purger.purge(["product:42", "user:7"])
    request = route.calls.last.request
    assert request.headers["fastly-key"] == "fastly-key"
    assert request.headers["surrogate-key"] == "product:42 user:7"
    assert purger.counts[("fastly", "ok")] == 1
    await purger.aclose()


async def test_a_soft_purge_is_a_fastly_soft_purge(
    mock: respx.MockRouter, make_cache: Callable[..., Cache]
) -> None:
    route = mock.post(FASTLY_URL).mock(return_value=httpx.Response(200, json={}))
    cache = make_cache(**FASTLY)
    await cache.invalidate(tags=["a"], soft=True)
    await cache.invalidate(tags=["b"])
    assert cache.cdn_purger is not None
    await cache.cdn_purger.drain()
    soft = {
        call.request.headers["surrogate-key"]: call.request.headers.get("fastly-soft-purge")
        for call in route.calls
    }
    assert soft == {"a": "1", "b": None}


async def test_fastly_batches_256_keys_per_call(mock: respx.MockRouter) -> None:
    route = mock.post(FASTLY_URL).mock(return_value=httpx.Response(200, json={}))
    purger = CdnPurger("fastly", "svc-1", "k")
    tags = [f"t{i}" for i in range(300)]
    assert await purger.purge(tags)
    sent = [call.request.headers["surrogate-key"].split(" ") for call in route.calls]
    assert [len(keys) for keys in sent] == [256, 44]
    assert list(itertools.chain(*sent)) == tags
    await purger.aclose()


async def test_cloudflare_purges_cache_tags_30_per_call(mock: respx.MockRouter) -> None:
    route = mock.post(CLOUDFLARE_URL).mock(return_value=httpx.Response(200, json=CF_OK))
    purger = CdnPurger("cloudflare", "zone-1", "cf-token")
    tags = [f"tag-{i}" for i in range(65)]
    assert await purger.purge(tags)
    bodies = [json.loads(call.request.content) for call in route.calls]
    assert [len(body["tags"]) for body in bodies] == [30, 30, 5]
    assert list(itertools.chain(*(body["tags"] for body in bodies))) == tags
    assert all(call.request.headers["authorization"] == "Bearer cf-token" for call in route.calls)
    assert purger.counts[("cloudflare", "ok")] == 3
    await purger.aclose()


@pytest.mark.parametrize(
    ("response", "why"),
    [
        (httpx.Response(500, text="upstream trouble"), "HTTP 500"),
        (httpx.Response(403, json={"success": False}), "HTTP 403"),
        (httpx.Response(200, json={"success": False, "errors": [{"code": 1}]}), "not successful"),
        (httpx.Response(200, text="not json"), "not successful"),
        (httpx.ConnectError("refused"), "ConnectError"),
    ],
)
async def test_failures_are_logged_and_counted_never_raised(
    mock: respx.MockRouter, caplog: pytest.LogCaptureFixture, response, why: str
) -> None:
    route = mock.post(CLOUDFLARE_URL)
    if isinstance(response, Exception):
        route.mock(side_effect=response)
    else:
        route.mock(return_value=response)
    purger = CdnPurger("cloudflare", "zone-1", "cf-token")
    with caplog.at_level(logging.WARNING, logger="edgecache.cdn"):
        assert not await purger.purge(["a"])
    assert purger.counts == {("cloudflare", "error"): 1}
    assert why in caplog.text
    assert "cf-token" not in caplog.text
    await purger.aclose()


async def test_a_provider_that_does_not_answer_is_bounded_by_the_timeout() -> None:
    asked = asyncio.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        asked.set()
        await asyncio.sleep(30)
        return httpx.Response(200)

    purger = CdnPurger("fastly", "svc-1", "k", timeout=0.05)
    # The call is cancelled inside the route (so respx does not record it): ``asked`` shows it was made.
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        router.post(FASTLY_URL).mock(side_effect=hang)
        assert not await purger.purge(["a"])
    assert asked.is_set()  # and the purge returned (False) without the 30 s answer
    assert purger.counts[("fastly", "error")] == 1
    await purger.aclose()


async def test_an_unmatched_call_fails_instead_of_reaching_the_network() -> None:
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        router.post(CLOUDFLARE_URL).mock(return_value=httpx.Response(200, json=CF_OK))
        purger = CdnPurger("cloudflare", "another-zone", "t")
        with pytest.raises(AssertionError, match="not mocked"):
            await purger.purge(["a"])
        await purger.aclose()


async def test_cache_invalidate_purges_its_tags_at_the_cdn(
    mock: respx.MockRouter, make_cache: Callable[..., Cache]
) -> None:
    route = mock.post(FASTLY_URL).mock(return_value=httpx.Response(200, json={}))
    cache = make_cache(**FASTLY)
    await cache.invalidate(tags=["product:42", "user:7"], paths=["/products/42"])
    assert cache.cdn_purger is not None
    await cache.cdn_purger.drain()
    assert route.call_count == 1
    assert route.calls.last.request.headers["surrogate-key"] == "product:42 user:7"  # the tags only
    assert cache.stats.cdn_purges[("fastly", "ok")] == 1


async def test_invalidate_does_not_wait_for_the_provider(make_cache: Callable[..., Cache]) -> None:
    release = asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return httpx.Response(200, json={})

    with respx.mock(assert_all_mocked=True, assert_all_called=True) as router:
        route = router.post(FASTLY_URL).mock(side_effect=slow)
        cache = make_cache(**FASTLY)
        async with asyncio.timeout(5):  # fails, rather than hangs, if invalidate waited for the provider
            await cache.invalidate(tags=["a"])
        assert cache.cdn_purger is not None
        assert cache.stats.cdn_purges.total() == 0
        release.set()
        await cache.cdn_purger.drain()
        assert route.call_count == 1
        assert cache.stats.cdn_purges[("fastly", "ok")] == 1


async def test_a_failing_cdn_never_fails_the_invalidation(
    mock: respx.MockRouter, make_cache: Callable[..., Cache]
) -> None:
    mock.post(CLOUDFLARE_URL).mock(return_value=httpx.Response(503))
    cache = make_cache(**CLOUDFLARE)
    assert await cache.invalidate(tags=["a"]) == 0
    assert cache.cdn_purger is not None
    await cache.cdn_purger.drain()
    assert cache.stats.cdn_purges[("cloudflare", "error")] == 1


async def test_purges_without_tags_and_purges_applied_from_the_bus_call_nobody(
    make_cache: Callable[..., Cache],
) -> None:
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        route = router.post(FASTLY_URL).mock(return_value=httpx.Response(200, json={}))
        cache = make_cache(**FASTLY)
        await cache.invalidate(paths=["/a"], prefixes=["/b/"])
        # What a subscriber does with a message another node published: applied here, not sent on.
        await cache.apply_invalidation(new_invalidation(tags=("product:42",)), shared=False)
        assert cache.cdn_purger is not None
        await cache.cdn_purger.drain()
        assert route.call_count == 0


async def test_domain_events_purge_the_tags_they_map_to(
    mock: respx.MockRouter, make_cache: Callable[..., Cache]
) -> None:
    route = mock.post(CLOUDFLARE_URL).mock(return_value=httpx.Response(200, json=CF_OK))
    cache = make_cache(**CLOUDFLARE)
    cache.on_events({"payment.completed": ["user:{user_id}"]})
    await cache.publish_event("payment.completed", {"user_id": 7})
    assert cache.cdn_purger is not None
    await cache.cdn_purger.drain()
    assert json.loads(route.calls.last.request.content) == {"tags": ["user:7"]}


async def test_closing_the_cache_lets_scheduled_purges_finish(mock: respx.MockRouter) -> None:
    route = mock.post(FASTLY_URL).mock(return_value=httpx.Response(200, json={}))
    cache = Cache(Settings.load(FASTLY, environ={}))
    await cache.invalidate(tags=["a"])
    await cache.aclose()
    assert route.call_count == 1


async def test_only_the_node_that_originates_a_purge_calls_the_cdn(
    mock: respx.MockRouter, make_cache: Callable[..., Cache], redis_url: str
) -> None:
    route = mock.post(FASTLY_URL).mock(return_value=httpx.Response(200, json={}))
    namespace = f"cdnpurge{time.monotonic_ns()}"
    options = {**FASTLY, "redis_url": redis_url, "namespace": namespace}
    a, b = make_cache(**options), make_cache(**options)
    assert await a.start_and_wait(5) and await b.start_and_wait(5)
    applied_before = b.stats.invalidations
    await a.invalidate(tags=["product:42"])
    deadline = time.monotonic() + 5
    while b.stats.invalidations == applied_before:  # b applied it from the bus
        assert time.monotonic() < deadline, "node b never applied the purge"
        await asyncio.sleep(0.01)
    assert a.cdn_purger is not None and b.cdn_purger is not None
    await a.cdn_purger.drain()
    await b.cdn_purger.drain()
    assert route.call_count == 1
    assert b.stats.cdn_purges.total() == 0


# -- `edgecache purge`: the command originates the purge, so it asks the CDN -----------------------------


def test_the_purge_command_purges_its_tags_at_the_cdn(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in CLOUDFLARE.items():
        monkeypatch.setenv("EDGECACHE_" + name.upper(), str(value))
    with respx.mock(assert_all_mocked=True, assert_all_called=True) as router:
        route = router.post(CLOUDFLARE_URL).mock(return_value=httpx.Response(200, json=CF_OK))
        assert main(["purge", "--tag", "product:42", "--path", "/p/42", "--redis-url", redis_url]) == 0
    assert json.loads(route.calls.last.request.content) == {"tags": ["product:42"]}
    assert "purged 1 tag(s) at cloudflare" in capsys.readouterr().out


def test_the_purge_command_exits_3_when_the_cdn_purge_fails(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in FASTLY.items():
        monkeypatch.setenv("EDGECACHE_" + name.upper(), str(value))
    with respx.mock(assert_all_mocked=True, assert_all_called=True) as router:
        router.post(FASTLY_URL).mock(return_value=httpx.Response(401, json={"msg": "bad key"}))
        assert main(["purge", "--tag", "t", "--redis-url", redis_url]) == 3
    assert "fastly purge failed" in capsys.readouterr().err


def test_the_purge_command_rejects_an_incomplete_cdn_configuration(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EDGECACHE_CDN_PURGE_PROVIDER", "fastly")
    assert main(["purge", "--tag", "t", "--redis-url", redis_url]) == 2
    assert "cdn_purge_service" in capsys.readouterr().err


def test_the_purge_command_without_cdn_configuration_calls_nobody(redis_url: str) -> None:
    with respx.mock(assert_all_mocked=True):  # any call would raise
        assert main(["purge", "--tag", "t", "--redis-url", redis_url]) == 0
