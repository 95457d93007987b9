"""``AssetRewriter``: one configured rewriter for URLs, bodies by media type, and ``Link`` headers (pure)."""

from __future__ import annotations

import re

from .css import rewrite_css
from .html import HtmlRewriter
from .jsontext import rewrite_json
from .link import rewrite_link
from .urls import CdnConfig, UrlMatcher

_CHARSET_PARAM = re.compile(r";\s*charset\s*=\s*\"?([^\";\s]+)", re.I)
_HTML = frozenset({"text/html"})
_CSS = frozenset({"text/css"})


def _kind(media_type: str) -> str | None:
    """``html``, ``xhtml``, ``css``, ``json`` or ``None``; ``media_type`` may have parameters."""
    essence = media_type.split(";", 1)[0].strip().lower()
    if essence in _HTML:
        return "html"
    if essence == "application/xhtml+xml":
        return "xhtml"
    if essence in _CSS:
        return "css"
    if essence == "application/json" or (essence.endswith("+json") and "/" in essence):
        return "json"
    return None


def _decode(body: bytes, charset: str | None) -> tuple[str, str] | None:
    """``(text, codec)``; ``None`` when the charset is unknown to Python.

    Bytes that are not valid in the charset (a stray byte in a UTF-8 page) are carried through as lone
    surrogates (``surrogateescape``) and written back exactly as they came: the page is rewritten and never
    corrupted, where replacement characters would change it and a refusal would leave its assets behind.
    """
    codec = (charset or "utf-8").strip().strip('"').strip("'").lower() or "utf-8"
    try:
        text = body.decode(codec, "surrogateescape")
    except LookupError:
        return None
    except UnicodeDecodeError:  # pragma: no cover - codecs without surrogateescape support (none in stdlib)
        return None
    return text, codec


class AssetRewriter:
    """Rewrites asset URLs to ``config.origin``; every method returns ``None`` when nothing changes."""

    __slots__ = ("_config", "_html", "_matcher", "_xhtml")

    def __init__(self, config: CdnConfig) -> None:
        self._config = config
        self._matcher = UrlMatcher(config)
        self._html = HtmlRewriter(self._matcher)
        self._xhtml = HtmlRewriter(self._matcher, xml=True)

    @property
    def config(self) -> CdnConfig:
        return self._config

    def rewrite_url(self, url: str) -> str | None:
        """The CDN URL for ``url``, or ``None`` when it is not an asset URL to rewrite."""
        return self._matcher.rewrite(url)

    def handles(self, media_type: str) -> bool:
        """True for HTML, XHTML, CSS, JSON and ``+json`` media types (parameters allowed)."""
        return _kind(media_type) is not None

    def rewrite_body(self, media_type: str, body: bytes, charset: str | None = None) -> bytes | None:
        """The rewritten body (in the same charset), or ``None`` when nothing changed, the type is not handled
        or the charset is unknown. The charset is ``charset``, else the ``charset`` parameter of
        ``media_type``, else UTF-8."""
        kind = _kind(media_type)
        if kind is None or not body:
            return None
        if charset is None:
            m = _CHARSET_PARAM.search(media_type)
            if m is not None:
                charset = m.group(1)
        decoded = _decode(body, charset)
        if decoded is None:
            return None
        text, codec = decoded
        if kind == "html":
            new = self._html.rewrite(text)
        elif kind == "xhtml":
            new = self._xhtml.rewrite(text)
        elif kind == "css":
            new = rewrite_css(self._matcher, text)
        else:
            new = rewrite_json(self._matcher, text)
        if new is None:
            return None
        try:
            return new.encode(codec, "surrogateescape")
        except UnicodeEncodeError:
            # Only inserted text can fail to encode (the origin and version are ASCII, kept text came from
            # this codec), e.g. a URL with a character reference that had to be written back decoded.
            return None

    def rewrite_link_header(self, value: str) -> str | None:
        """An RFC 8288 ``Link`` value with its asset targets rewritten, or ``None`` when unchanged."""
        return rewrite_link(self._matcher, value)
