"""Reasons for every cache decision, and their rendering as an RFC 9211 ``Cache-Status`` field value.

One ``Reason`` feeds the ``detail`` parameter, the metric label and the log line, so they cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

CACHE_NAME = "edgecache"


class Reason(StrEnum):
    # served from storage
    L1 = "l1"
    L2 = "l2"
    STALE_WHILE_REVALIDATE = "stale-while-revalidate"
    STALE_IF_ERROR = "stale-if-error"
    MAX_STALE = "max-stale"  # the request's max-stale allowed a stale response
    # why the request bypassed the cache
    METHOD = "method"
    REQUEST_AUTHORIZATION = "request-authorization"
    REQUEST_COOKIE = "request-cookie"
    REQUEST_BODY = "request-body"
    REQUEST_UPGRADE = "request-upgrade"
    # why a response was forwarded although something was stored
    REQUEST_NO_CACHE = "request-no-cache"  # the request's directives ruled out the stored response
    REVALIDATED = "revalidated"  # stored response validated by the origin (304) and served
    # why a forwarded response was not stored
    REQUEST_NO_STORE = "request-no-store"
    UNKEYED_HEADER = "unkeyed-header"
    STATUS = "status"
    PARTIAL = "partial"
    NO_STORE = "no-store"
    PRIVATE = "private"
    VARY_STAR = "vary-star"
    SET_COOKIE = "set-cookie"
    AUTHORIZATION = "authorization"  # response to an authorized request without public/s-maxage/...
    NO_FRESHNESS = "no-freshness"
    TOO_LARGE = "too-large"
    HIT_FOR_MISS = "hit-for-miss"
    COALESCE_TIMEOUT = "coalesce-timeout"
    LEASE = "lease"  # collapsed into another node's fetch (coalesce_across_nodes), read from L2
    ORIGIN_ERROR = "origin-error"
    ORIGIN_TIMEOUT = "origin-timeout"
    ONLY_IF_CACHED = "only-if-cached"
    INVALIDATED = "invalidated"  # an unsafe request dropped the stored responses of its target
    # stored
    STORED = "stored"
    NOT_STORED = "not-stored"  # store refused it (full, or lost a race with an invalidation)


class Fwd(StrEnum):
    """RFC 9211 §2.2 ``fwd`` values."""

    BYPASS = "bypass"
    METHOD = "method"
    URI_MISS = "uri-miss"
    VARY_MISS = "vary-miss"
    MISS = "miss"
    REQUEST = "request"
    STALE = "stale"
    PARTIAL = "partial"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the cache did for one request; rendered as ``Cache-Status`` and used as metric labels."""

    fwd: Fwd | None  # None: a hit
    reason: Reason | None = None
    stored: bool = False
    collapsed: bool = False
    ttl: int | None = None
    fwd_status: int | None = None

    @property
    def hit(self) -> bool:
        return self.fwd is None

    @property
    def label(self) -> str:
        """The outcome as one short token, for metrics: ``hit``, ``miss``, ``bypass``, ``stale`` …"""
        if self.fwd is None:
            return "stale" if self.reason in _STALE_HITS else "hit"
        if self.fwd in (Fwd.URI_MISS, Fwd.VARY_MISS, Fwd.MISS):
            return "miss"
        if self.fwd == Fwd.METHOD:
            return "bypass"
        return self.fwd.value

    def render(self) -> str:
        parts = [CACHE_NAME]
        if self.fwd is None:
            parts.append("hit")
        else:
            parts.append(f"fwd={self.fwd.value}")
            if self.fwd_status is not None:
                parts.append(f"fwd-status={self.fwd_status}")
        if self.ttl is not None:
            parts.append(f"ttl={self.ttl}")
        if self.stored:
            parts.append("stored")
        if self.collapsed:
            parts.append("collapsed")
        if self.reason is not None and self.reason is not Reason.STORED:
            parts.append(f"detail={self.reason.value}")
        return "; ".join(parts)


_STALE_HITS = frozenset({Reason.STALE_WHILE_REVALIDATE, Reason.STALE_IF_ERROR, Reason.MAX_STALE})


def render_hit(ttl: float, reason: Reason) -> bytes:
    """The hit path's ``Cache-Status``, built without an ``Outcome`` object."""
    return b"edgecache; hit; ttl=%d; detail=%s" % (int(ttl), reason.value.encode())
