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
``<noframes>`` and ``<plaintext>`` (raw text; a ``<script>`` ends at the first ``</script``, without the
rarely used "double escaped" rule, which can only make us skip less than a browser would); comments, bogus
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
from html.entities import html5 as _HTML5_ENTITIES

from .css import rewrite_css
from .urls import UrlMatcher

_WS = "\\t\\n\\f\\r "
_ATTRS = (
    rf"(?:[{_WS}/]++|[^{_WS}/>][^{_WS}/=>]*+"
    rf"(?:[{_WS}]*+=[{_WS}]*+(?:\"[^\"]*+\"|'[^']*+'|[^{_WS}>]*+))?+)*+"
)
# One markup token; group ``name`` is set only for a start tag.
_TOKEN = re.compile(
    rf"""<(?:
        !--(?:-?>|.*?(?:--!?>|\Z))
      | !\[CDATA\[.*?(?:\]\]>|\Z)
      | [!?][^>]*+(?:>|\Z)
      | /(?:[A-Za-z][^{_WS}/>]*+{_ATTRS}(?:>|\Z)|[^>]*+(?:>|\Z))
      | (?P<name>[A-Za-z][^{_WS}/>]*+)(?P<attrs>{_ATTRS})(?P<end>>|\Z)
    )""",
    re.S | re.X,
)
_ATTR = re.compile(
    rf"[{_WS}/]*+(?P<n>[^{_WS}/>][^{_WS}/=>]*+)"
    rf"(?:[{_WS}]*+=[{_WS}]*+(?:\"(?P<dq>[^\"]*+)\"|'(?P<sq>[^']*+)'|(?P<uq>[^{_WS}>]*+)))?+"
)
# Could this attribute text hold an attribute that we rewrite? (Cheap pre-check; false positives are fine.)
_MAYBE = re.compile(r"(?i:src|href|poster|style|content)[\t\n\f\r ]*=")
_RAW_TEXT = frozenset({"script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes"})
_URL_ATTRS = frozenset({"src", "href", "xlink:href", "poster", "data-src"})
_SRCSET_ATTRS = frozenset({"srcset", "imagesrcset", "data-srcset"})
_HREF_ATTRS = frozenset({"href", "xlink:href"})
_NO_HREF_TAGS = frozenset({"base", "use"})
_META_IMAGE = re.compile(r"(?:.*:)?image(?::(?:url|secure_url|src))?", re.I)
_CHARREF = re.compile(r"&(?:#[xX]([0-9A-Fa-f]+);?|#([0-9]+);?|([A-Za-z][A-Za-z0-9]*)(;?))")
_NEEDS_QUOTES = re.compile(r"[\t\n\f\r \"'=<>`]")
_LEADING_WS = re.compile(r"[\t\n\f\r ]*")
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


def _escape_attr(value: str, quote: str) -> str:
    value = value.replace("&", "&amp;")
    if quote == '"':
        return value.replace('"', "&quot;")
    if quote == "'":
        return value.replace("'", "&#39;")
    return value


