"""ProxyApp: a pure-ASGI app that forwards every request to one configured upstream.

The upstream is only ever the configured base URL: the request target sent upstream is the client's
``raw_path`` (and query string) byte for byte, never resolved against anything the client sent (Host, an
absolute-form target, a ``//host`` path). Bodies stream both ways in bounded memory. ``RequestGuard`` is
the request hygiene that runs in front of the cache, so that a cache hit is never served to a request the
proxy would refuse.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from typing import Final
from urllib.parse import unquote

import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgecache.core.keys import path_tag, prefix_tags, uri_components, uri_tag
from edgecache.engine import Cache
from edgecache.middleware import SCOPE_KEY, PlainHit
from edgecache.proxy.transport import EdgeTransport
from edgecache.proxy.upstreams import (
    DEFAULT_BREAKER_FAILURES,
    DEFAULT_BREAKER_RESET,
    DEFAULT_READ_YOUR_WRITES_WINDOW,
    HealthConfig,
    Network,
    UpstreamPool,
    client_identities,
    is_trusted,
)

logger = logging.getLogger("edgecache.proxy")

RawHeaders = list[tuple[bytes, bytes]]

# RFC 9110 §7.6.1: hop-by-hop fields, never forwarded (plus every Proxy-* field, and those Connection names).
HOP_BY_HOP: Final = frozenset(
    {b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)
# Request fields the proxy sets itself or must not pass on.
_FORWARDED: Final = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"})
_REQUEST_DROPPED: Final = frozenset({b"expect"})  # uvicorn answers 100-continue; httpx sends the body anyway

DEFAULT_MAX_REQUEST_BODY: Final = 100 * 1024 * 1024
DEFAULT_MAX_HEADER_COUNT: Final = 100
DEFAULT_MAX_HEADER_BYTES: Final = 64 * 1024
DEFAULT_MAX_TARGET: Final = 8 * 1024  # like nginx's 8 KiB header buffers: a longer request target gets 414
DEFAULT_CONNECT_TIMEOUT: Final = 5.0
DEFAULT_READ_TIMEOUT: Final = 60.0
DEFAULT_TOTAL_TIMEOUT: Final = 120.0
# After refusing a body as too large, up to this much more of it is read and dropped (for at most
# _DISCARD_SECONDS) before the 413 and the close: closing a socket with unread bytes sends a reset, which
# can destroy the 413 before the client reads it (nginx's "lingering close" does the same).
_DISCARD_BYTES: Final = 1024 * 1024
_URL_MEMO_ENTRIES: Final = 4096  # upstream URLs of recent request targets (building one costs µs)
_URL_MEMO_MAX_TARGET: Final = 512
_DISCARD_SECONDS: Final = 1.0


class UpstreamURLError(ValueError):
    """The configured upstream is not a usable base URL."""


def parse_upstream(url: str) -> httpx.URL:
    """``http(s)://host[:port]`` (a trailing ``/`` allowed); anything else raises ``UpstreamURLError``."""
    try:
        parsed = httpx.URL(url.strip())
    except (httpx.InvalidURL, TypeError) as error:
        raise UpstreamURLError(f"not a URL: {error}") from None
    if parsed.scheme not in ("http", "https"):
        raise UpstreamURLError(f"expected an http:// or https:// URL, got {url!r}")
    if not parsed.host:
        raise UpstreamURLError(f"no host in {url!r}")
    if parsed.userinfo or parsed.query or parsed.fragment or parsed.raw_path not in (b"", b"/"):
        raise UpstreamURLError(f"give scheme, host and port only (no path, query or credentials): {url!r}")
    return httpx.URL(scheme=parsed.scheme, host=parsed.host, port=parsed.port, path="/")


@dataclass(frozen=True, slots=True)
class Limits:
    max_request_body: int = DEFAULT_MAX_REQUEST_BODY
    max_header_count: int = DEFAULT_MAX_HEADER_COUNT
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_target: int = DEFAULT_MAX_TARGET


