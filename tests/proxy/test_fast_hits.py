"""The listener's fast path for plain L1 hits (``ProxyHttpToolsProtocol.fast_hit``): the same response as
the ASGI path, the same request hygiene, correct framing and connection handling, and hits counted once."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from edgecache.core.status import Reason
from edgecache.middleware import PlainHit
from edgecache.proxy.protocols import response_head
from edgecache.proxy.server import ProxyServer
from tests.proxy.conftest import MakeProxy, RunningProxy, RunningUpstream
from tests.proxy.rawhttp import RawConnection, RawResponse

GET = b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


class FastHits:
    """Wraps a server's fast path (before it starts) to record what it answered."""

    def __init__(self, server: ProxyServer) -> None:
        self.inner = server.app.hit_nowait
        self.answered: list[str] = []
        self.declined = 0
        server.protocol.fast_hit = staticmethod(self)  # type: ignore[attr-defined]

    def __call__(self, scope: dict[str, Any]) -> PlainHit | None:
        hit = self.inner(scope)
        if hit is None:
            self.declined += 1
        else:
            self.answered.append(f"{scope['method']} {scope['raw_path'].decode()}")
        return hit


async def start(make_proxy: MakeProxy, **options: Any) -> tuple[RunningProxy, FastHits]:
    spies: list[FastHits] = []
    proxy = await make_proxy(prepare=lambda server: spies.append(FastHits(server)), **options)
    return proxy, spies[0]


async def exchange(port: int, *requests: bytes, pipelined: bool = False) -> list[RawResponse]:
    """The responses to ``requests`` on one connection, each sent after the previous answer (or all at
    once when ``pipelined``)."""
    connection = await RawConnection.open(port)
    responses = []
    try:
        if pipelined:
            await connection.send(b"".join(requests))
            return [await connection.response(head=r.startswith(b"HEAD ")) for r in requests]
        for request in requests:
            await connection.send(request)
            responses.append(await connection.response(head=request.startswith(b"HEAD ")))
        return responses
    finally:
        await connection.close()


def comparable(response: RawResponse) -> dict[str, list[str]]:
    fields = dict(response.fields)
    fields.pop("age", None)
    fields["cache-status"] = [v.split(";")[1].strip() for v in fields.get("cache-status", [])]
    return fields


async def test_a_fast_hit_is_the_message_the_asgi_path_sends(
    make_proxy: MakeProxy, upstream: RunningUpstream
) -> None:
    fast, spy = await start(make_proxy)
    asgi = await make_proxy(http="h11")  # h11 has no fast path: every hit goes through the ASGI app
    for proxy in (fast, asgi):
        first, second = await exchange(proxy.port, GET % b"/cacheable", GET % b"/cacheable")
        assert "miss" in first.field("cache-status")  # type: ignore[operator]
        assert "hit" in second.field("cache-status")  # type: ignore[operator]
    assert spy.answered == ["GET /cacheable"]
    (fast_hit,) = await exchange(fast.port, GET % b"/cacheable")
    (asgi_hit,) = await exchange(asgi.port, GET % b"/cacheable")
    assert fast_hit.status == asgi_hit.status == 200
    assert (fast_hit.body, asgi_hit.body) == (b"cached 1", b"cached 2")  # one upstream, two caches
    assert comparable(fast_hit) == comparable(asgi_hit)
    assert fast_hit.field("cache-status").endswith("detail=l1")  # type: ignore[union-attr]


