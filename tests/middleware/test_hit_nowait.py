"""``CacheInterceptor.hit_nowait``: the plain hit without the ASGI round trip (the proxy's fast path).

It must answer exactly what ``_plain_hit`` would send, count the hit once, and decline (None, nothing
counted) whatever needs the full path."""

from __future__ import annotations

from typing import Any

from edgecache.core.status import Reason
from tests.middleware.conftest import HarnessFactory, versioned


def scope(path: str = "/r", method: str = "GET", headers: list[tuple[bytes, bytes]] | None = None) -> Any:
    return {
        "type": "http",
        "method": method,
        "scheme": "http",
        "http_version": "1.1",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers if headers is not None else [(b"host", b"testserver")],
    }


async def test_it_answers_what_the_asgi_hit_sends_and_counts_it_once(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned({"x-app": "1"})}, default_ttl=60)
    await h.get("/r")
    h.clock.advance(5)
    via_asgi = await h.get("/r")
    hits = h.cache.stats.hits[Reason.L1]
    hit = h.middleware.hit_nowait(scope())
    assert hit is not None
    assert h.cache.stats.hits[Reason.L1] == hits + 1
    assert hit.status == 200 and hit.body == b"v1"
    sent = [(k.decode(), v.decode()) for k, v in hit.headers]
    assert sent == list(via_asgi.headers.multi_items())  # same fields, same order, same Age and status
    head = h.middleware.hit_nowait(scope(method="HEAD"))
    assert head is not None and head.body == b"" and head.headers is hit.headers
    assert h.origin.calls["/r"] == 1


async def test_it_declines_what_needs_the_full_path(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned(), "/vary": versioned({"vary": "accept"})}, default_ttl=60)
    assert h.middleware.hit_nowait(scope()) is None  # before the first call: not started
    await h.get("/r")
    await h.get("/vary")
    declined = [
        scope(method="POST"),
        scope(path="/other"),  # not stored
        scope(path="/vary"),  # Vary: the full path picks the variant
        scope(headers=[(b"host", b"testserver"), (b"range", b"bytes=0-0")]),
        scope(headers=[(b"host", b"testserver"), (b"if-none-match", b'"x"')]),
        scope(headers=[(b"host", b"testserver"), (b"authorization", b"Bearer a")]),
        scope(headers=[]),  # no Host
    ]
    hits = h.cache.stats.hits[Reason.L1]
    assert [h.middleware.hit_nowait(s) for s in declined] == [None] * len(declined)
    assert h.cache.stats.hits[Reason.L1] == hits
    h.clock.advance(61)
    assert h.middleware.hit_nowait(scope()) is None  # stale: revalidation is the full path's job


async def test_it_stays_off_in_shadow_mode(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned()}, default_ttl=60, shadow="ttl=30")
    await h.get("/r")
    assert (await h.get("/r")).text == "v1"
    assert h.middleware.hit_nowait(scope()) is None  # the shadow must see every response it would miss


async def test_each_request_is_one_access_for_the_admission_policy(harness: HarnessFactory) -> None:
    """The plain path reads without counting; when it declines, the full path's read is the one counted
    (a miss counted twice would look like a second request to TinyLFU, and one-hit wonders would pass)."""
    h = harness(
        {
            "/r": versioned(),
            "/vary": versioned({"vary": "accept"}),
            "/nostore": versioned({"cache-control": "no-store"}),
        },
        default_ttl=60,
    )
    policy = h.store.policy
    # (path, request fields, accesses): one per stored object the request reads; a Vary hit reads two,
    # the URI's Vary index and the variant.
    requests = [
        ("/r", {}, 1),  # miss, stored
        ("/r", {}, 1),  # plain hit
        ("/r", {"range": "bytes=0-0"}, 1),  # the plain path declines, the full path serves it
        ("/vary", {}, 1),  # miss: stored with its index, which is rewritten without counting a use
        ("/vary", {}, 2),
        ("/nostore", {}, 1),
        ("/nostore", {}, 1),
    ]
    for path, headers, accesses in requests:
        before = policy.accesses
        await h.get(path, headers=headers)
        assert policy.accesses - before == accesses, (path, headers)
    before = policy.accesses
    assert h.middleware.hit_nowait(scope()) is not None
    assert policy.accesses - before == 1
