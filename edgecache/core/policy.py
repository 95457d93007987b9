"""RFC 9111 as a shared cache: pure decisions over parsed requests and responses.

Every decision is a small frozen record carrying a ``Reason``; nothing here reads a clock (``now`` and the
request/response times are arguments) or performs I/O. RFC sections are cited at the rule they implement.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum

from edgecache.core.entry import Freshness, RawHeaders, StoredResponse, response_size
from edgecache.core.headers import (
    EMPTY_CACHE_CONTROL,
    CacheControl,
    Fields,
    if_none_match_matches,
    normalize_vary_value,
    parse_cache_tags,
    parse_delta_seconds,
    parse_etag,
    parse_http_date,
    parse_surrogate_keys,
    parse_vary,
)
from edgecache.core.status import Fwd, Reason

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
CACHEABLE_METHODS = frozenset({"GET", "HEAD"})

# RFC 9110 §15.1: statuses that are heuristically cacheable, minus those a shared cache in front of an app
# should not keep: 206 (never stored as a full response), 414 and 501 (errors, see NEVER_STORED).
HEURISTIC_STATUSES = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410})
# Statuses storable when the response gives explicit freshness.
DEFAULT_CACHEABLE_STATUSES = HEURISTIC_STATUSES | {302, 303, 307}
# Never stored whatever the configuration: client errors that reflect one request, and server errors.
NEVER_STORED = frozenset(
    {206, 304, 400, 401, 403, 407, 408, 409, 411, 412, 413, 414, 416, 417, 421, 429, 431}
)

# Request fields that apps commonly reflect into responses although they are not part of the URL: a
# response to a request carrying one of them is never stored unless the field is part of the key.
UNKEYED_REFLECTED_HEADERS = frozenset(
    {
        "x-forwarded-host",
        "x-forwarded-scheme",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-forwarded-server",
        "x-host",
        "x-forwarded-for-original",
        "forwarded",
        "x-original-url",
        "x-rewrite-url",
        "x-original-host",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    }
)

# RFC 9110 §7.6.1 hop-by-hop fields, never stored or replayed.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    }
)
# RFC 9111 §3.2: fields a 304 must not update on the stored response.
NOT_UPDATED_BY_304 = frozenset({"content-length", "content-encoding", "content-range", "transfer-encoding"})


@dataclass(frozen=True, slots=True)
class Policy:
    """The caching rules an operator chose; built once by the configuration."""

    default_ttl: float = 60.0
    cacheable_statuses: frozenset[int] = DEFAULT_CACHEABLE_STATUSES
    heuristic_fraction: float = 0.1  # RFC 9111 §4.2.2's typical 10 % of the time since Last-Modified
    heuristic_max_ttl: float = 86400.0
    targeted_fields: tuple[str, ...] = ()  # e.g. ("cdn-cache-control", "surrogate-control")
    cache_authorized: bool = False
    key_headers: tuple[str, ...] = ()
    key_cookies: tuple[str, ...] = ()
    unkeyed_headers: frozenset[str] = UNKEYED_REFLECTED_HEADERS
    respect_request_cache_control: bool = True
    keep_ttl: float = 300.0  # how long a stale response with validators is kept for revalidation
    default_stale_while_revalidate: float = 0.0
    default_stale_if_error: float = 0.0
    strip_tag_headers: bool = True
    guarded_headers: frozenset[str] = field(init=False)
    # Every request field that can change a plan: a request carrying none of them takes the common path.
    plan_fields: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        keyed = {h.lower() for h in self.key_headers}
        guarded = frozenset(self.unkeyed_headers - keyed)
        object.__setattr__(self, "guarded_headers", guarded)
        plan_fields = guarded | {"upgrade", "authorization", "cookie", "cache-control"}
        object.__setattr__(self, "plan_fields", plan_fields)


# ---------------------------------------------------------------------------------------------------------
# Requests


@dataclass(frozen=True, slots=True)
class RequestPlan:
    """What the cache may do for one request before it looks anything up."""

    lookup: bool  # a stored response may answer it
    store: bool  # its response may be stored
    reason: Reason | None  # why not (lookup or store)
    fwd: Fwd | None = None  # how it is forwarded when it bypasses the cache
    invalidates: bool = False  # an unsafe method: a non-error response drops the target (§4.4)
    cache_control: CacheControl = EMPTY_CACHE_CONTROL

    @property
    def bypass(self) -> bool:
        return not self.lookup and not self.store


_PLAIN_REQUEST = RequestPlan(True, True, None)


def plan_request(method: str, fields: Fields, has_body: bool, policy: Policy) -> RequestPlan:
    if method in CACHEABLE_METHODS and not has_body and policy.plan_fields.isdisjoint(fields):
        return _PLAIN_REQUEST  # the common case, decided without looking at each rule
    if method not in CACHEABLE_METHODS:
        # §4.4: unsafe methods, and methods whose safety is unknown, invalidate the target URI.
        return RequestPlan(False, False, Reason.METHOD, Fwd.METHOD, invalidates=method not in SAFE_METHODS)
    if "upgrade" in fields:
        return RequestPlan(False, False, Reason.REQUEST_UPGRADE, Fwd.BYPASS)
    if "authorization" in fields and not policy.cache_authorized:
        # §3.5: responses to authorized requests are not shared unless the origin says so; by default
        # edgecache does not even look, so that nobody's credentials meet another user's response.
        return RequestPlan(False, False, Reason.REQUEST_AUTHORIZATION, Fwd.BYPASS)
    if "cookie" in fields and not policy.key_cookies:
        return RequestPlan(False, False, Reason.REQUEST_COOKIE, Fwd.BYPASS)
    if has_body:
        # A GET with a body can select different content than its URL says; never shared.
        return RequestPlan(False, False, Reason.REQUEST_BODY, Fwd.BYPASS)
    cache_control = EMPTY_CACHE_CONTROL
    if policy.respect_request_cache_control and "cache-control" in fields:
        cache_control = CacheControl.parse(fields.joined("cache-control"))
    if cache_control.has("no-store"):
        # §5.2.1.5: a stored response may still answer it, but nothing of this exchange is stored.
        return RequestPlan(True, False, Reason.REQUEST_NO_STORE, cache_control=cache_control)
    if not policy.guarded_headers.isdisjoint(fields):
        return RequestPlan(True, False, Reason.UNKEYED_HEADER, cache_control=cache_control)
    return RequestPlan(True, True, None, cache_control=cache_control)


# ---------------------------------------------------------------------------------------------------------
# Freshness


def _effective_cache_control(fields: Fields, policy: Policy) -> tuple[CacheControl, bool]:
    """The response's directives, and whether they came from a targeted field (RFC 9213 §2.2)."""
    for name in policy.targeted_fields:
        value = fields.joined(name)
        if value:
            parsed = CacheControl.parse(value)
            if parsed.directives:
                return parsed, True
    return CacheControl.parse(fields.joined("cache-control")), False