class HtmlRewriter:
    __slots__ = ("_matcher", "_origin")

    def __init__(self, matcher: UrlMatcher) -> None:
        self._matcher = matcher
        self._origin = matcher.origin

    # -- attribute values ------------------------------------------------------------------------------------
    def _url_value(self, raw: str, quote: str) -> str | None:
        """New text for an attribute value holding one URL (``raw`` as written), or ``None``."""
        decoded = _unescape_attr(raw) if "&" in raw else raw
        # Browsers strip leading and trailing ASCII whitespace from URL attributes; so do we, and keep it.
        lead = _LEADING_WS.match(decoded).end()  # type: ignore[union-attr]
        stripped = decoded[lead:].rstrip("\t\n\f\r ")
        plan = self._matcher.plan(stripped)
        if plan is None:
            return None
        origin = self._origin
        if raw == decoded:
            drop, insert_at, tail = plan
            return (
                raw[:lead]
                + origin
                + raw[lead + drop : lead + insert_at]
                + _escape_attr(tail, quote)
                + raw[lead + insert_at :]
            )
        drop, insert_at, tail = plan
        new_url = origin + stripped[drop:insert_at] + tail + stripped[insert_at:]
        trail = decoded[lead + len(stripped) :]
        return _escape_attr(decoded[:lead] + new_url + trail, quote)

    def _srcset_value(self, raw: str, quote: str) -> str | None:
        decoded = _unescape_attr(raw) if "&" in raw else raw
        new = self._rewrite_srcset(decoded)
        if new is None:
            return None
        # Without references in ``raw`` this only encodes the ``&`` of a version parameter.
        return _escape_attr(new, quote)

    def _rewrite_srcset(self, value: str) -> str | None:
        """Every candidate URL of a ``srcset`` (HTML Standard "parse a srcset attribute"), descriptors
        kept."""
        plan_of = self._matcher.plan
        origin = self._origin
        out: list[str] = []
        last = 0
        pos = 0
        n = len(value)
        while pos < n:
            # skip whitespace and commas
            while pos < n and value[pos] in "\t\n\f\r ,":
                pos += 1
            if pos >= n:
                break
            start = pos
            while pos < n and value[pos] not in "\t\n\f\r ":
                pos += 1
            end = pos
            url_end = end
            if value[end - 1] == ",":
                while url_end > start and value[url_end - 1] == ",":
                    url_end -= 1
            else:
                # descriptors: up to a comma outside parentheses
                depth = 0
                while pos < n:
                    c = value[pos]
                    if c == "(":
                        depth += 1
                    elif c == ")":
                        depth = max(0, depth - 1)
                    elif c == "," and depth == 0:
                        break
                    pos += 1
            url = value[start:url_end]
            plan = plan_of(url)
            if plan is not None:
                drop, insert_at, tail = plan
                out.append(value[last:start])
                out.append(origin + url[drop:insert_at] + tail + url[insert_at:])
                last = url_end
        if not out:
            return None
        out.append(value[last:])
        return "".join(out)

    def _style_value(self, raw: str, quote: str) -> str | None:
        decoded = _unescape_attr(raw) if "&" in raw else raw
        new = rewrite_css(self._matcher, decoded)
        if new is None:
            return None
        return _escape_attr(new, quote)

    # -- tags -----------------------------------------------------------------------------------------------
    def _rewrite_tag(self, text: str, start: int, end: int, name: str) -> list[tuple[int, int, str]]:
        """Replacements ``(start, end, new)`` for the attributes in ``text[start:end]`` of a ``name`` tag."""
        edits: list[tuple[int, int, str]] = []
        meta_image = False
        content: tuple[int, int, str, str] | None = None
        seen: set[str] = set()
        pos = start
        match = _ATTR.match
        while pos < end:
            m = match(text, pos, end)
            if m is None:
                break
            pos = m.end()
            if pos == m.start():
                break
            attr = m.group("n").lower()
            if attr in seen:  # a duplicate attribute is ignored by browsers
                continue
            seen.add(attr)
            if m.group("dq") is not None:
                group, quote = "dq", '"'
            elif m.group("sq") is not None:
                group, quote = "sq", "'"
            elif m.group("uq") is not None:
                group, quote = "uq", ""
            else:
                continue
            raw = m.group(group)
            if name == "meta":
                if attr in ("property", "name", "itemprop"):
                    if _META_IMAGE.fullmatch(_unescape_attr(raw).strip()):
                        meta_image = True
                elif attr == "content":
                    content = (m.start(group), m.end(group), raw, quote)
                continue
            if attr in _URL_ATTRS:
                if attr in _HREF_ATTRS and name in _NO_HREF_TAGS:
                    continue
                new = self._url_value(raw, quote)
            elif attr in _SRCSET_ATTRS:
                new = self._srcset_value(raw, quote)
            elif attr == "style":
                new = self._style_value(raw, quote)
            else:
                continue
            if new is not None:
                edits.append((m.start(group), m.end(group), _requote(new, quote)))
        if meta_image and content is not None:
            cstart, cend, raw, quote = content
            new = self._url_value(raw, quote)
            if new is not None:
                edits.append((cstart, cend, _requote(new, quote)))
                edits.sort()
        return edits

    def rewrite(self, text: str) -> str | None:
        """``text`` with its asset URLs on the CDN, or ``None`` when nothing changed."""
        out: list[str] = []
        last = 0
        pos = 0
        n = len(text)
        search = _TOKEN.search
        maybe = _MAYBE.search
        find = text.find
        while True:
            lt = find("<", pos)
            if lt < 0:
                break
            m = search(text, lt)
            if m is None:
                break
            pos = m.end()
            if m.group("name") is None:
                continue
            if not m.group("end"):  # end of document inside a tag: browsers drop the tag
                break
            attrs_start, attrs_end = m.span("attrs")
            name = m.group("name").lower()
            if attrs_end > attrs_start and maybe(text, attrs_start, attrs_end) is not None:
                for estart, eend, new in self._rewrite_tag(text, attrs_start, attrs_end, name):
                    out.append(text[last:estart])
                    out.append(new)
                    last = eend
            if name in _RAW_TEXT:
                close = _find_end_tag(text, pos, name)
                if name == "style":
                    css = rewrite_css(self._matcher, text[pos:close])
                    if css is not None:
                        out.append(text[last:pos])
                        out.append(css)
                        last = close
                pos = close
            elif name == "plaintext":
                break
        if not out:
            return None
        out.append(text[last:n])
        return "".join(out)


_END_TAGS: dict[str, re.Pattern[str]] = {}


def _find_end_tag(text: str, pos: int, name: str) -> int:
    pattern = _END_TAGS.get(name)
    if pattern is None:
        pattern = _END_TAGS[name] = re.compile(rf"</{name}(?=[\t\n\f\r />])", re.I)
    m = pattern.search(text, pos)
    return len(text) if m is None else m.start()


def _requote(new: str, quote: str) -> str:
    """An unquoted value that now needs quotes gets double quotes (``&`` and ``"`` already encoded)."""
    if quote or not (new == "" or _NEEDS_QUOTES.search(new)):
        return new
    return '"' + new.replace('"', "&quot;") + '"'
