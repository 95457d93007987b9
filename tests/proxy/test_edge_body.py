"""Upstream failures after the response headers, and interim (1xx) responses, seen from a raw client.

An upstream that breaks off a body must never become a complete-looking response: once the client has the
headers, its connection is aborted (it sees an incomplete message); while the cache in front still buffers
(the client has nothing yet), the answer is a 502. Nothing partial is ever stored.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import respx

from edgecache.proxy.upstreams import HealthConfig
from tests.proxy.conftest import RESPX_TRANSPORT, MakeProxy, RunningUpstream
from tests.proxy.rawhttp import RawConnection, RawResponse

NO_PROBES = HealthConfig(interval=0)
GET = b"GET %s HTTP/1.1\r\nHost: client.example\r\n\r\n"


class ScriptedUpstream:
    """A real HTTP/1.1 server on 127.0.0.1 that answers each request with ``reply`` bytes, then closes."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.requests = 0
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            writer.write(self.reply)
            await writer.drain()
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedUpstream]:
    upstream = ScriptedUpstream(b"")
    await upstream.start()
    yield upstream
    await upstream.stop()


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def server_errors() -> Iterator[list[logging.LogRecord]]:
    """uvicorn's ERROR records ("Exception in ASGI application" tracebacks)."""
    handler = _Errors()
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    yield handler.records
    logger.removeHandler(handler)


async def _get(port: int, path: bytes, keep_alive: bool = False) -> tuple[RawResponse, bool]:
    """One GET; the response and (unless ``keep_alive`` is expected) whether the proxy then closed."""
    conn = await RawConnection.open(port)
    try:
        await conn.send(GET % path)
        response = await conn.response()
        return response, False if keep_alive else await conn.closed()
    finally:
        await conn.close()


TRUNCATED = {
    "content-length": b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100,
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n" + b"x" * 100 + b"\r\n",
}


@pytest.mark.parametrize("framing", list(TRUNCATED))
async def test_an_upstream_closing_mid_body_aborts_the_clients_connection(
    make_proxy: MakeProxy, scripted: ScriptedUpstream, server_errors: list[logging.LogRecord], framing: str
) -> None:
    scripted.reply = TRUNCATED[framing]
    proxy = await make_proxy(upstream_url=scripted.url, health=NO_PROBES)
    response, closed = await _get(proxy.port, b"/stream")
    assert response.status == 200  # the upstream's status went out before the body broke
    assert not response.complete  # short of Content-Length, or no last chunk: never a complete message
    assert response.body == b"x" * 100  # what the upstream sent was relayed as it came
    assert closed
    assert server_errors == []  # logged by the proxy in one line, not as an application traceback


async def test_a_cacheable_response_broken_mid_body_is_a_502_and_not_stored(
    make_proxy: MakeProxy, scripted: ScriptedUpstream
) -> None:
    scripted.reply = (
        b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100
    )
    proxy = await make_proxy(upstream_url=scripted.url, health=NO_PROBES)
    for attempt in (1, 2):
        # The cache buffers a storable response, so the client has nothing yet: a plain 502, never a 500.
        response, closed = await _get(proxy.port, b"/cached")
        assert (response.status, response.field("retry-after")) == (502, "1")
        assert closed
        assert scripted.requests == attempt  # nothing partial was stored: the second one goes upstream too


class _BreaksAfter(httpx.AsyncByteStream):
    def __init__(self, error: Exception) -> None:
        self.error = error

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"y" * 100
        raise self.error


