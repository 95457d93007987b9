"""RFC 9111 decisions as tables: request × response × now → decision.

Each row starts with its case id, which names the section it checks: ``§n`` is RFC 9111, ``9110§n`` RFC 9110
(HTTP semantics), ``5861§n`` RFC 5861 (stale-while-revalidate / stale-if-error), ``9213§n`` RFC 9213
(targeted fields). Responses are stored at ``T0``; ``now`` columns count seconds after it. A response or
request column is one header line (a str) or several (a tuple).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from edgecache.core.entry import RawHeaders, StoredResponse
from edgecache.core.headers import DELTA_SECONDS_MAX, CacheControl, Fields, format_http_date
from edgecache.core.policy import (
    DEFAULT_CACHEABLE_STATUSES,
    NOT_MODIFIED_FIELDS,
    Policy,
    RequestPlan,
    StorageDecision,
    Use,
    client_conditional_matches,
    corrected_initial_age,
    decide_storage,
    decide_use,
    freshen,
    freshness_lifetime,
    may_serve_stale_on_error,
    plan_request,
    request_vary_values,
    response_vary,
)
from edgecache.core.status import Fwd
from edgecache.core.status import Reason as R
from tests.helpers import FAKE_EPOCH

T0 = FAKE_EPOCH
KEY = b"edgecache-key/1:test"
INTERNAL_TAGS = frozenset({"uri:x", "path:y"})

P = Policy()  # the middleware's defaults: default_ttl=60
RFC = Policy(default_ttl=0)  # RFC 9111 behaviour only (the proxy's default)
AUTH = Policy(cache_authorized=True)
COOKIES = Policy(key_cookies=("session",))
KEYED_XFH = Policy(key_headers=("x-forwarded-host",))
TARGETED = Policy(targeted_fields=("cdn-cache-control", "surrogate-control"))
NO_REQ_CC = Policy(respect_request_cache_control=False)
KEEP_TAGS = Policy(strip_tag_headers=False)
SWR_30 = Policy(default_stale_while_revalidate=30)
SIE_100 = Policy(default_stale_if_error=100)


def with_status(status: int) -> Policy:
    return Policy(cacheable_statuses=DEFAULT_CACHEABLE_STATUSES | {status})


Lines = str | tuple[str, ...]  # one header line, or several


# ---------------------------------------------------------------------------------------------------------
# builders


def rows(*table: tuple[object, ...]) -> list[pytest.ParameterSet]:
    """Table rows written as ``(id, *values)`` so that each reads as one line."""
    return [pytest.param(*row[1:], id=str(row[0])) for row in table]


def at(offset: float) -> str:
    """An HTTP-date ``offset`` seconds after T0."""
    return format_http_date(T0 + offset)


def lines(spec: Lines) -> tuple[str, ...]:
    return (spec,) if isinstance(spec, str) else spec


def raw(spec: Lines) -> RawHeaders:
    headers: RawHeaders = []
    for line in lines(spec):
        if not line:
            continue
        name, sep, value = line.partition(":")
        assert sep, f"not a header line: {line!r}"
        headers.append((name.strip().encode("latin-1"), value.strip().encode("latin-1")))
    return headers


def fields(spec: Lines) -> Fields:
    return Fields(raw(spec))


def plan(request: Lines = (), method: str = "GET", body: bool = False, policy: Policy = P) -> RequestPlan:
    return plan_request(method, fields(request), body, policy)


def storage(
    response: Lines = (),
    *,
    status: int = 200,
    request: Lines = (),
    method: str = "GET",
    policy: Policy = P,
    request_time: float = T0,
    response_time: float = T0,
    vary_values: tuple[str | None, ...] | None = None,
) -> StorageDecision:
    request_fields = fields(request)
    return decide_storage(
        plan_request(method, request_fields, False, policy),
        request_fields,
        status,
        raw(response),
        b"hello",
        key=KEY,
        vary_values=vary_values,
        internal_tags=INTERNAL_TAGS,
        policy=policy,
        request_time=request_time,
        response_time=response_time,
    )


def stored(
    response: Lines = (),
    *,
    request: Lines = (),
    policy: Policy = P,
    request_time: float = T0,
    vary_values: tuple[str | None, ...] | None = None,
) -> StoredResponse:
    decision = storage(
        response, request=request, policy=policy, request_time=request_time, vary_values=vary_values
    )
    assert decision.store, decision
    assert decision.entry is not None
    return decision.entry


def header(entry: StoredResponse, name: str) -> str | None:
    values = [v.decode("latin-1") for k, v in entry.headers if k == name.encode()]
    return ", ".join(values) if values else None


# ---------------------------------------------------------------------------------------------------------
# requests: what may be looked up and stored before the response is known

METHOD = (False, False, R.METHOD)
CACHEABLE = (True, True, None)
NO_STORE_REQ = (True, False, R.REQUEST_NO_STORE)
UNKEYED = (True, False, R.UNKEYED_HEADER)
AUTHZ = "Authorization: Basic eDp5"
XFH = "X-Forwarded-Host: evil.example"

# fmt: off
PLAN_CASES = rows(
    ("§3-get", "GET", (), False, P, CACHEABLE),
    ("§3-head", "HEAD", (), False, P, CACHEABLE),
    ("§3-post-not-cacheable-here", "POST", (), False, P, METHOD),
    ("§3-put", "PUT", (), False, P, METHOD),
    ("§3-options", "OPTIONS", (), False, P, METHOD),
    ("9110§9.1-method-is-case-sensitive", "get", (), False, P, METHOD),
    ("9110§7.8-upgrade", "GET", "Upgrade: websocket", False, P, (False, False, R.REQUEST_UPGRADE)),
    ("§3.5-authorization-bypass", "GET", AUTHZ, False, P, (False, False, R.REQUEST_AUTHORIZATION)),
    ("§3.5-authorization-opt-in", "GET", AUTHZ, False, AUTH, CACHEABLE),
    ("§3-cookie-bypass-by-default", "GET", "Cookie: session=1", False, P, (False, False, R.REQUEST_COOKIE)),
    ("§3-cookie-keyed", "GET", "Cookie: session=1", False, COOKIES, CACHEABLE),
    ("9110§9.3.1-get-with-body", "GET", (), True, P, (False, False, R.REQUEST_BODY)),
    ("§5.2.1.5-request-no-store", "GET", "Cache-Control: no-store", False, P, NO_STORE_REQ),
    ("§5.2.1.5-request-no-store-case", "GET", "Cache-Control: max-age=0, NO-STORE", False, P, NO_STORE_REQ),
    ("§5.2.1-request-directives-off-by-policy", "GET", "Cache-Control: no-store", False, NO_REQ_CC,
     CACHEABLE),
    ("§5.2.1.4-request-no-cache-still-stores", "GET", "Cache-Control: no-cache", False, P, CACHEABLE),
    ("§4.1-unkeyed-x-forwarded-host", "GET", XFH, False, P, UNKEYED),
    ("§4.1-unkeyed-x-forwarded-host-any-case", "GET", "x-FORWARDED-host: e.example", False, P, UNKEYED),
    ("§4.1-unkeyed-forwarded", "GET", "Forwarded: host=evil", False, P, UNKEYED),
    ("§4.1-unkeyed-method-override", "GET", "X-HTTP-Method-Override: DELETE", False, P, UNKEYED),
    ("§4.1-keyed-x-forwarded-host", "GET", XFH, False, KEYED_XFH, CACHEABLE),
    ("§4.1-x-forwarded-for-is-harmless", "GET", "X-Forwarded-For: 10.0.0.1", False, P, CACHEABLE),
)
# fmt: on


@pytest.mark.parametrize(("method", "request_lines", "body", "policy", "expected"), PLAN_CASES)
def test_plan_request(
    method: str, request_lines: Lines, body: bool, policy: Policy, expected: tuple[bool, bool, R | None]
) -> None:
    result = plan(request_lines, method=method, body=body, policy=policy)
    assert (result.lookup, result.store, result.reason) == expected


# fmt: off
INVALIDATION_CASES = rows(
    ("§4.4-post-invalidates", "POST", True),
    ("§4.4-put-invalidates", "PUT", True),
    ("§4.4-delete-invalidates", "DELETE", True),
    ("§4.4-patch-invalidates", "PATCH", True),
    ("§4.4-unknown-method-invalidates", "PURGE", True),
    ("§4.4-options-is-safe", "OPTIONS", False),
    ("§4.4-trace-is-safe", "TRACE", False),
    ("§4.4-get-is-safe", "GET", False),
)
# fmt: on


@pytest.mark.parametrize(("method", "invalidates"), INVALIDATION_CASES)
def test_plan_request_invalidation(method: str, invalidates: bool) -> None:
    result = plan(method=method)
    assert result.invalidates is invalidates
    if method != "GET":
        assert result.bypass
        assert result.fwd is Fwd.METHOD


def test_plan_request_carries_parsed_request_directives() -> None:
    result = plan(("Cache-Control: max-age=5", "cache-control: MIN-FRESH=3"))
    assert result.cache_control.seconds("max-age") == 5
    assert result.cache_control.seconds("min-fresh") == 3
    assert plan("Cache-Control: max-age=5", policy=NO_REQ_CC).cache_control.directives == {}
    assert plan(AUTHZ).fwd is Fwd.BYPASS
    assert not plan(AUTHZ).lookup


# ---------------------------------------------------------------------------------------------------------
# storability (§3)

STORED = (True, R.STORED)


def refused(reason: R) -> tuple[bool, R]:
    return (False, reason)


MAX_AGE = "Cache-Control: max-age=60"
NO_CACHE = "Cache-Control: no-cache"
PUBLIC_MAX_AGE = "Cache-Control: public, max-age=60"
HEURISTIC = (200, 203, 204, 300, 301, 308, 404, 405, 410)
NEVER = (304, 400, 401, 403, 407, 408, 409, 411, 412, 413, 414, 416, 417, 421, 429, 431)
SERVER_ERRORS = (500, 501, 502, 503, 504)

# fmt: off
STATUS_CASES = rows(
    *((f"§3-{s}-heuristically-cacheable", s, (), P, STORED) for s in HEURISTIC),
    *((f"§3-{s}-needs-explicit-freshness", s, (), P, refused(R.STATUS)) for s in (302, 303, 307)),
    *((f"§3-{s}-with-max-age", s, MAX_AGE, P, STORED) for s in (302, 303, 307)),
    *((f"§3-{s}-with-expires", s, "Expires: " + at(60), P, STORED) for s in (302, 307)),
    ("§3-302-with-public", 302, "Cache-Control: public", P, STORED),
    ("§3-206-partial-never", 206, PUBLIC_MAX_AGE, P, refused(R.PARTIAL)),
    *((f"§3-{s}-never", s, PUBLIC_MAX_AGE, P, refused(R.STATUS)) for s in NEVER),
    *((f"§3-{s}-5xx-never", s, PUBLIC_MAX_AGE, P, refused(R.STATUS)) for s in SERVER_ERRORS),
    ("§4.2.2-302-gets-no-heuristic-freshness", 302, "Last-Modified: " + at(-1000), RFC, refused(R.STATUS)),
    ("§3-1xx-never", 100, MAX_AGE, P, refused(R.STATUS)),
    ("§3-418-not-in-cacheable-set", 418, MAX_AGE, P, refused(R.STATUS)),
    ("§3-418-opted-in-with-max-age", 418, MAX_AGE, with_status(418), STORED),
    ("§4.2.2-418-opted-in-without-freshness", 418, (), with_status(418), refused(R.STATUS)),
    ("§3-413-never-even-opted-in", 413, MAX_AGE, with_status(413), refused(R.STATUS)),
    ("§3-503-never-even-opted-in", 503, MAX_AGE, with_status(503), refused(R.STATUS)),
)
# fmt: on


@pytest.mark.parametrize(("status", "response", "policy", "expected"), STATUS_CASES)
def test_storable_status(status: int, response: Lines, policy: Policy, expected: tuple[bool, R]) -> None:
    decision = storage(response, status=status, policy=policy)
    assert (decision.store, decision.reason) == expected


# fmt: off
STORAGE_CASES = rows(
    ("§3-get-max-age", "GET", (), MAX_AGE, P, STORED),
    ("§3-head", "HEAD", (), MAX_AGE, P, STORED),
    ("§3-post", "POST", (), MAX_AGE, P, refused(R.METHOD)),
    ("§3-no-store-response", "GET", (), "Cache-Control: no-store", P, refused(R.NO_STORE)),
    ("§5.2.2.5-no-store-beats-max-age", "GET", (), "Cache-Control: max-age=60, No-Store", P,
     refused(R.NO_STORE)),
    ("§5.2.2.5-no-store-on-second-line", "GET", (), (MAX_AGE, "Cache-Control: no-store"), P,
     refused(R.NO_STORE)),
    ("§5.2.2.7-private", "GET", (), "Cache-Control: private", P, refused(R.PRIVATE)),
    ("§5.2.2.7-private-beats-max-age", "GET", (), "Cache-Control: private, max-age=60", P,
     refused(R.PRIVATE)),
    ("§5.2.2.7-private-qualified-is-stored", "GET", (), 'Cache-Control: private="X-User", max-age=60', P,
     STORED),
    ("§5.2.2.7-private-empty-list-is-private", "GET", (), 'Cache-Control: private="", max-age=60', P,
     refused(R.PRIVATE)),
    ("§4.1-vary", "GET", (), (MAX_AGE, "Vary: Accept-Encoding"), P, STORED),
    ("§4.1-vary-star", "GET", (), (MAX_AGE, "Vary: *"), P, refused(R.VARY_STAR)),
    ("§4.1-vary-star-in-a-list", "GET", (), (MAX_AGE, "Vary: Accept, *"), P, refused(R.VARY_STAR)),
    ("§7.3-set-cookie", "GET", (), (MAX_AGE, "Set-Cookie: a=1"), P, refused(R.SET_COOKIE)),
    ("§7.3-set-cookie-even-public", "GET", (), (PUBLIC_MAX_AGE, "Set-Cookie: a=1"), P, refused(R.SET_COOKIE)),
    ("§5.2.2.7-set-cookie-named-private-is-dropped", "GET", (),
     ('Cache-Control: private="Set-Cookie", max-age=60', "Set-Cookie: a=1"), P, STORED),
    # §3.5: responses to authorized requests
    ("§3.5-authorization-bypass-by-default", "GET", AUTHZ, PUBLIC_MAX_AGE, P,
     refused(R.REQUEST_AUTHORIZATION)),
    ("§3.5-authorization-max-age-is-not-enough", "GET", AUTHZ, MAX_AGE, AUTH, refused(R.AUTHORIZATION)),
    ("§3.5-authorization-no-directives", "GET", AUTHZ, (), AUTH, refused(R.AUTHORIZATION)),
    ("§3.5-authorization-public", "GET", AUTHZ, "Cache-Control: public", AUTH, STORED),
    ("§3.5-authorization-s-maxage", "GET", AUTHZ, "Cache-Control: s-maxage=60", AUTH, STORED),
    ("§3.5-authorization-must-revalidate", "GET", AUTHZ, "Cache-Control: max-age=60, must-revalidate",
     AUTH, STORED),
    ("§3.5-authorization-private-still-wins", "GET", AUTHZ, "Cache-Control: public, private", AUTH,
     refused(R.PRIVATE)),
    # request fields
    ("§3-request-cookie", "GET", "Cookie: session=1", MAX_AGE, P, refused(R.REQUEST_COOKIE)),
    ("§3-request-cookie-keyed", "GET", "Cookie: session=1", MAX_AGE, COOKIES, STORED),
    ("9110§7.8-upgrade", "GET", "Upgrade: h2c", MAX_AGE, P, refused(R.REQUEST_UPGRADE)),
    ("§5.2.1.5-request-no-store", "GET", "Cache-Control: no-store", MAX_AGE, P, refused(R.REQUEST_NO_STORE)),
    ("§4.1-unkeyed-header-not-stored", "GET", XFH, MAX_AGE, P, refused(R.UNKEYED_HEADER)),
    ("§4.1-unkeyed-original-url", "GET", "X-Original-URL: /admin", MAX_AGE, P, refused(R.UNKEYED_HEADER)),
    ("§4.1-keyed-header-stored", "GET", XFH, MAX_AGE, KEYED_XFH, STORED),
    # freshness needed for storing (§3): explicit, heuristic/default, or validators to revalidate with
    ("§4.2.1-max-age-0-without-validators", "GET", (), "Cache-Control: max-age=0", P,
     refused(R.NO_FRESHNESS)),
    ("§4.3.1-max-age-0-with-etag-kept", "GET", (), ("Cache-Control: max-age=0", 'ETag: "a"'), P, STORED),
    ("§4.3.1-max-age-0-with-last-modified-kept", "GET", (),
     ("Cache-Control: max-age=0", "Last-Modified: " + at(-100)), P, STORED),
    ("9110§8.8.3-invalid-etag-is-no-validator", "GET", (), ("Cache-Control: max-age=0", "ETag: nonsense"), P,
     refused(R.NO_FRESHNESS)),
    ("§5.2.2.4-no-cache-without-validators", "GET", (), NO_CACHE, P, refused(R.NO_FRESHNESS)),
    ("§5.2.2.4-no-cache-with-validators", "GET", (), (NO_CACHE, 'ETag: "a"'), P, STORED),
    ("§5.3-invalid-expires-is-stale", "GET", (), "Expires: 0", P, refused(R.NO_FRESHNESS)),
    ("§4.2.3-arrived-already-stale", "GET", (), ("Date: " + at(-100), MAX_AGE), P, refused(R.NO_FRESHNESS)),
    ("§4.2.2-no-heuristic-without-last-modified", "GET", (), (), RFC, refused(R.NO_FRESHNESS)),
    ("5861§3-a-stale-window-is-worth-storing", "GET", (),
     "Cache-Control: max-age=0, stale-while-revalidate=30",
     P, STORED),
    # targeted fields (RFC 9213)
    ("9213§2.2-targeted-overrides-no-store", "GET", (),
     ("CDN-Cache-Control: max-age=60", "Cache-Control: no-store"), TARGETED, STORED),
    ("9213§2.2-targeted-ignored-unless-configured", "GET", (),
     ("CDN-Cache-Control: max-age=60", "Cache-Control: no-store"), P, refused(R.NO_STORE)),
    ("9213§2.2-targeted-no-store", "GET", (),
     ("CDN-Cache-Control: no-store", "Cache-Control: max-age=60"), TARGETED, refused(R.NO_STORE)),
    ("9213§2.2-surrogate-control", "GET", (),
     ("Surrogate-Control: max-age=60", "Cache-Control: private"), TARGETED, STORED),
    ("9213§2.1-invalid-targeted-field-ignored", "GET", (),
     ("CDN-Cache-Control: ,", "Cache-Control: private"), TARGETED, refused(R.PRIVATE)),
)
# fmt: on


@pytest.mark.parametrize(("method", "request_lines", "response", "policy", "expected"), STORAGE_CASES)
def test_storage(
    method: str, request_lines: Lines, response: Lines, policy: Policy, expected: tuple[bool, R]
) -> None:
    decision = storage(response, method=method, request=request_lines, policy=policy)
    assert (decision.store, decision.reason) == expected
    assert (decision.entry is not None) is decision.store


# fmt: off
REMEMBER_CASES = rows(
    ("§5.2.2.7-private-is-hit-for-miss", 200, "Cache-Control: private", (), True),
    ("§5.2.2.5-no-store-is-hit-for-miss", 200, "Cache-Control: no-store", (), True),
    ("§3-302-is-hit-for-miss", 302, (), (), True),
    ("§3-404-no-store-is-hit-for-miss", 404, "Cache-Control: no-store", (), True),
    ("§3-5xx-is-a-moment-not-the-resource", 503, (), (), False),
    ("§3-429-is-about-one-request", 429, (), (), False),
    ("§3-206-is-about-one-request", 206, (), (), False),
    ("§5.2.1.5-request-no-store-is-about-one-request", 200, MAX_AGE, "Cache-Control: no-store", False),
    ("§4.1-unkeyed-header-is-about-one-request", 200, MAX_AGE, XFH, False),
)
# fmt: on


@pytest.mark.parametrize(("status", "response", "request_lines", "remember"), REMEMBER_CASES)
def test_storage_remembers_uncacheable_uris(
    status: int, response: Lines, request_lines: Lines, remember: bool
) -> None:
    decision = storage(response, status=status, request=request_lines)
    assert not decision.store
    assert decision.remember_uncacheable is remember


def test_authorized_response_refusal_is_not_remembered() -> None:
    decision = storage(MAX_AGE, request=AUTHZ, policy=AUTH)
    assert decision.reason is R.AUTHORIZATION
    assert not decision.remember_uncacheable


# ---------------------------------------------------------------------------------------------------------
# freshness lifetime (§4.2.1, §4.2.2; RFC 9213)

DATED = "Date: " + at(0)
LM_1000 = "Last-Modified: " + at(-1000)
CDN_300 = "CDN-Cache-Control: max-age=300"
MAX_AGE_10 = "Cache-Control: max-age=10"

# fmt: off
FRESHNESS_CASES = rows(
    ("§4.2.1-s-maxage-first", 200, "Cache-Control: max-age=10, s-maxage=20", P, (20, "s-maxage")),
    ("§4.2.1-s-maxage-in-any-order", 200, "Cache-Control: s-maxage=20, max-age=10", P, (20, "s-maxage")),
    ("§4.2.1-max-age-beats-expires", 200, (MAX_AGE_10, "Expires: " + at(100), DATED), P, (10, "max-age")),
    ("§4.2.1-expires-minus-date", 200, ("Expires: " + at(100), DATED), P, (100, "expires")),
    ("§4.2.1-expires-minus-date-not-receipt", 200, ("Expires: " + at(100), "Date: " + at(-20)), P,
     (120, "expires")),
    ("§4.2.1-expires-without-date-uses-receipt", 200, "Expires: " + at(100), P, (100, "expires")),
    ("§4.2.1-expires-in-the-past", 200, ("Expires: " + at(-100), DATED), P, (0, "expires")),
    ("§5.3-invalid-expires-zero-is-stale", 200, "Expires: 0", P, (0, "expires")),
    ("§5.3-invalid-expires-text-is-stale", 200, "Expires: soon", P, (0, "expires")),
    ("§5.3-repeated-expires-is-invalid", 200, ("Expires: " + at(100), "Expires: " + at(100)), P,
     (0, "expires")),
    ("§5.3-rfc850-expires-in-the-past", 200, "Expires: Sunday, 06-Nov-94 08:49:37 GMT", P, (0, "expires")),
    ("§4.2.1-conflicting-max-age-is-stale", 200, "Cache-Control: max-age=60, max-age=120", P, (0, "max-age")),
    ("§4.2.1-conflicting-max-age-across-lines", 200, (MAX_AGE, "Cache-Control: max-age=120"), P,
     (0, "max-age")),
    ("§4.2.1-repeated-same-max-age", 200, "Cache-Control: max-age=60, max-age=60", P, (60, "max-age")),
    ("§5.2-quoted-max-age-accepted", 200, 'Cache-Control: max-age="60"', P, (60, "max-age")),
    ("§1.2.2-leading-zeros", 200, "Cache-Control: max-age=0060", P, (60, "max-age")),
    ("§1.2.2-many-leading-zeros", 200, "Cache-Control: max-age=00000000060", P, (60, "max-age")),
    ("§1.2.2-huge-max-age-clamps-to-2**31", 200, "Cache-Control: max-age=99999999999999999999", P,
     (DELTA_SECONDS_MAX, "max-age")),
    ("§4.2.1-invalid-max-age-is-stale", 200, "Cache-Control: max-age=ten", P, (0, "max-age")),
    ("§4.2.1-negative-max-age-is-stale", 200, "Cache-Control: max-age=-1", P, (0, "max-age")),
    # heuristic freshness (§4.2.2): only without default_ttl, and only for heuristically cacheable responses
    ("§4.2.2-ten-percent-of-time-since-modified", 200, (DATED, LM_1000), RFC, (100, "heuristic")),
    ("§4.2.2-404-is-heuristically-cacheable", 404, (DATED, LM_1000), RFC, (100, "heuristic")),
    ("§4.2.2-public-allows-heuristics", 302, ("Cache-Control: public", DATED, LM_1000), RFC,
     (100, "heuristic")),
    ("§4.2.2-heuristic-without-date-uses-receipt", 200, LM_1000, RFC, (100, "heuristic")),
    ("§4.2.2-heuristic-is-capped", 200, (DATED, "Last-Modified: " + at(-10**8)), RFC, (86400, "heuristic")),
    ("§4.2.2-future-last-modified", 200, (DATED, "Last-Modified: " + at(100)), RFC, (0, "none")),
    ("§4.2.2-invalid-last-modified", 200, (DATED, "Last-Modified: junk"), RFC, (0, "none")),
    ("§4.2.2-no-heuristic-with-explicit-expires", 200, ("Expires: 0", DATED, LM_1000), RFC, (0, "expires")),
    ("§4.2.2-default-ttl-preferred-to-heuristic", 200, (DATED, LM_1000), P, (60, "default")),
    ("§4.2.2-default-ttl-without-freshness-info", 200, (), P, (60, "default")),
    ("§4.2.2-default-ttl-for-404", 404, (), Policy(default_ttl=5), (5, "default")),
    ("§4.2.2-public-alone-gets-default-ttl", 200, "Cache-Control: public", P, (60, "default")),
    ("§5.2.2.2-must-revalidate-gives-no-lifetime", 200, "Cache-Control: must-revalidate", P, (60, "default")),
    # targeted fields (RFC 9213 §2.2)
    ("9213§2.2-targeted-field-takes-precedence", 200, (CDN_300, MAX_AGE_10), TARGETED, (300, "max-age")),
    ("9213§2.2-targeted-ignored-unless-configured", 200, (CDN_300, MAX_AGE_10), P, (10, "max-age")),
    ("9213§2.2-surrogate-control", 200, ("Surrogate-Control: max-age=100", MAX_AGE_10), TARGETED,
     (100, "max-age")),
    ("9213§2.2-first-configured-field-wins", 200, ("Surrogate-Control: max-age=100", CDN_300), TARGETED,
     (300, "max-age")),
    ("9213§2.2-ignores-cache-control-and-expires", 200,
     ("CDN-Cache-Control: public", "Expires: " + at(1000), MAX_AGE_10), TARGETED, (60, "default")),
    ("9213§2.2-targeted-s-maxage", 200, "CDN-Cache-Control: s-maxage=30, max-age=300", TARGETED,
     (30, "s-maxage")),
    ("9213§2.1-empty-targeted-field-falls-back", 200, ("CDN-Cache-Control: ,", MAX_AGE_10), TARGETED,
     (10, "max-age")),
)
# fmt: on


@pytest.mark.parametrize(("status", "response", "policy", "expected"), FRESHNESS_CASES)
def test_freshness_lifetime(
    status: int, response: Lines, policy: Policy, expected: tuple[float, str]
) -> None:
    with_validator = [*raw(response), (b"etag", b'"v"')]  # so that even a zero lifetime is kept
    decision = decide_storage(
        plan(policy=policy),
        fields(()),
        status,
        with_validator,
        b"",
        key=KEY,
        vary_values=None,
        policy=policy,
        request_time=T0,
        response_time=T0,
    )
    assert decision.entry is not None, decision
    freshness = decision.entry.freshness
    assert (freshness.lifetime, freshness.source) == expected


def test_freshness_lifetime_function_directly() -> None:
    none = CacheControl.parse("")
    expires = fields("Expires: " + at(50))
    max_age = CacheControl.parse("max-age=5")
    assert freshness_lifetime(200, max_age, fields(()), P, False, T0) == (5.0, "max-age")
    assert freshness_lifetime(302, none, fields(()), P, False, T0) == (0.0, "none")
    assert freshness_lifetime(200, none, expires, P, False, T0) == (50.0, "expires")
    assert freshness_lifetime(200, none, expires, P, True, T0) == (60.0, "default")  # targeted: no Expires


# ---------------------------------------------------------------------------------------------------------
# age (§4.2.3)

# fmt: off
AGE_CASES = rows(
    ("§4.2.3-nothing", (), 0, 0, 0),
    ("§4.2.3-response-delay", (), 0, 2, 2),
    ("§4.2.3-negative-delay-clamped", (), 3, 2, 0),
    ("§4.2.3-age-plus-delay", "Age: 100", 0, 2, 102),
    ("§4.2.3-quoted-age", 'Age: "100"', 0, 0, 100),
    ("§4.2.3-invalid-age-ignored", "Age: abc", 0, 2, 2),
    ("§4.2.3-negative-age-ignored", "Age: -5", 0, 0, 0),
    ("§1.2.2-huge-age-clamped", "Age: 99999999999999", 0, 0, DELTA_SECONDS_MAX),
    ("§4.2.3-apparent-age", "Date: " + at(-50), 0, 0, 50),
    ("§4.2.3-apparent-age-at-receipt", "Date: " + at(-50), 0, 10, 60),
    ("§4.2.3-apparent-age-larger", ("Date: " + at(-50), "Age: 10"), 0, 2, 52),
    ("§4.2.3-corrected-age-larger", ("Date: " + at(-50), "Age: 100"), 0, 2, 102),
    ("§4.2.3-date-in-the-future-clamped", "Date: " + at(500), 0, 0, 0),
    ("§4.2.3-invalid-date-ignored", "Date: yesterday", 0, 3, 3),
)
# fmt: on


@pytest.mark.parametrize(("response", "request_at", "response_at", "expected"), AGE_CASES)
def test_corrected_initial_age(
    response: Lines, request_at: float, response_at: float, expected: float
) -> None:
    assert corrected_initial_age(fields(response), T0 + request_at, T0 + response_at) == expected


def test_current_age_and_ttl_count_resident_time() -> None:
    entry = stored(("Cache-Control: max-age=100", "Age: 10"), request_time=T0 - 2)
    assert entry.corrected_initial_age == 12
    assert entry.current_age(T0 + 30) == 42
    assert entry.ttl(T0 + 30) == 58
    assert entry.current_age(T0 - 30) == 12  # a clock that went backwards adds no age


# ---------------------------------------------------------------------------------------------------------
# reuse (§4.2, §4.2.4, §5.2.1; RFC 5861)

FRESH = (Use.FRESH, None)
REVALIDATE = (Use.REVALIDATE, None)
REQ_REVALIDATE = (Use.REVALIDATE, R.REQUEST_NO_CACHE)
MAX_STALE = (Use.STALE, R.MAX_STALE)
SWR = (Use.STALE_WHILE_REVALIDATE, R.STALE_WHILE_REVALIDATE)
ETAG = 'ETag: "v1"'
SWR_60_30 = "Cache-Control: max-age=60, stale-while-revalidate=30"
MAX_AGE_0 = ("Cache-Control: max-age=0", ETAG)
MUST_REVALIDATE = "Cache-Control: max-age=60, must-revalidate"
PROXY_REVALIDATE = "Cache-Control: max-age=60, proxy-revalidate"
S_MAXAGE = "Cache-Control: s-maxage=60"
ANY_STALE = "Cache-Control: max-stale"

# fmt: off
USE_CASES = rows(
    ("§4.2-fresh", MAX_AGE, (), 30, P, FRESH),
    ("§4.2-fresh-just-before-expiry", MAX_AGE, (), 59.9, P, FRESH),
    ("§4.2-stale-when-age-equals-lifetime", MAX_AGE, (), 60, P, REVALIDATE),
    ("§4.2.4-stale-revalidates", MAX_AGE, (), 3600, P, REVALIDATE),
    ("§4.2.3-age-header-counts", (MAX_AGE, "Age: 50"), (), 20, P, REVALIDATE),
    ("§4.2.3-apparent-age-counts", (MAX_AGE, "Date: " + at(-40)), (), 30, P, REVALIDATE),
    ("§4.2-max-age-0-is-never-fresh", MAX_AGE_0, (), 0, P, REVALIDATE),
    ("§5.2.2.4-no-cache-always-revalidates", ("Cache-Control: no-cache, max-age=600", ETAG), (), 1, P,
     REVALIDATE),
    ("§5.2.2.4-no-cache-beats-max-stale", ("Cache-Control: no-cache", ETAG), ANY_STALE, 1, P, REVALIDATE),
    ("§5.2.2.4-qualified-no-cache-revalidates-all",
     ('Cache-Control: no-cache="Set-Cookie", max-age=600', ETAG), (),
     1, P, REVALIDATE),
    # request directives (§5.2.1)
    ("§5.2.1.4-request-no-cache", MAX_AGE, NO_CACHE, 1, P, REQ_REVALIDATE),
    ("§5.2.1-request-no-cache-off-by-policy", MAX_AGE, NO_CACHE, 1, NO_REQ_CC, FRESH),
    ("§5.2.1.1-request-max-age-equal-is-fine", MAX_AGE, "Cache-Control: max-age=10", 10, P, FRESH),
    ("§5.2.1.1-request-max-age", MAX_AGE, "Cache-Control: max-age=10", 11, P, REQ_REVALIDATE),
    ("§5.2.1.1-request-max-age-0", MAX_AGE, "Cache-Control: max-age=0", 1, P, REQ_REVALIDATE),
    ("§5.2.1.3-min-fresh-met", MAX_AGE, "Cache-Control: min-fresh=20", 40, P, FRESH),
    ("§5.2.1.3-min-fresh", MAX_AGE, "Cache-Control: min-fresh=20", 41, P, REQ_REVALIDATE),
    ("§5.2.1.2-max-stale", MAX_AGE, "Cache-Control: max-stale=30", 80, P, MAX_STALE),
    ("§5.2.1.2-max-stale-boundary", MAX_AGE, "Cache-Control: max-stale=30", 90, P, MAX_STALE),
    ("§5.2.1.2-max-stale-exceeded", MAX_AGE, "Cache-Control: max-stale=30", 90.5, P, REVALIDATE),
    ("§5.2.1.2-max-stale-unbounded", MAX_AGE, ANY_STALE, 1e7, P, MAX_STALE),
    ("§5.2.1.2-invalid-max-stale-is-zero", MAX_AGE, "Cache-Control: max-stale=abc", 61, P, REVALIDATE),
    ("§5.2.1.2-max-stale-off-by-policy", MAX_AGE, ANY_STALE, 61, NO_REQ_CC, REVALIDATE),
    ("§5.2.1.1-request-max-age-beats-max-stale", MAX_AGE, "Cache-Control: max-stale, max-age=10", 61, P,
     REQ_REVALIDATE),
    # stale use forbidden (§4.2.4)
    ("§5.2.2.2-must-revalidate-forbids-max-stale", MUST_REVALIDATE, ANY_STALE, 61, P, REVALIDATE),
    ("§5.2.2.8-proxy-revalidate-forbids-max-stale", PROXY_REVALIDATE, ANY_STALE, 61, P, REVALIDATE),
    ("§5.2.2.2-must-revalidate-beats-swr", MUST_REVALIDATE + ", stale-while-revalidate=30", (), 61, P,
     REVALIDATE),
    ("§5.2.2.10-s-maxage-forbids-max-stale", S_MAXAGE, ANY_STALE, 61, P, REVALIDATE),
    ("§5.2.2.10-s-maxage-forbids-default-swr", S_MAXAGE, (), 61, SWR_30, REVALIDATE),
    ("§5.2.2.10-s-maxage-with-explicit-swr", S_MAXAGE + ", stale-while-revalidate=30", (), 61, P, SWR),
    ("§5.2.2.10-explicit-swr-grants-only-its-window", S_MAXAGE + ", stale-while-revalidate=30", (), 91,
     SWR_30, REVALIDATE),
    ("§5.2.2.10-s-maxage-with-explicit-sie", S_MAXAGE + ", stale-if-error=30", ANY_STALE, 61, P, MAX_STALE),
    # stale-while-revalidate (RFC 5861 §3)
    ("5861§3-still-fresh", SWR_60_30, (), 59, P, FRESH),
    ("5861§3-window-opens", SWR_60_30, (), 60, P, SWR),
    ("5861§3-window-closes", SWR_60_30, (), 90, P, SWR),
    ("5861§3-after-the-window", SWR_60_30, (), 90.5, P, REVALIDATE),
    ("5861§3-window-beyond-max-stale", SWR_60_30, "Cache-Control: max-stale=5", 70, P, SWR),
    ("5861§3-request-no-cache-beats-window", SWR_60_30, NO_CACHE, 70, P, REQ_REVALIDATE),
    ("5861§3-no-grant-no-window-at-expiry", MAX_AGE, (), 60, P, REVALIDATE),
    ("5861§3-no-grant-max-age-0", MAX_AGE_0, (), 0, P, REVALIDATE),
    ("5861§3-policy-default-window", MAX_AGE, (), 90, SWR_30, SWR),
    ("5861§3-policy-default-window-closed", MAX_AGE, (), 91, SWR_30, REVALIDATE),
    ("5861§3-policy-default-at-expiry", MAX_AGE_0, (), 0, SWR_30, SWR),
    ("5861§3-explicit-zero-beats-policy-default", "Cache-Control: max-age=60, stale-while-revalidate=0", (),
     60, SWR_30, REVALIDATE),
    ("5861§3-invalid-window-is-zero", "Cache-Control: max-age=60, stale-while-revalidate=oops", (),
     60, SWR_30, REVALIDATE),
)
# fmt: on


@pytest.mark.parametrize(("response", "request_lines", "now", "policy", "expected"), USE_CASES)
def test_decide_use(
    response: Lines, request_lines: Lines, now: float, policy: Policy, expected: tuple[Use, R | None]
) -> None:
    entry = stored(response, policy=policy)
    decision = decide_use(entry, plan(request_lines, policy=policy).cache_control, T0 + now)
    assert (decision.use, decision.reason) == expected


SIE_60_100 = "Cache-Control: max-age=60, stale-if-error=100"

# fmt: off
STALE_ON_ERROR_CASES = rows(
    ("5861§4-fresh", SIE_60_100, 30, P, True),
    ("5861§4-within-the-window", SIE_60_100, 61, P, True),
    ("5861§4-window-boundary", SIE_60_100, 160, P, True),
    ("5861§4-after-the-window", SIE_60_100, 160.5, P, False),
    ("5861§4-fresh-without-a-grant", (MAX_AGE, ETAG), 30, P, True),
    ("5861§4-no-grant-at-expiry", (MAX_AGE, ETAG), 60, P, False),
    ("5861§4-no-grant", (MAX_AGE, ETAG), 61, P, False),
    ("5861§4-policy-default", (MAX_AGE, ETAG), 160, SIE_100, True),
    ("5861§4-policy-default-after", (MAX_AGE, ETAG), 161, SIE_100, False),
    ("5861§4-explicit-zero-beats-policy-default", ("Cache-Control: max-age=60, stale-if-error=0", ETAG), 61,
     SIE_100, False),
    ("5861§4-zero-window-at-expiry", ("Cache-Control: max-age=60, stale-if-error=0", ETAG), 60, P, False),
    ("§5.2.2.2-must-revalidate-forbids", (MUST_REVALIDATE + ", stale-if-error=100", ETAG), 61, P, False),
    ("§5.2.2.8-proxy-revalidate-forbids", (PROXY_REVALIDATE + ", stale-if-error=100", ETAG), 61, P, False),
    ("§5.2.2.4-no-cache-forbids", ("Cache-Control: no-cache, stale-if-error=100", ETAG), 1, P, False),
    ("§5.2.2.10-s-maxage-forbids-the-default", (S_MAXAGE, ETAG), 61, SIE_100, False),
    ("§5.2.2.10-s-maxage-with-explicit-grant", (S_MAXAGE + ", stale-if-error=100", ETAG), 61, P, True),
    ("§5.2.2.10-explicit-swr-grants-no-default-sie", (S_MAXAGE + ", stale-while-revalidate=10", ETAG), 65,
     SIE_100, False),
)
# fmt: on


@pytest.mark.parametrize(("response", "now", "policy", "expected"), STALE_ON_ERROR_CASES)
def test_may_serve_stale_on_error(response: Lines, now: float, policy: Policy, expected: bool) -> None:
    assert may_serve_stale_on_error(stored(response, policy=policy), T0 + now) is expected


def test_stale_windows_extend_how_long_an_entry_is_kept() -> None:
    assert stored(MAX_AGE).stored_until == T0 + 60
    assert stored((MAX_AGE, ETAG)).stored_until == T0 + 60 + P.keep_ttl
    windows = stored("Cache-Control: max-age=60, stale-while-revalidate=500, stale-if-error=1000")
    assert windows.stored_until == T0 + 60 + 1000
    assert stored((MAX_AGE, "Age: 20")).stored_until == T0 + 40
    assert stored(("Cache-Control: no-cache", ETAG)).freshness.lifetime == 0


# ---------------------------------------------------------------------------------------------------------
# freshening with a 304 (§4.3.4)

ORIGINAL = (
    MAX_AGE,
    ETAG,
    "Content-Type: text/plain",
    "Content-Length: 5",
    "Content-Encoding: gzip",
    "X-Version: 1",
    "Surrogate-Key: product-1 list",
)


def revalidate(not_modified: Lines, *, now: float = 100, policy: Policy = P) -> StorageDecision:
    return freshen(
        stored(ORIGINAL, policy=policy),
        raw(not_modified),
        plan=plan(policy=policy),
        request_fields=fields(()),
        policy=policy,
        request_time=T0 + now,
        response_time=T0 + now,
    )


HOP_304 = ("Connection: x-hop", "X-Hop: 1", "Keep-Alive: timeout=5", "Transfer-Encoding: chunked")

# fmt: off
FRESHEN_HEADER_CASES = rows(
    ("§4.3.4-fields-replaced", ("Cache-Control: max-age=120", "X-Version: 2"),
     {"cache-control": "max-age=120", "x-version": "2", "content-type": "text/plain"}),
    ("§3.2-all-instances-replaced", ("X-Version: 2", "X-Version: 3"), {"x-version": "2, 3"}),
    ("§3.2-content-length-not-updated", "Content-Length: 0", {"content-length": "5"}),
    ("§3.2-content-length-in-any-case", "content-LENGTH: 0", {"content-length": "5"}),
    ("§3.2-content-encoding-not-updated", "Content-Encoding: br", {"content-encoding": "gzip"}),
    ("§3.1-hop-by-hop-fields-of-304-dropped", HOP_304,
     {"x-hop": None, "connection": None, "keep-alive": None, "transfer-encoding": None}),
    ("§4.2.3-age-of-304-not-stored", "Age: 5", {"age": None}),
    ("§4.3.4-untouched-fields-kept", ETAG, {"etag": '"v1"', "x-version": "1"}),
)
# fmt: on


@pytest.mark.parametrize(("not_modified", "expected"), FRESHEN_HEADER_CASES)
def test_freshen_headers(not_modified: Lines, expected: dict[str, str | None]) -> None:
    decision = revalidate(not_modified)
    assert decision.store, decision
    assert decision.entry is not None
    for name, value in expected.items():
        assert header(decision.entry, name) == value, name


# fmt: off
FRESHEN_TTL_CASES = rows(
    ("§4.3.4-freshness-from-the-304", "Cache-Control: max-age=120", 100, 120),
    ("§4.3.4-stored-directives-apply-anew", ETAG, 100, 60),
    ("§4.2.3-age-of-the-304-counts", ("Cache-Control: max-age=120", "Age: 30"), 100, 90),
    ("§4.2.1-stored-max-age-still-wins", ("Date: " + at(100), "Expires: " + at(400)), 100, 60),
    ("§4.3.4-expires-from-the-304", ("Cache-Control: public", "Date: " + at(100), "Expires: " + at(400)),
     100, 300),
)
# fmt: on


@pytest.mark.parametrize(("not_modified", "now", "expected_ttl"), FRESHEN_TTL_CASES)
def test_freshen_recomputes_freshness(not_modified: Lines, now: float, expected_ttl: float) -> None:
    decision = revalidate(not_modified, now=now)
    assert decision.entry is not None, decision
    assert decision.entry.ttl(T0 + now) == expected_ttl
    assert decision.entry.response_time == T0 + now
    assert decide_use(decision.entry, CacheControl.parse(""), T0 + now).use is Use.FRESH


# fmt: off
FRESHEN_UNSTORABLE_CASES = rows(
    ("§4.3.4-304-no-store-makes-it-unstorable", "Cache-Control: no-store", R.NO_STORE),
    ("§4.3.4-304-private", "Cache-Control: private", R.PRIVATE),
    ("§4.3.4-304-vary-star", "Vary: *", R.VARY_STAR),
    ("§4.3.4-304-set-cookie", "Set-Cookie: a=1", R.SET_COOKIE),
)
# fmt: on


@pytest.mark.parametrize(("not_modified", "reason"), FRESHEN_UNSTORABLE_CASES)
def test_freshen_can_make_a_response_unstorable(not_modified: Lines, reason: R) -> None:
    decision = revalidate(not_modified)
    assert not decision.store
    assert decision.reason is reason


# fmt: off
FRESHEN_TAG_CASES = rows(
    ("§4.3.4-tags-kept", ETAG, P, {"product-1", "list"}),
    ("§4.3.4-tags-replaced-by-the-304", "Surrogate-Key: product-2", P, {"product-2"}),
    ("§4.3.4-tags-kept-from-stored-field", ETAG, KEEP_TAGS, {"product-1", "list"}),
    ("§4.3.4-cache-tag-added-to-stored-surrogate-key", "Cache-Tag: a,b", KEEP_TAGS,
     {"product-1", "list", "a", "b"}),
)
# fmt: on


@pytest.mark.parametrize(("not_modified", "policy", "expected_tags"), FRESHEN_TAG_CASES)
def test_freshen_tags(not_modified: Lines, policy: Policy, expected_tags: set[str]) -> None:
    decision = revalidate(not_modified, policy=policy)
    assert decision.entry is not None
    assert decision.entry.tags == expected_tags | INTERNAL_TAGS


def test_freshen_keeps_body_key_status_and_vary() -> None:
    original = stored((MAX_AGE, "Vary: Accept-Encoding"), request="Accept-Encoding: gzip")
    decision = freshen(
        original,
        raw(MAX_AGE_10),
        plan=plan(),
        request_fields=fields("Accept-Encoding: br"),
        policy=P,
        request_time=T0 + 100,
        response_time=T0 + 100,
    )
    assert decision.entry is not None
    assert decision.entry.body == original.body
    assert decision.entry.key == original.key
    assert decision.entry.status == original.status
    assert decision.entry.vary_values == ("gzip",)  # the stored variant's values, not this request's


def test_freshen_decides_even_when_the_plan_would_not_store() -> None:
    no_store_plan = replace(plan(), store=False, reason=R.REQUEST_NO_STORE)
    decision = freshen(
        stored(ORIGINAL),
        raw(MAX_AGE_10),
        plan=no_store_plan,
        request_fields=fields(()),
        policy=P,
        request_time=T0 + 100,
        response_time=T0 + 100,
    )
    assert decision.store  # the caller decides whether to write it back


# ---------------------------------------------------------------------------------------------------------
# client conditionals answered from storage (RFC 9110 §13.1.2, §13.1.3, §13.2.2)

LM = "Last-Modified: " + at(-100)
IMS_NOW = "If-Modified-Since: " + at(0)
IMS_OLD = "If-Modified-Since: " + at(-200)

# fmt: off
CONDITIONAL_CASES = rows(
    ("9110§13.1.2-match", ETAG, 'If-None-Match: "v1"', True),
    ("9110§13.1.2-weak-comparison-request", ETAG, 'If-None-Match: W/"v1"', True),
    ("9110§13.1.2-weak-comparison-stored", 'ETag: W/"v1"', 'If-None-Match: "v1"', True),
    ("9110§13.1.2-both-weak", 'ETag: W/"v1"', 'If-None-Match: W/"v1"', True),
    ("9110§13.1.2-list", ETAG, 'If-None-Match: "v0", "v1"', True),
    ("9110§13.1.2-list-over-field-lines", ETAG, ('If-None-Match: "v0"', 'If-None-Match: W/"v1"'), True),
    ("9110§13.1.2-no-match", ETAG, 'If-None-Match: "v0", "v2"', False),
    ("9110§8.8.3.2-opaque-tag-is-case-sensitive", ETAG, 'If-None-Match: "V1"', False),
    ("9110§13.1.2-star", ETAG, "If-None-Match: *", True),
    ("9110§13.1.2-star-without-etag", LM, "If-None-Match: *", True),
    ("9110§13.1.2-no-stored-etag", LM, 'If-None-Match: "v1"', False),
    ("9110§13.1.2-unquoted-never-matches", ETAG, "If-None-Match: v1", False),
    ("9110§13.1.3-equal-date", LM, "If-Modified-Since: " + at(-100), True),
    ("9110§13.1.3-later-date", LM, "If-Modified-Since: " + at(0), True),
    ("9110§13.1.3-earlier-date", LM, "If-Modified-Since: " + at(-101), False),
    ("9110§13.1.3-invalid-date", LM, "If-Modified-Since: yesterday", False),
    ("9110§13.1.3-no-last-modified", ETAG, "If-Modified-Since: " + at(0), False),
    ("9110§13.2.2-if-none-match-beats-ims", (ETAG, LM), ('If-None-Match: "v0"', IMS_NOW), False),
    ("9110§13.2.2-ims-ignored-with-if-none-match", (ETAG, LM), ('If-None-Match: "v1"', IMS_OLD), True),
    ("9110§13.1-unconditional", (ETAG, LM), (), False),
)
# fmt: on


@pytest.mark.parametrize(("response", "request_lines", "expected"), CONDITIONAL_CASES)
def test_client_conditional_matches(response: Lines, request_lines: Lines, expected: bool) -> None:
    entry = stored((MAX_AGE, *lines(response)))
    assert client_conditional_matches(fields(request_lines), entry) is expected


def test_not_modified_fields_are_those_of_9110_15_4_5() -> None:
    expected = {b"cache-control", b"etag", b"expires", b"vary", b"date", b"content-location"}
    assert expected <= NOT_MODIFIED_FIELDS
    assert b"content-length" not in NOT_MODIFIED_FIELDS
    assert b"content-type" not in NOT_MODIFIED_FIELDS


# ---------------------------------------------------------------------------------------------------------
# what is stored (§3.1, §5.2.2.7) and tags

HOP_BY_HOP = (
    "Connection: close",
    "Keep-Alive: timeout=5",
    "Transfer-Encoding: chunked",
    "TE: trailers",
    "Trailer: X-Sum",
    "Upgrade: h2c",
    "Proxy-Authenticate: Basic",
    "Proxy-Connection: close",
    "Content-Type: text/plain",
)
HOP_NAMES = {n.split(":")[0].lower() for n in HOP_BY_HOP} - {"content-type"}
PRIVATE_FIELDS = (
    'Cache-Control: private="X-User, Set-Cookie", max-age=60',
    "X-User: bob",
    "X-Other: 1",
    "Set-Cookie: s=1",
)
CONNECTION_FIELDS = ("Connection: X-Internal, close", "X-Internal: 1", "X-Public: 2")
TAG_FIELDS = ("Surrogate-Key: a b", "Cache-Tag: c, d")
TARGETED_FIELDS = ("CDN-Cache-Control: max-age=60", "Surrogate-Control: max-age=5")

# fmt: off
STORED_HEADER_CASES = rows(
    ("§3.1-hop-by-hop-dropped", HOP_BY_HOP, P, {"content-type"}, HOP_NAMES, set()),
    ("§3.1-connection-named-fields-dropped", CONNECTION_FIELDS, P, {"x-public"}, {"x-internal", "connection"},
     set()),
    ("§3.1-connection-over-field-lines", ("Connection: x-a", "Connection: X-B", "X-A: 1", "X-B: 2", "X-C: 3"),
     P, {"x-c"}, {"x-a", "x-b"}, set()),
    ("§4.2.3-age-recomputed-on-send", ("Age: 10", DATED), P, {"date"}, {"age"}, set()),
    ("§5.2.2.7-private-fields-dropped", PRIVATE_FIELDS, P, {"x-other", "cache-control"},
     {"x-user", "set-cookie"}, set()),
    ("§3.1-tag-fields-dropped-and-parsed", TAG_FIELDS, P, set(), {"surrogate-key", "cache-tag"},
     {"a", "b", "c", "d"}),
    ("§3.1-tag-fields-kept-by-policy", TAG_FIELDS, KEEP_TAGS, {"surrogate-key", "cache-tag"}, set(),
     {"a", "b", "c", "d"}),
    ("9213§2.2-targeted-fields-kept", TARGETED_FIELDS, TARGETED, {"cdn-cache-control", "surrogate-control"},
     set(), set()),
)
# fmt: on


@pytest.mark.parametrize(("response", "policy", "kept", "dropped", "tags"), STORED_HEADER_CASES)
def test_stored_headers(
    response: Lines, policy: Policy, kept: set[str], dropped: set[str], tags: set[str]
) -> None:
    entry = stored(response, policy=policy)
    names = {k.decode() for k, _ in entry.headers}
    assert kept <= names
    assert not dropped & names
    assert entry.tags == tags | INTERNAL_TAGS


def test_stored_headers_are_lower_cased_and_otherwise_verbatim() -> None:
    entry = stored(("Content-Type: Text/HTML; Charset=UTF-8", "X-Multi: a", "x-multi: b", MAX_AGE))
    assert entry.headers == [
        (b"content-type", b"Text/HTML; Charset=UTF-8"),
        (b"x-multi", b"a"),
        (b"x-multi", b"b"),
        (b"cache-control", b"max-age=60"),
    ]
    assert entry.size > len(entry.body)
    assert entry.key == KEY


def test_validators_are_recorded() -> None:
    entry = stored((ETAG, LM))
    assert entry.etag == '"v1"'
    assert entry.last_modified == at(-100)
    assert stored("ETag: unquoted").etag is None


# ---------------------------------------------------------------------------------------------------------
# Vary (§4.1)

# fmt: off
VARY_CASES = rows(
    ("§4.1-no-vary", MAX_AGE, "Accept: text/html", (), ()),
    ("§4.1-accept-encoding-normalised", "Vary: Accept-Encoding", "Accept-Encoding: gzip, br",
     ("accept-encoding",), ("br,gzip",)),
    ("§4.1-absent-request-field", "Vary: Accept-Language", (), ("accept-language",), (None,)),
    ("§4.1-empty-request-field", "Vary: Accept-Language", "Accept-Language:", ("accept-language",), ("",)),
    ("§4.1-several-fields-sorted", ("Vary: origin", "Vary: Accept"), ("Accept: a/b", "Origin: https://x"),
     ("accept", "origin"), ("a/b", "https://x")),
)
# fmt: on


@pytest.mark.parametrize(("response", "request_lines", "vary", "values"), VARY_CASES)
def test_vary_values(
    response: Lines, request_lines: Lines, vary: tuple[str, ...], values: tuple[str | None, ...]
) -> None:
    entry = stored(response, request=request_lines)
    assert (entry.vary, entry.vary_values) == (vary, values)
    assert response_vary(raw(response)) == vary
    assert request_vary_values(vary, fields(request_lines)) == values


def test_vary_values_given_by_the_caller_win() -> None:
    assert stored("Vary: Accept", request="Accept: a", vary_values=("given",)).vary_values == ("given",)


def test_response_vary_star() -> None:
    assert response_vary(raw("Vary: *")) is None
