"""Shadow mode: a candidate cache configuration simulated beside the live one, on the live traffic.

The shadow stores no bodies and serves nothing. For each GET/HEAD request the middleware sees, it builds
its own key (with its own query normalisation), asks its key-only table whether it would have hit, and,
once the live response is known, records what it would have stored: the response's size, and a lifetime
(its own TTL override, or the live response's lifetime from ``Cache-Status: ttl`` + ``Age``). It keeps
keys, sizes and expiry times under its own capacity, evicting with the shipped admission policy or a plain
LRU, so its memory is bounded by the capacity over ``MIN_WEIGHT`` keys (about 200 bytes each).

What the shadow stores is what the live cache found storable (``Cache-Status`` says ``hit`` or
``stored``, or the live store refused it for size): it does not re-run the HTTP caching rules, so
a TTL override lengthens or shortens lifetimes but cannot make ``no-store`` responses cacheable.

Spec (option ``shadow``, env ``EDGECACHE_SHADOW``): comma-separated ``name=value`` pairs, or a mapping:

- ``ttl``: seconds every stored response lives (default: the live lifetime);
- ``query``: ``keep`` (as received), ``sorted`` (parameters sorted), ``drop`` (query ignored);
- ``ignore``: parameter names to drop, separated by ``|``, ``*`` as a wildcard as in ``query_ignore``
  (``utm_*|fbclid``); implies sorting;
- ``admission``: ``on`` (edgecache's W-TinyLFU, the default) or ``off`` (LRU);
- ``capacity``: bytes (``64MiB``; default: the live ``l1_max_bytes``).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.types import Message, Scope, Send

from edgecache.core.admission import AdmissionPolicy
from edgecache.core.headers import CacheControl, Fields
from edgecache.core.keys import QueryFilter
from edgecache.core.policy import Policy, freshness_lifetime
from edgecache.observe.stats import ShadowStats

__all__ = ["MIN_WEIGHT", "Shadow", "ShadowSpec", "parse_shadow"]

# Every simulated key weighs at least this many bytes (its key, sizes and expiry in Python objects cost
# about that much), so the table holds at most capacity / MIN_WEIGHT keys.
MIN_WEIGHT = 256
_QUERY_MODES = ("keep", "sorted", "drop")
_TTL_RE = re.compile(rb"(?:^|;)\s*ttl=(-?\d+)")
_STORABLE_DETAILS = (b"detail=too-large", b"detail=not-stored")


@dataclass(frozen=True, slots=True)
class ShadowSpec:
    """A candidate configuration: what differs from the live cache."""

    ttl: float | None = None
    query: str = "keep"
    ignore: frozenset[str] = frozenset()
    admission: bool = True
    capacity: int | None = None

    def describe(self) -> str:
        parts = [f"query={self.query}", f"admission={'on' if self.admission else 'off'}"]
        if self.ttl is not None:
            parts.insert(0, f"ttl={self.ttl:g}")
        if self.ignore:
            parts.append("ignore=" + "|".join(sorted(self.ignore)))
        if self.capacity is not None:
            parts.append(f"capacity={self.capacity}")
        return ",".join(parts)


def parse_shadow(value: object, parse_size: Callable[[object], int]) -> ShadowSpec | None:
    """A ``ShadowSpec`` from ``"ttl=300,query=sorted"`` or a mapping; None for ``""``/``off``/``None``."""
    if value is None or isinstance(value, ShadowSpec):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("", "off", "none", "false", "0"):
            return None
        items: dict[str, object] = {}
        for part in text.split(","):
            name, sep, raw = part.partition("=")
            if not sep or not name.strip():
                raise ValueError(f"expected name=value pairs such as ttl=300,query=sorted, got {part!r}")
            items[name.strip().lower()] = raw.strip()
    elif isinstance(value, Mapping):
        items = {str(k).lower(): v for k, v in value.items()}
    else:
        raise ValueError(f"expected a spec such as 'ttl=300,query=sorted' or a mapping, got {value!r}")
    unknown = set(items) - {"ttl", "query", "ignore", "admission", "capacity"}
    if unknown:
        raise ValueError(f"unknown shadow setting(s) {', '.join(sorted(unknown))}")
    spec: dict[str, Any] = {}
    if "ttl" in items:
        ttl = float(items["ttl"])  # type: ignore[arg-type]
        if not 0 <= ttl < float("inf"):
            raise ValueError(f"shadow ttl must be a non-negative number of seconds, got {items['ttl']!r}")
        spec["ttl"] = ttl
    if "query" in items:
        query = str(items["query"]).strip().lower()
        if query not in _QUERY_MODES:
            raise ValueError(f"shadow query must be one of {', '.join(_QUERY_MODES)}, got {query!r}")
        spec["query"] = query
    if "ignore" in items:
        given = items["ignore"]
        if isinstance(given, str):
            names = given.split("|")
        elif isinstance(given, list | tuple | set | frozenset):
            names = [str(n) for n in given]
        else:
            raise ValueError(f"shadow ignore: expected names separated by |, got {given!r}")
        spec["ignore"] = frozenset(n.strip() for n in names if n.strip())
    if "admission" in items:
        flag = str(items["admission"]).strip().lower()
        if flag not in ("on", "off", "true", "false"):
            raise ValueError(f"shadow admission must be on or off, got {items['admission']!r}")
        spec["admission"] = flag in ("on", "true")
    if "capacity" in items:
        capacity = parse_size(items["capacity"])
        if capacity < MIN_WEIGHT:
            raise ValueError(
                f"shadow capacity must be at least {MIN_WEIGHT} bytes, got {items['capacity']!r}"
            )
        spec["capacity"] = capacity
    return ShadowSpec(**spec)


class _LRU:
    """The admission policy's interface over a plain LRU (``admission=off``)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.weight = 0
        self._keys: OrderedDict[str, int] = OrderedDict()

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def touch(self, key: str) -> bool:
        if key in self._keys:
            self._keys.move_to_end(key)
            return True
        return False

    def add(self, key: str, weight: int) -> list[str]:
        if weight > self.capacity:
            return [key]
        self.weight += weight - self._keys.pop(key, 0)
        self._keys[key] = weight
        evicted: list[str] = []
        while self.weight > self.capacity:
            victim, victim_weight = self._keys.popitem(last=False)
            self.weight -= victim_weight
            evicted.append(victim)
        return evicted

    def discard(self, key: str) -> None:
        self.weight -= self._keys.pop(key, 0)


