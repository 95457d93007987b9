"""Asset URLs in HTML: a tokenizer that follows the HTML Standard's tokenization rules for tags, attributes,
comments and raw text, and copies every byte it does not rewrite.

It jumps from one markup token to the next with one compiled pattern (the text between tags is skipped at C
speed) and looks at a tag's attributes only when their text could hold a URL attribute; output is built from
slices of the input, so a page without asset URLs costs one scan and no copy.

Rewritten: ``src``, ``href`` and ``xlink:href`` (except on ``<base>``, whose target changes how the page's
relative URLs resolve, and ``<use>``, since browsers refuse cross-origin SVG ``<use>`` references),
``srcset``/``imagesrcset``/``data-srcset`` (every candidate, descriptors kept), ``data-src``, ``poster``,
``content`` of a ``<meta>`` whose ``property``, ``name`` or ``itemprop`` names an image (``og:image``,
``og:image:url``, ``og:image:secure_url``, ``twitter:image``, ``twitter:image:src``, ``image``: that is
``image`` alone or as the last ``:``-separated part, optionally followed by ``:url``, ``:secure_url`` or
``:src``), ``url(…)`` in ``style`` attributes and ``<style>`` blocks.

Left alone: the contents of ``<script>``, ``<textarea>``, ``<title>``, ``<xmp>``, ``<iframe>``, ``<noembed>``,
``<noframes>`` and ``<plaintext>`` (raw text; a ``<script>`` ends where browsers end it, also when it holds
``<!-- <script>…</script> -->``); comments, bogus
comments, doctypes and ``<![CDATA[…]]>`` sections (read up to ``]]>`` everywhere, which is at least as
much as a browser skips); a tag left unterminated at the end of the document (browsers drop it).
``<noscript>`` contents are markup for clients without scripts and are rewritten.

Attribute values: quoted or not, names in any case. Character references are decoded (by the attribute rules:
``&copy=2`` in a query string stays literal) to decide and to build the new URL; a value that had none keeps
every byte and gains only the origin (and an ``&amp;``-encoded version parameter); a value that had some is
written back with ``&`` and its quote character encoded, so the output stays valid.
"""

from __future__ import annotations

import re
from functools import partial
from html.entities import html5 as _HTML5_ENTITIES

from .css import rewrite_css
from .urls import UrlMatcher

_WS = "\\t\\n\\f\\r "
# An attribute value after its name (possessive / atomic throughout: the scan never backtracks, and no
# capture sits inside a possessive quantifier, which CPython 3.11's ``re`` gets wrong).
_VALUE = rf"""[{_WS}]*+=[{_WS}]*+(?:"[^"]*+"|'[^']*+'|[^{_WS}>]*+)"""
_ATTRS = rf"(?:[{_WS}/]++|[^{_WS}/>][^{_WS}/=>]*+(?:{_VALUE})?+)*+"
# Names of the attributes that we may rewrite (``content`` for <meta>); exact names are checked in Python.
_HIT = r"(?i:s(?:rc(?:set)?|tyle)|href|poster|content|data-src(?:set)?|imagesrcset|xlink:href)"
# Elements whose contents are raw text (not markup) for the tokenizer.
_RAW = "(?i:script|style|textarea|title|xmp|iframe|noembed|noframes|plaintext)"
# Attributes none of which may hold a URL.
_BORING_ATTRS = rf"(?:[{_WS}/]++|(?!{_HIT}[{_WS}/=>])[^{_WS}/>][^{_WS}/=>]*+(?:{_VALUE})?+)*+"
# Everything that needs no work: text, comments, CDATA, doctypes, end tags, and start tags of ordinary
# elements without an attribute that could hold a URL. A ``<`` that starts no tag is text.
_BORING = rf"""
    [^<]++
  | <(?:
        !--(?:-?>|.*?(?:--!?>|\Z))
      | !\[CDATA\[.*?(?:\]\]>|\Z)
      | [!?][^>]*+(?:>|\Z)
      | /(?:[A-Za-z][^{_WS}/>]*+{_ATTRS}(?:>|\Z)|[^>]*+(?:>|\Z))
      | (?!{_RAW}[{_WS}/>])[A-Za-z][^{_WS}/>]*+{_BORING_ATTRS}(?:>|\Z)
      | (?![A-Za-z/!?])
    )"""


