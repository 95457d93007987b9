"""``url(…)`` and ``@import`` in CSS text (a style sheet, a ``<style>`` block or a ``style`` attribute).

A small CSS tokenizer (CSS Syntax Level 3, only as far as URLs need it): comments and strings are consumed
whole, so ``content: "url(/static/x)"`` and ``/* url(/static/x) */`` stay as they are. Recognised:
``url(/a)``, ``url( "/a" )``, ``url('/a')`` (any case), ``@import "/a"``, ``@import '/a'`` and
``@import url(/a)``, ``image-set("/a" 1x)`` strings are not (they are rare; ``image-set(url(/a) 1x)`` is).
Escapes (``\\2f``, ``\\)``) are decoded to decide and to build the new URL; a URL whose text is written
without escapes keeps every byte of the author's text, only the CDN origin is inserted.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial

from .urls import Plan, UrlMatcher

_TOKEN = re.compile(
    r"""
      /\*.*?(?:\*/|\Z)                                                  # comment
    | (?P<import>@[Ii][Mm][Pp][Oo][Rr][Tt])(?P<iws>(?:[ \t\n\r\f]|/\*.*?\*/)*)
        (?:(?P<iq>["'])(?P<istr>(?:(?!(?P=iq))[^\\\n\r\f]|\\.|\\\n|\\\r\n?)*)(?P=iq))?
    | ["'] # a string (handled in Python: the closing quote must match)
    | (?<![\w\\-])(?P<url>[Uu][Rr][Ll]\((?P<ws1>[ \t\n\r\f]*))
        (?:
            (?P<q>["'])(?P<qstr>(?:(?!(?P=q))[^\\\n\r\f]|\\.|\\\n|\\\r\n?)*)(?P=q)(?P<ws2>[ \t\n\r\f]*)\)
          | (?P<raw>(?:[^"'()\\ \t\n\r\f\x00-\x08\x0b\x0e-\x1f\x7f]|\\[^\n\r\f])*)(?P<ws3>[ \t\n\r\f]*)\)
        )?
    """,
    re.S | re.X,
)
_STRING_BODY = {
    '"': re.compile(r'(?:[^"\\\n\r\f]|\\.|\\\n|\\\r\n?)*(?:"|(?=[\n\r\f])|\Z)', re.S),
    "'": re.compile(r"(?:[^'\\\n\r\f]|\\.|\\\n|\\\r\n?)*(?:'|(?=[\n\r\f])|\Z)", re.S),
}
_ESCAPE = re.compile(r"\\(?:([0-9A-Fa-f]{1,6})(?:\r\n|[ \t\n\r\f])?|(\r\n|[\n\r\f])|(.))", re.S)
_QUICK = re.compile(r"[Uu][Rr][Ll]\(|@[Ii][Mm][Pp][Oo][Rr][Tt]")


def _unescape_repl(m: re.Match[str]) -> str:
    hexdigits, newline, char = m.groups()
    if hexdigits is not None:
        code = int(hexdigits, 16)
        if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
            return "\ufffd"
        return chr(code)
    if newline is not None:  # a line continuation inside a string
        return ""
    return char if char is not None else "\ufffd"


def unescape(text: str) -> str:
    return _ESCAPE.sub(_unescape_repl, text) if "\\" in text else text


def _escape_string(value: str, quote: str) -> str:
    value = value.replace("\\", "\\\\").replace(quote, "\\" + quote)
    return re.sub(r"[\n\r\f\x00-\x08\x0b\x0e-\x1f\x7f]", lambda m: f"\\{ord(m.group()):x} ", value)


def _escape_unquoted(value: str) -> str:
    return re.sub(
        r"[\\\"'() \t\n\r\f\x00-\x08\x0b\x0e-\x1f\x7f]",
        lambda m: f"\\{ord(m.group()):x} ",
        value,
    )


def _splice(origin: str, raw: str, plan: Plan, decoded: str, escape: Callable[[str], str]) -> str:
    """The new text for one URL written as ``raw`` (``decoded`` once its escapes are removed)."""
    drop, insert_at, tail = plan
    if raw == decoded:
        return escape(origin) + raw[drop:insert_at] + escape(tail) + raw[insert_at:]
    if raw.startswith(decoded[:drop]) and (not tail or insert_at == len(decoded)):
        # The escapes are all in what we keep: keep them as written.
        return escape(origin) + raw[drop:] + escape(tail)
    return escape(origin + decoded[drop:insert_at] + tail + decoded[insert_at:])


def rewrite_css(matcher: UrlMatcher, text: str) -> str | None:
    """``text`` with its asset URLs on the CDN, or ``None`` when nothing changed."""
    if _QUICK.search(text) is None:
        return None
    origin = matcher.origin
    out: list[str] = []
    last = 0
    pos = 0
    search = _TOKEN.search
    while True:
        m = search(text, pos)
        if m is None:
            break
        pos = m.end()
        if m.group("import") is not None:
            quote = m.group("iq")
            if quote is None:
                continue  # ``@import url(…)``: the url( token is found next
            raw = m.group("istr")
            start = m.start("istr")
            escape: Callable[[str], str] = partial(_escape_string, quote=quote)
        elif m.group("url") is not None:
            quote = m.group("q")
            if quote is not None:
                raw = m.group("qstr")
                start = m.start("qstr")
                escape = partial(_escape_string, quote=quote)
            elif m.group("raw") is not None:
                raw = m.group("raw")
                start = m.start("raw")
                escape = _escape_unquoted
            else:
                continue  # a bad url( token: left alone
        else:
            first = m.group()
            if first in ("'", '"'):
                end = _STRING_BODY[first].match(text, pos)
                pos = end.end() if end is not None else len(text)
            continue
        decoded = unescape(raw) if "\\" in raw else raw
        plan = matcher.plan(decoded)
        if plan is None:
            continue
        out.append(text[last:start])
        out.append(_splice(origin, raw, plan, decoded, escape))
        last = start + len(raw)
    if not out:
        return None
    out.append(text[last:])
    return "".join(out)
