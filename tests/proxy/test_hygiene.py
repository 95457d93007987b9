"""Request hygiene at the edge, whatever the server library lets through: each check runs on every parser
the proxied listener offers (``http=auto|httptools|h11``), with raw sockets for what clients cannot send."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from edgecache.config import Settings
from edgecache.proxy.upstreams import HealthConfig
from tests.proxy.conftest import MakeProxy, RunningUpstream, raw_exchange, start_upstream
from tests.proxy.rawhttp import RawConnection
from tests.proxy.upstream import CHUNK, Upstream

NO_PROBES = HealthConfig(interval=0)
PARSERS = ["auto", "httptools", "h11"]
HUGE = 2 * 1024 * 1024


class KeyedUpstream(Upstream):
    """Answers ``/huge`` with 2 MB, cacheable but over the test's object limit (gated after 512 KiB until
    ``gate``), and anything else with the exact target it received, cacheable for a minute."""

    def __init__(self) -> None:
        super().__init__("keyed")
        self.targets: Counter[bytes] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        query: bytes = scope["query_string"]
        target: bytes = scope["raw_path"] + (b"?" + query if query else b"")
        self.targets[target] += 1
        cacheable = [(b"cache-control", b"max-age=60")]
        if scope["path"] == "/huge":
            await send({"type": "http.response.start", "status": 200, "headers": cacheable})
            for sent in range(CHUNK, HUGE + 1, CHUNK):
                await send({"type": "http.response.body", "body": b"h" * CHUNK, "more_body": True})
                if sent == 8 * CHUNK:
                    await asyncio.wait_for(self.gate.wait(), 10)  # the client must see bytes before this
            await send({"type": "http.response.body", "body": b""})
            return
        headers = [*cacheable, (b"content-length", b"%d" % len(target))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": target})


@pytest.fixture
async def keyed() -> AsyncIterator[RunningUpstream]:
    running = await start_upstream(KeyedUpstream())
    yield running
    await running.stop()


def _targets(running: RunningUpstream) -> Counter[bytes]:
    app = running.app
    assert isinstance(app, KeyedUpstream)
    return app.targets


def _post(fields: bytes, body: bytes) -> bytes:
    return b"POST /echo HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n" + body


TE, CL = b"Transfer-Encoding: ", b"Content-Length: "
LAST_CHUNK = b"0\r\n\r\n"
MALFORMED = {
    "cl-and-te": (_post(CL + b"5\r\n" + TE + b"chunked\r\n", LAST_CHUNK), {400}),
    "te-and-cl": (_post(TE + b"chunked\r\n" + CL + b"5\r\n", LAST_CHUNK), {400}),
    "te-not-chunked": (_post(TE + b"gzip\r\n", b"abc"), {400}),
    "te-chunked-not-last": (_post(TE + b"chunked, gzip\r\n", LAST_CHUNK), {400}),
    "te-gzip-chunked": (_post(TE + b"gzip, chunked\r\n", b"3\r\nabc\r\n" + LAST_CHUNK), {400, 501}),
    "te-xchunked": (_post(TE + b"xchunked\r\n", LAST_CHUNK), {400}),
    "te-space-before-colon": (_post(b"Transfer-Encoding : chunked\r\n" + CL + b"3\r\n", b"abc"), {400}),
    "te-twice": (_post(TE + b"chunked\r\n" + TE + b"chunked\r\n", LAST_CHUNK), {400, 501}),
    "cl-signed": (_post(CL + b"+3\r\n", b"abc"), {400}),
    "cl-conflicting": (_post(CL + b"3\r\n" + CL + b"4\r\n", b"abcd"), {400}),
    "cl-list": (_post(CL + b"3, 4\r\n", b"abcd"), {400}),
    "two-hosts": (b"GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", {400}),
    "no-host": (b"GET /echo HTTP/1.1\r\n\r\n", {400}),
    "nul-in-value": (b"GET /echo HTTP/1.1\r\nHost: a\r\nX-A: 1\x002\r\n\r\n", {400}),
    "relative-target": (b"GET echo HTTP/1.1\r\nHost: a\r\n\r\n", {400}),
    "long-target": (b"GET /echo?" + b"q" * 20_000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", {414}),
    "huge-header": (b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", {431}),
    "many-headers": (b"GET /echo HTTP/1.1\r\nHost: a\r\n" + b"X-N: 1\r\n" * 150 + b"\r\n", {431}),
    "body-too-large": (_post(CL + b"200000000\r\n", b""), {413}),
}


@pytest.mark.parametrize("http", PARSERS)
@pytest.mark.parametrize("vector", list(MALFORMED))
async def test_malformed_requests_are_refused_closed_and_never_forwarded(
    make_proxy: MakeProxy, upstream: RunningUpstream, http: str, vector: str
) -> None:
    data, statuses = MALFORMED[vector]
    proxy = await make_proxy(http=http, health=NO_PROBES)
    response, closed = await raw_exchange(proxy.port, data)
    status = int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else None
    assert status in statuses, response[:200]
    assert closed
    await asyncio.sleep(0.05)  # anything forwarded would have reached the upstream by now
    assert upstream.app.hits["/echo"] == 0


@pytest.mark.parametrize("http", PARSERS)
async def test_absolute_form_and_host_never_choose_the_upstream_or_the_key(
    make_proxy: MakeProxy, keyed: RunningUpstream, http: str
) -> None:
    proxy = await make_proxy(upstream_url=keyed.url, http=http, health=NO_PROBES)
    conn = await RawConnection.open(proxy.port)
    try:
        await conn.send(b"GET http://evil.example:81/abs/../p?x=1 HTTP/1.1\r\nHost: other.example\r\n\r\n")
        first = await conn.response()
        await conn.send(b"GET /abs/../p?x=1 HTTP/1.1\r\nHost: third.example\r\n\r\n")
        second = await conn.response()
    finally:
        await conn.close()
    assert first.body == second.body == b"/abs/../p?x=1"  # the path, as received, without the authority
    assert "hit" in (second.field("cache-status") or "")  # one key: neither authority nor Host is in it
    assert _targets(keyed) == Counter({b"/abs/../p?x=1": 1})


@pytest.mark.parametrize("http", PARSERS)
async def test_paths_are_forwarded_as_received_and_keyed_exactly_so(
    make_proxy: MakeProxy, keyed: RunningUpstream, http: str
) -> None:
    proxy = await make_proxy(upstream_url=keyed.url, http=http, health=NO_PROBES)
    targets = [
        b"/a/../b",
        b"/b",
        b"/a/%2E%2E/b",
        b"/x%2Fy",
        b"/x/y",
        b"/p;v=1",
        b"/p",
        b"//h/q",
        b"/s?b=2&a=1",
    ]
    conn = await RawConnection.open(proxy.port)
    try:
        for target in targets * 2:
            await conn.send(b"GET " + target + b" HTTP/1.1\r\nHost: client.example\r\n\r\n")
            response = await conn.response()
            # Each body is what the upstream received for exactly these bytes; the second round is all hits.
            assert (response.status, response.body) == (200, target)
    finally:
        await conn.close()
    assert _targets(keyed) == Counter(dict.fromkeys(targets, 1))  # distinct bytes, distinct entries


async def test_trusted_peers_forwarded_fields_are_honoured_untrusted_ones_replaced(
    make_proxy: MakeProxy, client: httpx.AsyncClient
) -> None:
    spoofed = [
        ("X-Forwarded-For", "203.0.113.9"),
        ("X-Forwarded-For", "198.51.100.7"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "www.example"),
    ]
    trusting = await make_proxy(trusted_proxies=["127.0.0.1"], health=NO_PROBES)
    untrusting = await make_proxy(trusted_proxies=["10.0.0.0/8"], health=NO_PROBES)
    seen: list[dict[str, Any]] = []
    for proxy in (trusting, untrusting):
        response = await client.get(
            proxy.url + "/echo", headers=httpx.Headers([*spoofed, ("Host", "h.example")])
        )
        fields = json.loads(response.text)["headers"]
        seen.append(
            {
                name: [v for n, v in fields if n == name]
                for name in ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host")
            }
        )
    assert seen[0] == {
        "x-forwarded-for": ["203.0.113.9, 198.51.100.7, 127.0.0.1"],  # one field: the chain, then the peer
        "x-forwarded-proto": ["https"],
        "x-forwarded-host": ["www.example"],
    }
    assert seen[1] == {
        "x-forwarded-for": ["127.0.0.1"],  # never appended to an untrusted claim
        "x-forwarded-proto": ["http"],
        "x-forwarded-host": ["h.example"],
    }


async def test_a_cacheable_response_over_the_object_limit_streams_through_uncached(
    make_proxy: MakeProxy, keyed: RunningUpstream, client: httpx.AsyncClient
) -> None:
    settings = Settings(default_ttl=0, max_object_bytes=256 * 1024)
    proxy = await make_proxy(upstream_url=keyed.url, settings=settings, health=NO_PROBES)
    for attempt in (1, 2):
        keyed.app.gate.clear()
        received = 0
        async with client.stream("GET", proxy.url + "/huge") as response:
            status = response.headers["cache-status"]
            async for chunk in response.aiter_raw():
                keyed.app.gate.set()  # the upstream waits for this: nothing may buffer the whole body
                received += len(chunk)
        assert received == HUGE
        assert "hit" not in status and "stored" not in status
        assert _targets(keyed)[b"/huge"] == attempt  # not stored: the second one goes upstream too