def _next_pattern(xml: bool) -> re.Pattern[str]:
    """From where the last match ended: everything boring (skipped inside the pattern, at C speed), then the
    next start tag that needs a look: ``name``, ``attrs``, ``end`` (``None`` when the document ends inside
    the tag), and for a raw text element ``rn`` and its contents ``raw`` (up to its end tag). The first
    attribute that may hold a URL comes with it (``n``, its value in ``dq``, ``sq`` or ``uq``), and ``more``
    is the rest of the attributes when another such attribute follows (most tags have one). Used with
    ``match``, never ``search``: a search would resume inside a tag after a failed match.

    In XHTML (``xml``), ``<script .../>`` is a complete element; in HTML the slash is ignored and the raw
    text runs to the end tag.
    """
    raw_text = rf"(?P<raw>(?>(?:[^<]++|<(?!/(?i:(?P=rn))[{_WS}/>]))*))"
    contents = rf"(?:(?<=/>)|{raw_text})" if xml else raw_text
    return re.compile(
        rf"""(?:{_BORING})*+
    <(?P<name>(?P<rn>{_RAW})(?=[{_WS}/>])|[A-Za-z][^{_WS}/>]*+)
    (?P<attrs>{_BORING_ATTRS}
        (?:(?P<n>{_HIT})(?=[{_WS}/=>])
            (?>(?:[{_WS}]*+=[{_WS}]*+(?:"(?P<dq>[^"]*+)"|'(?P<sq>[^']*+)'|(?P<uq>[^{_WS}>]*+)))?)
            {_BORING_ATTRS}
            (?P<more>{_ATTRS})
        )?
    )
    (?:(?P<end>>)(?(rn){contents})|\Z)""",
        re.S | re.X,
    )


_NEXT = _next_pattern(xml=False)
_NEXT_XML = _next_pattern(xml=True)
# The next attribute that may hold a URL, skipping the others (anchored: ``match`` from the last one's end).
_HIT_ATTR = re.compile(
    rf"""(?>(?:[{_WS}/]++|(?!(?:{_HIT})(?=[{_WS}/=>]))[^{_WS}/>][^{_WS}/=>]*+(?:{_VALUE})?+)*)
        (?P<n>{_HIT})(?=[{_WS}/=>])
        (?>(?:[{_WS}]*+=[{_WS}]*+(?:"(?P<dq>[^"]*+)"|'(?P<sq>[^']*+)'|(?P<uq>[^{_WS}>]*+)))?)""",
    re.X,
)
# Any attribute (for <meta>, whose ``property``/``name`` decides about ``content``).
_ATTR = re.compile(
    rf"[{_WS}/]*+(?P<n>[^{_WS}/>][^{_WS}/=>]*+)"
    rf"""(?>(?:[{_WS}]*+=[{_WS}]*+(?:"(?P<dq>[^"]*+)"|'(?P<sq>[^']*+)'|(?P<uq>[^{_WS}>]*+)))?)"""
)
# What each attribute holds: one URL (``_HREF``: one URL, except on <base> and <use>), a srcset, CSS.
_URL, _HREF, _SRCSET, _STYLE = 0, 1, 2, 3
_KIND = {
    "src": _URL,
    "poster": _URL,
    "data-src": _URL,
    "href": _HREF,
    "xlink:href": _HREF,
    "srcset": _SRCSET,
    "imagesrcset": _SRCSET,
    "data-srcset": _SRCSET,
    "style": _STYLE,
}
_NO_HREF_TAGS = frozenset({"base", "use"})
_META_IMAGE = re.compile(r"(?:.*:)?image(?::(?:url|secure_url|src))?", re.I)
_CHARREF = re.compile(r"&(?:#[xX]([0-9A-Fa-f]+);?|#([0-9]+);?|([A-Za-z][A-Za-z0-9]*)(;?))")
_NEEDS_QUOTES = re.compile(r"[\t\n\f\r \"'=<>`]")
_ENDS_UNQUOTED = frozenset("\t\n\f\r >")
_HTML_WS = "\t\n\f\r "
# One srcset candidate: separators, the URL (no whitespace; trailing commas end it), then its descriptors up
# to a comma outside parentheses.
_SRCSET_CANDIDATE = re.compile(r"[\t\n\f\r ,]*+([^\t\n\f\r ]++)(?:(?<=,)|(?:[^,(]++|\([^)]*+\)?+)*+)")
# Code points the HTML Standard maps numeric references in the 0x80-0x9F range to (windows-1252).
_C1 = {
    0x80: 0x20AC, 0x82: 0x201A, 0x83: 0x0192, 0x84: 0x201E, 0x85: 0x2026, 0x86: 0x2020, 0x87: 0x2021,
    0x88: 0x02C6, 0x89: 0x2030, 0x8A: 0x0160, 0x8B: 0x2039, 0x8C: 0x0152, 0x8E: 0x017D, 0x91: 0x2018,
    0x92: 0x2019, 0x93: 0x201C, 0x94: 0x201D, 0x95: 0x2022, 0x96: 0x2013, 0x97: 0x2014, 0x98: 0x02DC,
    0x99: 0x2122, 0x9A: 0x0161, 0x9B: 0x203A, 0x9C: 0x0153, 0x9E: 0x017E, 0x9F: 0x0178,
}  # fmt: skip