def check_request(scope: Scope, limits: Limits) -> tuple[int, str] | None:
    """The status and reason to refuse an HTTP request with, or None when it may go on."""
    headers: RawHeaders = scope["headers"]
    if len(headers) > limits.max_header_count:
        return 431, "too many header fields"
    header_bytes = 0
    hosts = 0
    lengths: set[bytes] = set()
    codings: list[bytes] | None = None
    for name, value in headers:  # one pass over the fields: this runs for every proxied request
        header_bytes += len(name) + len(value) + 4
        lname = name.lower()
        if lname == b"host":
            hosts += 1
        elif lname == b"content-length":
            lengths.update(v.strip() for v in value.split(b","))
        elif lname == b"transfer-encoding":
            codings = codings or []
            codings.extend(c.strip().lower() for c in value.split(b",") if c.strip())
    if header_bytes > limits.max_header_bytes:
        return 431, "header fields too large"
    if len(scope.get("raw_path") or b"") + len(scope.get("query_string", b"")) > limits.max_target:
        return 414, "request target too long"
    if hosts > 1:
        return 400, "more than one Host field"
    if hosts == 0 and scope.get("http_version") == "1.1":
        return 400, "no Host field"  # RFC 9112 §3.2: MUST be 400
    if codings is not None:
        if lengths:
            return 400, "both Content-Length and Transfer-Encoding"
        # RFC 9112 §6.3: chunked must be the final coding of a request, else 400 and close. The body is
        # de-chunked here and Transfer-Encoding is hop-by-hop, so any other coding would reach the
        # upstream undeclared: refused (501, §6.1) rather than passed on.
        if not codings or codings[-1] != b"chunked":
            return 400, "Transfer-Encoding without chunked last"
        if len(codings) > 1:
            return 501, "unsupported transfer coding"
    if len(lengths) > 1:
        return 400, "conflicting Content-Length values"
    if lengths:
        (length,) = lengths
        if not length.isdigit():
            return 400, "invalid Content-Length"
        if int(length) > limits.max_request_body:
            return 413, "request body too large"
    return None


def _date() -> bytes:
    return formatdate(usegmt=True).encode("ascii")


async def send_simple(
    send: Send, status: int, text: str, *, close: bool = False, retry_after: bool = False
) -> None:
    """A short text/plain response made by the proxy itself."""
    body = text.encode("utf-8") + b"\n"
    headers: RawHeaders = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"%d" % len(body)),
        (b"cache-control", b"no-store"),
        (b"date", _date()),
    ]
    if retry_after:
        headers.append((b"retry-after", b"1"))
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class UpstreamBodyError(Exception):
    """The upstream failed after its response headers (reset, early close, truncated or bad chunking, read
    timeout). Once the client has the headers, the only honest signal left is an aborted connection: the
    server closes it, so the client sees an incomplete message (never a complete-looking short one)."""


