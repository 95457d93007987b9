"""Cache keys: a canonical, length-prefixed encoding of what selects a response, hashed with SHA-256.

Each component is written as a netstring (``<length>:<bytes>,``), so no two different requests can produce
the same canonical bytes by shifting characters between components. The digest (never Python's ``hash()``,
which is salted per process and collision-prone) is what stores index by; the canonical bytes travel inside
the stored entry so that a read can confirm it found what it asked for.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from fnmatch import translate
from functools import lru_cache
from urllib.parse import quote, unquote_plus

from edgecache.core.headers import Fields, parse_cookie_header

KEY_VERSION = b"edgecache-key/1"


def _netstring(value: bytes) -> bytes:
    return b"%d:%s," % (len(value), value)


def canonical(*components: bytes | None) -> bytes:
    """Length-prefixed encoding; ``None`` (a missing value) is distinct from every byte string."""
    parts = [KEY_VERSION]
    for component in components:
        parts.append(b"-," if component is None else _netstring(component))
    return b"".join(parts)


def digest(canonical_key: bytes) -> str:
    return hashlib.sha256(canonical_key).hexdigest()


@dataclass(frozen=True, slots=True)
class CacheKey:
    canonical: bytes
    digest: str


def make_key(canonical_key: bytes) -> CacheKey:
    return CacheKey(canonical_key, digest(canonical_key))


def normalize_host(host: str, scheme: str) -> str:
    """Lower-case; the scheme's default port removed, so ``Example.com:443`` and ``example.com`` agree."""
    host = host.strip().lower()
    default = ":443" if scheme == "https" else ":80"
    if host.endswith(default):
        host = host[: -len(default)]
    return host


class QueryFilter:
    """Which query parameters take part in the key (and reach the app).

    ``ignore`` drops parameters by name (glob patterns such as ``utm_*``); ``allow``, when given, keeps only
    the named ones. Kept parameters stay byte for byte as received and in their order, because the order of
    repeated parameters can matter to an app.
    """

    __slots__ = ("_allow", "_ignore", "active")

    def __init__(self, ignore: Collection[str] = (), allow: Collection[str] | None = None) -> None:
        self._ignore = re.compile("|".join(translate(p) for p in ignore)) if ignore else None
        self._allow = frozenset(allow) if allow is not None else None
        self.active = self._ignore is not None or self._allow is not None

    def keeps(self, name: str) -> bool:
        """Whether a parameter of this (decoded) name takes part in the key."""
        if self._allow is not None and name not in self._allow:
            return False
        return not (self._ignore is not None and self._ignore.match(name))

    def apply(self, query: bytes) -> bytes:
        if not self.active or not query:
            return query
        kept = []
        for pair in query.split(b"&"):
            if not pair:
                continue
            raw_name = pair.split(b"=", 1)[0]
            name = unquote_plus(raw_name.decode("latin-1"))
            if self.keeps(name):
                kept.append(pair)
        return b"&".join(kept)


@dataclass(frozen=True, slots=True)
class KeyRecipe:
    """What, beside the URI, selects a response: named request headers and named cookies."""

    headers: tuple[str, ...] = ()
    cookies: tuple[str, ...] = ()


Uri = tuple[bytes, bytes, bytes, bytes]
# Keys of short URIs are memoised: the hit path would otherwise hash the same bytes on every request.
# Bounded in entries and in the length of what is kept, so hostile URLs cannot grow it.
_MEMO_ENTRIES = 4096
_MEMO_MAX_CHARS = 512


def uri_components(scheme: str, host: str, path: bytes, query: bytes) -> Uri:
    if len(path) + len(query) + len(host) <= _MEMO_MAX_CHARS:
        return _memo_uri(scheme, host, path, query)
    return _uri(scheme, host, path, query)


def _uri(scheme: str, host: str, path: bytes, query: bytes) -> Uri:
    return (scheme.encode("latin-1"), normalize_host(host, scheme).encode("latin-1"), path, query)