def _unescape_attr(value: str) -> str:
    """Character references decoded as in an attribute value (HTML Standard, "character reference state")."""
    if "&" not in value:
        return value
    out: list[str] = []
    last = 0
    for m in _CHARREF.finditer(value):
        hexdigits, decimal, name, semicolon = m.groups()
        decoded: str | None
        if name is None:
            code = int(hexdigits, 16) if hexdigits is not None else int(decimal)
            if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                decoded = "\ufffd"
            else:
                decoded = chr(_C1.get(code, code))
        elif semicolon:
            decoded = _HTML5_ENTITIES.get(name + ";")
            if decoded is None:
                # the longest legacy name that is a prefix, e.g. ``&ampx;``; as in the no-``;`` case below
                # it is then followed by an alphanumeric, so it stays literal in an attribute
                continue
        else:
            # Without ``;``: only a legacy name (``&amp``, ``&copy``...) not followed by ``=`` is decoded;
            # ``name`` is the whole alphanumeric run, so a longer run (``&copyx``) never decodes here.
            if value[m.end() : m.end() + 1] == "=":
                continue
            decoded = _HTML5_ENTITIES.get(name)
            if decoded is None:
                continue
        out.append(value[last : m.start()])
        out.append(decoded)
        last = m.end()
    out.append(value[last:])
    return "".join(out)


_SCRIPT_DATA = re.compile(r"<!--|</(?i:script)(?=[\t\n\f\r />])")
_SCRIPT_ESCAPED = re.compile(r"-->|</(?i:script)(?=[\t\n\f\r />])|<(?i:script)(?=[\t\n\f\r />])")
_SCRIPT_DOUBLE = re.compile(r"-->|</(?i:script)(?=[\t\n\f\r />])")


def _script_end(text: str, pos: int) -> int:
    """Where a script's contents starting at ``pos`` end, by the HTML Standard's script data states: after
    ``<!--``, a ``<script`` makes the next ``</script`` part of the script ("double escaped"), until
    ``-->``."""
    state = _SCRIPT_DATA
    while True:
        m = state.search(text, pos)
        if m is None:
            return len(text)
        token = m.group()
        if token == "<!--":
            # ``-->`` may share the dashes of ``<!--`` (``<!-->``), so look again from the dashes
            state, pos = _SCRIPT_ESCAPED, m.start() + 2
        elif token == "-->":
            state, pos = _SCRIPT_DATA, m.end()
        elif token[1] == "/":  # an end tag
            if state is not _SCRIPT_DOUBLE:
                return m.start()
            state, pos = _SCRIPT_ESCAPED, m.end()
        else:  # ``<script`` while escaped
            state, pos = _SCRIPT_DOUBLE, m.end()


def _value_of(m: re.Match[str]) -> tuple[str, str, str] | None:
    """``(raw value, quote, group name)`` of an attribute match; ``None`` for an attribute without a value."""
    dq, sq, uq = m.group("dq", "sq", "uq")
    if dq is not None:
        return dq, '"', "dq"
    if sq is not None:
        return sq, "'", "sq"
    if uq is not None:
        return uq, "", "uq"
    return None


def _escape_attr(value: str, quote: str) -> str:
    if "&" in value:
        value = value.replace("&", "&amp;")
    if quote == '"':
        return value.replace('"', "&quot;")
    if quote == "'":
        return value.replace("'", "&#39;")
    return value