def freshness_lifetime(
    status: int, cache_control: CacheControl, fields: Fields, policy: Policy, targeted: bool, received: float
) -> tuple[float, str]:
    """RFC 9111 §4.2.1: s-maxage, then max-age, then Expires − Date; else §4.2.2 heuristics or default_ttl."""
    s_maxage = cache_control.seconds("s-maxage")
    if s_maxage is not None:
        return float(s_maxage), "s-maxage"
    max_age = cache_control.seconds("max-age")
    if max_age is not None:
        return float(max_age), "max-age"
    if not targeted and "expires" in fields:
        expires = parse_http_date(fields.get("expires"))
        if expires is None or len(fields.get_all("expires")) > 1:
            return 0.0, "expires"  # §5.3: an invalid Expires, such as "0", means already expired
        date = parse_http_date(fields.get("date"))
        return max(0.0, expires - (date if date is not None else received)), "expires"
    if status not in HEURISTIC_STATUSES and not cache_control.has("public"):
        return 0.0, "none"  # §4.2.2: no heuristic freshness for other statuses
    if policy.default_ttl > 0:
        return policy.default_ttl, "default"
    last_modified = parse_http_date(fields.get("last-modified"))
    if last_modified is not None:
        date = parse_http_date(fields.get("date"))
        since = (date if date is not None else received) - last_modified
        if since > 0:
            return min(since * policy.heuristic_fraction, policy.heuristic_max_ttl), "heuristic"
    return 0.0, "none"


