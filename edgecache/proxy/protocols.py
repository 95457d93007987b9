"""The HTTP/1.1 parsers the proxy's listener can run on, chosen by ``ProxyServer(http=...)``.

- ``httptools`` (llhttp, C): the fastest, but llhttp knows a fixed list of methods and answers any other
  (``BREW``, ``get``, a private extension method) with 400 before the app sees it.
- ``h11`` (pure Python): accepts every method token RFC 9110 allows; slower per request.
- ``auto`` (the default): ``ProxyHttpToolsProtocol`` - httptools, and a connection whose request starts with
  a method llhttp does not know is handed, from that request on, to uvicorn's h11 protocol, which replays
  the bytes received so far. Known methods keep httptools' speed; unknown ones are forwarded like any other.

Both bound a request head *while it arrives* (llhttp has no limit of its own, so uvicorn would gather a
header line of any length in memory; h11's own limit answers 400): a request target longer than
``max_target`` answers 414, a head larger than the target and ``max_header_bytes`` together (plus a little)
431, and the connection is closed. ``RequestGuard`` then checks the parsed head exactly (the count and size
of the fields, the target), whatever the server.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, Final, Literal

import h11
import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from edgecache.proxy.app import DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_TARGET

HttpParser = Literal["auto", "httptools", "h11"]
HTTP_PARSERS: Final[tuple[HttpParser, ...]] = ("auto", "httptools", "h11")
_HEAD_SLACK: Final = 4096  # method, version and line ends on top of the target and the header fields


def refuse(transport: asyncio.Transport, status: int, text: str) -> None:
    """Answer ``status`` with a short text and close: the request head was not (fully) parsed."""
    body = text.encode("ascii")
    head = b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
    transport.write(STATUS_LINE[status] + head % len(body) + body)
    transport.close()


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
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._idle = True
        super().on_message_complete()


def protocol_class(http: HttpParser, *, max_target: int, max_header_bytes: int) -> type[asyncio.Protocol]:
    """The uvicorn protocol class for ``http`` with these head limits (``ValueError`` for a bad choice)."""
    if http not in HTTP_PARSERS:
        raise ValueError(f"http must be one of {', '.join(HTTP_PARSERS)}, got {http!r}")
    max_head = max_target + max_header_bytes + _HEAD_SLACK
    # uvicorn builds one protocol per connection from a class: the limits are class attributes.
    h11_class = type("ProxyH11Protocol", (ProxyH11Protocol,), {"max_head": max_head})
    if http == "h11":
        return h11_class
    attributes = {
        "h11_fallback": h11_class if http == "auto" else None,
        "max_target": max_target,
        "max_header_bytes": max_header_bytes,
    }
    return type("ProxyHttpToolsProtocol", (ProxyHttpToolsProtocol,), attributes)
