"""Access logs as traces: nginx/Apache common and combined formats, and JSON lines.

Each line becomes one request keyed exactly as the cache keys it: the target's query string goes through
the cache's own ``QueryFilter`` (``query_ignore`` / ``query_allow``) and the URI through ``uri_components``
(host lower-cased, default port dropped), so two log lines share a key exactly when edgecache would serve
them from one entry (headers named by ``Vary`` and key recipes are not in logs and are not modelled).

What is kept: GET and HEAD requests whose status the cache could store by default (``policy``'s
``DEFAULT_CACHEABLE_STATUSES``) or a 304 (a revalidation of something stored). Other methods and statuses
are counted and skipped. Lines that do not parse are counted as malformed and skipped, and the first few are
kept with their line numbers for the report. An object's size is the largest body size logged for its key
(a 304 or a HEAD logs no body, but the object it refers to has one).

Formats (``--log-format``):

- ``common``: ``host ident user [10/Oct/2000:13:55:36 -0700] "GET /a?b HTTP/1.1" 200 2326``
- ``combined``: common plus ``"referer" "user-agent"``
- ``json``: one object per line with ``path`` (or ``uri``, ``request_uri``, ``url``, or a ``request`` line),
  ``status``, ``bytes`` (or ``body_bytes_sent``, ``bytes_sent``, ``size``), ``time`` (or ``timestamp``,
  ``time_local``: epoch seconds as a number or text, ISO 8601, or the common-log form), and optionally
  ``method`` (default GET) and ``host``.
- ``auto``: JSON if the first non-blank line starts with ``{``, otherwise common/combined per line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

from edgecache.core.keys import QueryFilter, Uri, uri_components
from edgecache.core.policy import CACHEABLE_METHODS, DEFAULT_CACHEABLE_STATUSES
from edgecache.lab.traces import Trace

FORMATS = ("auto", "common", "combined", "json")
KEPT_STATUSES = DEFAULT_CACHEABLE_STATUSES | {304}
MAX_EXAMPLES = 5

_COMMON = re.compile(r'(\S+) (\S+) (\S+) \[([^\]]+)\] "((?:[^"\\]|\\.)*)" (\d{3}) (\d+|-)')
_COMBINED_TAIL = re.compile(r' "((?:[^"\\]|\\.)*)" "((?:[^"\\]|\\.)*)"')


class Malformed(ValueError):
    """A log line that cannot be read as a request."""


@dataclass(frozen=True, slots=True)
class Record:
    method: str
    host: str | None
    target: str  # origin-form path with query, or absolute-form URL
    status: int
    size: int
    time: float  # epoch seconds


@dataclass(slots=True)
class LogReplay:
    trace: Trace
    lines: int = 0
    kept: int = 0
    malformed: int = 0
    skipped_method: int = 0
    skipped_status: int = 0
    examples: list[tuple[int, str]] = field(default_factory=list)  # (line number, why), first few malformed

    def summary(self) -> str:
        return (
            f"{self.lines} lines: {self.kept} requests replayed, {self.malformed} malformed, "
            f"{self.skipped_method} other methods, {self.skipped_status} uncacheable statuses (skipped)"
        )


_time_memo: dict[str, float] = {}


def _clf_time(text: str) -> float:
    # Many lines share one second: parsing with strptime is ~10 µs, a dict lookup far less.
    cached = _time_memo.get(text)
    if cached is None:
        try:
            cached = datetime.strptime(text, "%d/%b/%Y:%H:%M:%S %z").timestamp()
        except ValueError:
            raise Malformed(f"bad time {text!r}") from None
        if len(_time_memo) > 100_000:
            _time_memo.clear()
        _time_memo[text] = cached
    return cached


def _request_line(line: str) -> tuple[str, str]:
    parts = line.split(" ")
    if len(parts) not in (2, 3) or not parts[0].isalpha():
        raise Malformed(f"bad request line {line[:80]!r}")
    return parts[0].upper(), parts[1]


def parse_clf(line: str, *, combined: bool | None = None) -> Record:
    """One common (``combined=False``), combined (``True``) or either (``None``) format line."""
    match = _COMMON.match(line)
    if match is None:
        raise Malformed("not in common/combined log format")
    rest = line[match.end() :].rstrip("\r\n")
    if combined is True and _COMBINED_TAIL.match(rest) is None:
        raise Malformed("no referer and user-agent fields (combined format)")
    if combined is False and rest.strip():
        raise Malformed("trailing fields after the size (common format)")
    method, target = _request_line(match.group(5))
    size = 0 if match.group(7) == "-" else int(match.group(7))
    return Record(method, None, target, int(match.group(6)), size, _clf_time(match.group(4)))


def _json_time(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)  # epoch seconds as text, e.g. nginx's $msec
        except ValueError:
            pass
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            return _clf_time(value)
    raise Malformed("no time")


def _first(obj: dict[str, object], *names: str) -> object:
    for name in names:
        if name in obj and obj[name] not in (None, ""):
            return obj[name]
    return None


def parse_json(line: str) -> Record:
    try:
        obj = json.loads(line)
    except ValueError:
        raise Malformed("not JSON") from None
    if not isinstance(obj, dict):
        raise Malformed("not a JSON object")
    method = _first(obj, "method", "request_method")
    target = _first(obj, "path", "uri", "request_uri", "url")
    if target is None and isinstance(obj.get("request"), str):
        method, target = _request_line(str(obj["request"]))
    if not isinstance(target, str):
        raise Malformed("no path")
    status = _first(obj, "status")
    size = _first(obj, "bytes", "body_bytes_sent", "bytes_sent", "size")
    try:
        status_code = int(str(status))
        size_bytes = 0 if size is None or size == "-" else int(str(size))
    except ValueError:
        raise Malformed("status or bytes not an integer") from None
    if not 100 <= status_code <= 599 or size_bytes < 0:
        raise Malformed("status or bytes out of range")
    host = _first(obj, "host", "server_name")
    return Record(
        str(method or "GET").upper(),
        host if isinstance(host, str) else None,
        target,
        status_code,
        size_bytes,
        _json_time(obj.get("time", obj.get("timestamp", obj.get("time_local")))),
    )


def _split_target(target: str, default_host: str) -> tuple[str, str, str, str]:
    """(scheme, host, path, query) of an origin-form or absolute-form request target."""
    if target.startswith("/"):
        path, _, query = target.partition("?")
        return "http", default_host, path, query
    if target.startswith(("http://", "https://")):
        parts = urlsplit(target)
        if not parts.hostname:
            raise Malformed("absolute URL without a host")
        return parts.scheme, parts.netloc, parts.path or "/", parts.query
    raise Malformed(f"request target {target[:80]!r} is neither a path nor an absolute URL")


def replay_log(
    lines: Iterable[str],
    *,
    log_format: str = "auto",
    host: str = "localhost",
    query_filter: QueryFilter | None = None,
    name: str = "log",
) -> LogReplay:
    """The trace of a log (see the module doc for what is kept and how keys are made)."""
    if log_format not in FORMATS:
        raise ValueError(f"unknown log format {log_format!r}; expected one of {', '.join(FORMATS)}")
    qf = query_filter or QueryFilter()
    ids: dict[Uri, int] = {}
    paths: list[str] = []
    key_size: list[int] = []
    keys: list[int] = []
    times: list[float] = []
    replay = LogReplay(Trace(name, [], [], [], 0, 0))
    fmt = log_format
    for number, line in enumerate(lines, 1):
        replay.lines = number
        if not line.strip():
            continue
        if fmt == "auto":
            fmt = "json" if line.lstrip().startswith("{") else "clf"
        try:
            if fmt == "json":
                record = parse_json(line)
            else:
                record = parse_clf(line, combined={"common": False, "combined": True}.get(fmt))
            if record.method not in CACHEABLE_METHODS:
                replay.skipped_method += 1
                continue
            if record.status not in KEPT_STATUSES:
                replay.skipped_status += 1
                continue
            scheme, netloc, path, query = _split_target(record.target, record.host or host)
            kept_query = qf.apply(query.encode("utf-8"))
            uri = uri_components(scheme, netloc, path.encode("utf-8"), kept_query)
        except Malformed as why:
            replay.malformed += 1
            if len(replay.examples) < MAX_EXAMPLES:
                replay.examples.append((number, str(why)))
            continue
        key = ids.get(uri)
        if key is None:
            key = ids[uri] = len(paths)
            paths.append(path + ("?" + kept_query.decode("utf-8") if kept_query else ""))
            key_size.append(1)
        key_size[key] = max(key_size[key], record.size)
        keys.append(key)
        times.append(record.time)
    replay.kept = len(keys)
    start = times[0] if times else 0.0
    rel: list[float] = []
    latest = 0.0
    for t in times:
        latest = max(latest, t - start)  # out-of-order lines: time never runs backwards
        rel.append(latest)
    replay.trace = Trace(
        name,
        keys,
        [key_size[k] for k in keys],
        rel,
        key_space=len(paths),
        key_bytes=sum(key_size),
        paths=paths,
    )
    return replay
