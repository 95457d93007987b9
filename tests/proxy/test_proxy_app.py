"""End to end: a real upstream behind the proxy (both uvicorn on 127.0.0.1), real sockets in between."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from edgecache.proxy.app import Limits, ProxyApp, UpstreamURLError, parse_upstream
from edgecache.proxy.upstreams import HealthConfig
from tests.proxy.conftest import RESPX_TRANSPORT, MakeProxy, RunningProxy, RunningUpstream, raw_exchange
from tests.proxy.upstream import BIG_SIZE, CHUNK, FIXED_DATE
from tests.servers import free_port


def _split(response: bytes) -> tuple[int, dict[str, list[str]], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    fields: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields.setdefault(name.strip().lower(), []).append(value.strip())
    return status, fields, body


async def _raw_echo(port: int, request_line: bytes, host: bytes = b"client.example") -> dict[str, Any]:
    data = request_line + b"\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"
    response, closed = await raw_exchange(port, data)
    assert closed
    status, _, body = _split(response)
    assert status == 200, response
    echoed: dict[str, Any] = json.loads(body)
    return echoed


@pytest.mark.parametrize(
    "path",
    [b"//evil.example/x", b"/../x", b"/%2e%2e/x", b"/a/./b/../c", b"/%2F%2f//x;p=1"],
)
async def test_path_bytes_reach_the_configured_upstream_unchanged(
    proxy: RunningProxy, upstream: RunningUpstream, path: bytes
) -> None:
    echoed = await _raw_echo(proxy.port, b"GET " + path + b"?q=%2e&b=1 HTTP/1.1", host=b"evil.example")
    assert echoed["raw_path"] == path.decode()
    assert echoed["query"] == "q=%2e&b=1"
    headers = dict(echoed["headers"])
    assert headers["host"] == f"127.0.0.1:{upstream.port}"


async def test_absolute_form_target_goes_to_the_configured_upstream(
    proxy: RunningProxy, upstream: RunningUpstream
) -> None:
    echoed = await _raw_echo(proxy.port, b"GET http://evil.example:81/abs/../p?x=1 HTTP/1.1")
    assert echoed["raw_path"] == "/abs/../p"
    assert echoed["query"] == "x=1"
    assert dict(echoed["headers"])["host"] == f"127.0.0.1:{upstream.port}"


def test_upstream_must_be_a_bare_base_url() -> None:
    assert str(parse_upstream("http://127.0.0.1:8000")) == "http://127.0.0.1:8000/"
    for bad in ("ftp://x", "http://h/prefix", "http://u:p@h", "http://h/?q=1", "nonsense"):
        with pytest.raises(UpstreamURLError):
            parse_upstream(bad)


async def test_methods_and_bodies_are_forwarded(proxy: RunningProxy, client: httpx.AsyncClient) -> None:
    # httptools (the proxy's parser) accepts llhttp's list of methods; all of them are forwarded.
    for method in ("PROPFIND", "PURGE", "LINK", "PATCH", "DELETE", "POST", "OPTIONS"):
        response = await client.request(method, proxy.url + "/any", content=b"z" * 1000)
        echoed = response.json()
        assert (echoed["method"], echoed["body_bytes"]) == (method, 1000)


async def test_unknown_method_is_forwarded_by_the_app(upstream: RunningUpstream) -> None:
    app = ProxyApp(upstream.url)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://p") as http:
        response = await http.request("BREW", "/pot", content=b"coffee")
    await app.aclose()
    assert (response.json()["method"], response.json()["body_bytes"]) == ("BREW", 6)


async def test_head_is_forwarded(proxy: RunningProxy, client: httpx.AsyncClient) -> None:
    response = await client.head(proxy.url + "/plain")
    assert response.status_code == 200
    assert response.content == b""


async def test_hop_by_hop_response_fields_dropped_date_and_server_passed_once(
    proxy: RunningProxy,
) -> None:
    response, _ = await raw_exchange(
        proxy.port, b"GET /headers HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    status, fields, body = _split(response)
    assert status == 200 and body == b"headers"
    for name in ("x-hop", "keep-alive", "proxy-authenticate", "upgrade"):
        assert name not in fields
    assert fields["x-end"] == ["kept"]
    assert fields["date"] == [FIXED_DATE.decode()]
    assert fields["server"] == ["upstream-server"]


async def test_request_fields_hop_by_hop_dropped_and_forwarded_fields_set(
    proxy: RunningProxy, client: httpx.AsyncClient, upstream: RunningUpstream
) -> None:
    response = await client.get(
        proxy.url + "/echo",
        headers={
            "Host": "public.example",
            "Connection": "x-secret, keep-alive",
            "X-Secret": "1",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Proxy-Authorization": "Basic eA==",
            "X-Forwarded-For": "6.6.6.6",
            "X-Forwarded-Proto": "gopher",
            "X-Forwarded-Host": "spoofed.example",
            "X-Kept": "yes",
        },
    )
    headers = dict(response.json()["headers"])
    for name in ("x-secret", "keep-alive", "te", "proxy-authorization", "connection"):
        assert name not in headers
    assert headers["x-kept"] == "yes"
    assert headers["x-forwarded-for"] == "127.0.0.1"  # the untrusted client's claim is replaced
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == "public.example"
    assert headers["host"] == f"127.0.0.1:{upstream.port}"


async def test_trusted_peer_x_forwarded_for_is_appended_to(
    make_proxy: MakeProxy, client: httpx.AsyncClient
) -> None:
    proxy = await make_proxy(trusted_proxies=["127.0.0.0/8"])
    response = await client.get(proxy.url + "/echo", headers={"X-Forwarded-For": "203.0.113.9"})
    assert dict(response.json()["headers"])["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"


async def test_preserve_host_sends_the_clients_host(make_proxy: MakeProxy, client: httpx.AsyncClient) -> None:
    proxy = await make_proxy(preserve_host=True)
    response = await client.get(proxy.url + "/echo", headers={"Host": "public.example"})
    assert dict(response.json()["headers"])["host"] == "public.example"


# -- caching ----------------------------------------------------------------------------------------------


async def test_cacheable_response_is_a_hit_the_second_time(
    proxy: RunningProxy, client: httpx.AsyncClient, upstream: RunningUpstream
) -> None:
    first = await client.get(proxy.url + "/cacheable")
    second = await client.get(proxy.url + "/cacheable")
    assert first.text == second.text == "cached 1"
    assert "fwd=uri-miss" in first.headers["cache-status"]
    assert "hit" in second.headers["cache-status"]
    assert upstream.app.hits["/cacheable"] == 1


async def test_response_without_freshness_is_not_stored(
    proxy: RunningProxy, client: httpx.AsyncClient, upstream: RunningUpstream
) -> None:
    first = await client.get(proxy.url + "/plain")
    second = await client.get(proxy.url + "/plain")
    assert (first.text, second.text) == ("plain 1", "plain 2")
    assert "hit" not in second.headers["cache-status"]


# -- streaming --------------------------------------------------------------------------------------------


async def test_large_response_streams_before_the_upstream_finishes(
    proxy: RunningProxy, client: httpx.AsyncClient, upstream: RunningUpstream
) -> None:
    received = 0
    async with client.stream("GET", proxy.url + "/big?gated=1") as response:
        assert response.status_code == 200
        async for chunk in response.aiter_raw():
            if received == 0:
                # The upstream holds the rest until the client has seen the start: no buffering anywhere.
                assert not upstream.app.big_finished
                upstream.app.gate.set()
            received += len(chunk)
    assert received == BIG_SIZE


async def test_large_upload_streams_before_the_client_finishes(
    proxy: RunningProxy, client: httpx.AsyncClient, upstream: RunningUpstream
) -> None:
    digest = hashlib.sha256()

    async def body() -> AsyncIterator[bytes]:
        for i in range(BIG_SIZE // CHUNK):
            chunk = bytes([i % 256]) * CHUNK
            digest.update(chunk)
            yield chunk
            if i == 0:
                # The upstream sees the first chunk while the rest is still unsent.
                await asyncio.wait_for(upstream.app.first_chunk.wait(), 5)

    response = await client.post(proxy.url + "/upload", content=body())
    assert response.json() == {"bytes": BIG_SIZE, "sha256": digest.hexdigest()}


async def test_upload_with_content_length(proxy: RunningProxy, client: httpx.AsyncClient) -> None:
    payload = b"abc" * (BIG_SIZE // 3)
    response = await client.put(proxy.url + "/upload", content=payload)
    assert response.json() == {"bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}


# -- upstream failures ------------------------------------------------------------------------------------


async def test_upstream_down_is_a_fast_503_with_retry_after(
    make_proxy: MakeProxy, client: httpx.AsyncClient
) -> None:
    # The health probes at start-up found it down: no attempt is made.
    proxy = await make_proxy(upstream_url=f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    response = await client.get(proxy.url + "/anything")
    assert (response.status_code, response.headers["retry-after"]) == (503, "1")
    assert time.monotonic() - started < 1.5
    post = await client.post(proxy.url + "/anything", content=b"x")
    assert post.status_code == 503


async def test_upstream_down_without_health_checks_is_a_fast_502_with_retry_after(
    make_proxy: MakeProxy, client: httpx.AsyncClient
) -> None:
    proxy = await make_proxy(upstream_url=f"http://127.0.0.1:{free_port()}", health=HealthConfig(interval=0))
    started = time.monotonic()
    response = await client.get(proxy.url + "/anything")
    assert (response.status_code, response.headers["retry-after"]) == (502, "1")
    assert time.monotonic() - started < 1.5
    post = await client.post(proxy.url + "/anything", content=b"x")
    assert post.status_code == 502


async def test_upstream_slower_than_the_read_timeout_is_a_504(
    make_proxy: MakeProxy, client: httpx.AsyncClient
) -> None:
    proxy = await make_proxy(read_timeout=0.3)
    started = time.monotonic()
    response = await client.get(proxy.url + "/slow?s=3")
    assert response.status_code == 504
    assert response.headers["retry-after"] == "1"
    assert time.monotonic() - started < 2


async def test_upstream_misbehaving_mid_headers_is_a_502() -> None:
    import respx  # noqa: PLC0415

    app = ProxyApp("http://upstream.test", transport=RESPX_TRANSPORT())
    with respx.mock(assert_all_called=True) as mock:
        mock.get("http://upstream.test/x").mock(side_effect=httpx.RemoteProtocolError("garbage"))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://p") as http:
            response = await http.get("/x")
    await app.aclose()
    assert response.status_code == 502


# -- request hygiene --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (
            b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0\r\n\r\n",
            400,
        ),
        (b"GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
        (b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\nabcd", 400),
        (b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431),
        (b"GET /echo HTTP/1.1\r\nHost: a\r\n" + b"X-N: 1\r\n" * 150 + b"\r\n", 431),
        (b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 200000000\r\n\r\n", 413),
    ],
    ids=["cl-and-te", "two-hosts", "two-lengths", "length-list", "huge-header", "many-headers", "cl-413"],
)
async def test_malformed_requests_are_refused_and_closed(
    proxy: RunningProxy, upstream: RunningUpstream, request_bytes: bytes, status: int
) -> None:
    response, closed = await raw_exchange(proxy.port, request_bytes)
    assert response.startswith(b"HTTP/1.1 %d" % status), response[:200]
    assert closed
    assert upstream.app.hits["/echo"] == 0


async def test_streamed_body_over_the_limit_is_a_413(
    make_proxy: MakeProxy, client: httpx.AsyncClient
) -> None:
    proxy = await make_proxy(limits=Limits(max_request_body=100_000))

    async def body() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"y" * 50_000

    response = await client.post(proxy.url + "/upload", content=body())
    assert response.status_code == 413


async def test_get_is_retried_once_on_a_connect_error_but_post_is_not() -> None:
    import respx  # noqa: PLC0415

    app = ProxyApp("http://upstream.test", transport=RESPX_TRANSPORT())
    with respx.mock() as mock:
        get = mock.get("http://upstream.test/r").mock(
            side_effect=[httpx.ConnectError("refused"), httpx.Response(200, text="second try")]
        )
        post = mock.post("http://upstream.test/r").mock(
            side_effect=[httpx.ConnectError("refused"), httpx.Response(200)]
        )
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://p") as http:
            got = await http.get("/r")
            posted = await http.post("/r", content=b"body")
    await app.aclose()
    assert (got.status_code, got.text, get.call_count) == (200, "second try", 2)
    assert (posted.status_code, post.call_count) == (502, 1)


async def test_upstream_cookies_are_relayed_and_never_kept_by_the_proxy(
    proxy: RunningProxy, client: httpx.AsyncClient
) -> None:
    login = await client.get(proxy.url + "/login")
    assert login.headers["set-cookie"] == "session=secret-of-one-user; Path=/"

    async with httpx.AsyncClient() as other_user:  # a client with an empty jar of its own
        echoed = (await other_user.get(proxy.url + "/echo")).json()
    assert "cookie" not in dict(echoed["headers"])  # nothing kept the first user's Set-Cookie
