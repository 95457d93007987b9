"""Cache-Status rendering (RFC 9211) and metric labels."""

from __future__ import annotations

import re

import pytest

from edgecache.core.status import CACHE_NAME, Fwd, Outcome, Reason, render_hit

# RFC 9211 §2: a List member is the cache name (an sf-token) followed by ";"-separated parameters.
_MEMBER = re.compile(r"^[A-Za-z*][\w:/!#$%&'*+.^`|~-]*(; [a-z*][a-z0-9_.*-]*(=[^;]+)?)*$")


@pytest.mark.parametrize(
    ("outcome", "rendered"),
    [
        # the examples of the product contract ("Response headers")
        pytest.param(
            Outcome(None, Reason.L1, ttl=42), "edgecache; hit; ttl=42; detail=l1", id="rfc9211-2.1-hit-l1"
        ),
        pytest.param(Outcome(None, Reason.L2), "edgecache; hit; detail=l2", id="rfc9211-2.1-hit-l2"),
        pytest.param(
            Outcome(Fwd.MISS, Reason.STORED, stored=True),
            "edgecache; fwd=miss; stored",
            id="rfc9211-2.5-stored",
        ),
        pytest.param(
            Outcome(Fwd.MISS, None, stored=True),
            "edgecache; fwd=miss; stored",
            id="rfc9211-2.5-stored-no-reason",
        ),
        pytest.param(
            Outcome(Fwd.URI_MISS, collapsed=True),
            "edgecache; fwd=uri-miss; collapsed",
            id="rfc9211-2.6-collapsed",
        ),
        pytest.param(
            Outcome(Fwd.BYPASS, Reason.REQUEST_AUTHORIZATION),
            "edgecache; fwd=bypass; detail=request-authorization",
            id="rfc9211-2.2-bypass-detail",
        ),
        pytest.param(
            Outcome(Fwd.STALE, fwd_status=200),
            "edgecache; fwd=stale; fwd-status=200",
            id="rfc9211-2.3-fwd-status",
        ),
        # further shapes
        pytest.param(Outcome(None), "edgecache; hit", id="rfc9211-2.1-bare-hit"),
        pytest.param(
            Outcome(None, Reason.STALE_WHILE_REVALIDATE, ttl=-5),
            "edgecache; hit; ttl=-5; detail=stale-while-revalidate",
            id="rfc9211-2.4-negative-ttl",
        ),
        pytest.param(
            Outcome(Fwd.STALE, Reason.REVALIDATED, stored=True, fwd_status=304, ttl=60),
            "edgecache; fwd=stale; fwd-status=304; ttl=60; stored; detail=revalidated",
            id="rfc9211-2-every-parameter",
        ),
        pytest.param(
            Outcome(Fwd.METHOD, Reason.METHOD),
            "edgecache; fwd=method; detail=method",
            id="rfc9211-2.2-method",
        ),
        pytest.param(
            Outcome(Fwd.REQUEST, Reason.REQUEST_NO_CACHE),
            "edgecache; fwd=request; detail=request-no-cache",
            id="rfc9211-2.2-request",
        ),
        pytest.param(
            Outcome(Fwd.MISS, Reason.NOT_STORED),
            "edgecache; fwd=miss; detail=not-stored",
            id="rfc9211-2.7-detail",
        ),
    ],
)
def test_render(outcome: Outcome, rendered: str) -> None:
    assert outcome.render() == rendered
    assert _MEMBER.match(rendered)


@pytest.mark.parametrize(
    ("ttl", "reason", "rendered"),
    [
        pytest.param(42.9, Reason.L1, b"edgecache; hit; ttl=42; detail=l1", id="rfc9211-2.4-truncated"),
        pytest.param(
            -3.5, Reason.MAX_STALE, b"edgecache; hit; ttl=-3; detail=max-stale", id="rfc9211-2.4-stale"
        ),
        pytest.param(0.0, Reason.L2, b"edgecache; hit; ttl=0; detail=l2", id="rfc9211-2.4-zero"),
    ],
)
def test_render_hit_matches_outcome_render(ttl: float, reason: Reason, rendered: bytes) -> None:
    assert render_hit(ttl, reason) == rendered
    assert Outcome(None, reason, ttl=int(ttl)).render().encode() == rendered


@pytest.mark.parametrize(
    ("outcome", "label", "hit"),
    [
        pytest.param(Outcome(None, Reason.L1), "hit", True, id="hit-l1"),
        pytest.param(Outcome(None, Reason.L2), "hit", True, id="hit-l2"),
        pytest.param(Outcome(None), "hit", True, id="hit-bare"),
        pytest.param(Outcome(None, Reason.STALE_WHILE_REVALIDATE), "stale", True, id="rfc5861-3-swr"),
        pytest.param(Outcome(None, Reason.STALE_IF_ERROR), "stale", True, id="rfc5861-4-sie"),
        pytest.param(Outcome(None, Reason.MAX_STALE), "stale", True, id="rfc9111-5.2.1.2-max-stale"),
        pytest.param(Outcome(Fwd.MISS), "miss", False, id="miss"),
        pytest.param(Outcome(Fwd.URI_MISS), "miss", False, id="uri-miss"),
        pytest.param(Outcome(Fwd.VARY_MISS), "miss", False, id="vary-miss"),
        pytest.param(Outcome(Fwd.BYPASS, Reason.REQUEST_COOKIE), "bypass", False, id="bypass"),
        pytest.param(Outcome(Fwd.METHOD, Reason.METHOD), "bypass", False, id="method-is-bypass"),
        pytest.param(Outcome(Fwd.STALE, Reason.REVALIDATED), "stale", False, id="fwd-stale"),
        pytest.param(Outcome(Fwd.REQUEST), "request", False, id="fwd-request"),
        pytest.param(Outcome(Fwd.PARTIAL), "partial", False, id="fwd-partial"),
    ],
)
def test_label(outcome: Outcome, label: str, hit: bool) -> None:
    assert outcome.label == label
    assert outcome.hit is hit


def test_reason_values_are_short_tokens() -> None:
    values = [r.value for r in Reason]
    assert len(values) == len(set(values))
    for value in values:
        assert re.fullmatch(r"[a-z][a-z0-9-]*", value), value  # a valid RFC 8941 token for detail=


def test_cache_name() -> None:
    assert CACHE_NAME == "edgecache"
