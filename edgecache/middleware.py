"""CacheInterceptor: the pure-ASGI front end of the cache.

Per-request state lives in an ``_Exchange`` built per call; the middleware object holds configuration and
the shared ``Cache`` only. The hit path answers from storage without calling the app; the miss path holds
``http.response.start`` until it knows whether the response will be stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any, NamedTuple

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgecache.cdn.response import CdnResponses
from edgecache.config import Settings
from edgecache.core.entry import CacheObject, RawHeaders, StoredResponse, response_size
from edgecache.core.headers import Fields, parse_cookie_header
from edgecache.core.keys import (
    CacheKey,
    path_tag,
    prefix_tags,
    primary_key,
    request_key,
    uri_components,
    uri_tag,
)
from edgecache.core.policy import (
    HOP_BY_HOP,
    NOT_MODIFIED_FIELDS,
    NOT_UPDATED_BY_304,
    RequestPlan,
    StorageDecision,
    Use,
    client_conditional_matches,
    decide_storage,
    decide_use,
    freshen,
    may_serve_stale_on_error,
    plan_request,
)
from edgecache.core.ranges import ByteRange, Unsatisfiable, select_range
from edgecache.core.status import Fwd, Outcome, Reason, render_hit
from edgecache.engine import Cache, Flight, Uri, same_origin_targets
from edgecache.lease import Lease, LeaseOutcome

logger = logging.getLogger("edgecache")

SCOPE_KEY = "edgecache.cache"  # set on the scope the app sees: the app reaches the cache through it
# Request fields removed before a fetch whose response will be stored: the cache wants the full, current
# representation, and answers the client's own conditional or range request from it afterwards.
_CLIENT_CONDITIONALS = frozenset(
    {b"if-none-match", b"if-modified-since", b"if-match", b"if-unmodified-since", b"if-range", b"range"}
)


_KEY_MEMO_ENTRIES = 4096
_KEY_MEMO_MAX_BYTES = 512
# Request fields that need the full path even when no plan rule looks at them: conditionals, ranges, bodies.
_PLAIN_HIT_EXCLUDES = frozenset(
    {"if-none-match", "if-modified-since", "if-range", "range", "content-length", "transfer-encoding"}
)


class PlainHit(NamedTuple):
    """A hit answered without the full path: what to send (the body is empty for HEAD)."""

    status: int
    headers: RawHeaders  # the same list object for every hit on an entry within one second of its age
    body: bytes


class CacheInterceptor:
    """Pure-ASGI caching middleware: ``app.add_middleware(CacheInterceptor, default_ttl=60)``.

    Options are listed in ``edgecache.config.Settings`` and the README; each can also come from its
    ``EDGECACHE_<NAME>`` environment variable. Pass ``cache=`` to share one ``Cache`` between front ends.
    """

    def __init__(self, app: ASGIApp, /, *, cache: Cache | None = None, **options: Any) -> None:
        self.app = app
        if cache is not None and options:
            raise TypeError("give either cache= or options, not both")
        self.cache = cache if cache is not None else Cache(Settings.load(options))
        policy = self.cache.policy
        # A GET/HEAD carrying none of these fields, for a URI whose stored response has no Vary, is decided
        # by _plain_hit alone; anything else takes the full path in _Exchange, with the same result.
        self._plain_excludes = frozenset(
            name.encode("latin-1") for name in policy.plan_fields | _PLAIN_HIT_EXCLUDES
        )
        self._plain_hits = not self.cache.recipe.headers and not self.cache.recipe.cookies
        self._started = False
        key_host = self.cache.settings.key_host
        self._key_host = key_host.encode("latin-1") if key_host is not None else None
        # A store with a synchronous read (the memory L1) is read without a coroutine on the hit path, and
        # without counting a use: when the plain path declines, the full path reads (and counts) again, and
        # the admission policy must see one access per request. A hit it serves is counted then. Both
        # methods or neither: a store read with ``get`` has counted the use already.
        store = self.cache.store
        self._peek: Callable[[str], CacheObject | None] | None = getattr(store, "peek", None)
        self._record_use: Callable[[str], None] | None = getattr(store, "record_use", None)
        if self._peek is None or self._record_use is None:
            self._peek = self._record_use = None
        self._shadow = self.cache.shadow  # shadow mode (edgecache.shadow): one call per request when on
        # A bounded memo for the plain hit path: request URI parts → key.
        self._keys: dict[tuple[str, bytes, bytes, bytes], CacheKey] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" and self.cache.shared is not None:
            # The shared tier starts and stops with the app; an L1-only cache has nothing to start.
            await self.app(scope, self._lifespan_receive(receive), self._lifespan_send(send))
            return
        if not self._started:
            # No lifespan (or a server that skips it): start the shared tier's background work now.
            self._started = True
            self.cache.start()
        if scope["type"] != "http" or SCOPE_KEY in scope:
            # Not HTTP, or already inside another CacheInterceptor: caching twice would double-count and
            # let an inner cache store what the outer one decided not to.
            await self.app(scope, receive, send)
            return
        if self._shadow is not None:
            send = self._shadow.watch(scope, send)
        if self._plain_hits and scope["method"] in ("GET", "HEAD"):
            # A synchronous L1 read costs no coroutine: the common hit is the hot path of the whole product.
            peek = self._peek
            hit = self._plain_nowait(scope, peek) if peek is not None else await self._plain_hit(scope)
            if hit is not None:
                await send({"type": "http.response.start", "status": hit.status, "headers": hit.headers})
                await send({"type": "http.response.body", "body": hit.body})
                return
        await _Exchange(self.app, self.cache, scope, receive, send).run()

    def _lifespan_receive(self, receive: Receive) -> Receive:
        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup" and not self._started:
                self._started = True
                # Bounded: a node whose Redis is down still starts, serving from the app meanwhile.
                if not await self.cache.start_and_wait():
                    logger.warning("edgecache: Redis not reachable at start-up; shared tier joins later")
            return message

        return wrapped

    def _lifespan_send(self, send: Send) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                await self.cache.aclose()  # after the app's own shutdown: it may still invalidate
            await send(message)

        return wrapped

    async def _plain_hit(self, scope: Scope) -> PlainHit | None:
        """The common hit, answered with the least work: what to send, or None for the full path.

        Equivalent to the full path for a GET/HEAD without conditionals, ranges, body, cookies,
        authorization or request directives, whose stored response has no Vary and is fresh. This is the
        version for a store without a synchronous read; ``_plain_nowait`` reads the memory L1.
        """
        key = self._plain_key(scope)
        if key is None:
            return None
        return self._plain_answer(scope, key, await self.cache.store.get(key.digest))

    def _plain_nowait(self, scope: Scope, peek: Callable[[str], CacheObject | None]) -> PlainHit | None:
        """``_plain_hit`` for a store with ``peek`` (the memory L1): no coroutine; a use counted if served."""
        key = self._plain_key(scope)
        if key is None:
            return None
        return self._plain_answer(scope, key, peek(key.digest))

    def hit_nowait(self, scope: Scope) -> PlainHit | None:
        """The plain hit of ``_plain_hit`` without the ASGI round trip, for a server that writes it itself
        (the proxy's listener answers L1 hits from its protocol): None when the request needs the full path
        (then call the middleware as usual). Counts the hit; the caller must send exactly what it returns.
        """
        if (
            not self._started
            or not self._plain_hits
            or self._shadow is not None
            or self._peek is None
            or scope["method"] not in ("GET", "HEAD")
        ):
            return None
        return self._plain_nowait(scope, self._peek)

    def _plain_key(self, scope: Scope) -> CacheKey | None:
        """The key of a plain GET/HEAD, or None when a request field sends it down the full path."""
        host = None
        excludes = self._plain_excludes
        for name, value in scope["headers"]:
            if name in excludes or not name.islower():
                return None  # upper-case names are unusual enough to leave to the full path
            if name == b"host":
                host = value
        if self._key_host is not None:
            host = self._key_host
        elif host is None:
            return None
        path = scope.get("raw_path") or scope["path"].encode("utf-8")
        memo_key = (scope.get("scheme", "http"), host, path, scope.get("query_string", b""))
        key = self._keys.get(memo_key)
        if key is None:
            query = self.cache.query_filter.apply(memo_key[3])
            key = primary_key(uri_components(memo_key[0], host.decode("latin-1"), path, query))
            if len(self._keys) >= _KEY_MEMO_ENTRIES:
                self._keys.clear()
            if len(path) + len(memo_key[3]) + len(host) <= _KEY_MEMO_MAX_BYTES:
                self._keys[memo_key] = key
        return key

    def _plain_answer(self, scope: Scope, key: CacheKey, entry: CacheObject | None) -> PlainHit | None:
        """The response to send for ``entry`` when it is a fresh, Vary-less stored response of ``key``."""
        if type(entry) is not StoredResponse or entry.key != key.canonical or entry.vary:
            return None
        cache = self.cache
        now = cache.clock()
        freshness = entry.freshness
        age = entry.corrected_initial_age + max(0.0, now - entry.response_time)
        ttl = freshness.lifetime - age
        if ttl <= 0 or freshness.no_cache:
            return None
        if self._record_use is not None:
            self._record_use(key.digest)
        if cache.listeners:
            cache.report_hit(Reason.L1, ttl, scope["method"])
        else:
            cache.stats.hits[Reason.L1] += 1
        # Age changes once a second: the answers built for this entry in this second of its age (GET and
        # HEAD share the headers) are reused; the memo lives on the entry, so it is bounded with it and
        # dropped with it.
        whole_age = int(age)
        memo = entry.hit_memo
        if not memo or memo[0] != whole_age:
            headers = [
                *entry.headers,
                (b"age", b"%d" % whole_age),
                (b"cache-status", render_hit(ttl, Reason.L1)),
            ]
            memo[:] = (
                whole_age,
                PlainHit(entry.status, headers, entry.body),
                PlainHit(entry.status, headers, b""),
            )
        hit: PlainHit = memo[1] if scope["method"] == "GET" else memo[2]
        return hit


def _has_body(fields: Fields) -> bool:
    if "transfer-encoding" in fields:
        return True
    length = fields.get("content-length")
    return length is not None and length.strip() not in ("", "0")


def _host(scope: Scope, fields: Fields, fixed: str | None = None) -> str:
    if fixed is not None:
        return fixed
    host = fields.get("host")
    if host:
        return host
    server = scope.get("server")
    if server:
        return f"{server[0]}:{server[1]}" if server[1] is not None else str(server[0])
    return ""


class _Exchange:
    """One request through the cache."""

    __slots__ = (
        "app",
        "body_to_client",
        "buffer",
        "buffered",
        "cache",
        "client_started",
        "decision",
        "fields",
        "flight",
        "fwd",
        "mode",
        "not_modified",
        "origin_headers",
        "origin_status",
        "plan",
        "primary",
        "receive",
        "request_time",
        "room",
        "scope",
        "send",
        "stale",
        "token",
        "unshareable",
        "uri",
    )

    def __init__(self, app: ASGIApp, cache: Cache, scope: Scope, receive: Receive, send: Send) -> None:
        self.app = app
        self.cache = cache
        self.scope = scope
        self.receive = receive
        self.send = send
        self.body_to_client = scope["method"] != "HEAD"
        # Everything else is set on the miss path only (``_fetch``): a hit never pays for it.

    # -- the request ------------------------------------------------------------------------------------

    async def run(self) -> None:
        cache = self.cache
        scope = self.scope
        fields = self.fields = Fields(scope["headers"])
        plan = self.plan = _plan(cache, scope["method"], fields)
        query = cache.query_filter.apply(scope.get("query_string", b""))
        path = scope.get("raw_path") or scope["path"].encode("utf-8")
        self.uri = uri_components(
            scope.get("scheme", "http"), _host(scope, fields, cache.settings.key_host), path, query
        )
        if not plan.lookup and not plan.store:
            await self._bypass(query)
            return
        primary = self.primary = request_key(cache.recipe, self.uri, fields)
        found = await cache.lookup(primary, fields)
        entry = found.entry
        if entry is not None:
            now = cache.clock()
            use = decide_use(entry, plan.cache_control, now)
            if use.use is Use.FRESH:
                await self._serve_hit(entry, now, found.tier)
                return
            if use.use is Use.STALE or use.use is Use.STALE_WHILE_REVALIDATE:
                await self._serve_hit(entry, now, use.reason or Reason.MAX_STALE)
                if (
                    use.use is Use.STALE_WHILE_REVALIDATE
                    and plan.store  # a refresh made for this request could not store its response
                    and primary.digest not in cache.flights
                ):
                    # Claim the key now: the refresh task starts later, and every stale hit until then
                    # would otherwise spawn a refresh of its own.
                    flight = cache.flights[primary.digest] = Flight()
                    cache.spawn(_background_refresh(self, entry, query, flight))
                return
            self.fwd = Fwd.REQUEST if use.reason is Reason.REQUEST_NO_CACHE else Fwd.STALE
        else:
            self.fwd = found.fwd or Fwd.MISS
        if plan.cache_control.has("only-if-cached"):
            await self._send_simple(504, Outcome(self.fwd, Reason.ONLY_IF_CACHED))  # RFC 9111 §5.2.1.7
            return
        await self._fetch(entry, query)

    async def _bypass(self, query: bytes) -> None:
        plan = self.plan
        outcome = Outcome(plan.fwd, plan.reason)
        self.cache.report(outcome, self.scope["method"])
        status_value = outcome.render().encode()
        cache, uri = self.cache, self.uri

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                if plan.invalidates and 200 <= status < 400:
                    locations = [
                        v.decode("latin-1")
                        for k, v in headers
                        if k.lower() in (b"location", b"content-location")
                    ]
                    # The targets are keyed like requests: through the query filter.
                    targets = [
                        (t[0], t[1], t[2], cache.query_filter.apply(t[3]))
                        for t in same_origin_targets(locations, uri)
                    ]
                    await cache.invalidate_uris([uri, *targets])
                headers = _client_headers(cache, headers)
                headers.append((b"cache-status", status_value))
                message = {**message, "headers": headers}
            await self.send(message)

        cache.stats.origin_fetches += 1
        scope = self._app_scope(query, conditional=None, for_storage=False)
        app_send: Send = send
        if cache.cdn is not None:
            app_send = _CdnFilter(cache, send, self.body_to_client, _asked_with_derived(cache, self.scope))
        await self.app(scope, self.receive, app_send)

    # -- serving from storage ---------------------------------------------------------------------------

    async def _serve_hit(self, entry: StoredResponse, now: float, reason: Reason) -> None:
        ttl = entry.ttl(now)
        self.cache.report_hit(reason, ttl, self.scope["method"])
        await self._serve(entry, now, render_hit(ttl, reason))

    async def _serve(self, entry: StoredResponse, now: float, cache_status: bytes) -> None:
        """Answer from a stored response: 304 for a matching conditional, 206 for a range, else in full."""
        status, headers, body = entry.status, entry.headers, entry.body
        fields = self.fields
        if status == 200 and ("if-none-match" in fields or "if-modified-since" in fields):
            if client_conditional_matches(fields, entry):
                status, body = 304, b""
                headers = [(k, v) for k, v in headers if k in NOT_MODIFIED_FIELDS]
        elif status == 200 and "range" in fields:
            try:
                chosen = select_range(
                    fields.joined("range") or "", fields.get("if-range"), entry.etag, len(body)
                )
            except Unsatisfiable:
                status, body = 416, b""
                headers = [
                    *(kv for kv in headers if kv[0] != b"content-length"),
                    (b"content-range", b"bytes */%d" % len(entry.body)),
                ]
            else:
                if chosen is not None:
                    status, headers, body = (
                        206,
                        _range_headers(headers, chosen, len(body)),
                        _slice(body, chosen),
                    )
        start_headers = [*headers, (b"age", b"%d" % entry.current_age(now)), (b"cache-status", cache_status)]
        await self.send({"type": "http.response.start", "status": status, "headers": start_headers})
        await self.send({"type": "http.response.body", "body": body if self.body_to_client else b""})

    async def _send_simple(self, status: int, outcome: Outcome) -> None:
        self.cache.report(outcome, self.scope["method"])
        headers = [(b"content-length", b"0"), (b"cache-status", outcome.render().encode())]
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        await self.send({"type": "http.response.body", "body": b""})

    # -- fetching from the app --------------------------------------------------------------------------

    async def _fetch(self, stale: StoredResponse | None, query: bytes, flight: Flight | None = None) -> None:
        """Fetch from the app; ``flight`` is given when the caller already registered this fetch's flight."""
        cache, plan, primary = self.cache, self.plan, self.primary
        self.stale = stale
        self.flight = flight
        self.mode = "start"  # start → buffer | stream | swallow → done
        self.client_started = False
        self.buffer: list[bytes] = []
        self.buffered = 0
        self.room = 0  # body bytes that fit in a stored object; known once the response headers are in
        self.decision: StorageDecision | None = None
        self.not_modified: RawHeaders | None = None
        self.origin_status: int | None = None
        self.origin_headers: RawHeaders = []
        self.token = 0
        self.request_time = 0.0
        self.unshareable = False  # the response turned out not shareable (hit-for-miss applies)
        coalesce = (
            flight is None
            and plan.store
            and cache.settings.coalesce
            and primary.digest not in cache.hit_for_miss
        )
        if coalesce:
            leader = cache.flights.get(primary.digest)
            if leader is None:
                self.flight = cache.flights[primary.digest] = Flight()
            elif await self._wait_for(leader):
                return
            # Otherwise the leader was slow (we neither store nor lead: it still does) or its response did
            # not suit us (we fetch alone, and store if storable).
        lease: Lease | None = None
        try:
            if self.flight is not None and flight is None and stale is None and cache.leases is not None:
                # This node's leader for a plain miss (not a revalidation, not a background refresh): one
                # node in the cluster fetches; the others wait for it (bounded) and read L2.
                result, lease = await cache.leases.acquire(primary.digest)
                if result is LeaseOutcome.STORED and await self._serve_from_lease():
                    return
                if result is LeaseOutcome.PASS:
                    cache.hit_for_miss[primary.digest] = True
            await self._call_app(query)
        finally:
            if lease is not None and cache.leases is not None:
                cache.leases.release(
                    lease,
                    primary.digest,
                    stored=self.flight is not None and self.flight.entry is not None,
                    unshareable=self.unshareable,
                )
            if self.flight is not None:
                self.flight.done.set()
                if cache.flights.get(primary.digest) is self.flight:
                    del cache.flights[primary.digest]

    async def _wait_for(self, leader: Flight) -> bool:
        """Wait (bounded) for another request's fetch; True when its response answered this one."""
        cache = self.cache
        try:
            await asyncio.wait_for(leader.done.wait(), cache.settings.coalesce_timeout)
        except TimeoutError:
            # Go to the app ourselves, and don't store: the leader is slow, and we would race it.
            self.plan = replace(self.plan, store=False, reason=Reason.COALESCE_TIMEOUT)
            return False
        entry = leader.entry
        if entry is None or not cache.vary_matches(entry, self.fields):
            return False
        now = cache.clock()
        outcome = Outcome(self.fwd, None, collapsed=True, ttl=int(entry.ttl(now)))
        cache.report(outcome, self.scope["method"])
        await self._serve(entry, now, outcome.render().encode())
        return True

    async def _serve_from_lease(self) -> bool:
        """Another node stored the response: answer from L2 (and hand it to this node's waiters); False
        when L2 has nothing fresh for this request (a failed write, another variant, a purge since)."""
        cache = self.cache
        entry = (await cache.lookup(self.primary, self.fields)).entry
        now = cache.clock()
        if entry is None or decide_use(entry, self.plan.cache_control, now).use is not Use.FRESH:
            cache.stats.lease["stored_missing"] += 1
            return False
        if self.flight is not None:
            self.flight.entry = entry
        outcome = Outcome(self.fwd, Reason.LEASE, collapsed=True, ttl=int(entry.ttl(now)))
        cache.report(outcome, self.scope["method"])
        await self._serve(entry, now, outcome.render().encode())
        return True

    def _app_scope(self, query: bytes, conditional: StoredResponse | None, for_storage: bool) -> Scope:
        scope = dict(self.scope)
        scope[SCOPE_KEY] = self.cache
        scope["query_string"] = query
        recipe = self.cache.recipe
        headers: RawHeaders = []
        for name, value in self.scope["headers"]:
            lname = name.lower()
            if for_storage and lname in _CLIENT_CONDITIONALS:
                continue
            if conditional is not None and lname in (b"if-none-match", b"if-modified-since"):
                continue  # replaced by the stored validators below: a 304 must be about the stored response
            if lname == b"if-none-match" and self.cache.cdn is not None:
                # The app knows its own validators, not the ones derived for rewritten bodies.
                headers.append((name, self.cache.cdn.original_if_none_match(value) or value))
                continue
            if lname == b"cookie" and recipe.cookies and for_storage:
                # Only the cookies that are part of the key reach the app: any other could personalise
                # a response that is then shared. (Bypassed requests are never shared: they keep all.)
                kept = parse_cookie_header([value.decode("latin-1")])
                pairs = "; ".join(f"{n}={kept[n]}" for n in recipe.cookies if n in kept)
                if pairs:
                    headers.append((b"cookie", pairs.encode("latin-1")))
                continue
            headers.append((name, value))
        if conditional is not None:
            # Revalidation (RFC 9111 §4.3.1): ask with the stored validators.
            if conditional.etag is not None:
                etag = conditional.etag.encode("latin-1")
                if self.cache.cdn is not None:
                    etag = self.cache.cdn.original_etag(etag) or etag  # ask with the app's own validator
                headers.append((b"if-none-match", etag))
            if conditional.last_modified is not None:
                headers.append((b"if-modified-since", conditional.last_modified.encode("latin-1")))
        scope["headers"] = headers
        if for_storage and scope["method"] == "HEAD":
            scope["method"] = "GET"  # fill the cache from a HEAD miss; the client still gets no body
        return scope

    async def _call_app(self, query: bytes) -> None:
        cache = self.cache
        for_storage = self.plan.store
        validators = (
            self.stale if self.stale is not None and (self.stale.etag or self.stale.last_modified) else None
        )
        scope = self._app_scope(query, validators, for_storage)
        cache.stats.origin_fetches += 1
        self.token = cache.fill_token()
        self.request_time = cache.clock()
        timeout = cache.settings.origin_timeout
        try:
            async with asyncio.timeout(timeout) as deadline:
                await self.app(scope, self.receive, lambda m: self._on_app_message(m, deadline))
        except TimeoutError:
            if self.client_started:
                raise
            await self._origin_failed(None, Reason.ORIGIN_TIMEOUT)
            return
        except Exception:
            if self.client_started or not self._stale_usable():
                raise
            logger.warning(
                "edgecache: the app raised; serving the stored response (stale-if-error)", exc_info=True
            )
            await self._serve_stale_on_error(None)
            return
        await self._after_app()

    def _stale_usable(self) -> bool:
        return self.stale is not None and may_serve_stale_on_error(self.stale, self.cache.clock())

    async def _origin_failed(self, status: int | None, reason: Reason) -> None:
        if self._stale_usable():
            await self._serve_stale_on_error(status)
        else:
            await self._send_simple(504, Outcome(self.fwd, reason))

    async def _serve_stale_on_error(self, status: int | None) -> None:
        assert self.stale is not None
        now = self.cache.clock()
        outcome = Outcome(Fwd.STALE, Reason.STALE_IF_ERROR, ttl=int(self.stale.ttl(now)), fwd_status=status)
        self.cache.report(outcome, self.scope["method"])
        await self._serve(self.stale, now, outcome.render().encode())

    async def _on_app_message(self, message: Message, deadline: asyncio.Timeout) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            deadline.reschedule(None)  # origin_timeout bounds the wait for headers, not the body
            await self._on_start(message)
        elif kind == "http.response.body":
            await self._on_body(message)
        else:
            # Trailers, zero-copy sends and other extensions: stream them through, store nothing.
            if self.mode == "buffer":
                await self._give_up_storing(Reason.NOT_STORED)
            if self.mode == "stream":
                await self.send(message)

    async def _on_start(self, message: Message) -> None:
        status: int = message["status"]
        headers: RawHeaders = list(message.get("headers", []))
        self.origin_status = status
        self.origin_headers = headers
        if self.stale is not None and status == 304:
            self.mode, self.not_modified = "swallow", headers
            return
        if status >= 500 and self._stale_usable():
            self.mode = "swallow"  # RFC 5861: the stored response answers instead; a 5xx never replaces it
            return
        if self.cache.cdn is not None and self.cache.settings.cdn_asset_max_age is not None:
            headers = self.origin_headers = _asset_freshness(
                self.cache, self.scope, self.fields, status, headers
            )
        response_time = self.cache.clock()
        decision = decide_storage(
            self.plan,
            self.fields,
            status,
            headers,
            b"",
            key=self.primary.canonical,
            vary_values=None,
            internal_tags=_internal_tags(self.uri),
            policy=self.cache.policy,
            request_time=self.request_time,
            response_time=response_time,
        )
        if decision.store:
            assert decision.entry is not None
            # The store bounds the whole object (headers, key and overhead too): the body gets the rest.
            self.room = self.cache.settings.max_object_bytes - decision.entry.size
            length = Fields(headers).get("content-length")
            if length is not None and length.isdigit() and int(length) > self.room:
                decision = StorageDecision(False, Reason.TOO_LARGE, remember_uncacheable=True)
        self.decision = decision
        if decision.store:
            self.mode = "buffer"
            self.buffer = []
            return
        if decision.remember_uncacheable:
            self.unshareable = True
            self.cache.hit_for_miss[self.primary.digest] = True
        self.mode = "stream"
        if self.cache.cdn is not None:
            # Not stored: a complete body of a rewritable type is still rewritten on its way to the client.
            self.send = _CdnFilter(
                self.cache, self.send, self.body_to_client, _asked_with_derived(self.cache, self.scope)
            )
        await self._start_client(status, headers, Outcome(self.fwd, decision.reason, fwd_status=None))

    async def _start_client(self, status: int, headers: RawHeaders, outcome: Outcome) -> None:
        self.cache.report(outcome, self.scope["method"])
        self.client_started = True
        out = [*_client_headers(self.cache, headers), (b"cache-status", outcome.render().encode())]
        await self.send({"type": "http.response.start", "status": status, "headers": out})

    async def _on_body(self, message: Message) -> None:
        mode = self.mode
        if mode == "buffer":
            chunk: bytes = message.get("body", b"")
            self.buffer.append(chunk)
            self.buffered += len(chunk)
            if self.buffered > self.room:
                await self._give_up_storing(Reason.TOO_LARGE)
                if message.get("more_body", False) is False:
                    await self._send_body(b"", more=False)
                return
            if not message.get("more_body", False):
                await self._complete()
        elif mode == "stream":
            if self.body_to_client:
                await self.send(message)
            elif not message.get("more_body", False):
                await self.send({"type": "http.response.body", "body": b""})

    async def _send_body(self, body: bytes, more: bool) -> None:
        await self.send(
            {"type": "http.response.body", "body": body if self.body_to_client else b"", "more_body": more}
        )

    async def _give_up_storing(self, reason: Reason) -> None:
        """The response turned out too large (or unusual) to store: send what was held, then stream."""
        assert self.decision is not None and self.decision.entry is not None
        self.unshareable = True
        self.cache.hit_for_miss[self.primary.digest] = True
        self.mode = "stream"
        entry = self.decision.entry
        status = self.origin_status or entry.status
        held = b"".join(self.buffer)
        self.buffer = []
        if self.cache.cdn is not None and reason is Reason.TOO_LARGE:
            # Too large to store, maybe not to rewrite (the rewrite cap is separate): the filter decides.
            self.send = _CdnFilter(self.cache, self.send, self.body_to_client, False)
        await self._start_client(status, self.origin_headers, Outcome(self.fwd, reason))
        await self._send_body(held, more=True)

    async def _complete(self) -> None:
        """The whole response is buffered: store it, hand it to waiters, answer the client from it."""
        assert self.decision is not None and self.decision.entry is not None
        body = b"".join(self.buffer)
        self.buffer = []
        entry = self.decision.entry
        if self.cache.cdn is not None:
            entry = _rewritten(self.cache, entry, body)  # once, before storing: hits serve these bytes
        else:
            entry = replace(entry, body=body, size=response_size(entry.headers, body, entry.key))
        stored = await self.cache.store_entry(self.primary, entry, self.token)
        if self.flight is not None and stored:
            # Only what was stored: a refused fill may predate an invalidation that a waiter came after.
            self.flight.entry = entry
        self.mode = "done"
        now = self.cache.clock()
        outcome = Outcome(
            self.fwd,
            None if stored else Reason.NOT_STORED,
            stored=stored,
            fwd_status=self.origin_status if self.fwd is Fwd.STALE else None,
        )
        self.cache.report(outcome, self.scope["method"])
        self.client_started = True
        await self._serve(entry, now, outcome.render().encode())

    async def _after_app(self) -> None:
        mode = self.mode
        if mode == "swallow":
            if self.not_modified is not None:
                await self._revalidated(self.not_modified)
            else:
                await self._serve_stale_on_error(self.origin_status)
        elif mode == "start":
            # The app returned without a response.
            await self._origin_failed(None, Reason.ORIGIN_ERROR)
        elif mode == "buffer":
            # The app returned before its last body message: send what it produced, store nothing.
            await self._give_up_storing(Reason.NOT_STORED)
            await self._send_body(b"", more=False)

    async def _revalidated(self, not_modified: RawHeaders) -> None:
        """RFC 9111 §4.3.4: the app confirmed the stored response; freshen it and answer from it."""
        assert self.stale is not None
        cache = self.cache
        if cache.cdn is not None:
            not_modified = _cdn_not_modified(cache.cdn, self.stale, not_modified)
        decision = freshen(
            self.stale,
            not_modified,
            plan=self.plan,
            request_fields=self.fields,
            policy=cache.policy,
            request_time=self.request_time,
            response_time=cache.clock(),
        )
        stored = False
        entry = decision.entry
        if entry is not None:
            if self.plan.store:
                stored = await cache.store_entry(self.primary, entry, self.token)
            if self.flight is not None and stored:
                self.flight.entry = entry
        else:
            # The 304 made it unstorable (Set-Cookie, private, no-store): drop it, and answer this client
            # alone with the updated response, so that it still gets the fields the 304 carried.
            await cache.store.delete(self.primary.digest)
            headers = _updated_headers(self.stale.headers, not_modified)
            entry = replace(self.stale, headers=_client_headers(cache, headers))
        now = cache.clock()
        outcome = Outcome(
            self.fwd, Reason.REVALIDATED, stored=stored, fwd_status=304, ttl=int(entry.ttl(now))
        )
        cache.report(outcome, self.scope["method"])
        await self._serve(entry, now, outcome.render().encode())


# Fields of a 304 that never update a stored response (RFC 9111 §3.2), hop-by-hop fields, and Age.
_NOT_UPDATED_BY_304 = frozenset(name.encode("latin-1") for name in (*NOT_UPDATED_BY_304, *HOP_BY_HOP, "age"))


def _updated_headers(stored: RawHeaders, not_modified: RawHeaders) -> RawHeaders:
    """RFC 9111 §4.3.4: the stored fields, with those the 304 carries replaced by its values."""
    update = {k.lower() for k, _ in not_modified} - _NOT_UPDATED_BY_304
    merged = [(k, v) for k, v in stored if k not in update]
    merged.extend((k.lower(), v) for k, v in not_modified if k.lower() in update)
    return merged


def _plan(cache: Cache, method: str, fields: Fields) -> RequestPlan:
    return plan_request(method, fields, _has_body(fields), cache.policy)


def _internal_tags(uri: Uri) -> frozenset[str]:
    """Tags every stored response carries so that purges by URI, path and path prefix find it."""
    return frozenset({uri_tag(uri), path_tag(uri[2]), *prefix_tags(uri[2])})


_TAG_HEADERS = (b"surrogate-key", b"cache-tag")


# -- CDN asset URL rewriting (edgecache.cdn) ------------------------------------------------------------


def _rewritten(cache: Cache, entry: StoredResponse, body: bytes) -> StoredResponse:
    """The entry to store with its body (and Link fields) rewritten for the CDN; counted."""
    assert cache.cdn is not None
    done = cache.cdn.rewrite(entry.status, entry.headers, body)
    if done.result is not None:
        cache.stats.cdn[done.result] += 1
    etag = entry.etag
    if done.result == "rewritten" and etag is not None:
        etag = cache.cdn.derive_etag(etag.encode("latin-1")).decode("latin-1")
    return replace(
        entry,
        headers=done.headers,
        body=done.body,
        etag=etag,
        size=response_size(done.headers, done.body, entry.key),
    )


def _cdn_not_modified(cdn: CdnResponses, stale: StoredResponse, not_modified: RawHeaders) -> RawHeaders:
    """A 304 about a rewritten entry: its ETag (the app's) becomes the derived one the entry presents."""
    derived = stale.etag is not None and cdn.is_derived(stale.etag.encode("latin-1"))
    out = [(k, cdn.derive_etag(v) if derived and k.lower() == b"etag" else v) for k, v in not_modified]
    return cdn.rewrite_links(out)


def _asked_with_derived(cache: Cache, scope: Scope) -> bool:
    """The client's If-None-Match names a validator derived for a rewritten body (the app gets the
    original; its 304 then presents the derived one again)."""
    assert cache.cdn is not None
    for name, value in scope["headers"]:
        if name.lower() == b"if-none-match" and cache.cdn.original_if_none_match(value) is not None:
            return True
    return False


def _asset_freshness(
    cache: Cache, scope: Scope, fields: Fields, status: int, headers: RawHeaders
) -> RawHeaders:
    """``cdn_asset_max_age``: a 200 for an asset path without freshness of its own becomes long-lived.

    Only for GET/HEAD without Authorization, and only when the app set neither Cache-Control nor Expires
    nor Set-Cookie: what the app says always wins, and nothing personal is ever made public.
    """
    max_age = cache.settings.cdn_asset_max_age
    assert max_age is not None
    if status != 200 or scope["method"] not in ("GET", "HEAD") or "authorization" in fields:
        return headers
    if not _under(scope["path"], cache.settings.cdn_paths):
        return headers
    if any(k.lower() in (b"cache-control", b"expires", b"set-cookie") for k, _ in headers):
        return headers
    return [*headers, (b"cache-control", b"public, max-age=%d" % int(max_age))]


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    for prefix in prefixes:
        if prefix.endswith("/"):
            if path.startswith(prefix):
                return True
        elif path == prefix or path.startswith(prefix + "/"):
            return True
    return False


class _CdnFilter:
    """The send of a response that is not stored: a complete body of a rewritable type is rewritten.

    The start is held until the body is known to be complete (its last message, within the rewrite cap).
    A body that goes past the cap, or that arrives in several messages without a Content-Length (a
    stream: holding it would delay it), is sent on untouched from where it is, and counted.
    """

    __slots__ = ("cache", "chunks", "derive_304", "held", "send", "size", "with_body")

    def __init__(self, cache: Cache, send: Send, with_body: bool, derive_304: bool) -> None:
        self.cache = cache
        self.send = send
        self.with_body = with_body
        self.derive_304 = derive_304
        self.held: Message | None = None
        self.chunks: list[bytes] = []
        self.size = 0

    async def __call__(self, message: Message) -> None:
        cdn = self.cache.cdn
        assert cdn is not None
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = list(message.get("headers", []))
            if status == 304 and self.derive_304:
                headers = [(k, cdn.derive_etag(v) if k.lower() == b"etag" else v) for k, v in headers]
            message = {**message, "headers": cdn.rewrite_links(headers)}
            if not self.with_body or not cdn.wants_body(status, headers):
                await self.send(message)
            elif cdn.declared_too_large(headers):
                self.cache.stats.cdn["too-large"] += 1
                await self.send(message)
            else:
                self.held = message
            return
        held = self.held
        if held is None:
            await self.send(message)
            return
        if message["type"] != "http.response.body":
            await self._release("streaming")  # trailers or an extension: nothing to rewrite in
            await self.send(message)
            return
        self.chunks.append(message.get("body", b""))
        self.size += len(self.chunks[-1])
        if not message.get("more_body", False):
            self.held = None
            done = cdn.rewrite(held["status"], held["headers"], b"".join(self.chunks), links=False)
            self.chunks = []
            if done.result is not None:
                self.cache.stats.cdn[done.result] += 1
            await self.send({**held, "headers": done.headers})
            await self.send({"type": "http.response.body", "body": done.body})
        elif self.size > cdn.max_bytes:
            await self._release("too-large")
        elif len(self.chunks) == 1 and not any(k.lower() == b"content-length" for k, _ in held["headers"]):
            await self._release("streaming")

    async def _release(self, reason: str) -> None:
        """Send what is held as it is; the rest of the body follows untouched."""
        assert self.held is not None
        self.cache.stats.cdn[reason] += 1
        await self.send(self.held)
        self.held = None
        body, self.chunks = b"".join(self.chunks), []
        await self.send({"type": "http.response.body", "body": body, "more_body": True})


def _client_headers(cache: Cache, headers: RawHeaders) -> RawHeaders:
    """The app's headers as the client sees them: tag headers removed unless configured otherwise."""
    if not cache.policy.strip_tag_headers:
        return list(headers)
    return [(k, v) for k, v in headers if k.lower() not in _TAG_HEADERS]


def _range_headers(headers: RawHeaders, chosen: ByteRange, size: int) -> RawHeaders:
    out = [(k, v) for k, v in headers if k != b"content-length"]
    out.append((b"content-length", b"%d" % chosen.length))
    out.append((b"content-range", b"bytes %d-%d/%d" % (chosen.first, chosen.last, size)))
    return out


def _slice(body: bytes, chosen: ByteRange) -> bytes:
    return body[chosen.first : chosen.last + 1]


async def _background_refresh(
    exchange: _Exchange, entry: StoredResponse, query: bytes, flight: Flight
) -> None:
    """stale-while-revalidate: one refresh per key, its response only stored, never sent anywhere."""
    scope = dict(exchange.scope)
    scope["method"] = "GET"

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def discard(message: Message) -> None:
        return None

    refresh = _Exchange(exchange.app, exchange.cache, scope, receive, discard)
    refresh.fields = exchange.fields
    refresh.plan = exchange.plan
    refresh.uri = exchange.uri
    refresh.primary = exchange.primary
    refresh.fwd = Fwd.STALE
    try:
        await refresh._fetch(entry, query, flight)
    except Exception:
        # Nobody waits for this response; the stale entry keeps serving until its window closes.
        logger.warning("edgecache: background refresh failed", exc_info=True)
