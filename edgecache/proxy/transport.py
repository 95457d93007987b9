"""A pooled HTTP/1.1 transport for httpx, on asyncio protocols and httptools' response parser.

Why not httpx's own transport: httpcore's pool checks every pooled connection's socket for readability on
each request (encode/httpcore#928), so its cost grows with the number of connections in flight; on the
proxy's miss path it made the proxy ~50x slower than its upstream. ``EdgeTransport`` keeps httpx's API
(``httpx.Request``/``httpx.Response`` and httpx's exception types, which ``ProxyApp`` maps to 502/504), and
does the HTTP/1.1 exchange itself:

- one pool per origin: idle keep-alive connections reused newest first (LIFO: the warmest socket, and the
  oldest ones expire), at most ``max_idle`` idle per origin, each dropped after ``idle_timeout`` seconds;
  at most ``max_connections`` per origin, a request beyond that waits up to the ``pool`` timeout
  (``httpx.PoolTimeout``);
- a connection goes back to the pool only after its response was read to the end with keep-alive allowed
  (HTTP/1.1, no ``Connection: close``, a body framed by Content-Length or chunked); anything else (an error,
  a cancelled request, a body left unread, a close-delimited body) closes it;
- a reused connection that the peer closed before sending a single response byte (it timed out the idle
  connection as the request went out) is retried once on a new connection, for a request without a body or
  with a bytes body only (a streamed body may have been consumed);
- the request goes out as given: the method's case, the ``target`` extension's bytes (else the URL's raw
  path), the header fields in order with their case; a body with Content-Length when the request has one,
  else chunked;
- the response: status, raw header fields (order and duplicates kept), 1xx interim responses skipped, the
  body streamed in bounded memory (reading from the socket pauses past ``_HIGH_WATER`` buffered bytes);
  HEAD, 204 and 304 have no body; chunked trailers are ignored;
- timeouts from the request's ``timeout`` extension: ``connect`` (``httpx.ConnectTimeout``), ``read`` for
  each wait for response bytes (``httpx.ReadTimeout``), ``write`` for each wait for the socket to drain
  (``httpx.WriteTimeout``), ``pool`` for a free connection. A refused connection is ``httpx.ConnectError``,
  a malformed response or one cut short ``httpx.RemoteProtocolError``, a reset ``httpx.ReadError``: the
  types httpcore raises, which ``ProxyApp`` already tells apart.

``https://`` origins are handed to an ``httpx.AsyncHTTPTransport`` (TLS is not on the hot path this
transport exists for).
"""

# The timeouts passed down are per wait (each read, each drain), as httpx defines them: not a deadline
# for the whole call that a caller could put around it with asyncio.timeout.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, Final, cast

import httptools
import httpx

DEFAULT_MAX_CONNECTIONS: Final = 1000
DEFAULT_MAX_IDLE: Final = 100
DEFAULT_IDLE_TIMEOUT: Final = 5.0  # below the 5 s keep-alive timeout of uvicorn, gunicorn, node's http
_HIGH_WATER: Final = 256 * 1024  # response bytes buffered before reading from the socket pauses
_WRITE_HIGH_WATER: Final = 64 * 1024
_NO_BODY_STATUS: Final = frozenset({204, 304})

Origin = tuple[bytes, bytes, int]


class _Stale(Exception):
    """The peer closed the connection before any byte of the response."""