def corrected_initial_age(fields: Fields, request_time: float, response_time: float) -> float:
    """RFC 9111 §4.2.3."""
    age_value = parse_delta_seconds(fields.get("age")) or 0
    date_value = parse_http_date(fields.get("date"))
    apparent_age = max(0.0, response_time - date_value) if date_value is not None else 0.0
    response_delay = max(0.0, response_time - request_time)
    return max(apparent_age, age_value + response_delay)


# ---------------------------------------------------------------------------------------------------------
# Storing


@dataclass(frozen=True, slots=True)
class StorageDecision:
    store: bool
    reason: Reason
    entry: StoredResponse | None = None
    remember_uncacheable: bool = False  # the URI's responses are not shareable: hit-for-miss applies


def _not_stored(reason: Reason, remember: bool = True) -> StorageDecision:
    return StorageDecision(False, reason, None, remember_uncacheable=remember)


def decide_storage(
    plan: RequestPlan,
    request_fields: Fields,
    status: int,
    response_headers: RawHeaders,
    body: bytes,
    *,
    key: bytes,
    vary_values: tuple[str | None, ...] | None,
    internal_tags: frozenset[str] = frozenset(),
    policy: Policy,
    request_time: float,
    response_time: float,
) -> StorageDecision:
    """May this response be stored (RFC 9111 §3), and if so, the entry to store.

    ``vary_values`` are the request's normalised values of the response's Vary fields, or None to have them
    read from ``request_fields``.
    """
    if not plan.store:
        return _not_stored(plan.reason or Reason.NOT_STORED, remember=False)
    fields = Fields(response_headers)
    return _decide(
        plan, request_fields, status, fields, response_headers, body, key, vary_values, internal_tags, policy,
        request_time, response_time,
    )  # fmt: skip


def _decide(
    plan: RequestPlan,
    request_fields: Fields,
    status: int,
    fields: Fields,
    response_headers: RawHeaders,
    body: bytes,
    key: bytes,
    vary_values: tuple[str | None, ...] | None,
    internal_tags: frozenset[str],
    policy: Policy,
    request_time: float,
    response_time: float,
) -> StorageDecision:
    if status == 206:
        return _not_stored(Reason.PARTIAL, remember=False)
    if status < 200 or status >= 500 or status in NEVER_STORED or status not in policy.cacheable_statuses:
        # Errors say something about this request or this moment, not about the resource.
        return _not_stored(Reason.STATUS, remember=status not in NEVER_STORED and status < 500)
    cache_control, targeted = _effective_cache_control(fields, policy)
    if cache_control.has("no-store"):
        return _not_stored(Reason.NO_STORE)
    private_fields = cache_control.field_names("private")
    if cache_control.has("private") and not private_fields:  # unqualified, or an empty (malformed) list
        return _not_stored(Reason.PRIVATE)
    vary = parse_vary(fields.get_all("vary"))
    if vary is None:
        return _not_stored(Reason.VARY_STAR)
    if "set-cookie" in fields and not (private_fields and "set-cookie" in private_fields):  # §5.2.2.7
        return _not_stored(Reason.SET_COOKIE)
    if "authorization" in request_fields and not (
        cache_control.has("public") or cache_control.has("s-maxage") or cache_control.has("must-revalidate")
    ):
        return _not_stored(Reason.AUTHORIZATION, remember=False)  # §3.5
    explicit = any(cache_control.has(d) for d in ("s-maxage", "max-age")) or (
        not targeted and "expires" in fields
    )
    if not explicit and status not in HEURISTIC_STATUSES and not cache_control.has("public"):
        return _not_stored(Reason.STATUS)
    lifetime, source = freshness_lifetime(status, cache_control, fields, policy, targeted, response_time)
    no_cache = cache_control.has("no-cache")  # qualified or not: always revalidate (§5.2.2.4 allows it)
    has_s_maxage = cache_control.has("s-maxage")
    # The origin's own stale-* values (an explicit 0 included) win over the operator's defaults; with
    # s-maxage, only what the origin granted explicitly applies (§5.2.2.10).
    swr = _seconds_or(
        cache_control,
        "stale-while-revalidate",
        0.0 if has_s_maxage else policy.default_stale_while_revalidate,
    )
    sie = _seconds_or(cache_control, "stale-if-error", 0.0 if has_s_maxage else policy.default_stale_if_error)
    explicit_stale_grant = cache_control.has("stale-while-revalidate") or cache_control.has("stale-if-error")
    must_revalidate = (
        cache_control.has("must-revalidate")
        or cache_control.has("proxy-revalidate")
        # §5.2.2.10: s-maxage implies proxy-revalidate, unless the origin explicitly granted stale use.
        or (has_s_maxage and not explicit_stale_grant)
    )
    if must_revalidate or no_cache:
        swr = sie = 0.0
    etag = fields.get("etag")
    if etag is not None and parse_etag(etag) is None:
        etag = None
    last_modified = fields.get("last-modified")
    validators = etag is not None or last_modified is not None
    initial_age = corrected_initial_age(fields, request_time, response_time)
    fresh_for = 0.0 if no_cache else max(0.0, lifetime - initial_age)
    retain = max(swr, sie, policy.keep_ttl if validators else 0.0)
    if fresh_for <= 0 and retain <= 0:
        return _not_stored(Reason.NO_FRESHNESS)
    if vary_values is None:
        vary_values = request_vary_values(vary, request_fields)
    tags = set(internal_tags)
    tags.update(parse_surrogate_keys(fields.get_all("surrogate-key")))
    tags.update(parse_cache_tags(fields.get_all("cache-tag")))
    dropped = set(HOP_BY_HOP) | {"age"}  # Age is recomputed at every send
    if private_fields:
        dropped |= private_fields  # §5.2.2.7: a shared cache stores the rest without these fields
    if policy.strip_tag_headers:
        dropped |= {"surrogate-key", "cache-tag"}
    connection = fields.joined("connection")
    if connection:
        dropped |= {n.strip().lower() for n in connection.split(",")}
    stored_headers = [
        (k.lower(), v) for k, v in response_headers if k.lower().decode("latin-1") not in dropped
    ]
    entry = StoredResponse(
        status=status,
        headers=stored_headers,
        body=body,
        request_time=request_time,
        response_time=response_time,
        corrected_initial_age=initial_age,
        freshness=Freshness(
            lifetime=0.0 if no_cache else lifetime,
            source=source,
            stale_while_revalidate=swr,
            stale_if_error=sie,
            must_revalidate=must_revalidate,
            no_cache=no_cache,
        ),
        stored_until=response_time + fresh_for + retain,
        key=key,
        etag=etag,
        last_modified=last_modified,
        vary=vary,
        vary_values=vary_values if vary else (),
        tags=frozenset(tags),
        size=response_size(stored_headers, body, key),
    )
    return StorageDecision(True, Reason.STORED, entry)


