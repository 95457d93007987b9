"""``Cache.explain``: what a cache holds for one URL, for operators (the proxy's admin ``GET /explain``).

Read-only by construction: stores are read with ``peek`` (no LRU promotion, no eviction) and L2 without
backfilling L1, so asking never changes what is served. The key is computed as the middleware computes
it (``key_host``, the query filter, ``key_headers`` / ``key_cookies``), from a URL instead of a request.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from edgecache.core.entry import CacheObject, StoredResponse, VaryIndex
from edgecache.core.headers import EMPTY_CACHE_CONTROL, Fields
from edgecache.core.keys import request_key, uri_components, variant_key, wire_bytes
from edgecache.core.policy import Use, decide_use, may_serve_stale_on_error, request_vary_values
from edgecache.stores.memory import MemoryStore
from edgecache.stores.tiered import TieredStore

if TYPE_CHECKING:
    from edgecache.engine import Cache

MAX_URL_CHARS = 8192
_URI_PARTS = ("scheme", "host", "path", "query")
_USE_TEXT = {
    Use.FRESH: "fresh: served",
    Use.STALE: "stale: served",  # not reached without request directives
    Use.STALE_WHILE_REVALIDATE: "stale: served while one refresh runs",
    Use.REVALIDATE: "stale: revalidated with the upstream before use",
}
_INTERNAL_TAG_PREFIXES = ("uri:", "path:", "pfx:")  # digests the engine adds for purges by URI and path


def target_uri(cache: Cache, url: str) -> tuple[bytes, bytes, bytes, bytes]:
    """The URI components the cache keys ``url`` on; ``ValueError`` says what is wrong with it."""
    if not url:
        raise ValueError("empty url")
    if len(url) > MAX_URL_CHARS:
        raise ValueError(f"url longer than {MAX_URL_CHARS} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise ValueError("url contains whitespace or control characters")
    key_host = cache.settings.key_host
    if url.startswith("/") and not url.startswith("//"):
        scheme, host = "http", key_host
        path, _, query = url.partition("?")
        path = path.partition("#")[0]
        query = query.partition("#")[0]
        if host is None:
            raise ValueError(
                "a path alone needs key_host (the proxy sets it); give an absolute URL, http://host/path"
            )
    else:
        try:
            parts = urlsplit(url)
        except ValueError as error:
            raise ValueError(f"not a URL: {error}") from None
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("expected /path?query or http(s)://host/path?query")
        if parts.username is not None or parts.password is not None:
            raise ValueError("url must not carry user information")
        scheme, host = parts.scheme, key_host if key_host is not None else parts.netloc
        path, query = parts.path or "/", parts.query
    raw_path = wire_bytes(path)
    raw_query = cache.query_filter.apply(wire_bytes(query))
    return uri_components(scheme, host, raw_path, raw_query)


async def _peek(cache: Cache, key: str) -> tuple[CacheObject | None, str | None]:
    """The object under ``key`` and which tier holds it: "l1", "l2", "both", or None."""
    store = cache.store
    if isinstance(store, TieredStore):
        l1, l2 = await store.peek_tiers(key)
        tiers = [name for name, value in (("l1", l1), ("l2", l2)) if value is not None]
        found = l2 if l2 is not None else l1  # the same object; L2's keeps its full lifetime
        return found, ("both" if len(tiers) == 2 else tiers[0] if tiers else None)
    if isinstance(store, MemoryStore):
        found = store.peek(key)
    else:
        found = await store.get(key)  # another store: its get is the only read it offers
    return found, (store.name if found is not None else None)


def _text(canonical: bytes) -> str:
    return canonical.decode("utf-8", "backslashreplace")


def _seconds(value: float) -> float:
    return round(value, 3)


def describe_response(entry: StoredResponse, tier: str | None, now: float) -> dict[str, Any]:
    freshness = entry.freshness
    age = entry.current_age(now)
    ttl = freshness.lifetime - age
    staleness = max(0.0, -ttl)
    # What a request without directives would get, decided by the same policy the front end uses.
    use = decide_use(entry, EMPTY_CACHE_CONTROL, now).use
    user_tags = sorted(t for t in entry.tags if not t.startswith(_INTERNAL_TAG_PREFIXES))
    return {
        "tier": tier,
        "status": entry.status,
        "use": _USE_TEXT[use],
        "age": _seconds(age),
        "ttl": _seconds(ttl),  # remaining freshness, negative once stale (RFC 9211's ttl)
        "freshness_lifetime": _seconds(freshness.lifetime),
        "freshness_source": freshness.source,
        "stale_while_revalidate": _seconds(freshness.stale_while_revalidate),
        "stale_while_revalidate_left": _seconds(max(0.0, freshness.stale_while_revalidate - staleness)),
        "stale_if_error": _seconds(freshness.stale_if_error),
        "stale_if_error_usable": may_serve_stale_on_error(entry, now),
        "stale_if_error_left": _seconds(max(0.0, freshness.stale_if_error - staleness)),
        "must_revalidate": freshness.must_revalidate,
        "no_cache": freshness.no_cache,
        "kept_for": _seconds(entry.stored_until - now),  # until no store needs to keep it
        "size": entry.size,
        "body_bytes": len(entry.body),
        "etag": entry.etag,
        "last_modified": entry.last_modified,
        "tags": user_tags,
        "internal_tags": len(entry.tags) - len(user_tags),
    }


async def explain(cache: Cache, url: str, headers: Iterable[tuple[str, str]] = ()) -> dict[str, Any]:
    fields = Fields((name.encode("latin-1"), value.encode("latin-1")) for name, value in headers)
    uri = target_uri(cache, url)
    primary = request_key(cache.recipe, uri, fields)
    now = cache.clock()
    found, tier = await _peek(cache, primary.digest)
    report: dict[str, Any] = {
        "url": url,
        "uri": dict(zip(_URI_PARTS, (part.decode("latin-1") for part in uri), strict=True)),
        "key": {"digest": primary.digest, "canonical": _text(primary.canonical)},
        "store": type(cache.store).__name__,
        "stored": "nothing",
        "vary": None,
        "variants": [],
    }
    if found is None:
        return report
    if found.key != primary.canonical:
        report["stored"] = "foreign object under this digest (never served)"
        return report
    if isinstance(found, StoredResponse):
        report["stored"] = "response"
        report["variants"].append(
            {"key": {"digest": primary.digest, "canonical": _text(primary.canonical)}}
            | describe_response(found, tier, now)
        )
        return report
    assert isinstance(found, VaryIndex)
    selected = variant_key(primary, found.vary, request_vary_values(found.vary, fields))
    report["stored"] = "vary index"
    report["vary"] = {
        "fields": list(found.vary),
        "tier": tier,
        "variants": len(found.variants),
        "kept_for": _seconds(found.stored_until - now),
        "selected_by_given_headers": selected.digest,
    }
    for digest in found.variants:
        entry, entry_tier = await _peek(cache, digest)
        item: dict[str, Any] = {"key": {"digest": digest}}
        if isinstance(entry, StoredResponse):
            item["key"]["canonical"] = _text(entry.key)
            item["vary_values"] = dict(zip(entry.vary, entry.vary_values, strict=False))
            item |= describe_response(entry, entry_tier, now)
        else:
            item["tier"] = None
            item["use"] = "gone (expired or evicted)"
        report["variants"].append(item)
    return report
