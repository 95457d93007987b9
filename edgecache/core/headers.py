"""Header fields parsed into typed records: Cache-Control, dates, entity tags, Vary, tags.

Parsing is forgiving in what it accepts and strict in what it concludes: a malformed freshness value makes
a response stale rather than fresh (RFC 9111 §4.2.1), and every input is bounded in the work it can cause.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

RawHeaders = list[tuple[bytes, bytes]]

# RFC 9111 §1.2.2: a delta-seconds larger than the largest integer a cache can represent is 2**31.
DELTA_SECONDS_MAX = 2**31
# Bounds that keep hostile headers cheap to parse.
MAX_FIELD_CHARS = 16 * 1024
MAX_DIRECTIVES = 64
MAX_TAGS = 256
MAX_TAG_CHARS = 512


class Fields(dict[str, list[str]]):
    """A read-only multi-map over ASGI header pairs: lower-cased name → list of values.

    A dict subclass so that membership tests (``"cookie" in fields``), which the hit path makes several
    of, run at C speed.
    """

    __slots__ = ()

    def __init__(self, raw: Iterable[tuple[bytes, bytes]]) -> None:
        super().__init__()
        for name, value in raw:
            key = name.decode("latin-1").lower()
            if key in self:
                self[key].append(value.decode("latin-1"))
            else:
                self[key] = [value.decode("latin-1")]

    def get(self, name: str, default: None = None) -> str | None:  # type: ignore[override]
        """The first value of ``name``, or None."""
        values = super().get(name)
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        return super().get(name) or []

    def joined(self, name: str) -> str | None:
        """All field lines of ``name`` combined as one list value (RFC 9110 §5.3), or None if absent."""
        values = super().get(name)
        if values is None:
            return None
        return values[0] if len(values) == 1 else ", ".join(values)

    def names(self) -> Iterable[str]:
        return self.keys()


def split_list(value: str, limit: int = MAX_DIRECTIVES) -> list[str]:
    """Split a comma-separated field value into members, honouring quoted strings; empties dropped."""
    value = value[:MAX_FIELD_CHARS]
    if '"' not in value:
        return [part for part in (p.strip() for p in value.split(",")) if part][:limit]
    parts: list[str] = []
    start = 0
    quoted = False
    escaped = False
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            part = value[start:i].strip()
            if part:
                parts.append(part)
                if len(parts) >= limit:
                    return parts
            start = i + 1
    part = value[start:].strip()
    if part:
        parts.append(part)
    return parts[:limit]


def unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def parse_delta_seconds(value: str | None) -> int | None:
    """RFC 9111 §1.2.2 delta-seconds (quoted form accepted, §5.2); None when absent or malformed."""
    if value is None:
        return None
    text = unquote(value)
    if not text or not text.isascii() or not text.isdigit():
        return None
    digits = text.lstrip("0")  # leading zeros do not make a value large
    if len(digits) > 10:  # anything this long is beyond 2**31 anyway; skip the big-int conversion
        return DELTA_SECONDS_MAX
    return min(int(digits or "0"), DELTA_SECONDS_MAX)


_NUMERIC = frozenset({"max-age", "s-maxage", "stale-while-revalidate", "stale-if-error", "min-fresh"})


@dataclass(frozen=True, slots=True)
class CacheControl:
    """Cache-Control directives (RFC 9111 §5.2), names lower-cased, values unquoted.

    A numeric directive given twice with different values, or with a malformed value, reads as 0: RFC 9111
    §4.2.1 lets a cache consider such a response stale, which is the safe reading for a shared cache.
    """

    directives: Mapping[str, str | None]

    @classmethod
    def parse(cls, value: str | None) -> CacheControl:
        if not value:
            return EMPTY_CACHE_CONTROL
        directives: dict[str, str | None] = {}
        for member in split_list(value):
            name, sep, arg = member.partition("=")
            name = name.strip().lower()
            if not name:
                continue
            parsed: str | None = unquote(arg) if sep else None
            if name in _NUMERIC:
                seconds = parse_delta_seconds(arg if sep else None)
                parsed = "0" if seconds is None else str(seconds)
                previous = directives.get(name)
                if previous is not None and previous != parsed:
                    parsed = "0"
            elif name in directives:
                continue  # first occurrence wins for the others
            directives[name] = parsed
        return cls(directives)

    def has(self, name: str) -> bool:
        return name in self.directives

    def seconds(self, name: str) -> int | None:
        if name not in self.directives:
            return None
        value = self.directives[name]
        return int(value) if value is not None else 0

    def field_names(self, name: str) -> frozenset[str] | None:
        """The qualified form's field names (``private="Set-Cookie"``); None for the unqualified form."""
        value = self.directives.get(name)
        if value is None:
            return None
        return frozenset(f.strip().lower() for f in value.split(",") if f.strip())

    @property
    def max_stale(self) -> float | None:
        """Request ``max-stale``: None absent, ``inf`` without a value (any staleness), else seconds."""
        if "max-stale" not in self.directives:
            return None
        value = self.directives["max-stale"]
        if value is None:
            return float("inf")
        seconds = parse_delta_seconds(value)
        return 0.0 if seconds is None else float(seconds)


EMPTY_CACHE_CONTROL = CacheControl({})


_MONTHS = {
    m: i
    for i, m in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], start=1
    )
}
_IMF_FIXDATE = re.compile(
    r"^[A-Za-z]{3}, (\d{2}) ([A-Za-z]{3}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT$",
)
_RFC850 = re.compile(r"^[A-Za-z]{6,9}, (\d{2})-([A-Za-z]{3})-(\d{2}) (\d{2}):(\d{2}):(\d{2}) GMT$")
_ASCTIME = re.compile(r"^[A-Za-z]{3} ([A-Za-z]{3}) ([ \d]\d) (\d{2}):(\d{2}):(\d{2}) (\d{4})$")