def _seconds_or(cache_control: CacheControl, name: str, default: float) -> float:
    seconds = cache_control.seconds(name)
    return default if seconds is None else float(seconds)


def request_vary_values(vary: tuple[str, ...], request_fields: Fields) -> tuple[str | None, ...]:
    """The request's normalised values of the Vary fields (RFC 9111 §4.1); None marks an absent field."""
    return tuple(normalize_vary_value(name, request_fields.get_all(name)) for name in vary)


def response_vary(response_headers: RawHeaders) -> tuple[str, ...] | None:
    """The Vary field names of a response (sorted); None for ``Vary: *``."""
    return parse_vary([v.decode("latin-1") for k, v in response_headers if k.lower() == b"vary"])


# ---------------------------------------------------------------------------------------------------------
# Serving


class Use(Enum):
    FRESH = "fresh"  # serve it
    STALE = "stale"  # serve it although stale (request max-stale)
    STALE_WHILE_REVALIDATE = "stale-while-revalidate"  # serve it, refresh in the background
    REVALIDATE = "revalidate"  # ask the origin first (conditionally when it has validators)


@dataclass(frozen=True, slots=True)
class ServeDecision:
    use: Use
    reason: Reason | None


_FRESH = ServeDecision(Use.FRESH, None)


def decide_use(entry: StoredResponse, request_cc: CacheControl, now: float) -> ServeDecision:
    """May ``entry`` answer this request now (RFC 9111 §4.2, §4.2.4, §5.2.1; RFC 5861)?"""
    freshness = entry.freshness
    age = entry.current_age(now)
    remaining = freshness.lifetime - age
    if request_cc.directives:
        if request_cc.has("no-cache"):
            return ServeDecision(Use.REVALIDATE, Reason.REQUEST_NO_CACHE)  # §5.2.1.4
        max_age = request_cc.seconds("max-age")
        if max_age is not None and age > max_age:
            return ServeDecision(Use.REVALIDATE, Reason.REQUEST_NO_CACHE)  # §5.2.1.1
        min_fresh = request_cc.seconds("min-fresh")
        if min_fresh is not None and remaining < min_fresh:
            return ServeDecision(Use.REVALIDATE, Reason.REQUEST_NO_CACHE)  # §5.2.1.3
    if remaining > 0 and not freshness.no_cache:
        return _FRESH
    if freshness.no_cache or freshness.must_revalidate:
        return ServeDecision(Use.REVALIDATE, None)  # §4.2.4: stale use forbidden
    staleness = -remaining
    max_stale = request_cc.max_stale if request_cc.directives else None
    if max_stale is not None and staleness <= max_stale:
        return ServeDecision(Use.STALE, Reason.MAX_STALE)  # §5.2.1.2
    if freshness.stale_while_revalidate > 0 and staleness <= freshness.stale_while_revalidate:
        # A zero window grants nothing: without it, a response stale by exactly 0 s would be served.
        return ServeDecision(Use.STALE_WHILE_REVALIDATE, Reason.STALE_WHILE_REVALIDATE)
    return ServeDecision(Use.REVALIDATE, None)


