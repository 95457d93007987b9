"""EdgeTransport against real servers on 127.0.0.1: raw asyncio servers that script the exact bytes (and
misbehaviour) of an upstream, and a uvicorn app for the everyday path."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from edgecache.proxy.app import ProxyApp
from edgecache.proxy.transport import _HIGH_WATER, EdgeTransport
from tests.proxy.conftest import RunningUpstream

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "RawServer"], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request's head and de-chunked body; (b"", b"") at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return b"", b""
    lower = head.lower()
    body = b""
    if b"transfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            body += (await reader.readexactly(size + 2))[:-2]
            if size == 0:
                break
    elif b"content-length:" in lower:
        length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
        body = await reader.readexactly(length)
    return head, body


class RawServer:
    """An asyncio server on 127.0.0.1 running ``handler`` for each connection; it records every request."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[tuple[int, bytes, bytes]] = []  # (connection number, head, body)
        self.closed: list[int] = []  # connections the client closed (EOF seen)
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> RawServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def next_request(self, reader: asyncio.StreamReader, number: int) -> bytes:
        head, body = await read_request(reader)
        if head:
            self.requests.append((number, head, body))
        else:
            self.closed.append(number)
        return head

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            await self.handler(reader, writer, self)
        writer.close()

    async def stop(self) -> None:
        for writer in self.writers:
            writer.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def raw() -> AsyncIterator[Callable[[Handler], Awaitable[RawServer]]]:
    started: list[RawServer] = []

    async def make(handler: Handler) -> RawServer:
        server = await RawServer(handler).start()
        started.append(server)
        return server

    yield make
    for server in started:
        await server.stop()


@pytest.fixture
async def transport() -> AsyncIterator[EdgeTransport]:
    edge = EdgeTransport()
    yield edge
    await edge.aclose()


def client(edge: EdgeTransport, **timeouts: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=edge, timeout=httpx.Timeout(5.0, **timeouts))


async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer) -> None:
    """Answer every request on the connection with its connection number, keeping it open."""
    number = server.connections
    while await server.next_request(reader, number):
        body = b"%d" % number
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()