def parse_http_date(value: str | None) -> float | None:
    """An HTTP-date (RFC 9110 §5.6.7: IMF-fixdate, rfc850-date, asctime-date) as epoch seconds, else None."""
    if not value or len(value) > 64:
        return None
    text = value.strip()
    if m := _IMF_FIXDATE.match(text):
        day, mon, year, hh, mm, ss = m.groups()
    elif m := _RFC850.match(text):
        day, mon, yy, hh, mm, ss = m.groups()
        # RFC 9110 §5.6.7 reads two-digit years relative to "now"; the core reads no clock, and a fixed
        # pivot gives the same answer for every date this obsolete format still carries in practice.
        year = str((2000 if int(yy) < 70 else 1900) + int(yy))
    elif m := _ASCTIME.match(text):
        mon, day, hh, mm, ss, year = m.groups()
    else:
        return None
    month = _MONTHS.get(mon.lower())
    if month is None:
        return None
    try:
        moment = datetime(int(year), month, int(day), int(hh), int(mm), int(ss), tzinfo=UTC)
    except ValueError:
        return None
    return moment.timestamp()


def format_http_date(epoch: float) -> str:
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.strftime("%a, %d %b %Y %H:%M:%S GMT")


@dataclass(frozen=True, slots=True)
class EntityTag:
    opaque: str  # including its double quotes
    weak: bool


_ETAG = re.compile(r'^(W/)?("[\x21\x23-\x7e\x80-\xff]*")$')


def parse_etag(value: str | None) -> EntityTag | None:
    if value is None:
        return None
    m = _ETAG.match(value.strip())
    if m is None:
        return None
    return EntityTag(opaque=m.group(2), weak=m.group(1) is not None)


def if_none_match_matches(header: str, etag: str | None) -> bool:
    """RFC 9110 §13.1.2 with weak comparison: does ``If-None-Match`` match the stored ETag?"""
    members = split_list(header, limit=MAX_TAGS)
    if "*" in members:
        return True
    stored = parse_etag(etag)
    if stored is None:
        return False
    for member in members:
        candidate = parse_etag(member)
        if candidate is not None and candidate.opaque == stored.opaque:
            return True
    return False


def parse_vary(values: list[str]) -> tuple[str, ...] | None:
    """Lower-cased, sorted, de-duplicated Vary field names; None stands for ``Vary: *``."""
    names: set[str] = set()
    for value in values:
        for member in split_list(value):
            if member == "*":
                return None
            names.add(member.lower())
    return tuple(sorted(names))


_KNOWN_CODINGS = ("br", "compress", "deflate", "gzip", "identity", "zstd")
_ALIASES = {"x-gzip": "gzip", "x-compress": "compress"}


def normalize_accept_encoding(value: str) -> str:
    """The codings a client accepts, canonicalised so that equivalent headers share one variant.

    Unknown codings are dropped and q-values reduced to accepted / refused, so that the variant count
    stays small whatever clients send.
    """
    accepted: set[str] = set()
    refused_codings: set[str] = set()  # RFC 9110 §12.5.3: "*" stands only for codings not listed
    star = False
    for member in split_list(value.lower()):
        coding, _, params = member.partition(";")
        coding = _ALIASES.get(coding.strip(), coding.strip())
        refused = False
        for param in params.split(";"):
            name, _, q = param.partition("=")
            if name.strip() == "q":
                try:
                    refused = float(q.strip()) <= 0
                except ValueError:
                    refused = True
        if refused:
            refused_codings.add(coding)
        elif coding == "*":
            star = True
        elif coding in _KNOWN_CODINGS:
            accepted.add(coding)
    if star:
        accepted.update(c for c in _KNOWN_CODINGS if c not in refused_codings)
    return ",".join(sorted(accepted))


_SPACES = re.compile(r"\s*,\s*|\s+")


def normalize_vary_value(name: str, values: list[str]) -> str | None:
    """The request's value of one Vary field, normalised (RFC 9111 §4.1); None when the field is absent."""
    if not values:
        return None
    combined = ", ".join(values)[:MAX_FIELD_CHARS]
    if name == "accept-encoding":
        return normalize_accept_encoding(combined)
    return _SPACES.sub(lambda m: "," if "," in m.group(0) else " ", combined.strip())


def parse_surrogate_keys(values: list[str]) -> list[str]:
    """Fastly-style ``Surrogate-Key``: space-separated tags."""
    tags: list[str] = []
    for value in values:
        tags.extend(t for t in value[:MAX_FIELD_CHARS].split() if len(t) <= MAX_TAG_CHARS)
    return tags[:MAX_TAGS]


def parse_cache_tags(values: list[str]) -> list[str]:
    """Cloudflare-style ``Cache-Tag``: comma-separated tags."""
    tags: list[str] = []
    for value in values:
        tags.extend(t for t in (p.strip() for p in value[:MAX_FIELD_CHARS].split(",")) if t)
    return [t for t in tags if len(t) <= MAX_TAG_CHARS][:MAX_TAGS]


def parse_cookie_header(values: list[str]) -> dict[str, str]:
    """Cookie pairs (RFC 6265 §5.4); the first occurrence of a name wins."""
    cookies: dict[str, str] = {}
    for value in values:
        for pair in value[:MAX_FIELD_CHARS].split(";"):
            name, sep, val = pair.partition("=")
            name = name.strip()
            if sep and name and name not in cookies:
                cookies[name] = val.strip()
    return cookies