def may_serve_stale_on_error(entry: StoredResponse, now: float) -> bool:
    """RFC 5861 §4: within stale-if-error, an origin error may be answered with the stored response."""
    freshness = entry.freshness
    if freshness.must_revalidate or freshness.no_cache:
        return False
    ttl = entry.ttl(now)
    # Fresh (ttl > 0) always may; a stale one only inside a granted (non-zero) window.
    return ttl > 0 or (freshness.stale_if_error > 0 and -ttl <= freshness.stale_if_error)


def freshen(
    entry: StoredResponse,
    not_modified_headers: RawHeaders,
    *,
    plan: RequestPlan,
    request_fields: Fields,
    policy: Policy,
    request_time: float,
    response_time: float,
) -> StorageDecision:
    """RFC 9111 §4.3.4: update a stored response with the fields of a 304 and recompute its freshness."""
    update = Fields(not_modified_headers)
    connection = {n.strip().lower() for n in (update.joined("connection") or "").split(",")}
    # Names compared as str: the NOT_UPDATED_BY_304 and HOP_BY_HOP sets hold str, the headers bytes.
    replaced = set(update.names()) - NOT_UPDATED_BY_304 - HOP_BY_HOP - connection
    merged = [(k, v) for k, v in entry.headers if k.decode("latin-1") not in replaced]
    merged.extend((k.lower(), v) for k, v in not_modified_headers if k.decode("latin-1").lower() in replaced)
    # Origin tags live in Surrogate-Key / Cache-Tag, which are usually stripped before storing: keep the
    # stored ones unless the 304 sends new tag fields (which then replace them).
    new_tags = "surrogate-key" in replaced or "cache-tag" in replaced
    tags = frozenset(t for t in entry.tags if not new_tags or t.startswith(("uri:", "path:")))
    return _decide(
        replace(plan, store=True),
        request_fields,
        entry.status,
        Fields(merged),
        merged,
        entry.body,
        entry.key,
        entry.vary_values,
        tags,
        policy,
        request_time,
        response_time,
    )


def client_conditional_matches(request_fields: Fields, entry: StoredResponse) -> bool:
    """RFC 9110 §13.1.2 / §13.1.3: would the client's conditional GET get a 304 from this entry?"""
    if_none_match = request_fields.joined("if-none-match")
    if if_none_match is not None:
        return if_none_match_matches(if_none_match, entry.etag)
    if_modified_since = parse_http_date(request_fields.get("if-modified-since"))
    if if_modified_since is None:
        return False
    last_modified = parse_http_date(entry.last_modified)
    if last_modified is None:
        return False
    return last_modified <= if_modified_since


# RFC 9110 §15.4.5: the fields a 304 carries from the stored response.
NOT_MODIFIED_FIELDS = frozenset(
    {b"cache-control", b"content-location", b"date", b"etag", b"expires", b"vary", b"last-modified"}
)
