"""Asset URLs in an RFC 8288 ``Link`` header value (``</static/app.css>; rel=preload; as=style, …``).

Each link's target (between ``<`` and ``>``) is rewritten if it is an asset URL, whatever its relation type;
parameters (including ``anchor``) and their quoted strings are kept as written.
"""

from __future__ import annotations

import re

from .urls import UrlMatcher

# One link-value: the target, then parameters up to a comma outside a quoted string.
_LINK = re.compile(r'[ \t,]*<([^>]*)>((?:[^,"]|"(?:[^"\\]|\\.)*")*)', re.S)


def rewrite_link(matcher: UrlMatcher, value: str) -> str | None:
    """``value`` with its asset link targets on the CDN, or ``None`` when nothing changed."""
    if "<" not in value:
        return None
    out: list[str] = []
    last = 0
    pos = 0
    n = len(value)
    while pos < n:
        m = _LINK.match(value, pos)
        if m is None or m.end() == pos:
            break  # not a link-value list we understand: leave the rest alone
        pos = m.end()
        target = m.group(1)
        # RFC 8288 allows whitespace around the URI-reference inside the brackets
        stripped = target.strip(" \t")
        new = matcher.rewrite(stripped)
        if new is None:
            continue
        start = m.start(1) + target.index(stripped) if stripped else m.start(1)
        out.append(value[last:start])
        out.append(new)
        last = start + len(stripped)
    if not out:
        return None
    out.append(value[last:])
    return "".join(out)