class HtmlRewriter:
    __slots__ = ("_matcher", "_next", "_origin")

    def __init__(self, matcher: UrlMatcher, *, xml: bool = False) -> None:
        """``xml``: the page is XHTML (``application/xhtml+xml``), where ``<script/>`` has no contents."""
        self._matcher = matcher
        self._origin = matcher.origin
        self._next = _NEXT_XML if xml else _NEXT

    # -- attribute values ------------------------------------------------------------------------------------
    def _url_value(self, raw: str, quote: str) -> str | None:
        """New text for an attribute value holding one URL (``raw`` as written), or ``None``."""
        decoded = _unescape_attr(raw) if "&" in raw else raw
        # Browsers strip leading and trailing ASCII whitespace from URL attributes; so do we, and keep it.
        stripped = decoded.strip(_HTML_WS)
        plan = self._matcher.plan(stripped)
        if plan is None:
            return None
        drop, insert_at, tail = plan
        origin = self._origin
        if raw == decoded:
            if stripped is raw:
                if not tail:
                    return origin + raw[drop:]
                return origin + raw[drop:insert_at] + _escape_attr(tail, quote) + raw[insert_at:]
            lead = decoded.index(stripped)
            return (
                raw[:lead]
                + origin
                + raw[lead + drop : lead + insert_at]
                + _escape_attr(tail, quote)
                + raw[lead + insert_at :]
            )
        # The value has character references. Keep the author's text for the part we keep when it holds
        # the dropped scheme and host literally (the usual case); else write the whole value back encoded.
        raw_url = raw.strip(_HTML_WS)
        if raw_url.startswith(stripped[:drop]) and (not tail or insert_at == len(stripped)):
            lead = raw.index(raw_url)
            return (
                raw[:lead] + origin + raw_url[drop:] + _escape_attr(tail, quote) + raw[lead + len(raw_url) :]
            )
        lead = decoded.index(stripped)
        new_url = origin + stripped[drop:insert_at] + tail + stripped[insert_at:]
        return _encode_attr(decoded[:lead] + new_url + decoded[lead + len(stripped) :], quote)

    def _srcset_value(self, raw: str, quote: str) -> str | None:
        decoded = _unescape_attr(raw) if "&" in raw else raw
        if raw == decoded:  # no character references: keep the author's text, encode what we add
            return self._rewrite_srcset(raw, quote)
        new = self._rewrite_srcset(decoded, None)
        return None if new is None else _encode_attr(new, quote)

    def _rewrite_srcset(self, value: str, quote: str | None) -> str | None:
        """Every candidate URL of a ``srcset`` (HTML Standard "parse a srcset attribute"), descriptors
        kept."""
        plan_of = self._matcher.plan
        origin = self._origin
        out: list[str] = []
        last = 0
        for m in _SRCSET_CANDIDATE.finditer(value):
            start, url_end = m.span(1)
            url = m.group(1)
            if url[-1] == ",":  # a URL ending in commas has no descriptors; the commas are not part of it
                url = url.rstrip(",")
                url_end = start + len(url)
            plan = plan_of(url)
            if plan is not None:
                drop, insert_at, tail = plan
                if tail and quote is not None:
                    tail = _escape_attr(tail, quote)
                out.append(value[last:start])
                out.append(origin + url[drop:insert_at] + tail + url[insert_at:])
                last = url_end
        if not out:
            return None
        out.append(value[last:])
        return "".join(out)

    def _style_value(self, raw: str, quote: str) -> str | None:
        decoded = _unescape_attr(raw) if "&" in raw else raw
        if raw == decoded:  # no character references: keep the author's text, encode what we add
            return rewrite_css(self._matcher, raw, partial(_escape_attr, quote=quote))
        new = rewrite_css(self._matcher, decoded)
        return None if new is None else _encode_attr(new, quote)

    # -- tags -----------------------------------------------------------------------------------------------
    def _rewrite_meta(self, text: str, start: int, end: int) -> list[tuple[int, int, str]]:
        """``content`` of a <meta> whose ``property``, ``name`` or ``itemprop`` names an image."""
        image = False
        content: tuple[int, int, str, str] | None = None
        seen: set[str] = set()
        pos = start
        while pos < end:
            m = _ATTR.match(text, pos, end)
            if m is None or m.end() == pos:
                break
            pos = m.end()
            attr = m.group("n").lower()
            if attr in seen:
                continue
            seen.add(attr)
            value = _value_of(m)
            if value is None:
                continue
            raw, quote, group = value
            if attr in ("property", "name", "itemprop"):
                if _META_IMAGE.fullmatch(_unescape_attr(raw).strip(_HTML_WS)):
                    image = True
            elif attr == "content":
                content = (m.start(group), m.end(group), raw, quote)
        if not image or content is None:
            return []
        cstart, cend, raw, quote = content
        new = self._url_value(raw, quote)
        return [] if new is None else [(cstart, cend, new if quote else _requote(new, raw))]

    def _new_value(self, attr: str, raw: str, quote: str, no_href: bool) -> str | None:
        """The new text of attribute ``attr`` (lower case) written as ``raw``, or ``None``."""
        kind = _KIND.get(attr)
        if kind is None or (kind == _HREF and no_href):
            return None
        if kind == _SRCSET:
            return self._srcset_value(raw, quote)
        if kind == _STYLE:
            return self._style_value(raw, quote)
        if raw[:1] in ("/", "h", "H") and raw[-1] > " " and "&" not in raw:
            # the common value, fast: one URL without character references or surrounding whitespace
            plan = self._matcher.plan(raw)
            if plan is None:
                return None
            drop, insert_at, tail = plan
            if tail:
                tail = _escape_attr(tail, quote)
            return self._origin + raw[drop:insert_at] + tail + raw[insert_at:]
        return self._url_value(raw, quote)

    def rewrite(self, text: str) -> str | None:
        """``text`` with its asset URLs on the CDN, or ``None`` when nothing changed."""
        out: list[str] = []
        last = 0
        pos = 0
        match = self._next.match
        new_value = self._new_value
        while True:
            m = match(text, pos)
            if m is None:
                break
            pos = m.end()
            if m.group("end") is None:  # end of document inside a tag: browsers drop the tag
                break
            first = m.group("n")
            if first is not None:
                name = m.group("name").lower()
                if name == "meta":
                    for estart, eend, replacement in self._rewrite_meta(text, *m.span("attrs")):
                        out.append(text[last:estart])
                        out.append(replacement)
                        last = eend
                else:
                    no_href = name in _NO_HREF_TAGS
                    attr = first.lower()
                    value = _value_of(m)
                    if (
                        value is not None
                        and (new := new_value(attr, value[0], value[1], no_href)) is not None
                    ):
                        raw, quote, group = value
                        vstart, vend = m.span(group)
                        out.append(text[last:vstart])
                        out.append(new if quote else _requote(new, raw))
                        last = vend
                    more_start, more_end = m.span("more")
                    if more_end > more_start:
                        for vstart, vend, replacement in self._more_attributes(
                            text, more_start, more_end, attr, no_href
                        ):
                            out.append(text[last:vstart])
                            out.append(replacement)
                            last = vend
            rn = m.group("rn")
            if rn is not None:
                rn = rn.lower()
                if rn == "style":
                    start, end = m.span("raw")
                    css = rewrite_css(self._matcher, text[start:end])
                    if css is not None:
                        out.append(text[last:start])
                        out.append(css)
                        last = end
                elif rn == "script" and "<!--" in text[m.start("raw") : m.end("raw")]:
                    # an escaped script (``<!-- <script>…</script> -->``) may run past its first end tag
                    pos = max(pos, _script_end(text, m.start("raw")))
                elif rn == "plaintext":  # nothing after it is markup
                    break
        if not out:
            return None
        out.append(text[last:])
        return "".join(out)

    def _more_attributes(
        self, text: str, start: int, end: int, first: str, no_href: bool
    ) -> list[tuple[int, int, str]]:
        """Replacements for the attributes after the first one that may hold a URL (named ``first``)."""
        edits: list[tuple[int, int, str]] = []
        seen = [first]
        pos = start
        while True:
            h = _HIT_ATTR.match(text, pos, end)
            if h is None:
                break
            pos = h.end()
            attr = h.group("n").lower()
            if attr in seen:  # a repeated attribute is ignored by browsers
                continue
            seen.append(attr)
            value = _value_of(h)
            if value is None:
                continue
            raw, quote, group = value
            new = self._new_value(attr, raw, quote, no_href)
            if new is not None:
                vstart, vend = h.span(group)
                edits.append((vstart, vend, new if quote else _requote(new, raw)))
        return edits


_NON_ASCII = re.compile(r"[^\x00-\x7f\ud800-\udfff]")  # lone surrogates: undecodable bytes, kept


def _encode_attr(value: str, quote: str) -> str:
    """A decoded value written back whole: also non-ASCII characters as references, since the value may have
    held them as references in a page whose charset cannot encode them."""
    value = _escape_attr(value, quote)
    if value.isascii():
        return value
    return _NON_ASCII.sub(lambda m: f"&#x{ord(m.group()):X};", value)


def _requote(new: str, raw: str) -> str:
    """An unquoted value gets double quotes if the new text would end it (whitespace, ``>``) or holds a
    character that is a parse error there and that the author's value did not already hold."""
    needed = set(_NEEDS_QUOTES.findall(new))
    if not needed and new:
        return new
    if new and needed <= set(raw) and not (needed & _ENDS_UNQUOTED):
        return new
    return '"' + new.replace('"', "&quot;") + '"'
