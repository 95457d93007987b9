"""TEMPORARY STAND-IN for the cdn-core branch's rewriter (local testing of the integration only).

Dropped when cdn-core is merged; never shipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["AssetRewriter", "CdnConfig"]


@dataclass(frozen=True, slots=True)
class CdnConfig:
    origin: str
    paths: tuple[str, ...]
    public_hosts: tuple[str, ...] = ()
    version: str | None = None

    def __post_init__(self) -> None:
        parts = urlsplit(self.origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ValueError(
                f"expected an http(s) base URL such as https://cdn.example.com, got {self.origin!r}"
            )
        if not self.paths:
            raise ValueError("no asset path prefixes")


_QUOTED = re.compile(rb"""(["'(<])(/[^"'()<>\s]*)""")


class AssetRewriter:
    def __init__(self, config: CdnConfig) -> None:
        self.config = config
        self._origin = config.origin.rstrip("/")

    def rewrite_url(self, url: str) -> str | None:
        if url.startswith("//") or not any(url.startswith(p) for p in self.config.paths):
            return None
        out = self._origin + url
        if self.config.version is not None:
            out += ("&" if "?" in out else "?") + "v=" + self.config.version
        return out

    def handles(self, media_type: str) -> bool:
        media_type = media_type.lower()
        return media_type in ("text/html", "text/css", "application/json") or media_type.endswith("+json")

    def rewrite_body(self, media_type: str, body: bytes, charset: str | None = None) -> bytes | None:
        def sub(m: re.Match[bytes]) -> bytes:
            new = self.rewrite_url(m.group(2).decode("latin-1"))
            return m.group(0) if new is None else m.group(1) + new.encode("latin-1")

        out = _QUOTED.sub(sub, body)
        return None if out == body else out

    def rewrite_link_header(self, value: str) -> str | None:
        out = _QUOTED.sub(
            lambda m: (
                m.group(0)
                if (new := self.rewrite_url(m.group(2).decode())) is None
                else m.group(1) + new.encode()
            ),
            value.encode(),
        ).decode()
        return None if out == value else out
