"""End to end: a primary and two read replicas (uvicorn on 127.0.0.1, each answering ``/who`` with its
name) behind the proxy; replicas stopped mid-test; respx only to script exact upstream failures."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from edgecache.proxy.app import ProxyApp
from edgecache.proxy.upstreams import HealthConfig
from tests.proxy.conftest import (
    RESPX_TRANSPORT,
    MakeProxy,
    MakeUpstream,
    RunningProxy,
    RunningUpstream,
    start_upstream,
    wait_for_readyz,
)
from tests.proxy.upstream import Upstream

FAST_PROBES = HealthConfig(path="/health", interval=0.05, timeout=0.5, window=2, threshold=1)
NO_PROBES = HealthConfig(interval=0)


@pytest.fixture
async def replicas(make_upstream: MakeUpstream) -> tuple[RunningUpstream, RunningUpstream]:
    return await make_upstream("replica-1"), await make_upstream("replica-2")


async def _who(client: httpx.AsyncClient, proxy: RunningProxy, n: int = 1, **options: Any) -> list[str]:
    answers = []
    for _ in range(n):
        response = await client.get(proxy.url + "/who", **options)
        assert response.status_code == 200, response.text
        answers.append(response.text)
    return answers


def _as(address: str, **headers: str) -> dict[str, Any]:
    """Request options for a client at ``address`` behind the trusted proxy 127.0.0.1."""
    return {"headers": {"x-forwarded-for": address, **headers}}


async def _metrics(client: httpx.AsyncClient, proxy: RunningProxy) -> str:
    return (await client.get(proxy.admin_url + "/metrics")).text


# -- routing ----------------------------------------------------------------------------------------------


async def test_reads_go_to_the_replicas_in_turn_and_everything_else_to_the_primary(
    make_proxy: MakeProxy, client: httpx.AsyncClient, replicas: tuple[RunningUpstream, ...]
) -> None:
    proxy = await make_proxy(replicas=[r.url for r in replicas], read_your_writes_window=0)
    assert Counter(await _who(client, proxy, 6)) == {"replica-1": 3, "replica-2": 3}
    assert (await client.head(proxy.url + "/who")).headers["x-instance"].startswith("replica-")
    for method in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        response = await client.request(
            method, proxy.url + "/who", content=b"x" if method != "DELETE" else None
        )
        assert response.text == "primary", method


async def test_the_replica_with_fewer_requests_in_flight_gets_the_reads(
    make_proxy: MakeProxy, client: httpx.AsyncClient, replicas: tuple[RunningUpstream, ...]
) -> None:
    proxy = await make_proxy(replicas=[r.url for r in replicas], read_your_writes_window=0)
    async with client.stream("GET", proxy.url + "/big?gated=1") as held:
        chunks = held.aiter_raw()
        await anext(chunks)  # the first chunk is here; the rest waits for the gate
        busy = next(r for r in replicas if r.app.hits["/big"] == 1)
        idle = next(r for r in replicas if r is not busy)
        assert set(await _who(client, proxy, 4)) == {idle.app.name}
        busy.app.gate.set()
        async for _ in chunks:
            pass
    # The proxy counts the request done a moment after the client has the last byte.
    await wait_for_readyz(client, proxy, lambda r: all(x["outstanding"] == 0 for x in r["replicas"]))
    assert Counter(await _who(client, proxy, 4)) == {"replica-1": 2, "replica-2": 2}


async def test_read_your_writes_pins_the_writer_to_the_primary_only(
    make_proxy: MakeProxy, client: httpx.AsyncClient, replicas: tuple[RunningUpstream, ...]
) -> None:
    proxy = await make_proxy(
        replicas=[r.url for r in replicas], read_your_writes_window=60, trusted_proxies=["127.0.0.1"]
    )
    writer = _as("203.0.113.7", authorization="Bearer alice")
    # (A write to /orders: one to /who would invalidate /who, and pin everyone's refills of it.)
    assert (await client.post(proxy.url + "/orders", content=b"x", **writer)).json()["method"] == "POST"
    assert await _who(client, proxy, 3, **writer) == ["primary"] * 3
    # The same credentials from another address (a phone changing networks) are pinned too...
    assert await _who(client, proxy, 1, **_as("198.51.100.9", authorization="Bearer alice")) == ["primary"]
    # ...and so is the writer's address with other credentials (the address alone identifies it).
    assert await _who(client, proxy, 1, **_as("203.0.113.7")) == ["primary"]
    # Other clients read from the replicas.
    others = await _who(client, proxy, 4, **_as("203.0.113.8", authorization="Bearer bob"))
    assert set(others) == {"replica-1", "replica-2"}
    assert 'edgecache_upstream_pinned_reads_total{reason="read-your-writes"} 5.0' in await _metrics(
        client, proxy
    )


async def test_read_your_writes_ends_with_its_window(
    make_proxy: MakeProxy, client: httpx.AsyncClient, replicas: tuple[RunningUpstream, ...]
) -> None:
    proxy = await make_proxy(replicas=[r.url for r in replicas], read_your_writes_window=0.2)
    await client.post(proxy.url + "/orders", content=b"x")
    assert await _who(client, proxy) == ["primary"]
    async with asyncio.timeout(10):  # the window ends on the proxy's clock: poll until it has
        while True:
            if (await _who(client, proxy))[0] != "primary":
                break
            await asyncio.sleep(0.05)


async def test_refills_right_after_an_invalidation_go_to_the_primary(
    make_proxy: MakeProxy, client: httpx.AsyncClient, replicas: tuple[RunningUpstream, ...]
) -> None:
    proxy = await make_proxy(
        replicas=[r.url for r in replicas],
        read_your_writes_window=60,
        trusted_proxies=["127.0.0.1"],
        admin_token="s3cret",
    )
    reader = _as("203.0.113.8")
    first = await client.get(proxy.url + "/who-cached", **reader)
    assert first.text.startswith("replica-") and "stored" in first.headers["cache-status"]
    purge = await client.post(
        proxy.admin_url + "/purge",
        headers={"Authorization": "Bearer s3cret"},
        json={"id": "p-1", "paths": ["/who-cached"]},
    )
    assert purge.json()["removed"] == 1
    refill = await client.get(proxy.url + "/who-cached", **reader)
    assert (refill.text, "stored" in refill.headers["cache-status"]) == ("primary", True)
    assert set(await _who(client, proxy, 4, **reader)) == {"replica-1", "replica-2"}  # other paths: not
    # An unsafe request through the proxy invalidates its URI: another client's refill goes to the primary.
    await client.put(proxy.url + "/who-cached", content=b"new", **_as("203.0.113.7"))
    again = await client.get(proxy.url + "/who-cached", **reader)
    assert again.text == "primary" and "stored" in again.headers["cache-status"]
    assert 'edgecache_upstream_pinned_reads_total{reason="invalidation"} 2.0' in await _metrics(client, proxy)


# -- health checks and breakers ---------------------------------------------------------------------------


async def test_a_stopped_replica_is_ejected_by_the_probes(
    make_proxy: MakeProxy, client: httpx.AsyncClient, replicas: tuple[RunningUpstream, ...]
) -> None:
    proxy = await make_proxy(
        replicas=[r.url for r in replicas], read_your_writes_window=0, health=FAST_PROBES
    )
    report = await wait_for_readyz(client, proxy, lambda r: all(x["healthy"] for x in r["replicas"]))
    assert [x["name"] for x in report["replicas"]] == ["replica-1", "replica-2"]
    await replicas[1].stop()
    report = await wait_for_readyz(client, proxy, lambda r: not r["replicas"][1]["healthy"])
    assert report["ready"] is True  # the primary is what readiness is about
    down = report["replicas"][1]
    assert down["last_probe"]["ok"] is False and down["last_probe"]["error"]
    assert await _who(client, proxy, 6) == ["replica-1"] * 6
    assert down["breaker"] == "closed"  # the probes ejected it before any request failed
    assert 'edgecache_upstream_healthy{upstream="replica-2"} 0.0' in await _metrics(client, proxy)
    # A replica that accepts connections but says it is sick is ejected too; then reads use the primary.
    replicas[0].app.healthy = False
    await wait_for_readyz(client, proxy, lambda r: not r["replicas"][0]["healthy"])
    assert await _who(client, proxy, 3) == ["primary"] * 3
    replicas[0].app.healthy = True
    await wait_for_readyz(client, proxy, lambda r: r["replicas"][0]["healthy"])
    assert await _who(client, proxy, 2) == ["replica-1"] * 2


async def test_a_stopped_replica_is_ejected_by_its_breaker_and_readmitted_after_a_trial(
    make_proxy: MakeProxy, client: httpx.AsyncClient, replicas: tuple[RunningUpstream, ...]
) -> None:
    proxy = await make_proxy(
        replicas=[r.url for r in replicas],
        read_your_writes_window=0,
        health=NO_PROBES,
        breaker_failures=2,
        breaker_reset=60,  # no trial request while the counts below are taken
    )
    port = replicas[1].port
    await replicas[1].stop()
    # Every read succeeds: the ones sent to the stopped replica are retried on replica-1.
    assert await _who(client, proxy, 8) == ["replica-1"] * 8
    report = (await client.get(proxy.admin_url + "/readyz")).json()
    assert report["replicas"][1]["breaker"] == "open"
    metrics = await _metrics(client, proxy)
    assert 'edgecache_upstream_errors_total{kind="connect",upstream="replica-2"} 2.0' in metrics
    assert "edgecache_upstream_retries_total 2.0" in metrics
    assert 'edgecache_upstream_breaker_opened_total{upstream="replica-2"} 1.0' in metrics
    # Back on its port: after the reset time one trial request closes the breaker again.
    proxy.server.upstreams.replicas[1].breaker.reset_after = 0.1
    revived = await start_upstream(Upstream("replica-2"), port)
    try:
        async with asyncio.timeout(10):
            while True:
                if "replica-2" in await _who(client, proxy, 2):
                    break
                await asyncio.sleep(0.05)
        report = (await client.get(proxy.admin_url + "/readyz")).json()
        assert report["replicas"][1]["breaker"] == "closed"
    finally:
        await revived.stop()


# -- nothing usable -----------------------------------------------------------------------------------------


async def test_all_upstreams_down_is_a_fast_503_or_the_stored_response(
    make_proxy: MakeProxy,
    client: httpx.AsyncClient,
    upstream: RunningUpstream,
    make_upstream: MakeUpstream,
) -> None:
    replica = await make_upstream("replica-1")
    proxy = await make_proxy(replicas=[replica.url], health=FAST_PROBES, admin_token="s3cret")
    cached = await client.get(proxy.url + "/who-cached")
    assert "stored" in cached.headers["cache-status"]
    await upstream.stop()
    await replica.stop()
    report = await wait_for_readyz(
        client, proxy, lambda r: not r["upstream"]["healthy"] and not r["replicas"][0]["healthy"]
    )
    assert report["ready"] is False
    started = time.monotonic()
    miss = await client.get(proxy.url + "/who")
    post = await client.post(proxy.url + "/who", content=b"x")
    assert time.monotonic() - started < 2.0  # no connect attempt, no timeout waited for
    assert (miss.status_code, miss.headers["retry-after"]) == (503, "1")
    assert "fwd=uri-miss" in miss.headers["cache-status"]
    assert post.status_code == 503
    # A stored response, made stale: served instead of the 503 (stale-if-error=300 allows it).
    await client.post(
        proxy.admin_url + "/purge",
        headers={"Authorization": "Bearer s3cret"},
        json={"id": "soft-1", "paths": ["/who-cached"], "soft": True},
    )
    stale = await client.get(proxy.url + "/who-cached")
    assert (stale.status_code, stale.text) == (200, cached.text)
    assert "fwd=stale" in stale.headers["cache-status"]
    assert "fwd-status=503" in stale.headers["cache-status"]
    assert "edgecache_upstream_unavailable_total 3.0" in await _metrics(client, proxy)


# -- retries (respx scripts the exact failure) --------------------------------------------------------------


def _app() -> ProxyApp:
    return ProxyApp(
        "http://primary.test",
        replicas=["http://r1.test", "http://r2.test"],
        read_your_writes_window=0,
        transport=RESPX_TRANSPORT(),
    )


async def _call(app: ProxyApp, method: str, path: str, **options: Any) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://p") as http:
        return await http.request(method, path, **options)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("error", [httpx.ConnectError("refused"), httpx.ConnectTimeout("no answer")])
async def test_a_read_is_retried_once_on_another_upstream_after_a_connect_error(
    method: str, error: Exception
) -> None:
    import respx  # noqa: PLC0415

    app = _app()
    with respx.mock(assert_all_called=False) as mock:
        r1 = mock.request(method, "http://r1.test/x").mock(side_effect=error)
        r2 = mock.request(method, "http://r2.test/x").mock(return_value=httpx.Response(200, text="r2"))
        response = await _call(app, method, "/x")
    await app.aclose()
    assert (response.status_code, r1.call_count, r2.call_count) == (200, 1, 1)
    assert app.pool.retries == 1 and app.pool.replicas[0].errors["connect"] == 1
    assert [u.outstanding for u in app.pool.all] == [0, 0, 0]


async def test_a_read_is_retried_at_most_once() -> None:
    import respx  # noqa: PLC0415

    app = _app()
    with respx.mock(assert_all_called=False) as mock:
        routes = [
            mock.get(f"http://{host}/x").mock(side_effect=httpx.ConnectError("refused"))
            for host in ("primary.test", "r1.test", "r2.test")
        ]
        response = await _call(app, "GET", "/x")
    await app.aclose()
    assert (response.status_code, response.headers["retry-after"]) == (502, "1")
    assert sum(route.call_count for route in routes) == 2


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (httpx.ReadTimeout("slow"), 504),
        (httpx.RemoteProtocolError("garbage"), 502),
        (httpx.ReadError("reset"), 502),
    ],
    ids=["read-timeout", "protocol-error", "reset"],
)
async def test_a_read_is_not_retried_after_anything_but_a_connect_error(
    error: Exception, status: int
) -> None:
    import respx  # noqa: PLC0415

    app = _app()
    with respx.mock(assert_all_called=False) as mock:
        routes = [
            mock.get(f"http://{host}/x").mock(side_effect=error)
            for host in ("primary.test", "r1.test", "r2.test")
        ]
        response = await _call(app, "GET", "/x")
    await app.aclose()
    assert response.status_code == status
    assert sum(route.call_count for route in routes) == 1  # the request may have reached the upstream
    assert app.pool.retries == 0


async def test_requests_with_a_body_are_never_retried() -> None:
    import respx  # noqa: PLC0415

    app = _app()
    with respx.mock(assert_all_called=False) as mock:
        post = mock.post("http://primary.test/x").mock(side_effect=httpx.ConnectError("refused"))
        # respx reads the request body before the scripted failure: a GET whose body went upstream.
        gets = [
            mock.get(f"http://{host}/x").mock(side_effect=httpx.ConnectError("refused"))
            for host in ("primary.test", "r1.test", "r2.test")
        ]
        posted = await _call(app, "POST", "/x", content=b"body")
        got = await _call(app, "GET", "/x", content=b"body")
    await app.aclose()
    assert (posted.status_code, post.call_count) == (502, 1)
    assert (got.status_code, sum(route.call_count for route in gets)) == (502, 1)
    assert app.pool.retries == 0