class _Closed(Exception):
    """The connection closed while the request was going out (the response may be there already)."""


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: feeds httptools from ``data_received``; one exchange at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.lost: BaseException | None = None
        self.reused = False
        self.idle_since = 0.0
        self.active = False
        self.pool: _Pool | None = None
        self._waiter: asyncio.Future[bool] | None = None  # True: timed out
        self._drain: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._reset(b"GET")

    # -- per exchange -----------------------------------------------------------------------------------

    def _reset(self, method: bytes) -> None:
        self.head_only = method == b"HEAD"
        self.parser = httptools.HttpResponseParser(self)
        self.received = 0  # response bytes, interim responses included
        self.error: Exception | None = None
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.complete = False
        self.extra = False  # bytes past the end of the response: the connection cannot be reused
        self.framed = False  # Content-Length or chunked (else the body ends when the connection does)
        self.keep_alive = False
        self.version = "1.1"
        self.chunks: list[bytes] = []
        self.buffered = 0

    def begin(self, method: bytes) -> None:
        self._reset(method)
        self.active = True

    # -- asyncio.Protocol ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, hence a cast and no isinstance check.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=_WRITE_HIGH_WATER)

    def data_received(self, data: bytes) -> None:
        if not self.active or self.complete:
            # Bytes nobody asked for (on an idle connection, or past the end of a response): unusable.
            self.extra = True
            self.close()
            return
        self.received += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.error = httpx.RemoteProtocolError("unexpected protocol upgrade from upstream")
        except httptools.HttpParserError as error:
            if self.complete:
                self.extra = True  # garbage after a whole response: that response stands, the connection not
            else:
                self.error = httpx.RemoteProtocolError(f"malformed response from upstream: {error}")
        if self.error is not None or self.extra:
            self.close()
        elif self.buffered > _HIGH_WATER and self.transport is not None and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool | None:
        return None  # close our side too: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.lost = exc
        if not self.active and self.pool is not None:
            self.pool.forget(self)  # an idle connection the upstream closed: out of the pool now
        if self.headers_done and not self.complete and not self.framed and exc is None:
            self.complete = True  # a close-delimited body ends here (RFC 9112 §6.3, rule 8)
        self._wake()
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def pause_writing(self) -> None:
        if self._drain is None:
            self._drain = self.loop.create_future()

    def resume_writing(self) -> None:
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    # -- httptools callbacks ---------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.headers_done:
            self.extra = True  # a second response to one request

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.headers_done:  # after the head: chunked trailer fields, ignored
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            self.headers = []  # interim (100 Continue, 103 Early Hints): skipped, the final one follows
            self.reason = b""
            return
        self.status = status
        self.headers_done = True
        close = chunked = False
        length = None
        for name, value in self.headers:
            lname = name.lower()
            if lname == b"connection":
                close = close or b"close" in value.lower()
            elif lname == b"content-length":
                length = value
            elif lname == b"transfer-encoding":
                # chunked as the last coding frames the body; any other ends it at close (RFC 9112 §6.3)
                chunked = value.rstrip().lower().endswith(b"chunked")
        no_body = self.head_only or status in _NO_BODY_STATUS
        self.framed = no_body or chunked or length is not None
        self.version = self.parser.get_http_version()
        self.keep_alive = self.framed and not close and self.version == "1.1"
        if self.head_only:
            self.complete = True  # the parser would wait for Content-Length bytes that never come

    def on_body(self, body: bytes) -> None:
        if self.complete:
            self.extra = True
            return
        self.chunks.append(body)
        self.buffered += len(body)

    def on_message_complete(self) -> None:
        if self.headers_done:
            self.complete = True

    # -- waiting ---------------------------------------------------------------------------------------

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(False)

    async def _wait(self, timeout: float | None, request: httpx.Request) -> None:
        waiter = self._waiter = self.loop.create_future()
        handle = None if timeout is None else self.loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        finally:
            if handle is not None:
                handle.cancel()
            self._waiter = None
        if waiter.result():
            raise httpx.ReadTimeout("timed out waiting for the upstream's response", request=request)

    async def write(self, data: bytes, timeout: float | None, request: httpx.Request) -> None:
        if self.closed or self.transport is None or self.transport.is_closing():
            raise _Closed
        self.transport.write(data)
        drain = self._drain
        if drain is not None:
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(drain)
            except TimeoutError:
                raise httpx.WriteTimeout("timed out writing to the upstream", request=request) from None

    async def receive_head(self, timeout: float | None, request: httpx.Request) -> None:
        while True:
            if self.error is not None:
                raise self.error
            if self.headers_done:
                return
            if self.closed:
                if self.received == 0:
                    raise _Stale
                raise _read_error(self.lost, "upstream closed the connection mid-response", request)
            await self._wait(timeout, request)

    async def receive_body(self, timeout: float | None, request: httpx.Request) -> bytes:
        while True:
            if self.chunks:
                data = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
                self.chunks = []
                self.buffered = 0
                if self._reading_paused and self.transport is not None and not self.closed:
                    self._reading_paused = False
                    self.transport.resume_reading()
                return data
            if self.error is not None:
                raise self.error
            if self.complete:
                return b""
            if self.closed:
                raise _read_error(self.lost, "upstream closed the connection mid-body", request)
            await self._wait(timeout, request)

    @property
    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.extra and not self.closed and not self.chunks

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        self._wake()


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(True)


