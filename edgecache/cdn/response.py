"""A whole response through the asset rewriter: codings, Content-Length, validators and ``Link``.

Pure (no I/O): the front end hands in status, headers and the complete body, and gets back the headers and
body to store and send, with a short token saying what happened (the counter label):

- ``rewritten``: the body changed; Content-Length recomputed, a strong or weak ``ETag`` replaced by a
  derived weak one (``W/"<opaque>~cdn<fingerprint>"``), digests of the old body dropped.
- ``unchanged``: nothing to rewrite in the body (``Link`` may still have changed).
- ``too-large``, ``encoding``, ``decode-error``: the body passed untouched (above the size cap, in a
  content coding not available here or stacked, or not valid in its coding); ``error``: the rewriter
  raised (logged), the body passed untouched.

The derived validator carries the original one, so the cache revalidates upstream with the original
(``original_etag``) and presents the derived one to clients: the app never sees a validator it did not mint.
The fingerprint covers the CDN configuration and the edgecache version, so a changed configuration (or
rewriter) never validates a body rewritten under the old one.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from edgecache.cdn import AssetRewriter, CdnConfig
from edgecache.cdn.encoding import CodingError, TooLarge, available_codings, decode, encode, single_coding

__all__ = ["RESULTS", "CdnResponses", "RawHeaders", "Rewrite"]

RawHeaders = list[tuple[bytes, bytes]]

logger = logging.getLogger("edgecache.cdn")

# Every token ``CdnResponses`` counts under, in a stable order (for metrics).
RESULTS = ("rewritten", "unchanged", "too-large", "encoding", "decode-error", "streaming", "error")

# Statuses whose body is never a whole representation to rewrite.
_NO_BODY_STATUSES = frozenset({204, 206, 304})
# Fields that describe the old body's bytes: dropped when the body changes.
_BODY_DIGESTS = frozenset({b"content-md5", b"digest", b"content-digest", b"repr-digest"})


@dataclass(frozen=True, slots=True)
class Rewrite:
    """What to send instead: ``headers`` and ``body``, and the result token (None when the body is not
    of a rewritable type: such responses are not counted)."""

    headers: RawHeaders
    body: bytes
    result: str | None


class CdnResponses:
    """Rewrites whole responses for one CDN configuration."""

    def __init__(self, config: CdnConfig, max_bytes: int, version: str = "") -> None:
        self.config = config
        self.rewriter = AssetRewriter(config)
        self.max_bytes = max_bytes
        seed = "\n".join(
            [version, config.origin, *config.paths, "", *config.public_hosts, config.version or ""]
        )
        self.fingerprint = hashlib.sha256(seed.encode()).hexdigest()[:12]
        self._strong_suffix = f"~cdn{self.fingerprint}".encode()
        self._weak_suffix = f"~cdnw{self.fingerprint}".encode()

    # -- deciding ---------------------------------------------------------------------------------------

    def wants_body(self, status: int, headers: RawHeaders) -> bool:
        """True when the body of this response is of a type the rewriter handles (and may be rewritten)."""
        if status < 200 or status in _NO_BODY_STATUSES:
            return False
        media_type = None
        for name, value in headers:
            lname = name.lower()
            if lname == b"content-type":
                media_type = value
            elif lname == b"content-range":
                return False  # a part of something: never a whole document
        if media_type is None:
            return False
        return self.rewriter.handles(_media_type(media_type)[0])

    def declared_too_large(self, headers: RawHeaders) -> bool:
        """The response says (Content-Length, identity coding) that its body is above the cap."""
        length = _get(headers, b"content-length")
        coding = single_coding(_text(_get(headers, b"content-encoding")))
        return (
            coding == "identity" and length is not None and length.isdigit() and int(length) > self.max_bytes
        )

    # -- rewriting --------------------------------------------------------------------------------------

    def rewrite(self, status: int, headers: RawHeaders, body: bytes, *, links: bool = True) -> Rewrite:
        """The response with its asset URLs rewritten: the body when of a handled type, and (unless
        ``links`` is false: done already) the ``Link`` fields."""
        if links:
            headers = self.rewrite_links(headers)
        if not self.wants_body(status, headers):
            return Rewrite(headers, body, None)
        media_type, charset = _media_type(_get(headers, b"content-type") or b"")
        coding = single_coding(_text(_get(headers, b"content-encoding")))
        if coding is None or coding not in available_codings():
            return Rewrite(headers, body, "encoding")  # stacked, or not available in this installation
        try:
            decoded = decode(coding, body, self.max_bytes)
        except TooLarge:
            return Rewrite(headers, body, "too-large")
        except CodingError:
            return Rewrite(headers, body, "decode-error")
        try:
            new = self.rewriter.rewrite_body(media_type, decoded, charset)
        except Exception:
            # A rewriter bug must never cost a response: the body goes out as the app sent it.
            logger.exception("edgecache: CDN rewrite failed; the body passes untouched")
            return Rewrite(headers, body, "error")
        if new is None or new == decoded:
            return Rewrite(headers, body, "unchanged")
        encoded = encode(coding, new)
        out: RawHeaders = []
        for name, value in headers:
            lname = name.lower()
            if lname == b"content-length" or lname in _BODY_DIGESTS:
                continue
            out.append((name, self.derive_etag(value) if lname == b"etag" else value))
        out.append((b"content-length", b"%d" % len(encoded)))
        return Rewrite(out, encoded, "rewritten")

    def rewrite_links(self, headers: RawHeaders) -> RawHeaders:
        """``Link`` fields with their asset URLs rewritten (the other fields as they are)."""
        if not any(name.lower() == b"link" for name, _ in headers):
            return headers
        out: RawHeaders = []
        for name, value in headers:
            new = (
                self.rewriter.rewrite_link_header(value.decode("latin-1"))
                if name.lower() == b"link"
                else None
            )
            out.append((name, value if new is None else new.encode("latin-1")))
        return out

    # -- validators -------------------------------------------------------------------------------------

    def derive_etag(self, value: bytes) -> bytes:
        """The validator of the rewritten body: weak, carrying the original one and the fingerprint."""
        value = value.strip()
        weak = value[:2] in (b"W/", b"w/")
        opaque = value[2:] if weak else value
        if len(opaque) < 2 or opaque[:1] != b'"' or opaque[-1:] != b'"' or self.is_derived(value):
            return value  # not an entity tag (or already ours): leave it to the policy to ignore
        return b'W/"' + opaque[1:-1] + (self._weak_suffix if weak else self._strong_suffix) + b'"'

    def is_derived(self, value: bytes) -> bool:
        return value.endswith((self._strong_suffix + b'"', self._weak_suffix + b'"'))

    def original_etag(self, value: bytes) -> bytes | None:
        """The app's validator behind a derived one, or None when ``value`` is not one of ours."""
        value = value.strip()
        if not value.startswith((b'W/"', b'w/"')):
            return None
        if value.endswith(self._strong_suffix + b'"'):
            return b'"' + value[3 : -len(self._strong_suffix) - 1] + b'"'
        if value.endswith(self._weak_suffix + b'"'):
            return b'W/"' + value[3 : -len(self._weak_suffix) - 1] + b'"'
        return None

    def original_if_none_match(self, value: bytes) -> bytes | None:
        """An ``If-None-Match`` list with our derived validators replaced by the originals (None when it
        holds none of ours)."""
        changed = False
        out = []
        for token in value.split(b","):
            original = self.original_etag(token)
            if original is not None:
                changed = True
            out.append(original if original is not None else token.strip())
        return b", ".join(out) if changed else None


def _get(headers: RawHeaders, name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def _media_type(value: bytes) -> tuple[str, str | None]:
    """``text/html; charset=utf-8`` → (``text/html``, ``utf-8``)."""
    text = value.decode("latin-1")
    media_type, _, params = text.partition(";")
    charset = None
    for param in params.split(";"):
        key, _, val = param.partition("=")
        if key.strip().lower() == "charset":
            charset = val.strip().strip('"') or None
    return media_type.strip().lower(), charset
