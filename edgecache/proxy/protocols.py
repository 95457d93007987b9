"""The HTTP/1.1 parsers the proxy's listener can run on, chosen by ``ProxyServer(http=...)``.

- ``httptools`` (llhttp, C): the fastest, but llhttp knows a fixed list of methods and answers any other
  (``BREW``, ``get``, a private extension method) with 400 before the app sees it.
- ``h11`` (pure Python): accepts every method token RFC 9110 allows; slower per request.
- ``auto`` (the default): ``ProxyHttpToolsProtocol`` - httptools, and a connection whose request starts with
  a method llhttp does not know is handed, from that request on, to uvicorn's h11 protocol, which replays
  the bytes received so far. Known methods keep httptools' speed; unknown ones are forwarded like any other.

The httptools protocol answers a plain L1 hit itself (``fast_hit``): when the request head is complete, a
GET/HEAD that the guard accepts and that ``CacheInterceptor.hit_nowait`` answers is written straight to the
socket, without the ASGI request cycle, its task and its messages; every other request takes the ASGI path
unchanged. The response is the one the ASGI path sends (the middleware's plain-hit code builds it), in
uvicorn's encoding; the one difference is framing: a body stored without Content-Length is sent with one,
where uvicorn would chunk it. The shortcut only saves the per-request machinery, which is most of the
Python cost of a hit.

Both bound a request head *while it arrives* (llhttp has no limit of its own, so uvicorn would gather a
header line of any length in memory; h11's own limit answers 400): a request target longer than
``max_target`` answers 414, a head larger than the target and ``max_header_bytes`` together (plus a little)
431, and the connection is closed. ``RequestGuard`` then checks the parsed head exactly (the count and size
of the fields, the target), whatever the server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, ClassVar, Final, Literal

import h11
import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
)
from uvicorn.server import ServerState

from edgecache.core.entry import RawHeaders
from edgecache.middleware import PlainHit
from edgecache.proxy.app import DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_TARGET

FastHit = Callable[[dict[str, Any]], PlainHit | None]

logger = logging.getLogger("edgecache.proxy")

HttpParser = Literal["auto", "httptools", "h11"]
HTTP_PARSERS: Final[tuple[HttpParser, ...]] = ("auto", "httptools", "h11")
_HEAD_SLACK: Final = 4096  # method, version and line ends on top of the target and the header fields
_WIRE_MEMO_ENTRIES: Final = 4096
_FAST_METHODS: Final = frozenset({b"GET", b"HEAD"})


def refuse(transport: asyncio.Transport, status: int, text: str) -> None:
    """Answer ``status`` with a short text and close: the request head was not (fully) parsed."""
    body = text.encode("ascii")
    head = b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
    transport.write(STATUS_LINE[status] + head % len(body) + body)
    transport.close()


def response_head(status: int, headers: RawHeaders, body: bytes | None, *, close: bool) -> bytes | None:
    """The status line and header section uvicorn writes for this response, ``connection: close`` added
    when the connection ends after it; None when uvicorn would refuse to write it (a bad field name or
    value). A response without Content-Length gets one for ``body`` (uvicorn would chunk it: the same
    message); ``body`` None (HEAD) adds none, as uvicorn."""
    content = [STATUS_LINE[status]]
    length = body is None
    for name, value in headers:
        if HEADER_RE.search(name) or HEADER_VALUE_RE.search(value):
            return None
        lower = name.lower()
        if lower == b"content-length":
            length = True
        content.extend((lower, b": ", value, b"\r\n"))
    if not length:
        content.append(b"content-length: %d\r\n" % len(body or b""))
    if close:
        content.append(b"connection: close\r\n")
    content.append(b"\r\n")
    return b"".join(content)


class ProxyH11Protocol(H11Protocol):
    """uvicorn's h11 protocol answering 431 (not uvicorn's 400) to a request head over ``max_head`` bytes."""

    max_head: ClassVar[int] = DEFAULT_MAX_HEADER_BYTES + DEFAULT_MAX_TARGET + _HEAD_SLACK

    def data_received(self, data: bytes) -> None:
        # IDLE: everything h11 holds is the head of the next request (it reads no body before a head).
        if self.conn.their_state is h11.IDLE and len(self.conn.trailing_data[0]) + len(data) > self.max_head:
            self._unset_keepalive_if_required()
            refuse(self.transport, 431, "request head too large")
            return
        super().data_received(data)


class ProxyHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with head limits enforced while parsing, and (``h11_fallback``) the
    hand-over of a connection to h11 when llhttp rejects a request's method."""

    h11_fallback: ClassVar[type[H11Protocol] | None] = ProxyH11Protocol
    max_target: ClassVar[int] = DEFAULT_MAX_TARGET
    max_header_bytes: ClassVar[int] = DEFAULT_MAX_HEADER_BYTES
    # A staticmethod in the class (set by protocol_class), so that it is not bound to the protocol.
    fast_hit: ClassVar[staticmethod[[dict[str, Any]], PlainHit | None] | None] = None
    # (id(headers), method, close) -> (headers, encoded head): PlainHit gives the same headers list for
    # every hit on an entry within a second of its age, so it is encoded once. The list is held here, so
    # its id cannot be reused while the memo entry lives. Shared by the connections of one listener.
    wire_heads: ClassVar[dict[tuple[int, bytes, bool], tuple[RawHeaders, bytes | None]]]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._idle = True  # between two requests: the next byte starts a request line
        # The bytes received since the current request began, kept only until its method is known good
        # (on_url), so that they can be replayed to h11; None once unknown or no longer needed.
        self._pending: bytes | None = None
        self._pending_begun = False
        self._in_head = False
        self._head_received = 0  # bytes read while this request's head was incomplete
        self._target_bytes = 0
        self._refusal: tuple[int, str] | None = None
        self._answered = False  # the current request was answered by the fast path (no ASGI cycle)

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        if self._idle:
            self._pending, self._pending_begun = data, False
        elif self._pending is not None:
            self._pending += data
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserInvalidMethodError:
            if self.h11_fallback is not None and self._pending is not None and self._at_rest():
                self._hand_to_h11(self.h11_fallback, self._pending)
                return
            self._refuse(400, "Invalid HTTP request received.")
        except httptools.HttpParserCallbackError:
            # A limit callback below refused the head: it has said with which status.
            status, text = self._refusal or (400, "Invalid HTTP request received.")
            self._refuse(status, text)
        except httptools.HttpParserError:
            self._refuse(400, "Invalid HTTP request received.")
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        else:
            if self._in_head:
                # llhttp gathers a header line of any length before calling back: bound the whole head.
                self._head_received += len(data)
                if self._head_received > self.max_target + self.max_header_bytes + _HEAD_SLACK:
                    self._refuse(431, "request head too large")

    def _at_rest(self) -> bool:
        # No earlier response still being written: h11 may own the connection from here on.
        return self.cycle is None or self.cycle.response_complete

    def _hand_to_h11(self, h11_class: type[H11Protocol], data: bytes) -> None:
        self.connections.discard(self)
        protocol = h11_class(self.config, self.server_state, self.app_state, self.loop)
        protocol.connection_made(self.transport)
        self.transport.set_protocol(protocol)
        self.parser = None  # type: ignore[assignment]
        protocol.data_received(data)

    def _refuse(self, status: int, text: str) -> None:
        if status == 400:
            self.logger.warning(text)
        refuse(self.transport, status, text)

    def _over(self, status: int, text: str) -> None:
        self._refusal = (status, text)
        raise ValueError(text)  # httptools turns it into HttpParserCallbackError and stops parsing

    # -- parser callbacks -------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._pending_begun:
            self._pending = None  # a second request began inside the kept bytes: its start is unknown
        self._pending_begun = True
        self._idle = False
        self._in_head = True
        self._head_received = 0
        self._target_bytes = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._pending = None  # the method was one llhttp knows
        self._target_bytes += len(url)
        if self._target_bytes > self.max_target:
            self._over(414, "request target too long")
        self.url += url

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self.fast_hit is not None and self._answer_hit(self.fast_hit):
            self._answered = True
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._answered:  # a fast-path request has no body (a body sends it down the full path)
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._idle = True
        if self._answered:
            self._answered = False
            return
        super().on_message_complete()

    def _answer_hit(self, fast_hit: FastHit) -> bool:
        """Write the response to a plain L1 hit now; False (nothing done) when it needs the ASGI path."""
        cycle = self.cycle
        if (cycle is not None and not cycle.response_complete) or self.flow.write_paused:
            return False  # an earlier response is still being written (pipelining) or the client is slow
        if self.transport.is_closing():
            return False  # the ASGI path knows what to do with a request from a client that has gone
        method = self.parser.get_method()
        if method not in _FAST_METHODS or self.parser.should_upgrade():
            return False
        scope = self.scope
        scope["method"] = method.decode("ascii")
        http_version = self.parser.get_http_version()
        if http_version != "1.1":
            scope["http_version"] = http_version
        url = httptools.parse_url(self.url)
        scope["raw_path"] = self.root_path.encode("ascii") + url.path
        scope["query_string"] = url.query or b""
        try:
            hit = fast_hit(scope)  # type: ignore[arg-type]
        except Exception:
            # A parser callback must not raise (httptools would turn it into a 400): a failure of the
            # shortcut is logged and the request takes the ASGI path, which handles its own errors.
            logger.exception("edgecache proxy: the fast hit path failed; the request goes the full way")
            return False
        if hit is None:
            return False  # uvicorn's on_headers_complete rebuilds the scope from the same parse
        close = http_version == "1.0" or not self.parser.should_keep_alive()
        heads = self.wire_heads
        memo_key = (id(hit.headers), method, close)
        memo = heads.get(memo_key)
        if memo is not None and memo[0] is hit.headers:
            head = memo[1]
        else:
            if len(heads) >= _WIRE_MEMO_ENTRIES:
                heads.clear()
            head = response_head(hit.status, hit.headers, hit.body if method == b"GET" else None, close=close)
            heads[memo_key] = (hit.headers, head)
        if head is None:
            # What uvicorn does with a field it may not write: the response is abandoned, the connection
            # closed (the ASGI path would get there by an exception in the app).
            logger.error("edgecache proxy: a cached response has a field that cannot be written")
            self.transport.close()
            return True
        self.transport.write(head + hit.body)
        if close:
            self.transport.close()
        self.on_response_complete()
        return True


def protocol_class(
    http: HttpParser, *, max_target: int, max_header_bytes: int, fast_hit: FastHit | None = None
) -> type[asyncio.Protocol]:
    """The uvicorn protocol class for ``http`` with these head limits (``ValueError`` for a bad choice);
    ``fast_hit`` answers plain hits on the httptools protocol (see the module docstring)."""
    if http not in HTTP_PARSERS:
        raise ValueError(f"http must be one of {', '.join(HTTP_PARSERS)}, got {http!r}")
    max_head = max_target + max_header_bytes + _HEAD_SLACK
    # uvicorn builds one protocol per connection from a class: the limits are class attributes.
    h11_class = type("ProxyH11Protocol", (ProxyH11Protocol,), {"max_head": max_head})
    if http == "h11":
        return h11_class
    attributes: dict[str, Any] = {
        "h11_fallback": h11_class if http == "auto" else None,
        "max_target": max_target,
        "max_header_bytes": max_header_bytes,
        "fast_hit": staticmethod(fast_hit) if fast_hit is not None else None,
        "wire_heads": {},
    }
    return type("ProxyHttpToolsProtocol", (ProxyHttpToolsProtocol,), attributes)