class RequestGuard:
    """Refuses malformed or oversized requests before the cache or the upstream sees them, rewrites an
    absolute-form request target to its path, and turns an upstream failure mid-body into an aborted
    connection (or a 502 when the client has received nothing yet: the cache in front was buffering)."""

    def __init__(self, app: ASGIApp, limits: Limits | None = None) -> None:
        self.app = app
        self.limits = limits or Limits()
        self._hit_nowait: Callable[[Scope], PlainHit | None] | None = getattr(app, "hit_nowait", None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = refusal(scope, self.limits)
        if refused is not None:
            await send_simple(send, refused[0], refused[1], close=True)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except UpstreamBodyError:
            if started:
                raise  # the server aborts the connection; its log record is filtered (proxy.server)
            await send_simple(send, 502, "bad response from upstream", close=True, retry_after=True)

    def hit_nowait(self, scope: Scope) -> PlainHit | None:
        """The cache's plain hit for a request this guard accepts as it is (``CacheInterceptor.hit_nowait``),
        for the listener's fast path; None when the request must be called through the ASGI app."""
        hit_nowait = self._hit_nowait
        if (
            hit_nowait is None
            or scope.get("raw_path", b"/")[:1] != b"/"
            or check_request(scope, self.limits) is not None
        ):
            return None
        return hit_nowait(scope)


def refusal(scope: Scope, limits: Limits) -> tuple[int, str] | None:
    """``check_request``, then an absolute-form target made origin-form (``origin_form``): the status and
    reason to refuse with, or None. What ``RequestGuard`` checks, and ``ProxyApp`` when it runs alone."""
    refused = check_request(scope, limits)
    if refused is None and scope.get("raw_path", b"/")[:1] != b"/":
        refused = origin_form(scope)
    return refused


_ABSOLUTE_FORM: Final = re.compile(rb"[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*")


def origin_form(scope: Scope) -> tuple[int, str] | None:
    """An absolute-form target (RFC 9112 §3.2.2: ``http://host/p``, which h11 passes through as the path)
    becomes its path, so neither the upstream nor the cache key ever sees the client's authority; the
    asterisk form stays; anything else is refused (400). httptools already does this itself."""
    raw_path: bytes = scope["raw_path"]
    if raw_path == b"*":
        return None
    match = _ABSOLUTE_FORM.match(raw_path)
    if match is None:
        return 400, "invalid request target"
    path = raw_path[match.end() :] or b"/"
    scope["raw_path"] = path
    scope["path"] = unquote(path.decode("latin-1"))
    return None


def hop_by_hop(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """The lower-cased names never forwarded: the fixed set and every name that Connection lists."""
    named = set(HOP_BY_HOP)
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(part.strip().lower() for part in value.split(b",") if part.strip())
    return frozenset(named)


def _forwardable(name: bytes, dropped: frozenset[bytes]) -> bool:
    return name not in dropped and not name.startswith(b"proxy-")


class _BodyTooLarge(Exception):
    pass


class _ClientGone(Exception):
    pass


def parse_trusted(values: Iterable[str]) -> tuple[Network, ...]:
    """IP addresses or networks (``10.0.0.0/8``); raises ``ValueError`` naming a bad one."""
    networks: list[Network] = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or network") from None
    return tuple(networks)


class ProxyApp:
    """Forwards every HTTP request to the primary ``upstream``, or GET/HEAD to a read ``replica``, with an
    ``httpx.AsyncClient`` on the pooled ``EdgeTransport`` (or the given ``transport``); ``UpstreamPool``
    (``proxy.upstreams``) chooses where.

    No usable upstream answers 503 at once; connect errors answer 502 and timeouts before the response
    headers 504, all with ``Retry-After: 1`` (the cache in front serves a stored response instead where
    stale-if-error allows). A GET or HEAD is retried once, on another upstream when there is one, after a
    connect error, and only while none of its body has been read.
    """

    def __init__(
        self,
        upstream: str,
        *,
        replicas: Sequence[str] = (),
        read_your_writes_window: float = DEFAULT_READ_YOUR_WRITES_WINDOW,
        health: HealthConfig | None = None,
        breaker_failures: int = DEFAULT_BREAKER_FAILURES,
        breaker_reset: float = DEFAULT_BREAKER_RESET,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        total_timeout: float | None = DEFAULT_TOTAL_TIMEOUT,
        limits: Limits | None = None,
        trusted_proxies: Iterable[str] = (),
        preserve_host: bool = False,
        max_connections: int = 1000,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.upstream = parse_upstream(upstream)
        self.pool = UpstreamPool(
            self.upstream,
            [parse_upstream(url) for url in replicas],
            health=health,
            read_your_writes_window=read_your_writes_window,
            breaker_failures=breaker_failures,
            breaker_reset=breaker_reset,
        )
        self.limits = limits or Limits()
        self.trusted = parse_trusted(trusted_proxies)
        self.preserve_host = preserve_host
        self.total_timeout = total_timeout
        self.timeout = httpx.Timeout(read_timeout, connect=connect_timeout, read=read_timeout)
        self._timeout_extension = self.timeout.as_dict()
        if transport is None:
            # Not httpx's default transport: httpcore's pool slows down as connections are in flight
            # (see proxy.transport); EdgeTransport keeps httpx's request, response and error types.
            transport = EdgeTransport(max_connections=max_connections, max_idle=100)
        # Requests go to the transport directly, not through an httpx.AsyncClient: the client's layers
        # (auth, redirects, a cookie jar, event hooks) are all things a proxy must not do, and cost a
        # fifth of a miss. So no default headers, no redirects followed, no Set-Cookie remembered, no
        # proxy or .netrc from the environment: what the client sent goes upstream, what comes back goes
        # to the client.
        self.transport = transport
        self._urls: dict[tuple[httpx.URL, bytes], httpx.URL] = {}

    async def start(self) -> None:
        """Start the active health checks (after one probe round); idempotent."""
        await self.pool.start()

    async def aclose(self) -> None:
        await self.pool.aclose()
        await self.transport.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1003})  # not proxied (yet)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- the request ------------------------------------------------------------------------------------

    def target(self, scope: Scope) -> bytes:
        """The request target sent upstream: the client's path and query, byte for byte."""
        raw_path: bytes | None = scope.get("raw_path")
        path = raw_path if raw_path else scope["path"].encode("utf-8")
        query: bytes = scope.get("query_string", b"")
        return path + b"?" + query if query else path

    def url(self, target: bytes, base: httpx.URL | None = None) -> httpx.URL:
        """The upstream URL for logs and httpx; the wire target is the ``target`` extension (exact bytes),
        since httpx would normalise dot segments in a URL's path."""
        base = base or self.upstream
        memo = (base, target)
        url = self._urls.get(memo)
        if url is not None:
            return url
        try:
            url = base.copy_with(raw_path=target)
        except (httpx.InvalidURL, UnicodeDecodeError):
            url = base
        if len(self._urls) >= _URL_MEMO_ENTRIES:
            self._urls.clear()
        if len(target) <= _URL_MEMO_MAX_TARGET:
            self._urls[memo] = url
        return url

    def request_headers(self, scope: Scope) -> RawHeaders:
        incoming: RawHeaders = scope["headers"]
        dropped = hop_by_hop(incoming) | _FORWARDED | _REQUEST_DROPPED
        if not self.preserve_host:
            dropped |= {b"host"}
        headers: RawHeaders = []
        previous_for: list[bytes] = []
        previous: dict[bytes, bytes] = {}
        client_host = b""
        for name, value in incoming:
            lname = name.lower()
            if lname == b"x-forwarded-for":
                previous_for.append(value.strip())
            elif lname in _FORWARDED:
                previous.setdefault(lname, value.strip())
            elif lname == b"host":
                client_host = value
            if _forwardable(lname, dropped):
                headers.append((lname, value))
        client = scope.get("client")
        peer = client[0] if client else ""
        trusted = is_trusted(peer, self.trusted)
        chain = [v for v in previous_for if v] if trusted else []
        if peer:
            chain.append(peer.encode("latin-1"))
        if chain:
            headers.append((b"x-forwarded-for", b", ".join(chain)))
        proto = previous.get(b"x-forwarded-proto") if trusted else None
        headers.append((b"x-forwarded-proto", proto or scope.get("scheme", "http").encode("latin-1")))
        forwarded_host = previous.get(b"x-forwarded-host") if trusted else None
        if forwarded_host or client_host:
            headers.append((b"x-forwarded-host", forwarded_host or client_host))
        return headers

    def _recently_invalidated(self, scope: Scope) -> bool:
        """Whether the cache in front invalidated this URI within the read-your-writes window: its refill
        goes to the primary, since a replica may still hold what was invalidated."""
        cache: Cache | None = scope.get(SCOPE_KEY)
        if cache is None:
            return False
        raw_path: bytes | None = scope.get("raw_path")
        path = raw_path if raw_path else scope["path"].encode("utf-8")
        host = cache.settings.key_host
        if host is None:
            host = next((v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"host"), "")
        uri = uri_components(scope.get("scheme", "http"), host, path, scope.get("query_string", b""))
        tags = frozenset({uri_tag(uri), path_tag(path), *prefix_tags(path)})
        return cache.invalidated_within(self.pool.read_your_writes_window, tags)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        refused = refusal(scope, self.limits)
        if refused is not None:
            await send_simple(send, refused[0], refused[1], close=True)
            return
        method: str = scope["method"]
        read = method in ("GET", "HEAD")
        pool = self.pool
        pinned = False
        identities: tuple[str, ...] = ()
        if pool.routes_reads:
            client = scope.get("client")
            identities = client_identities(scope["headers"], client[0] if client else "", self.trusted)
            if not read:
                pool.note_write(identities)  # reads racing this write go to the primary as well
            elif pool.pinned(identities):
                pinned = True
                pool.pinned_reads["read-your-writes"] += 1
            elif self._recently_invalidated(scope):
                pinned = True
                pool.pinned_reads["invalidation"] += 1
        upstream = pool.choose(read, pinned)
        if upstream is None:
            pool.unavailable += 1
            await send_simple(send, 503, "no healthy upstream", retry_after=True)
            return
        headers = self.request_headers(scope)
        has_body = any(
            name.lower() in (b"transfer-encoding", b"content-length") and value.strip() != b"0"
            for name, value in scope["headers"]
        )
        target = self.target(scope)
        state = _BodyState()
        state.complete = not has_body
        retried = False
        while True:
            content = self._body(receive, state) if has_body else None
            request = httpx.Request(
                method,
                self.url(target, upstream.url),
                headers=headers,
                content=content,
                extensions={"timeout": self._timeout_extension, "target": target},
            )
            request.method = method  # httpx upper-cases it; methods are case-sensitive (RFC 9110 §9.1)
            attempt = upstream
            attempt.outstanding += 1
            attempt.requests += 1
            answered = False
            try:
                async with asyncio.timeout(self.total_timeout):
                    response = await self.transport.handle_async_request(request)
                response.request = request
                answered = True
                break
            except _BodyTooLarge:
                upstream.breaker.abandoned()
                await _discard_body(receive)
                await send_simple(send, 413, "request body too large", close=True)
                return
            except _ClientGone:
                upstream.breaker.abandoned()
                return
            except (httpx.ConnectError, httpx.ConnectTimeout) as error:
                # Nothing reached the upstream: a read whose body (if any) is untouched may go elsewhere.
                pool.failed(upstream, "connect")
                if read and not retried and not state.started:
                    retried = True
                    again = pool.choose(read, pinned, exclude=[upstream]) or pool.choose(read, pinned)
                    if again is not None:
                        pool.retries += 1
                        upstream = again
                        continue
                logger.warning("edgecache proxy: cannot connect to %s: %r", upstream.url, error)
                if isinstance(error, httpx.ConnectTimeout):
                    await send_simple(send, 504, "upstream timed out", retry_after=True)
                else:
                    await send_simple(send, 502, "upstream unreachable", retry_after=True)
                return
            except (httpx.TimeoutException, TimeoutError) as error:
                pool.failed(upstream, "timeout")
                logger.warning("edgecache proxy: %s timed out: %r", upstream.url, error)
                await send_simple(send, 504, "upstream timed out", retry_after=True)
                return
            except httpx.TransportError as error:
                pool.failed(upstream, "protocol")
                logger.warning("edgecache proxy: %s failed: %r", upstream.url, error)
                await send_simple(send, 502, "bad response from upstream", retry_after=True)
                return
            except BaseException:
                upstream.breaker.abandoned()
                raise
            finally:
                if not answered:
                    attempt.outstanding -= 1
        pool.succeeded(upstream)
        try:
            await self._respond(response, receive, send, state)
        except httpx.TransportError as error:
            pool.failed(upstream, "body")
            logger.warning("edgecache proxy: %s broke off its response body: %r", upstream.url, error)
            raise UpstreamBodyError(f"{upstream.url} broke off its response body: {error!r}") from error
        finally:
            upstream.outstanding -= 1
            await response.aclose()
            if identities and not read:
                pool.note_write(identities)  # the window runs from the end of the write

    async def _body(self, receive: Receive, state: _BodyState) -> AsyncIterator[bytes]:
        """The request body from ASGI receive, counted against ``max_request_body`` as it streams."""
        limit = self.limits.max_request_body
        state.started = True
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk: bytes = message.get("body", b"")
            state.received += len(chunk)
            if state.received > limit:
                raise _BodyTooLarge
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                state.complete = True
                return

    async def _respond(
        self, response: httpx.Response, receive: Receive, send: Send, state: _BodyState
    ) -> None:
        raw = response.headers.raw
        dropped = hop_by_hop(raw)
        headers = [(k.lower(), v) for k, v in raw if _forwardable(k.lower(), dropped)]
        await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
        # The client may leave while a long body streams: watch for it once its request body is read.
        gone = asyncio.Event()
        watcher = asyncio.create_task(_watch_disconnect(receive, gone)) if state.complete else None
        try:
            async for chunk in response.aiter_raw():
                if gone.is_set():
                    return
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher


class _BodyState:
    __slots__ = ("complete", "received", "started")

    def __init__(self) -> None:
        self.received = 0
        self.complete = False
        self.started = False  # the upstream request began pulling the body: it can no longer be retried


async def _discard_body(receive: Receive) -> None:
    """Read and drop what is left of the request body, within ``_DISCARD_BYTES`` and ``_DISCARD_SECONDS``."""
    dropped = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_DISCARD_SECONDS):
            while dropped <= _DISCARD_BYTES:
                message = await receive()
                if message["type"] == "http.disconnect" or not message.get("more_body", False):
                    return
                dropped += len(message.get("body", b""))


async def _watch_disconnect(receive: Receive, gone: asyncio.Event) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
            return
