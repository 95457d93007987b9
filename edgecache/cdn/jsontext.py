"""Asset URLs among the string values of a JSON document, everything else kept byte for byte.

The document is scanned string token by string token (in valid JSON no ``"`` occurs outside strings, so this
is exact); a string followed by ``:`` is a key and is never touched. A value is rewritten only if the whole
string is an asset URL (``"see /static/x"`` is text). The new string is written with the escapes the author
used: ``\\/`` stays ``\\/``, and an ASCII-only string stays ASCII. A document that is not valid JSON is left
untouched (checked with the standard parser, only when something would change).
"""

from __future__ import annotations

import json
import re

from .urls import UrlMatcher

# From where the last match ended: everything up to the next string value that could be an asset URL (it
# starts with ``/``, an escape, or ``http``), skipping other strings and keys (strings followed by ``:``)
# whole; used with ``match``, never ``search``.
_NEXT = re.compile(
    r"""(?:[^"]++
          | "(?![/\\]|[Hh][Tt][Tt][Pp])(?:[^"\\]++|\\.)*+"
          | "(?:[^"\\]++|\\.)*+"(?=[ \t\n\r]*:)
        )*+
        "(?P<s>(?:[^"\\]++|\\.)*+)\"""",
    re.S | re.X,
)


def _encode(value: str, raw: str) -> str:
    encoded = json.dumps(value, ensure_ascii=raw.isascii())[1:-1]
    if "\\/" in raw:
        encoded = encoded.replace("/", "\\/")
    return encoded


def rewrite_json(matcher: UrlMatcher, text: str) -> str | None:
    """``text`` with its asset URL string values on the CDN, or ``None`` when nothing changed (or invalid)."""
    origin = matcher.origin
    origin_json = json.dumps(origin)[1:-1]
    plan_of = matcher.plan
    out: list[str] = []
    last = 0
    pos = 0
    match = _NEXT.match
    while True:
        m = match(text, pos)
        if m is None:
            break
        pos = m.end()
        raw = m.group("s")
        if "\\" in raw:
            try:
                decoded = json.loads(text[m.start("s") - 1 : pos])
            except ValueError:
                return None
        else:
            decoded = raw
        plan = plan_of(decoded)
        if plan is None:
            continue
        drop, insert_at, tail = plan
        start = m.start("s")
        out.append(text[last:start])
        if raw is decoded:
            out.append(origin_json + raw[drop:insert_at] + tail + raw[insert_at:])
        else:
            out.append(_encode(origin + decoded[drop:insert_at] + tail + decoded[insert_at:], raw))
        last = pos - 1
    if not out:
        return None
    try:
        # a byte order mark may precede JSON (RFC 8259 §8.1 lets parsers ignore it; Python's refuses it)
        json.loads(text[1:] if text.startswith("\ufeff") else text)
    except (ValueError, RecursionError):  # invalid, or nested deeper than the parser goes: left alone
        return None
    out.append(text[last:])
    return "".join(out)
