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

_WS = r"[ \t\n\r\f]"
_DQ_BODY = r'(?:[^"\\\n\r\f]++|\\.|\\\r\n)*+'
_SQ_BODY = r"(?:[^'\\\n\r\f]++|\\.|\\\r\n)*+"
# An escape in an unquoted url(): hex digits take one whitespace character with them.
_ESCAPED = r"\\[0-9A-Fa-f]{1,6}(?:\r\n|[ \t\n\r\f])?|\\[^\n\r\f0-9A-Fa-f]"
# Whitespace and comments between ``@import`` and its string.
_IMPORT_GAP = rf"(?:{_WS}|/\*.*?\*/)*+"
# Everything that holds no URL, consumed at C speed from where the last match ended: other characters,
# comments, strings (a string cut by a newline ends there, as a "bad string"), identifiers (whole, so that
# ``xurl(`` and ``my-url(`` are not ``url(``), at-keywords other than an ``@import`` followed by a string,
# escapes (an escaped ``u\72l(`` is left alone).
_BORING = rf"""
    [^/"'@\w\\-]++
  | /\*.*?(?:\*/|\Z)
  | /
  | "{_DQ_BODY}(?:"|(?=[\n\r\f])|\Z)
  | '{_SQ_BODY}(?:'|(?=[\n\r\f])|\Z)
  | @(?![Ii][Mm][Pp][Oo][Rr][Tt]{_IMPORT_GAP}["'])[\w-]*+
  | (?![Uu][Rr][Ll]\()[\w-]++
  | \\.?
"""
# The next URL: ``@import "…"`` (``istr``) or ``url(…)`` quoted (``qstr``) or not (``raw``). A ``url(`` that
# is neither (a "bad url") matches with neither group set, and is left alone.
_NEXT = re.compile(
    rf"""(?:{_BORING})*+
    (?:
        @[Ii][Mm][Pp][Oo][Rr][Tt]{_IMPORT_GAP}(?:"(?P<idq>{_DQ_BODY})"|'(?P<isq>{_SQ_BODY})')
      | [Uu][Rr][Ll]\({_WS}*+
        (?:
            (?:"(?P<qdq>{_DQ_BODY})"|'(?P<qsq>{_SQ_BODY})'){_WS}*+\)
          | (?P<raw>(?:[^"'()\\ \t\n\r\f\x00-\x08\x0b\x0e-\x1f\x7f]++|{_ESCAPED})*+){_WS}*+\)
        )?
    )""",
    re.S | re.X,
)
_ESCAPE = re.compile(r"\\(?:([0-9A-Fa-f]{1,6})(?:\r\n|[ \t\n\r\f])?|(\r\n|[\n\r\f])|(.))", re.S)


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


_STRING_SPECIAL = re.compile(r"[\\\"'\n\r\f\x00-\x08\x0b\x0e-\x1f\x7f]")
_UNQUOTED_SPECIAL = re.compile(r"[\\\"'() \t\n\r\f\x00-\x08\x0b\x0e-\x1f\x7f]")


def _escape_string(value: str, quote: str) -> str:
    if _STRING_SPECIAL.search(value) is None:
        return value
    value = value.replace("\\", "\\\\").replace(quote, "\\" + quote)
    return re.sub(r"[\n\r\f\x00-\x08\x0b\x0e-\x1f\x7f]", lambda m: f"\\{ord(m.group()):x} ", value)


def _escape_unquoted(value: str) -> str:
    if _UNQUOTED_SPECIAL.search(value) is None:
        return value
    return re.sub(
        r"[\\\"'() \t\n\r\f\x00-\x08\x0b\x0e-\x1f\x7f]",
        lambda m: f"\\{ord(m.group()):x} ",
        value,
    )


_NON_ASCII = re.compile(r"[^\x00-\x7f\ud800-\udfff]")  # lone surrogates: undecodable bytes, kept


def _splice(
    origin: str,
    raw: str,
    plan: Plan,
    decoded: str,
    escape: Callable[[str], str],
    outer: Callable[[str], str] | None,
) -> str:
    """The new text for one URL written as ``raw`` (``decoded`` once its escapes are removed). ``outer``
    encodes what we write for the text around the CSS (an HTML attribute value), the author's text stays."""
    drop, insert_at, tail = plan
    if tail:
        tail = escape(tail) if outer is None else outer(escape(tail))
    if raw == decoded:
        return escape(origin) + raw[drop:insert_at] + tail + raw[insert_at:]
    if raw.startswith(decoded[:drop]) and (not tail or insert_at == len(decoded)):
        # The escapes are all in what we keep: keep them as written.
        return escape(origin) + raw[drop:] + tail
    new = escape(origin + decoded[drop:insert_at] + plan[2] + decoded[insert_at:])
    if not new.isascii():
        # written back from escapes: keep non-ASCII escaped, the sheet's charset may not have them
        new = _NON_ASCII.sub(lambda m: f"\\{ord(m.group()):x} ", new)
    return new if outer is None else outer(new)


_QUOTES = {"idq": '"', "isq": "'", "qdq": '"', "qsq": "'", "raw": ""}


def rewrite_css(matcher: UrlMatcher, text: str, outer: Callable[[str], str] | None = None) -> str | None:
    """``text`` with its asset URLs on the CDN, or ``None`` when nothing changed. ``outer`` encodes the text
    that is written (not the text that is kept) for where the CSS sits: an HTML attribute value."""
    origin = matcher.origin
    out: list[str] = []
    last = 0
    pos = 0
    match = _NEXT.match
    while True:
        m = match(text, pos)
        if m is None:
            break
        pos = m.end()
        group = m.lastgroup  # the one value group that matched
        if group is None:
            continue  # a bad url( token: left alone
        raw = m.group(group)
        quote = _QUOTES[group]
        decoded = unescape(raw) if "\\" in raw else raw
        plan = matcher.plan(decoded)
        if plan is None:
            continue
        start = m.start(group)
        escape: Callable[[str], str] = partial(_escape_string, quote=quote) if quote else _escape_unquoted
        out.append(text[last:start])
        out.append(_splice(origin, raw, plan, decoded, escape, outer))
        last = start + len(raw)
    if not out:
        return None
    out.append(text[last:])
    return "".join(out)
