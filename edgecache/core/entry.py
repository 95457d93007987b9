"""What the cache stores: one response (``StoredResponse``) or the Vary layout of a URI (``VaryIndex``)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

RawHeaders = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Freshness:
    """How long a stored response may be served, and what may happen once it is stale."""

    lifetime: float  # seconds of freshness counted from the response's creation (RFC 9111 §4.2.1)
    source: str  # which field gave the lifetime: "s-maxage", "max-age", "expires", "heuristic", "default"
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0
    # Stale use forbidden: must-revalidate / proxy-revalidate (and s-maxage without an explicit
    # stale-* grant) in a shared cache (RFC 9111 §4.2.4, §5.2.2.2, §5.2.2.8, §5.2.2.10).
    must_revalidate: bool = False
    # no-cache: stored, but every reuse needs a successful validation first (§5.2.2.4).
    no_cache: bool = False


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A complete response ready to be served again.

    ``headers`` is exactly what a hit sends (lower-case names), minus ``Age`` and ``Cache-Status``, which
    depend on the moment of sending and are appended then.
    """

    status: int
    headers: RawHeaders
    body: bytes
    request_time: float  # when the request that produced it was sent on (RFC 9111 §4.2.3)
    response_time: float  # when its response arrived
    corrected_initial_age: float  # §4.2.3, fixed at storage time
    freshness: Freshness
    stored_until: float  # absolute time after which no store needs to keep it
    key: bytes  # canonical (unhashed) key, compared on read where digests could collide or be foreign
    etag: str | None = None
    last_modified: str | None = None
    vary: tuple[str, ...] = ()
    vary_values: tuple[str | None, ...] = ()
    tags: frozenset[str] = field(default_factory=frozenset)
    size: int = 0  # bytes accounted to the store: body + headers + fixed overhead
    # The plain hit path's memo for the current second of the entry's age: that second, and the answers to
    # GET and HEAD (sharing one header list), reused instead of rebuilt. Not part of the entry's value.
    hit_memo: list[Any] = field(default_factory=list, compare=False, repr=False, hash=False)

    def current_age(self, now: float) -> float:
        # RFC 9111 §4.2.3: corrected_initial_age + resident_time
        return self.corrected_initial_age + max(0.0, now - self.response_time)

    def ttl(self, now: float) -> float:
        """Remaining freshness in seconds (negative once stale), as RFC 9211's ``ttl`` parameter."""
        return self.freshness.lifetime - self.current_age(now)


def stale_now(entry: StoredResponse, now: float) -> StoredResponse:
    """The entry made stale at ``now`` (a soft purge): its stale-while-revalidate window starts now."""
    age = entry.current_age(now)
    if entry.freshness.lifetime <= age:
        return entry
    return replace(entry, freshness=replace(entry.freshness, lifetime=age), hit_memo=[])


@dataclass(frozen=True, slots=True)
class VaryIndex:
    """Stored under a URI's primary key when its responses carry ``Vary``.

    It names the request fields that select a variant, and the variant keys in insertion order so that the
    number of variants per URI stays capped.
    """

    vary: tuple[str, ...]
    variants: tuple[str, ...]
    stored_until: float
    key: bytes
    tags: frozenset[str] = field(default_factory=frozenset)
    size: int = 0


CacheObject = StoredResponse | VaryIndex

ENTRY_OVERHEAD = 256  # bytes charged per stored object for the Python objects around its data


def response_size(status_headers: RawHeaders, body: bytes, key: bytes) -> int:
    return ENTRY_OVERHEAD + len(body) + len(key) + sum(len(k) + len(v) + 16 for k, v in status_headers)