_memo_uri = lru_cache(maxsize=_MEMO_ENTRIES)(_uri)


def primary_key(
    uri: Uri,
    header_values: Iterable[str | None] = (),
    cookie_values: Iterable[str | None] = (),
) -> CacheKey:
    """The key of a URI (plus the recipe's header and cookie values, in recipe order)."""
    if header_values == () and cookie_values == () and sum(map(len, uri)) <= _MEMO_MAX_CHARS:
        return _memo_uri_key(uri)
    extras: list[bytes | None] = [b"h"]
    extras.extend(None if v is None else v.encode("latin-1") for v in header_values)
    extras.append(b"c")
    extras.extend(None if v is None else v.encode("latin-1") for v in cookie_values)
    return make_key(canonical(b"p", *uri, *extras))


def request_key(recipe: KeyRecipe, uri: Uri, fields: Fields) -> CacheKey:
    """The primary key of a request for ``uri`` with header ``fields``: the URI plus the values of the
    recipe's headers and cookies (the middleware's lookups and ``explain`` alike)."""
    if not recipe.headers and not recipe.cookies:
        return primary_key(uri)
    header_values = [fields.joined(name) for name in recipe.headers]
    cookies = parse_cookie_header(fields.get_all("cookie")) if recipe.cookies else {}
    return primary_key(uri, header_values, [cookies.get(name) for name in recipe.cookies])


@lru_cache(maxsize=_MEMO_ENTRIES)
def _memo_uri_key(uri: Uri) -> CacheKey:
    return make_key(canonical(b"p", *uri, b"h", b"c"))


def variant_key(primary: CacheKey, vary: tuple[str, ...], values: tuple[str | None, ...]) -> CacheKey:
    """The key of one Vary variant of a primary key."""
    parts: list[bytes | None] = [b"v", primary.canonical]
    for name, value in zip(vary, values, strict=True):
        parts.append(name.encode("latin-1"))
        parts.append(None if value is None else value.encode("latin-1"))
    return make_key(canonical(*parts))


def uri_tag(uri: tuple[bytes, bytes, bytes, bytes]) -> str:
    """The internal tag every entry of one URI carries, so that §4.4 invalidation finds them all."""
    return "uri:" + digest(canonical(b"u", *uri))


# Every printable ASCII character but the space: what a request line may carry as it is.
_WIRE_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))


def wire_bytes(text: str) -> bytes:
    """A path or query as requests carry it (``raw_path``): other characters percent-encoded as UTF-8,
    the way a client would send them (paths given to ``invalidate``, URLs given to ``explain``)."""
    return quote(text, safe=_WIRE_SAFE).encode("ascii")


def path_tag(path: bytes) -> str:
    """The internal tag of a path on any host and with any query string, for purges by path."""
    return "path:" + digest(canonical(b"a", path))


# Prefix purges match on path segments, up to this depth; a deeper prefix is matched by its first
# PREFIX_DEPTH segments, which purges more than asked (safe) but keeps the tags per entry bounded.
PREFIX_DEPTH = 4


def prefix_tags(path: bytes) -> list[str]:
    """The internal tags that let a purge by prefix find this path: one per leading segment."""
    segments = [s for s in path.split(b"?", 1)[0].split(b"/") if s]
    tags = []
    for depth in range(1, min(len(segments), PREFIX_DEPTH) + 1):
        tags.append("pfx:" + digest(canonical(b"x", b"/" + b"/".join(segments[:depth]))))
    return tags


def prefix_tag(prefix: bytes) -> str | None:
    """The tag a purge of ``prefix`` drops (``/catalog`` and ``/catalog/`` alike); None for ``/``, which
    is everything."""
    segments = [s for s in prefix.split(b"/") if s]
    if not segments:
        return None
    return "pfx:" + digest(canonical(b"x", b"/" + b"/".join(segments[:PREFIX_DEPTH])))
