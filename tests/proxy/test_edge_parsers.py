"""The proxied listener's HTTP parsers (``ProxyServer(http=auto|httptools|h11)``), through raw sockets.

llhttp (httptools) knows a fixed list of methods; ``auto`` hands a connection that uses another one to h11,
so every method is forwarded while known ones keep httptools' speed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from edgecache.proxy.protocols import protocol_class
from edgecache.proxy.server import ProxyServer
from edgecache.proxy.upstreams import HealthConfig
from tests.proxy.conftest import MakeProxy, RunningUpstream, raw_exchange
from tests.proxy.rawhttp import RawConnection, RawResponse

NO_PROBES = HealthConfig(interval=0)


def _request(method: bytes, body: bytes = b"", close: bool = False, path: bytes = b"/echo") -> bytes:
    head = method + b" " + path + b" HTTP/1.1\r\nHost: client.example\r\nContent-Length: %d\r\n" % len(body)
    return head + (b"Connection: close\r\n" if close else b"") + b"\r\n" + body


def _echoed(response: RawResponse) -> dict[str, Any]:
    assert response.status == 200, response
    echoed: dict[str, Any] = json.loads(response.body)
    return echoed


@pytest.mark.parametrize("http", ["auto", "h11"])
async def test_unknown_methods_are_forwarded_on_a_keep_alive_connection(
    make_proxy: MakeProxy, upstream: RunningUpstream, http: str
) -> None:
    proxy = await make_proxy(http=http, health=NO_PROBES)
    conn = await RawConnection.open(proxy.port)
    try:
        # Known, unknown (h11 takes the connection over in auto), lower-case (another method), known again.
        for method, body in [(b"GET", b""), (b"BREW", b"coffee"), (b"get", b""), (b"PROPFIND", b"<x/>")]:
            await conn.send(_request(method, body))
            echoed = _echoed(await conn.response())
            assert (echoed["method"], echoed["body_bytes"]) == (method.decode(), len(body))
            assert dict(echoed["headers"])["host"] == f"127.0.0.1:{upstream.port}"
    finally:
        await conn.close()


async def test_an_unknown_method_split_over_two_reads_is_forwarded(
    make_proxy: MakeProxy, upstream: RunningUpstream
) -> None:
    proxy = await make_proxy(health=NO_PROBES)
    conn = await RawConnection.open(proxy.port)
    try:
        data = _request(b"BREW", b"tea")
        await conn.send(data[:2])  # llhttp rejects "BR" at once: the h11 hand-over replays these bytes
        await asyncio.sleep(0.05)
        await conn.send(data[2:])
        assert _echoed(await conn.response())["method"] == "BREW"
    finally:
        await conn.close()


async def test_httptools_alone_refuses_unknown_methods(
    make_proxy: MakeProxy, upstream: RunningUpstream
) -> None:
    proxy = await make_proxy(http="httptools", health=NO_PROBES)
    conn = await RawConnection.open(proxy.port)
    try:
        await conn.send(_request(b"BREW", b"coffee"))
        response = await conn.response()
        assert response.status == 400
        assert await conn.closed()
    finally:
        await conn.close()
    assert upstream.app.hits["/echo"] == 0


async def test_an_unknown_method_pipelined_behind_another_request_is_refused_not_misread(
    make_proxy: MakeProxy, upstream: RunningUpstream
) -> None:
    # Its start inside the read is unknown, so it cannot be replayed: 400 and close, as uvicorn does for
    # any bad request in a pipeline (the response to the request before it may be cut: a documented limit).
    proxy = await make_proxy(health=NO_PROBES)
    received, closed = await raw_exchange(
        proxy.port, _request(b"GET") + _request(b"BREW", b"x", path=b"/brew")
    )
    assert b"HTTP/1.1 400 " in received
    assert closed
    assert upstream.app.hits["/brew"] == 0


@pytest.mark.parametrize("http", ["auto", "httptools", "h11"])
async def test_an_endless_header_is_refused_while_it_streams_in(
    make_proxy: MakeProxy, upstream: RunningUpstream, http: str
) -> None:
    """The head is bounded while it arrives (llhttp has no limit of its own; h11's answer would be 400)."""
    proxy = await make_proxy(http=http, health=NO_PROBES)
    conn = await RawConnection.open(proxy.port)
    sent = 0
    answer = b""
    try:
        await conn.send(b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Big: ")
        while sent < 4 * 1024 * 1024 and not answer:
            try:
                await conn.send(b"a" * 8192)
            except ConnectionError:
                break
            sent += 8192
            try:
                async with asyncio.timeout(0.01):
                    answer = await conn.reader.read(65536)
            except TimeoutError:
                pass
        if not answer:
            answer = await conn.reader.read(65536)
    finally:
        await conn.close()
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    assert sent < 512 * 1024  # refused near the limit (64 KiB of fields + 8 KiB of target), not at the end
    assert upstream.app.hits["/echo"] == 0


def test_a_bad_parser_choice_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="http must be one of auto, httptools, h11"):
        protocol_class("zttp", max_target=1, max_header_bytes=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'fast'"):
        ProxyServer("http://127.0.0.1:1", ("127.0.0.1", 0), None, http="fast")  # type: ignore[arg-type]