async def test_a_stored_response_without_content_length_gets_one(
    make_proxy: MakeProxy, upstream: RunningUpstream
) -> None:
    proxy, spy = await start(make_proxy)
    miss, hit, head = await exchange(
        proxy.port, GET % b"/chunked", GET % b"/chunked", b"HEAD /chunked HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert miss.field("transfer-encoding") == "chunked"
    assert hit.complete and hit.body == miss.body == b"chunked 1"
    assert hit.field("content-length") == "9" and hit.field("transfer-encoding") is None
    # HEAD: uvicorn's framing (no Content-Length invented), no body, and the connection stays usable.
    assert head.status == 200 and head.body == b"" and head.field("content-length") is None
    assert spy.answered == ["GET /chunked", "HEAD /chunked"]


async def test_head_hits_and_keep_alive(make_proxy: MakeProxy, upstream: RunningUpstream) -> None:
    proxy, spy = await start(make_proxy)
    await exchange(proxy.port, GET % b"/cacheable")
    connection = await RawConnection.open(proxy.port)
    try:
        for _ in range(3):
            await connection.send(b"HEAD /cacheable HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await connection.response(head=True)
            assert head.status == 200 and head.body == b"" and head.field("content-length") == "8"
            await connection.send(GET % b"/cacheable")
            assert (await connection.response()).body == b"cached 1"
    finally:
        await connection.close()
    assert len(spy.answered) == 6
    assert proxy.server.cache.stats.hits[Reason.L1] == 6  # each hit counted once
    assert upstream.app.hits["/cacheable"] == 1


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /cacheable HTTP/1.0\r\nHost: x\r\n\r\n",
        b"GET /cacheable HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ],
    ids=["http/1.0", "connection-close"],
)
async def test_a_fast_hit_closes_when_the_client_asked(
    make_proxy: MakeProxy, upstream: RunningUpstream, request_bytes: bytes
) -> None:
    proxy, spy = await start(make_proxy)
    await exchange(proxy.port, GET % b"/cacheable")
    connection = await RawConnection.open(proxy.port)
    try:
        await connection.send(request_bytes)
        response = await connection.response()
        assert response.body == b"cached 1" and response.field("connection") == "close"
        assert await connection.closed()
    finally:
        await connection.close()
    assert spy.answered == ["GET /cacheable"]


async def test_pipelined_requests_keep_their_order(make_proxy: MakeProxy, upstream: RunningUpstream) -> None:
    proxy, spy = await start(make_proxy)
    await exchange(proxy.port, GET % b"/cacheable")
    # A slow miss first: the hit behind it must wait for it (it takes the ASGI path, queued by uvicorn).
    slow, hit, miss, hit_again = await exchange(
        proxy.port,
        GET % b"/slow?s=0.2",
        GET % b"/cacheable",
        GET % b"/plain",
        GET % b"/cacheable",
        pipelined=True,
    )
    assert slow.body == b"slow done"
    assert hit.body == b"cached 1" and hit_again.body == b"cached 1"
    assert miss.body.startswith(b"plain")
    hits = await exchange(proxy.port, *[GET % b"/cacheable"] * 5, pipelined=True)
    assert [h.body for h in hits] == [b"cached 1"] * 5
    assert spy.answered.count("GET /cacheable") >= 5


@pytest.mark.parametrize(
    ("extra", "status"),
    [
        (b"Host: other\r\n", 400),  # a second Host
        (b"".join(b"X-F%d: v\r\n" % i for i in range(120)), 431),  # too many fields
    ],
    ids=["duplicate-host", "too-many-fields"],
)
async def test_the_guard_runs_before_a_fast_hit(
    make_proxy: MakeProxy, upstream: RunningUpstream, extra: bytes, status: int
) -> None:
    proxy, spy = await start(make_proxy)
    await exchange(proxy.port, GET % b"/cacheable")
    (response,) = await exchange(proxy.port, b"GET /cacheable HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n")
    assert response.status == status
    assert spy.answered == []


async def test_requests_that_need_the_full_path_are_declined(
    make_proxy: MakeProxy, upstream: RunningUpstream
) -> None:
    proxy, spy = await start(make_proxy)
    await exchange(proxy.port, GET % b"/cacheable")
    range_request = b"GET /cacheable HTTP/1.1\r\nHost: x\r\nRange: bytes=0-5\r\n\r\n"
    ranged, posted = await exchange(
        proxy.port, range_request, b"POST /cacheable HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    )
    assert ranged.status == 206 and ranged.body == b"cached"
    assert posted.status == 200
    assert spy.answered == [] and spy.declined == 2  # the first request (a miss) and the range request


def test_response_head_encodes_like_uvicorn() -> None:
    headers = [(b"content-type", b"text/plain"), (b"X-Mixed", b"v")]
    head = response_head(200, headers, b"abc", close=False)
    assert head == (b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-mixed: v\r\ncontent-length: 3\r\n\r\n")
    closing = response_head(404, [(b"content-length", b"0")], b"", close=True)
    assert closing == b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    assert response_head(200, [], None, close=False) == b"HTTP/1.1 200 OK\r\n\r\n"  # HEAD: no length
    assert response_head(200, [(b"x-bad", b"a\nb")], b"", close=False) is None
    assert response_head(200, [(b"bad name", b"v")], b"", close=False) is None


async def test_fast_hits_show_in_the_metrics(make_proxy: MakeProxy, upstream: RunningUpstream) -> None:
    proxy, spy = await start(make_proxy)
    await exchange(proxy.port, *[GET % b"/cacheable"] * 4)
    assert len(spy.answered) == 3
    async with httpx.AsyncClient(trust_env=False) as client:
        metrics = (await client.get(proxy.admin_url + "/metrics")).text
    hits = [
        line
        for line in metrics.splitlines()
        if line.startswith("edgecache_requests_total") and 'outcome="hit"' in line
    ]
    assert hits and sum(float(line.rsplit(" ", 1)[1]) for line in hits) == 3.0, hits


async def test_a_failing_fast_path_falls_back_to_the_asgi_path(
    make_proxy: MakeProxy, upstream: RunningUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(scope: dict[str, Any]) -> PlainHit | None:
        raise RuntimeError("bug in the shortcut")

    def prepare(server: ProxyServer) -> None:
        server.protocol.fast_hit = staticmethod(broken)  # type: ignore[attr-defined]

    proxy = await make_proxy(prepare=prepare)
    first, second = await exchange(proxy.port, GET % b"/cacheable", GET % b"/cacheable")
    assert (first.status, second.status) == (200, 200)
    assert "hit" in (second.field("cache-status") or "")  # served by the middleware's own hit path
    assert "the fast hit path failed" in caplog.text