@pytest.mark.parametrize(
    "error",
    [httpx.ReadError("reset by peer"), httpx.RemoteProtocolError("bad chunk"), httpx.ReadTimeout("slow")],
    ids=["reset", "protocol", "read-timeout"],
)
async def test_a_scripted_upstream_failing_mid_body(
    make_proxy: MakeProxy, upstream: RunningUpstream, error: Exception
) -> None:
    proxy = await make_proxy(
        upstream_url="http://upstream.test", health=NO_PROBES, transport=RESPX_TRANSPORT()
    )
    with respx.mock(assert_all_called=True) as mock:
        mock.get("http://upstream.test/stream").mock(
            return_value=httpx.Response(200, headers={"content-length": "1000"}, stream=_BreaksAfter(error))
        )
        cached = mock.get("http://upstream.test/cached").mock(
            side_effect=[
                httpx.Response(200, headers={"cache-control": "max-age=60"}, stream=_BreaksAfter(error)),
                httpx.Response(200, headers={"cache-control": "max-age=60"}, content=b"whole"),
            ]
        )
        streamed, closed = await _get(proxy.port, b"/stream")
        assert (streamed.status, streamed.complete, closed) == (200, False, True)
        broken, _ = await _get(proxy.port, b"/cached")
        assert broken.status == 502
        whole, _ = await _get(proxy.port, b"/cached", keep_alive=True)
        hit, _ = await _get(proxy.port, b"/cached", keep_alive=True)
    assert (whole.status, whole.body, whole.complete) == (200, b"whole", True)
    assert hit.body == b"whole" and "hit" in (hit.field("cache-status") or "")
    assert cached.call_count == 2  # the broken body was not stored; the whole one was


async def test_a_body_broken_while_buffering_is_answered_from_a_stale_if_error_copy(
    make_proxy: MakeProxy, upstream: RunningUpstream
) -> None:
    proxy = await make_proxy(
        upstream_url="http://upstream.test", health=NO_PROBES, transport=RESPX_TRANSPORT()
    )
    fields = {"cache-control": "max-age=1, stale-if-error=300"}
    with respx.mock(assert_all_called=True) as mock:
        route = mock.get("http://upstream.test/page").mock(
            side_effect=[
                httpx.Response(200, headers=fields, content=b"first"),
                httpx.Response(200, headers=fields, stream=_BreaksAfter(httpx.ReadError("reset"))),
            ]
        )
        stored, _ = await _get(proxy.port, b"/page", keep_alive=True)
        await asyncio.sleep(1.2)  # past max-age: the next request goes upstream
        fallback, _ = await _get(proxy.port, b"/page", keep_alive=True)
    assert stored.body == fallback.body == b"first"
    assert "fwd=stale" in (fallback.field("cache-status") or "")  # RFC 5861: the error is not shown
    assert route.call_count == 2


# -- interim responses ------------------------------------------------------------------------------------


@pytest.mark.parametrize("http", ["auto", "h11"])
async def test_expect_100_continue_gets_the_interim_response_then_the_body_goes_through(
    make_proxy: MakeProxy, upstream: RunningUpstream, http: str
) -> None:
    proxy = await make_proxy(http=http, health=NO_PROBES)
    conn = await RawConnection.open(proxy.port)
    try:
        await conn.send(
            b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = await conn.response()  # the server sends it once the proxy starts reading the body
        assert interim.status == 100
        await conn.send(b"coffee")
        final = await conn.response()
    finally:
        await conn.close()
    echoed = json.loads(final.body)
    assert (final.status, echoed["method"], echoed["body_bytes"]) == (200, "POST", 6)
    assert "expect" not in dict(echoed["headers"])  # answered here; httpx sends the body without waiting


async def test_expect_100_continue_with_a_body_over_the_limit_is_refused_without_continue(
    make_proxy: MakeProxy, upstream: RunningUpstream
) -> None:
    proxy = await make_proxy(health=NO_PROBES)
    conn = await RawConnection.open(proxy.port)
    try:
        await conn.send(
            b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 999999999999\r\nExpect: 100-continue\r\n\r\n"
        )
        response = await conn.response()
        assert response.status == 413  # the client is told before it sends a byte of the body
        assert await conn.closed()
    finally:
        await conn.close()
    assert upstream.app.hits["/echo"] == 0


async def test_an_upstreams_103_early_hints_is_not_relayed_but_its_final_response_is(
    make_proxy: MakeProxy, scripted: ScriptedUpstream
) -> None:
    # httpx/httpcore consume 1xx responses (other than 101) and ASGI has no message for them: the stack
    # cannot relay an upstream's interim responses, so the final one must arrive intact.
    scripted.reply = (
        b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nLink: </s.css>; rel=preload\r\n\r\nok"
    )
    proxy = await make_proxy(upstream_url=scripted.url, health=NO_PROBES)
    response, _ = await _get(proxy.port, b"/hints", keep_alive=True)
    assert (response.status, response.body, response.complete) == (200, b"ok", True)
    assert response.field("link") == "</s.css>; rel=preload"
