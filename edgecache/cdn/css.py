"""``url(…)`` and ``@import`` in CSS text (a style sheet, a ``<style>`` block or a ``style`` attribute).

A small CSS tokenizer (CSS Syntax Level 3, only as far as URLs need it): comments and strings are consumed
whole, so ``content: "url(/static/x)"`` and ``/* url(/static/x) */`` stay as they are. Recognised:
``url(/a)``, ``url( "/a" )``, ``url('/a')`` (any case), ``@import "/a"``, ``@import '/a'`` and
``@import url(/a)``, and the strings of ``image-set("/a" 1x, url(/b) 2x)`` (also ``-webkit-image-set``).
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
# ``image-set(`` and ``-webkit-image-set(``, whose bare string arguments are URLs.
_IMAGE_SET = r"(?:-[Ww][Ee][Bb][Kk][Ii][Tt]-)?[Ii][Mm][Aa][Gg][Ee]-[Ss][Ee][Tt]"
# Whitespace and comments between ``@import`` and its string.
_IMPORT_GAP = rf"(?:{_WS}|/\*.*?\*/)*+"
# Everything that holds no URL, consumed at C speed from where the last match ended: comments, strings (a
# string cut by a newline ends there, as a "bad string"), at-keywords other than an ``@import`` followed by a
# string, escapes (an escaped ``u\72l(`` is left alone), and all other text in long runs. ``u``, ``i`` and
# ``-`` stop a run: inside a word (``xurl(``, ``my-url(``) they are text, at its start they may begin
# ``url(`` or ``image-set(``.
_BORING = rf"""
    [^/"'@\\uUiI-]++
  | /\*.*?(?:\*/|\Z)
  | /
  | "{_DQ_BODY}(?:"|(?=[\n\r\f])|\Z)
  | '{_SQ_BODY}(?:'|(?=[\n\r\f])|\Z)
  | @(?![Ii][Mm][Pp][Oo][Rr][Tt]{_IMPORT_GAP}["'])[\w-]*+
  | (?<=[\w-])[uUiI-]++
  | (?!{_IMAGE_SET}\(|[Uu][Rr][Ll]\()[uUiI-]
  | \\.?
"""
# The next URL: ``@import "…"`` (``idq``/``isq``) or ``url(…)`` quoted (``qdq``/``qsq``) or not (``raw``), or
# the start of an ``image-set(`` (``iset``). A ``url(`` that is neither (a "bad url") matches with no group
# set, and is left alone.
_NEXT = re.compile(
    rf"""(?:{_BORING})*+
    (?:
        (?P<iset>{_IMAGE_SET}\()
      | @[Ii][Mm][Pp][Oo][Rr][Tt]{_IMPORT_GAP}(?:"(?P<idq>{_DQ_BODY})"|'(?P<isq>{_SQ_BODY})')
      | [Uu][Rr][Ll]\({_WS}*+
        (?:
            (?:"(?P<qdq>{_DQ_BODY})"|'(?P<qsq>{_SQ_BODY})'){_WS}*+\)
          | (?P<raw>(?:[^"'()\\ \t\n\r\f\x00-\x08\x0b\x0e-\x1f\x7f]++|{_ESCAPED})*+){_WS}*+\)
        )?
    )""",
    re.S | re.X,
)
# Inside an image-set(): strings (``sdq``/``ssq``), parentheses, and what else can hold those.
_IMAGE_SET_TOKEN = re.compile(
    rf"""[^()"'/\\]++|"(?P<sdq>{_DQ_BODY})"|'(?P<ssq>{_SQ_BODY})'|["']|/\*.*?(?:\*/|\Z)|/|\\.?|(?P<open>\()|\)""",
    re.S,
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


_ESCAPES: dict[str, Callable[[str], str]] = {
    '"': partial(_escape_string, quote='"'),
    "'": partial(_escape_string, quote="'"),
    "": _escape_unquoted,
}


def _new_text(
    origin: str,
    plan_of: Callable[[str], Plan | None],
    raw: str,
    quote: str,
    outer: Callable[[str], str] | None,
) -> str | None:
    """The new text for a URL written as ``raw`` (in ``quote``, or unquoted), or ``None``."""
    decoded = unescape(raw) if "\\" in raw else raw
    plan = plan_of(decoded)
    return None if plan is None else _splice(origin, raw, plan, decoded, _ESCAPES[quote], outer)


def _image_set_strings(text: str, pos: int) -> list[tuple[int, str, str]]:
    """``(start, raw, quote)`` of the strings directly inside the image-set( whose arguments start at
    ``pos`` (not those in nested functions such as ``type("image/avif")``)."""
    found: list[tuple[int, str, str]] = []
    depth = 0
    match = _IMAGE_SET_TOKEN.match
    while True:
        m = match(text, pos)
        if m is None:
            return found
        pos = m.end()
        token = m.group()
        if m.group("open") is not None:
            depth += 1
        elif token == ")":
            if depth == 0:
                return found
            depth -= 1
        elif depth == 0:
            group = m.lastgroup
            if group in ("sdq", "ssq"):
                found.append((m.start(group), m.group(group), '"' if group == "sdq" else "'"))


def rewrite_css(matcher: UrlMatcher, text: str, outer: Callable[[str], str] | None = None) -> str | None:
    """``text`` with its asset URLs on the CDN, or ``None`` when nothing changed. ``outer`` encodes the text
    that is written (not the text that is kept) for where the CSS sits: an HTML attribute value."""
    origin = matcher.origin
    plan_of = matcher.plan
    edits: list[tuple[int, int, str]] = []
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
        if group == "iset":
            # its strings are URLs; the scan goes on inside it, for its url() arguments
            for start, raw, quote in _image_set_strings(text, pos):
                new = _new_text(origin, plan_of, raw, quote, outer)
                if new is not None:
                    edits.append((start, start + len(raw), new))
            continue
        raw = m.group(group)
        new = _new_text(origin, plan_of, raw, _QUOTES[group], outer)
        if new is not None:
            start = m.start(group)
            edits.append((start, start + len(raw), new))
    if not edits:
        return None
    edits.sort()
    out: list[str] = []
    last = 0
    for start, end, new in edits:
        out.append(text[last:start])
        out.append(new)
        last = end
    out.append(text[last:])
    return "".join(out)
