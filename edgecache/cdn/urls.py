"""Which URLs are asset URLs, and what they become on the CDN (pure: no I/O).

A URL is rewritten only when it is

- root-relative (``/static/a.png``) and its path lies under a configured prefix, matched on whole path
  segments (``/static/`` matches ``/static/a.png``, never ``/staticky``), or
- absolute ``http``/``https`` (or protocol-relative ``//host/...``) on one of the app's own public hosts, with
  such a path.

Everything else is left alone: other hosts, other schemes (``data:``, ``javascript:``, ``mailto:``),
fragment-only and relative references (``img/a.png``, ``../a.png``). So is a URL that a browser or the CDN
could resolve differently from how it reads: one with a dot segment (``/static/../admin``, also
percent-encoded as ``%2e%2e``), a backslash (browsers read it as ``/``), ASCII whitespace or control
characters (browsers drop tabs and newlines inside URLs; a string with a space is text, not a URL), or user
info (``https://user@host/``). Such URLs are refused rather than normalised: the rewrite never has to guess,
and ``https://cdn.example.com/base/static/../../admin`` cannot escape the CDN base path.

The query string and the fragment are kept as they are; with ``version`` set, ``v=<version>`` is added to the
query of URLs that do not carry a ``v`` parameter already.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

_HOST_PORT = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::[0-9]{1,5})?")
# Characters that a URL we rewrite may not contain anywhere: whitespace and controls (see the module
# docstring) and the backslash.
_REFUSED = r"\x00-\x20\x7f\\"
_REFUSED_CHARS = re.compile(f"[{_REFUSED}]")
# A dot segment, literal or percent-encoded (the URL standard treats ``%2e`` as ``.`` in path segments).
_DOT_SEGMENT = re.compile(r"/(?:\.|%2[eE]){1,2}(?=/|\Z)")
_V_PARAM = re.compile(r"(?:^|&)v(?:[=&]|$)")
_ABSOLUTE = re.compile(r"(?:[Hh][Tt][Tt][Pp]([Ss]?):)?//([^/?#]*)")


def _validate_origin(origin: str) -> str:
    if not isinstance(origin, str) or not origin:
        raise ValueError("cdn origin: expected an absolute http(s) URL such as 'https://cdn.example.com'")
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"cdn origin {origin!r}: expected an absolute http(s) URL such as 'https://cdn.example.com'"
        )
    if parts.query or parts.fragment or "?" in origin or "#" in origin:
        raise ValueError(f"cdn origin {origin!r}: must not have a query string or a fragment")
    if "@" in parts.netloc or not _HOST_PORT.fullmatch(parts.netloc):
        raise ValueError(f"cdn origin {origin!r}: the host must be a plain host[:port] (no user info)")
    if _REFUSED_CHARS.search(origin) or _DOT_SEGMENT.search(parts.path) or re.search(r"[\"'<>&`]", origin):
        raise ValueError(f"cdn origin {origin!r}: contains characters or dot segments that are not allowed")
    return origin.rstrip("/")


def _validate_path(path: str) -> str:
    if not isinstance(path, str) or not path.startswith("/") or path.startswith("//"):
        raise ValueError(f"cdn path {path!r}: expected a root-relative path prefix such as '/static/'")
    if _REFUSED_CHARS.search(path) or _DOT_SEGMENT.search(path) or "?" in path or "#" in path:
        raise ValueError(
            f"cdn path {path!r}: must be a plain path (no dot segments, query, fragment or spaces)"
        )
    return path


def _validate_host(host: str) -> str:
    if not isinstance(host, str) or not _HOST_PORT.fullmatch(host):
        raise ValueError(f"public host {host!r}: expected host or host:port, such as 'www.example.com'")
    return host.lower()


@dataclass(frozen=True, slots=True)
class CdnConfig:
    """What to rewrite and where to: validated on construction (``ValueError`` with the offending value).

    ``origin``: the CDN base URL (``https://cdn.example.com`` or ``https://cdn.example.com/base``).
    ``paths``: root-relative prefixes that are assets (``/static/``); a prefix without a trailing slash
    matches that exact path and everything below it. ``public_hosts``: the app's own ``host[:port]``
    names; absolute URLs on them are rewritten too. ``version``: added as ``v=<version>`` to rewritten URLs
    without a ``v``.
    """

    origin: str
    paths: tuple[str, ...]
    public_hosts: tuple[str, ...] = ()
    version: str | None = None

    def __post_init__(self) -> None:
        origin = _validate_origin(self.origin)
        if isinstance(self.paths, str):
            raise ValueError("cdn paths: expected a sequence of path prefixes, not one string")
        paths = tuple(_validate_path(p) for p in self.paths)
        if not paths:
            raise ValueError("cdn paths: at least one path prefix such as '/static/' is needed")
        if isinstance(self.public_hosts, str):
            raise ValueError("public hosts: expected a sequence of host[:port] names, not one string")
        hosts = tuple(_validate_host(h) for h in self.public_hosts)
        cdn_host = urlsplit(origin).netloc.lower()
        if cdn_host in hosts:
            # Rewritten URLs would be rewritten again by a second pass (or a second node).
            raise ValueError(f"public host {cdn_host!r} is the CDN origin's own host")
        if self.version is not None and (not isinstance(self.version, str) or not self.version):
            raise ValueError("cdn version: expected a non-empty string or None")
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "paths", paths)
        object.__setattr__(self, "public_hosts", hosts)


# How to turn a URL ``u`` into its CDN form, ``(drop, insert_at, query_tail)``:
# ``origin + u[drop:insert_at] + query_tail + u[insert_at:]``. ``drop`` is the length of the scheme and
# authority of an absolute URL (0 for a root-relative one); ``insert_at`` is where the fragment starts (or the
# end); ``query_tail`` is ``?v=…``/``&v=…`` or empty. Callers that hold the URL in an encoded form (HTML
# character references, CSS or JSON escapes) use it to keep the author's text for what they do not change.
# (A plain tuple: this is built once per asset URL, on the hot path.)
Plan = tuple[int, int, str]


class UrlMatcher:
    """The decision for one URL, and its new form (see the module docstring for the rules)."""

    __slots__ = ("_hosts", "_origin", "_path_re", "_version")

    def __init__(self, config: CdnConfig) -> None:
        self._origin = config.origin
        hosts: set[str] = set()
        for host in config.public_hosts:
            hosts.add(host)
            # ``host`` and ``host:443`` (https) / ``host:80`` (http) are the same origin; we accept both
            # spellings for either scheme, since the scheme of the page is not known here.
            for default in (":80", ":443"):
                if host.endswith(default):
                    hosts.add(host[: -len(default)])
        self._hosts = frozenset(hosts)
        alternatives = []
        for path in sorted(config.paths, key=len, reverse=True):
            if path.endswith("/"):
                alternatives.append(re.escape(path))
            else:
                alternatives.append(re.escape(path) + r"(?=[/?#]|\Z)")
        # path (under a prefix), query, fragment; none may hold a refused character (used with fullmatch)
        self._path_re = re.compile(
            rf"(?:{'|'.join(alternatives)})[^?#{_REFUSED}]*(?:\?(?P<q>[^#{_REFUSED}]*))?(?P<f>#[^{_REFUSED}]*)?"
        )
        self._version = None if config.version is None else quote(config.version, safe="")

    @property
    def origin(self) -> str:
        return self._origin

    def plan(self, url: str) -> Plan | None:
        """How to rewrite ``url``, or ``None`` when it is not an asset URL to rewrite."""
        first = url[:1]
        if first == "/" and url[1:2] != "/":
            drop = 0
        elif first in ("/", "h", "H"):
            m = _ABSOLUTE.match(url)
            if m is None:
                return None
            scheme_s, authority = m.groups()
            authority = authority.lower()
            if scheme_s is None:  # protocol-relative: the page's scheme, so either default port
                authority = _strip_suffix(_strip_suffix(authority, ":443"), ":80")
            else:
                authority = _strip_suffix(authority, ":443" if scheme_s else ":80")
            if authority not in self._hosts:
                return None
            drop = m.end()
        else:
            return None
        m = self._path_re.fullmatch(url, drop)
        if m is None:
            return None
        query_start = m.start("q")
        end = m.start("f")
        if end < 0:
            end = len(url)
        path = url[drop : end if query_start < 0 else query_start - 1]
        if ("/." in path or "%2" in path) and _DOT_SEGMENT.search(path):
            return None
        tail = ""
        if self._version is not None:
            if query_start < 0:
                tail = "?v=" + self._version
            elif query_start == end:
                tail = "v=" + self._version
            elif not _has_v(url[query_start:end]):
                tail = "&v=" + self._version
        return drop, end, tail

    def rewrite(self, url: str) -> str | None:
        plan = self.plan(url)
        if plan is None:
            return None
        return apply(self._origin, url, plan)


def apply(origin: str, url: str, plan: Plan) -> str:
    drop, insert_at, tail = plan
    if not tail:
        return origin + url[drop:]
    return origin + url[drop:insert_at] + tail + url[insert_at:]


def _strip_suffix(value: str, suffix: str) -> str:
    return value[: -len(suffix)] if value.endswith(suffix) else value


def _has_v(query: str) -> bool:
    return _V_PARAM.search(query) is not None