def scripted(*responses: bytes, then_close: bool = True) -> Handler:
    """Answer the requests on a connection with ``responses`` in turn, then close (or stay silent)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer) -> None:
        number = server.connections
        for response in responses:
            if not await server.next_request(reader, number):
                return
            writer.write(response)
            await writer.drain()
        if not then_close:  # stay open, answering nothing more, until the client closes
            while await server.next_request(reader, number):
                pass

    return handler


# -- the request on the wire -----------------------------------------------------------------------------


async def test_the_request_goes_out_exactly_as_given(raw, transport) -> None:
    server = await raw(keep_alive)
    request = httpx.Request(
        "GET",
        server.url("/ignored"),
        headers=[("X-B", "2"), ("x-a", "1"), ("X-B", "3")],
        extensions={"target": b"/a/../b//c?q=%2F&q=1", "timeout": httpx.Timeout(5).as_dict()},
    )
    request.method = "Get"  # methods are case-sensitive: sent as given
    async with client(transport) as http:
        response = await http.send(request)
    assert response.status_code == 200
    head = server.requests[0][1]
    lines = head.split(b"\r\n")
    assert lines[0] == b"Get /a/../b//c?q=%2F&q=1 HTTP/1.1"
    assert lines[1:5] == [b"Host: 127.0.0.1:%d" % server.port, b"X-B: 2", b"x-a: 1", b"X-B: 3"]


async def test_bodies_go_out_with_content_length_or_chunked(raw, transport) -> None:
    server = await raw(keep_alive)

    async def streamed() -> AsyncIterator[bytes]:
        yield b"abc"
        yield b""
        yield b"def"

    async with client(transport) as http:
        await http.post(server.url(), content=b"bytes body")
        await http.post(server.url(), content=streamed())
        await http.post(server.url(), content=streamed(), headers={"content-length": "6"})
        await http.post(server.url())
    heads = [head.lower() for _, head, _ in server.requests]
    bodies = [body for _, _, body in server.requests]
    assert bodies == [b"bytes body", b"abcdef", b"abcdef", b""]
    assert b"content-length: 10\r\n" in heads[0] and b"transfer-encoding" not in heads[0]
    assert b"transfer-encoding: chunked\r\n" in heads[1] and b"content-length" not in heads[1]
    assert b"content-length: 6\r\n" in heads[2] and b"transfer-encoding" not in heads[2]
    assert server.connections == 1  # one keep-alive connection for all four


async def test_a_streamed_body_that_disagrees_with_its_content_length_is_refused(raw, transport) -> None:
    server = await raw(keep_alive)

    async def streamed() -> AsyncIterator[bytes]:
        yield b"abc"

    async with client(transport) as http:
        with pytest.raises(httpx.LocalProtocolError):
            await http.post(server.url(), content=streamed(), headers={"content-length": "10"})
    assert transport.connections("127.0.0.1", server.port) == (0, 0)


async def test_cr_or_lf_in_a_field_is_refused(raw, transport) -> None:
    server = await raw(keep_alive)
    request = httpx.Request("GET", server.url(), headers={"x-a": "1"})
    request.headers._list[0] = (b"x-a", b"x-a", b"1\r\nInjected: yes")  # past httpx's own checks
    async with client(transport) as http:
        with pytest.raises(httpx.LocalProtocolError):
            await http.send(request)
    assert server.requests == []


# -- the response ----------------------------------------------------------------------------------------


async def test_response_fields_keep_their_order_case_and_duplicates(raw, transport) -> None:
    response_bytes = (
        b"HTTP/1.1 201 Made\r\nSet-Cookie: a=1\r\nX-Thing: x\r\nset-cookie: b=2\r\n"
        b"Content-Length: 3\r\n\r\nabc"
    )
    server = await raw(scripted(response_bytes))
    async with client(transport) as http:
        response = await http.get(server.url())
    assert (response.status_code, response.reason_phrase, response.content) == (201, "Made", b"abc")
    assert response.headers.raw == [
        (b"Set-Cookie", b"a=1"),
        (b"X-Thing", b"x"),
        (b"set-cookie", b"b=2"),
        (b"Content-Length", b"3"),
    ]


async def test_interim_responses_are_skipped(raw, transport) -> None:
    server = await raw(
        scripted(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n" + OK)
    )
    async with client(transport) as http:
        response = await http.post(server.url(), content=b"x", headers={"expect": "100-continue"})
    assert (response.status_code, response.content) == (200, b"ok")
    assert "link" not in response.headers


async def test_chunked_body_with_trailers_then_reuse(raw, transport) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    server = await raw(scripted(chunked, OK, then_close=False))
    async with client(transport) as http:
        first = await http.get(server.url())
        second = await http.get(server.url())
    assert (first.content, second.content) == (b"hello world", b"ok")
    assert "x-trailer" not in first.headers
    assert server.connections == 1


@pytest.mark.parametrize(
    "head", [b"HTTP/1.1 200 OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"]
)
async def test_close_delimited_body_is_read_to_the_end_and_not_reused(raw, transport, head: bytes) -> None:
    server = await raw(scripted(head + b"z" * 100_000))
    async with client(transport) as http:
        response = await http.get(server.url())
        assert response.content == b"z" * 100_000
        assert transport.connections("127.0.0.1", server.port) == (0, 0)


@pytest.mark.parametrize(
    ("method", "response_bytes"),
    [
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"),
        ("HEAD", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
        ("GET", b"HTTP/1.1 204 No Content\r\n\r\n"),
        ("GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1000\r\n\r\n"),
    ],
    ids=["head-length", "head-chunked", "204", "304"],
)
async def test_responses_without_a_body(raw, transport, method: str, response_bytes: bytes) -> None:
    server = await raw(scripted(response_bytes, OK, then_close=False))
    async with client(transport) as http:
        response = await http.request(method, server.url())
        assert response.content == b""
        assert transport.connections("127.0.0.1", server.port) == (1, 1)  # back in the pool at once
        assert (await http.get(server.url())).content == b"ok"
    assert server.connections == 1


async def test_a_large_body_streams_in_bounded_memory(raw, transport) -> None:
    size = 32 * 1024 * 1024

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer) -> None:
        await server.next_request(reader, 1)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        block = b"b" * 1024 * 1024
        for _ in range(32):
            writer.write(block)
            await writer.drain()

    server = await raw(big)
    received = 0
    peak = 0
    async with client(transport) as http, http.stream("GET", server.url()) as response:
        (conn,) = transport._pools[("127.0.0.1", server.port)].open
        async for chunk in response.aiter_raw():
            received += len(chunk)
            peak = max(peak, len(chunk))
            await asyncio.sleep(0)  # a slow reader: the socket must pause rather than buffer
            peak = max(peak, conn.buffered)
    assert received == size
    assert peak <= _HIGH_WATER + 512 * 1024  # one read past the high-water mark at most


# -- the pool --------------------------------------------------------------------------------------------


async def test_idle_connections_are_reused_newest_first(raw) -> None:
    server = await raw(keep_alive)
    edge = EdgeTransport()
    async with client(edge) as http:
        first = await http.send(http.build_request("GET", server.url()), stream=True)
        second = await http.send(http.build_request("GET", server.url()), stream=True)
        first_body = await first.aread()  # released first: the older idle connection
        second_body = await second.aread()  # released last: the one the next request gets
        again = await http.get(server.url())
    await edge.aclose()
    assert (first_body, second_body, again.content) == (b"1", b"2", b"2")


async def test_idle_connections_are_bounded_and_expire(raw) -> None:
    server = await raw(keep_alive)
    edge = EdgeTransport(max_idle=1, idle_timeout=0.2)
    async with client(edge) as http:
        await asyncio.gather(*(http.get(server.url()) for _ in range(3)))
        assert server.connections == 3
        assert edge.connections("127.0.0.1", server.port) == (1, 1)
        await asyncio.sleep(0.3)
        assert (await http.get(server.url())).content == b"4"  # the idle one had expired: a new one
    await edge.aclose()
    await asyncio.sleep(0.05)
    assert sorted(server.closed) == [1, 2, 3, 4]  # every connection closed by the client


async def test_an_idle_connection_closed_by_the_upstream_leaves_the_pool(raw, transport) -> None:
    server = await raw(scripted(OK))  # one answer, then the upstream closes the connection
    async with client(transport) as http:
        assert (await http.get(server.url())).content == b"ok"
        for _ in range(500):  # the close reaches the client within a few loop turns; 5 s at most
            if transport.connections("127.0.0.1", server.port) == (0, 0):
                break
            await asyncio.sleep(0.01)
        assert transport.connections("127.0.0.1", server.port) == (0, 0)


async def test_max_connections_waits_then_times_out_with_a_pool_timeout(raw) -> None:
    server = await raw(keep_alive)
    edge = EdgeTransport(max_connections=1)
    async with client(edge, pool=0.2) as http:
        held = await http.send(http.build_request("GET", server.url()), stream=True)
        with pytest.raises(httpx.PoolTimeout):
            await http.get(server.url())
        waiting = asyncio.create_task(http.get(server.url()))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await held.aread()
        assert (await waiting).content == b"1"  # the freed connection, reused
    await edge.aclose()
    assert server.connections == 1


async def test_a_reused_connection_closed_by_the_peer_is_retried_for_replayable_requests(raw) -> None:
    """The upstream answers one request per connection, then closes when the next one arrives."""

    async def one_then_close(reader, writer, server: RawServer) -> None:
        number = server.connections
        await server.next_request(reader, number)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n%d" % number)
        await writer.drain()
        await read_request(reader)  # the next request arrives, and is dropped unanswered

    server = await raw(one_then_close)
    edge = EdgeTransport()

    async def streamed() -> AsyncIterator[bytes]:
        yield b"once"

    async with client(edge) as http:
        assert (await http.get(server.url())).content == b"1"
        assert (await http.get(server.url())).content == b"2"  # retried on a new connection
        assert (await http.post(server.url(), content=b"bytes")).content == b"3"
        with pytest.raises(httpx.RemoteProtocolError):  # a streamed body cannot be sent twice
            await http.post(server.url(), content=streamed())
        assert (await http.get(server.url())).content == b"4"
    await edge.aclose()


async def test_the_retry_takes_a_new_connection_when_every_idle_one_is_stale(raw) -> None:
    """Like an upstream restart: each idle connection drops the next request sent on it."""

    async def one_then_drop(reader, writer, server: RawServer) -> None:
        number = server.connections
        await server.next_request(reader, number)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n%d" % number)
        await writer.drain()
        await read_request(reader)

    server = await raw(one_then_drop)
    edge = EdgeTransport()
    async with client(edge) as http:
        first = await asyncio.gather(*(http.get(server.url()) for _ in range(2)))
        assert sorted(r.content for r in first) == [b"1", b"2"]
        assert (await http.get(server.url())).content == b"3"
    await edge.aclose()


@pytest.mark.parametrize(
    "response_bytes",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA",
    ],
    ids=["connection-close", "http-1.0", "bytes-past-the-end"],
)
async def test_connections_that_cannot_be_reused_are_closed(raw, transport, response_bytes: bytes) -> None:
    server = await raw(scripted(response_bytes, then_close=False))
    async with client(transport) as http:
        response = await http.get(server.url())
        assert response.content == b"ok"
        await asyncio.sleep(0.05)
        assert transport.connections("127.0.0.1", server.port) == (0, 0)
    assert server.closed == [1]


async def test_a_body_left_unread_or_a_cancelled_read_closes_the_connection(raw, transport) -> None:
    slow = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nfive!"
    server = await raw(scripted(slow, then_close=False))
    async with client(transport) as http:
        response = await http.send(http.build_request("GET", server.url()), stream=True)
        await response.aclose()  # unread
        assert transport.connections("127.0.0.1", server.port) == (0, 0)

        task = asyncio.create_task(http.get(server.url()))
        await asyncio.sleep(0.1)  # blocked on the 5 missing bytes
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert transport.connections("127.0.0.1", server.port) == (0, 0)
    await asyncio.sleep(0.05)
    assert sorted(server.closed) == [1, 2]


async def test_aclose_closes_idle_and_busy_connections(raw) -> None:
    server = await raw(keep_alive)
    edge = EdgeTransport()
    async with client(edge) as http:
        await asyncio.gather(*(http.get(server.url()) for _ in range(3)))
        assert edge.connections("127.0.0.1", server.port) == (3, 3)
        await edge.aclose()
        await asyncio.sleep(0.05)
        assert sorted(server.closed) == [1, 2, 3]
        with pytest.raises(RuntimeError, match="closed"):
            await http.get(server.url())


# -- errors ----------------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_connect_refused_is_a_connect_error(transport) -> None:
    async with client(transport) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{_closed_port()}/")


async def test_connect_timeout() -> None:
    """A listener whose accept queue is full drops new SYNs (Linux): the connect hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    edge = EdgeTransport()
    try:
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        await asyncio.sleep(0.1)
        async with client(edge, connect=0.3) as http:
            with pytest.raises(httpx.ConnectTimeout):
                await http.get(f"http://127.0.0.1:{port}/")
    finally:
        await edge.aclose()
        for filler in fillers:
            filler.close()
        listener.close()


