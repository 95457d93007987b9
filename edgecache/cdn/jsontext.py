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

_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"', re.S)
# Could this string value be an asset URL? root-relative (maybe written ``\/``) or absolute http(s).
_CANDIDATE = re.compile(r'"(?:/|\\/|\\u002[fF]|[Hh][Tt][Tt][Pp])')
_WS_COLON = re.compile(r"[ \t\n\r]*:")


def _encode(value: str, raw: str) -> str:
    encoded = json.dumps(value, ensure_ascii=raw.isascii())[1:-1]
    if "\\/" in raw:
        encoded = encoded.replace("/", "\\/")
    return encoded


def rewrite_json(matcher: UrlMatcher, text: str) -> str | None:
    """``text`` with its asset URL string values on the CDN, or ``None`` when nothing changed (or invalid)."""
    if _CANDIDATE.search(text) is None:
        return None
    origin = matcher.origin
    plan_of = matcher.plan
    out: list[str] = []
    last = 0
    for m in _STRING.finditer(text):
        raw = m.group(1)
        first = raw[:1]
        if first not in ("/", "\\", "h", "H"):
            continue
        if _WS_COLON.match(text, m.end()):
            continue  # a key
        if "\\" in raw:
            try:
                decoded = json.loads(m.group())
            except ValueError:
                return None
        else:
            decoded = raw
        plan = plan_of(decoded)
        if plan is None:
            continue
        drop, insert_at, tail = plan
        new = origin + decoded[drop:insert_at] + tail + decoded[insert_at:]
        out.append(text[last : m.start(1)])
        if raw == decoded:
            out.append(_encode(origin, raw) + raw[drop:insert_at] + tail + raw[insert_at:])
        else:
            out.append(_encode(new, raw))
        last = m.end(1)
    if not out:
        return None
    try:
        json.loads(text)
    except ValueError:
        return None
    out.append(text[last:])
    return "".join(out)