class Shadow:
    """The simulation; ``watch`` is the middleware's one call per request."""

    def __init__(
        self, spec: ShadowSpec, *, capacity: int, clock: Callable[[], float], policy: Policy
    ) -> None:
        self.spec = spec
        self.live_policy = policy  # the live freshness rules, for lifetimes Cache-Status does not give
        self.capacity = spec.capacity if spec.capacity is not None else capacity
        self.clock = clock
        self.policy: AdmissionPolicy | _LRU = (
            AdmissionPolicy(self.capacity) if spec.admission else _LRU(self.capacity)
        )
        self._expires: dict[str, float] = {}  # simulated key -> when its response stops being fresh
        self.stats = ShadowStats(spec.describe())
        self._query_filter = QueryFilter(ignore=spec.ignore)  # the live cache's matching of ignored names

    def key(self, scope: Scope) -> str:
        """The shadow's cache key: scheme, host, path and the query as the spec normalises it."""
        host = b""
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
                break
        path = scope.get("raw_path") or scope["path"].encode("utf-8")
        query = scope.get("query_string", b"")
        spec = self.spec
        if spec.query == "drop":
            query = b""
        elif query and (spec.query == "sorted" or spec.ignore):
            pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
            keeps = self._query_filter.keeps
            kept = (pair for pair in pairs if keeps(pair[0]))
            query = urlencode(sorted(kept)).encode("latin-1")
        scheme = scope.get("scheme", "http")
        return f"{scheme}://{host.decode('latin-1')}{path.decode('latin-1')}?{query.decode('latin-1')}"

    def watch(self, scope: Scope, send: Send) -> Send:
        """The ``send`` to pass on for this request: it reports the live response to the simulation."""
        if scope["method"] not in ("GET", "HEAD"):
            return send
        key = self.key(scope)
        now = self.clock()
        would_hit = self._lookup(key, now)
        head: list[Any] = []  # [status, headers] once the response starts
        size = 0

        async def watched(message: Message) -> None:
            nonlocal size
            kind = message["type"]
            if kind == "http.response.start":
                head[:] = (message["status"], message.get("headers", ()))
            elif kind == "http.response.body":
                size += len(message.get("body", b""))
                if not message.get("more_body", False) and head:
                    self._record(key, now, would_hit, head[0], head[1], size)
            await send(message)

        return watched

    def _lookup(self, key: str, now: float) -> bool:
        expires = self._expires.get(key)
        if expires is not None and expires <= now:
            del self._expires[key]
            self.policy.discard(key)
            expires = None
        resident = self.policy.touch(key)  # hit or miss: the admission policy counts every lookup
        return expires is not None and resident

    def _record(
        self, key: str, now: float, would_hit: bool, status: int, headers: Any, body_size: int
    ) -> None:
        stats = self.stats
        stats.requests += 1
        cache_status = b""
        age = 0
        header_bytes = 0
        for name, value in headers:
            header_bytes += len(name) + len(value) + 16
            if name == b"cache-status":
                cache_status = value
            elif name == b"age" and value.isdigit():
                age = int(value)
        live_hit = b"; hit" in cache_status
        stats.live_hits += live_hit
        if would_hit:
            stats.shadow_hits += 1
            return
        storable = (
            live_hit or b"; stored" in cache_status or any(d in cache_status for d in _STORABLE_DETAILS)
        )
        if not storable or status >= 500:
            return
        lifetime = (
            self.spec.ttl
            if self.spec.ttl is not None
            else self._live_lifetime(status, headers, cache_status, age, now)
        )
        if lifetime <= 0:
            return
        weight = max(MIN_WEIGHT, body_size + header_bytes + len(key))
        if weight > self.capacity:
            return
        self._expires[key] = now + lifetime
        for evicted in self.policy.add(key, weight):
            self._expires.pop(evicted, None)

    def _live_lifetime(self, status: int, headers: Any, cache_status: bytes, age: int, now: float) -> float:
        """How long the live cache keeps this response fresh: a hit's ``ttl`` + ``Age``; for a response
        just stored (whose ``Cache-Status`` has no ttl), the live freshness rules on its headers."""
        match = _TTL_RE.search(cache_status)
        if match:
            return int(match.group(1)) + age
        # (Cache-Control only: targeted fields such as CDN-Cache-Control are not sent to clients)
        fields = Fields(headers)
        cache_control = CacheControl.parse(fields.joined("cache-control"))
        return freshness_lifetime(status, cache_control, fields, self.live_policy, False, now)[0] - age