async def test_read_timeouts_before_the_head_and_mid_body(raw, transport) -> None:
    server = await raw(scripted(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nfive!", then_close=False))
    silent = await raw(lambda reader, writer, s: reader.read())
    async with client(transport, read=0.2) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get(silent.url())
        response = await http.send(http.build_request("GET", server.url()), stream=True)
        with pytest.raises(httpx.ReadTimeout):
            await response.aread()
    assert transport.connections("127.0.0.1", server.port) == (0, 0)


async def test_a_peer_that_never_reads_is_a_write_timeout(raw, transport) -> None:
    server = await raw(lambda reader, writer, s: asyncio.sleep(10))
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(256):  # 256 MiB at most; the kernel's buffers hold a few
            sent += 1
            yield b"w" * 1024 * 1024

    async with client(transport, write=0.3) as http:
        with pytest.raises(httpx.WriteTimeout):
            await http.post(server.url(), content=endless())
    assert sent < 256
    assert transport.connections("127.0.0.1", server.port) == (0, 0)


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [
        ("close-before-response", httpx.RemoteProtocolError),
        ("malformed", httpx.RemoteProtocolError),
        ("close-mid-head", httpx.RemoteProtocolError),
        ("close-mid-body", httpx.RemoteProtocolError),
        ("bad-chunk", httpx.RemoteProtocolError),
        ("reset-mid-body", httpx.ReadError),
    ],
)
async def test_broken_responses(raw, transport, behaviour: str, error: type[Exception]) -> None:
    async def misbehave(reader, writer, server: RawServer) -> None:
        await server.next_request(reader, 1)
        if behaviour == "malformed":
            writer.write(b"HTTP/1.1 abc nonsense\r\n\r\n")
        elif behaviour == "close-mid-head":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Le")
        elif behaviour == "close-mid-body":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nfive!")
        elif behaviour == "bad-chunk":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n")
        elif behaviour == "reset-mid-body":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nfive!")
            await writer.drain()
            await asyncio.sleep(0.05)
            _reset(writer)
            return
        await writer.drain()
        await asyncio.sleep(0.05)

    server = await raw(misbehave)
    async with client(transport) as http:
        with pytest.raises(error):
            await http.get(server.url())
    assert transport.connections("127.0.0.1", server.port) == (0, 0)


# -- through the proxy -----------------------------------------------------------------------------------


async def test_proxy_uses_the_transport_by_default_and_on_a_real_upstream(upstream: RunningUpstream) -> None:
    app = ProxyApp(upstream.url)
    assert isinstance(app.transport, EdgeTransport)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://p") as http:
        responses = await asyncio.gather(*(http.get("/big") for _ in range(4)))
        echoed = await http.post("/echo", content=b"payload")
    await app.aclose()
    assert {len(r.content) for r in responses} == {len((await _direct(upstream, "/big")).content)}
    assert (echoed.status_code, echoed.json()["body_bytes"]) == (200, 7)


async def _direct(upstream: RunningUpstream, path: str) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.get(upstream.url + path)