def _read_error(lost: BaseException | None, message: str, request: httpx.Request) -> Exception:
    if lost is not None:
        return httpx.ReadError(f"{message}: {lost!r}", request=request)
    return httpx.RemoteProtocolError(message, request=request)


class _Pool:
    """The connections to one origin."""

    def __init__(self, transport: EdgeTransport, host: str, port: int) -> None:
        self.owner = transport
        self.host = host
        self.port = port
        self.idle: deque[_Connection] = deque()
        self.count = 0  # connections open or opening, idle ones included
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.open: set[_Connection] = set()  # every connection, idle or in use (for aclose)

    async def acquire(
        self, timeouts: dict[str, float | None], request: httpx.Request, fresh: bool = False
    ) -> _Connection:
        """An idle connection (newest first), else a new one (``fresh``: a new one, or an idle one closed to
        make room), else wait for one within the pool timeout."""
        owner = self.owner
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        while True:
            idle = self.idle
            if fresh and idle and self.count >= owner.max_connections:
                self.discard(idle.popleft())
            if idle and not fresh:
                expiry = time.monotonic() - owner.idle_timeout
                while idle and idle[0].idle_since < expiry:
                    self.discard(idle.popleft())
                while idle:
                    conn = idle.pop()
                    if conn.closed:
                        self.discard(conn)
                        continue
                    conn.reused = True
                    return conn
            if self.count < owner.max_connections:
                self.count += 1
                try:
                    conn = await self.connect(loop, timeouts.get("connect"), request)
                except BaseException:
                    self.count -= 1
                    self.wake_one()
                    raise
                self.open.add(conn)
                conn.pool = self
                return conn
            pool_timeout = timeouts.get("pool")
            if deadline is None and pool_timeout is not None:
                deadline = loop.time() + pool_timeout
            waiter: asyncio.Future[None] = loop.create_future()
            self.waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            except BaseException as error:
                if waiter.done() and not waiter.cancelled():
                    self.wake_one()  # woken as the wait ended: pass the turn on
                else:
                    self.waiters.remove(waiter)
                if isinstance(error, TimeoutError):
                    raise httpx.PoolTimeout(
                        f"no connection to {self.host}:{self.port} free within {pool_timeout}s",
                        request=request,
                    ) from None
                raise

    async def connect(
        self, loop: asyncio.AbstractEventLoop, timeout: float | None, request: httpx.Request
    ) -> _Connection:
        conn = _Connection(loop)
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(lambda: conn, self.host, self.port)
        except TimeoutError:
            conn.close()
            raise httpx.ConnectTimeout(
                f"connecting to {self.host}:{self.port} timed out", request=request
            ) from None
        except OSError as error:
            raise httpx.ConnectError(
                f"cannot connect to {self.host}:{self.port}: {error}", request=request
            ) from None
        except BaseException:
            conn.close()
            raise
        return conn

    def release(self, conn: _Connection) -> None:
        """The exchange on ``conn`` is over: back to the pool when it can be reused, else closed."""
        conn.active = False
        if conn.reusable and not self.owner.closed:
            conn.idle_since = time.monotonic()
            self.idle.append(conn)
            while len(self.idle) > self.owner.max_idle:
                self.discard(self.idle.popleft())
        else:
            self.discard(conn)
        self.wake_one()

    def forget(self, conn: _Connection) -> None:
        if conn in self.open:
            with contextlib.suppress(ValueError):
                self.idle.remove(conn)
            self.discard(conn)

    def discard(self, conn: _Connection) -> None:
        conn.close()
        if conn in self.open:
            self.open.remove(conn)
            self.count -= 1
        self.wake_one()

    def wake_one(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        self.idle.clear()
        for conn in list(self.open):
            conn.close()  # an exchange in flight fails; its release then discards the connection


class _ResponseStream(httpx.AsyncByteStream):
    """The response body, straight from the connection; the connection is released at its end."""

    def __init__(self, pool: _Pool, conn: _Connection, request: httpx.Request, read: float | None) -> None:
        self.pool = pool
        self.conn: _Connection | None = conn
        self.request = request
        self.read = read
        self.done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self.conn
        if conn is None:
            if self.done:
                return  # a response without a body: released as it arrived
            raise httpx.StreamClosed()
        try:
            while True:
                chunk = await conn.receive_body(self.read, self.request)
                if not chunk:
                    break
                yield chunk
        except BaseException:
            conn.close()  # an error, a cancelled read or a consumer that stopped early
            raise
        finally:
            self.release()

    def release(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            self.done = True
            self.pool.release(conn)

    async def aclose(self) -> None:
        conn = self.conn
        if conn is not None and not (conn.complete and not conn.chunks):
            conn.close()  # the body was left unread: the connection is in an unknown state
        self.release()


class EdgeTransport(httpx.AsyncBaseTransport):
    """A pooled HTTP/1.1 transport (see the module's docstring); ``aclose`` closes every connection."""

    def __init__(
        self,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_idle: int = DEFAULT_MAX_IDLE,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    ) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections!r}")
        if max_idle < 0:
            raise ValueError(f"max_idle must be 0 or more, got {max_idle!r}")
        if not idle_timeout >= 0:
            raise ValueError(f"idle_timeout must be 0 or more seconds, got {idle_timeout!r}")
        self.max_connections = max_connections
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.closed = False
        self._pools: dict[tuple[str, int], _Pool] = {}
        self._tls: httpx.AsyncHTTPTransport | None = None

    def connections(self, host: str, port: int) -> tuple[int, int]:
        """(open, idle) connections to ``host:port``: for tests and metrics."""
        pool = self._pools.get((host, port))
        return (pool.count, len(pool.idle)) if pool is not None else (0, 0)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http":
            if url.scheme != "https":
                raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}", request=request)
            if self._tls is None:
                self._tls = httpx.AsyncHTTPTransport()
            return await self._tls.handle_async_request(request)
        if self.closed:
            raise RuntimeError("the transport is closed")
        host = url.host
        port = url.port or 80
        pool = self._pools.get((host, port))
        if pool is None:
            pool = self._pools[(host, port)] = _Pool(self, host, port)
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        head, body, replayable = _encode(request)
        method = request.method.encode("ascii")
        write_timeout = timeouts.get("write")
        read_timeout = timeouts.get("read")
        for attempt in (1, 2):
            # The retry takes a new connection: the other idle ones may have been closed as well.
            conn = await pool.acquire(timeouts, request, fresh=attempt == 2)
            try:
                conn.begin(method)
                try:
                    if body is None:
                        await conn.write(head, write_timeout, request)
                    elif isinstance(body, bytes):
                        await conn.write(head + body, write_timeout, request)
                    else:
                        await conn.write(head, write_timeout, request)
                        await _send_body(conn, body, write_timeout, request)
                except _Closed:
                    pass  # the upstream may have answered early (a 413, say) and closed: read what it sent
                await conn.receive_head(read_timeout, request)
            except _Stale:
                pool.discard(conn)
                if attempt == 1 and conn.reused and replayable:
                    continue
                raise httpx.RemoteProtocolError(
                    "upstream closed the connection without sending a response", request=request
                ) from None
            except BaseException:
                pool.discard(conn)
                raise
            break
        stream = _ResponseStream(pool, conn, request, read_timeout)
        if conn.complete and not conn.chunks:
            stream.release()  # no body (HEAD, 204, 304, an empty one): the connection is free now
        return httpx.Response(
            conn.status,
            headers=conn.headers,
            stream=stream,
            extensions={"http_version": b"HTTP/" + conn.version.encode(), "reason_phrase": conn.reason},
        )

    async def aclose(self) -> None:
        self.closed = True
        for pool in self._pools.values():
            pool.close()
        if self._tls is not None:
            await self._tls.aclose()


