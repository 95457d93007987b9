"""Single byte ranges (RFC 9110 §14) answered from a stored full response."""

from __future__ import annotations

from dataclasses import dataclass

from edgecache.core.headers import parse_etag


@dataclass(frozen=True, slots=True)
class ByteRange:
    first: int
    last: int  # inclusive

    @property
    def length(self) -> int:
        return self.last - self.first + 1


class Unsatisfiable(Exception):
    """The range lies outside the representation: answered with 416."""


def select_range(range_header: str, if_range: str | None, etag: str | None, size: int) -> ByteRange | None:
    """The one byte range to serve, or None to serve the whole representation.

    Multiple ranges, other units and malformed values are answered with the full response, which RFC 9110
    §14.2 allows ("a server MAY ignore the Range header field"). ``If-Range`` is honoured only with a strong
    entity tag that matches (§13.1.5); dates are ignored, which falls back to the full response.
    """
    if if_range is not None:
        wanted, stored = parse_etag(if_range), parse_etag(etag)
        if wanted is None or stored is None or wanted.weak or stored.weak or wanted.opaque != stored.opaque:
            return None
    unit, _, spec = range_header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec or len(spec) > 64:
        return None
    first_text, dash, last_text = spec.strip().partition("-")
    # str.isdigit() also accepts non-ASCII digits such as "²", which int() rejects: 1*DIGIT is ASCII only.
    if not dash or not (first_text + last_text).isascii():
        return None
    if not (first_text.isdigit() or first_text == "") or not (last_text.isdigit() or last_text == ""):
        return None
    if first_text == "":
        if last_text == "":
            return None
        suffix = int(last_text)
        if suffix == 0:
            raise Unsatisfiable
        return ByteRange(max(0, size - suffix), size - 1) if size > 0 else _unsatisfiable()
    first = int(first_text)
    if first >= size:
        raise Unsatisfiable
    last = size - 1 if last_text == "" else min(int(last_text), size - 1)
    if last < first:
        return None  # an invalid range-spec: ignore the header (§14.1.1)
    return ByteRange(first, last)


def _unsatisfiable() -> ByteRange:
    raise Unsatisfiable