def _encode(request: httpx.Request) -> tuple[bytes, bytes | _Body | None, bool]:
    """The request head, the body (None, bytes, or a stream to send) and whether the request can be sent
    again (no body, or a bytes body)."""
    target: bytes = request.extensions.get("target") or request.url.raw_path
    raw = request.headers.raw
    length: int | None = None
    chunked = False
    for name, value in raw:
        lname = name.lower()
        if lname == b"content-length":
            length = int(value) if value.strip().isdigit() else -1
        elif lname == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
    if length == -1 or (chunked and length is not None):
        raise httpx.LocalProtocolError("invalid request framing (Content-Length)", request=request)
    stream = request.stream
    body: bytes | _Body | None = None
    replayable = True
    lines = [b"%s %s HTTP/1.1" % (request.method.encode("latin-1"), target)]
    lines.extend(b"%s: %s" % field for field in raw)
    if isinstance(stream, httpx.ByteStream):
        data = b"".join(stream)
        if chunked:
            body = (_chunk(data) if data else b"") + b"0\r\n\r\n"
        elif length is not None:
            if length != len(data):
                raise httpx.LocalProtocolError(
                    f"Content-Length {length} but a body of {len(data)} bytes", request=request
                )
            body = data or None
        elif data:
            lines.append(b"Content-Length: %d" % len(data))
            body = data
    else:
        replayable = False
        if length is None and not chunked:
            lines.append(b"Transfer-Encoding: chunked")
            chunked = True
        body = _Body(stream, length)
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    # No CR or LF inside the method, the target or a field (they would split the request: RFC 9112 §2.2).
    newlines = len(lines) + 1
    if head.count(b"\n") != newlines or head.count(b"\r") != newlines or b" " in target:
        raise httpx.LocalProtocolError(
            "CR, LF or space inside a request line or header field", request=request
        )
    return head, body, replayable


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class _Body:
    """A streamed request body: sent as is with its Content-Length (checked), else chunked."""

    __slots__ = ("length", "stream")

    def __init__(self, stream: httpx.AsyncByteStream | Any, length: int | None) -> None:
        self.stream = stream
        self.length = length


async def _send_body(conn: _Connection, body: _Body, timeout: float | None, request: httpx.Request) -> None:
    if body.length is None:
        async for data in body.stream:
            if data:
                await conn.write(_chunk(data), timeout, request)
        await conn.write(b"0\r\n\r\n", timeout, request)
        return
    sent = 0
    async for data in body.stream:
        sent += len(data)
        if sent > body.length:
            raise httpx.LocalProtocolError(f"request body longer than its Content-Length {body.length}")
        if data:
            await conn.write(data, timeout, request)
    if sent != body.length:
        raise httpx.LocalProtocolError(f"request body of {sent} bytes, Content-Length {body.length}")
