"""The proxy's upstreams: one primary, optional read replicas, their health and their breakers.

Where a request goes (``UpstreamPool.choose``):

- a read (GET/HEAD) goes to the usable replica with the fewest requests in flight (ties in turn), else to the
  primary; a read that must see recent writes (``pinned``) goes to the primary, else to a replica;
- everything else goes to the primary only;
- nothing usable: ``None``, and the proxy answers 503 at once (the cache in front may serve stale instead).

An upstream is usable when its active health checks say healthy (Varnish-style probes: healthy while at least
``threshold`` of the last ``window`` probes succeeded) and its circuit breaker (``core.breaker``, fed by
connect errors, timeouts and broken connections of real requests) lets a request through.

Read-your-writes: after a client's unsafe request, ``pinned`` is true for its reads during
``read_your_writes_window`` seconds. A client is known by two identities, and a read is pinned when either
was seen writing: its address (the peer, or for a ``--trusted-proxy`` peer the nearest untrusted address in
``X-Forwarded-For``), and a hash of its ``Authorization`` and ``Cookie`` values when it sends any. Clients
behind one NAT share the first (more reads go to the primary: safe); the second follows a client whose
address changes. The map is bounded (oldest pins dropped first past ``MAX_PINNED_CLIENTS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import itertools
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import httpx
from cachetools import TTLCache
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edgecache.core.breaker import BreakerState, CircuitBreaker

logger = logging.getLogger("edgecache.proxy")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Role = Literal["primary", "replica"]
ErrorKind = Literal["connect", "timeout", "protocol", "body"]

DEFAULT_READ_YOUR_WRITES_WINDOW: Final = 5.0
DEFAULT_BREAKER_FAILURES: Final = 5
DEFAULT_BREAKER_RESET: Final = 5.0
MAX_PINNED_CLIENTS: Final = 100_000
MAX_PROBE_WINDOW: Final = 64


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """Active health checks, as Varnish probes: every ``interval`` seconds ``GET path`` on each upstream;
    a probe succeeds on any response below 500 within ``timeout`` (a 404 on ``/`` still shows a live
    server; point ``path`` at a real health endpoint for more). Healthy while at least ``threshold`` of the
    last ``window`` probes succeeded; ``initial`` of them count as good at start (default ``threshold - 1``:
    sick until the first good probe, which start-up waits for). ``interval`` 0 turns active checks off."""

    path: str = "/"
    interval: float = 2.0
    timeout: float = 1.0
    window: int = 5
    threshold: int = 3
    initial: int | None = None

    def __post_init__(self) -> None:
        if not self.path.startswith("/") or any(c in self.path for c in " \r\n\t#"):
            raise ValueError(f"health path must be an absolute path such as /healthz, got {self.path!r}")
        if self.interval < 0:
            raise ValueError(f"health interval must be 0 (off) or positive, got {self.interval!r}")
        if not self.timeout > 0:
            raise ValueError(f"health timeout must be positive, got {self.timeout!r}")
        if not 1 <= self.window <= MAX_PROBE_WINDOW:
            raise ValueError(f"health window must be 1 to {MAX_PROBE_WINDOW}, got {self.window!r}")
        if not 1 <= self.threshold <= self.window:
            raise ValueError(
                f"health threshold must be 1 to the window ({self.window}), got {self.threshold!r}"
            )
        if self.initial is not None and not 0 <= self.initial <= self.window:
            raise ValueError(f"health initial must be 0 to the window ({self.window}), got {self.initial!r}")

    @property
    def enabled(self) -> bool:
        return self.interval > 0

    @property
    def initial_good(self) -> int:
        return self.threshold - 1 if self.initial is None else self.initial


class ProbeWindow:
    """The last ``window`` probe results; healthy while at least ``threshold`` are good."""

    __slots__ = ("results", "threshold")

    def __init__(self, window: int, threshold: int, initial: int) -> None:
        self.threshold = threshold
        # The initial good results are the newest, so the first real probes push out the bad ones first.
        self.results: deque[bool] = deque([False] * (window - initial) + [True] * initial, maxlen=window)

    def record(self, ok: bool) -> None:
        self.results.append(ok)

    @property
    def good(self) -> int:
        return sum(self.results)

    @property
    def healthy(self) -> bool:
        return self.good >= self.threshold


@dataclass(slots=True)
class ProbeResult:
    ok: bool
    at: float  # monotonic
    status: int | None = None
    error: str | None = None


@dataclass(eq=False, slots=True)
class Upstream:
    """One upstream server and what the proxy knows about it."""

    name: str  # "primary", "replica-1"...: the metric label and the readyz name, never a request path
    role: Role
    url: httpx.URL
    breaker: CircuitBreaker
    probes: ProbeWindow | None  # None: active checks off, healthy unless the breaker says otherwise
    outstanding: int = 0
    requests: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    last_probe: ProbeResult | None = None

    @property
    def healthy(self) -> bool:
        return self.probes is None or self.probes.healthy

    def usable(self, now: float) -> bool:
        return self.healthy and self.breaker.available(now)

    def report(self, now: float) -> dict[str, Any]:
        probe = self.last_probe
        return {
            "name": self.name,
            "url": str(self.url),
            "healthy": self.healthy,
            "breaker": str(self.breaker.state),
            "outstanding": self.outstanding,
            "probes_good": None if self.probes is None else f"{self.probes.good}/{len(self.probes.results)}",
            "last_probe": None
            if probe is None
            else {
                "ok": probe.ok,
                "status": probe.status,
                "error": probe.error,
                "age": round(max(0.0, now - probe.at), 3),
            },
        }


def is_trusted(address: str, trusted: Sequence[Network]) -> bool:
    if not trusted or not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def client_address(headers: Iterable[tuple[bytes, bytes]], peer: str, trusted: Sequence[Network]) -> str:
    """The client's address: the peer, or behind trusted proxies the nearest untrusted address in
    ``X-Forwarded-For`` (each trusted hop appends the address it saw, so the right end is the nearest)."""
    if not is_trusted(peer, trusted):
        return peer
    chain: list[str] = []
    for name, value in headers:
        if name.lower() == b"x-forwarded-for":
            chain.extend(part.strip() for part in value.decode("latin-1").split(","))
    address = peer
    for hop in reversed([hop for hop in chain if hop]):
        address = hop
        if not is_trusted(hop, trusted):
            break
    return address


def client_identities(
    headers: Iterable[tuple[bytes, bytes]], peer: str, trusted: Sequence[Network]
) -> tuple[str, ...]:
    """The keys a client's writes pin its reads under (see the module docstring)."""
    headers = list(headers)
    identities = []
    address = client_address(headers, peer, trusted)
    if address:
        identities.append("a:" + address)
    digest = hashlib.sha256()
    credentials = False
    for name, value in headers:
        lname = name.lower()
        if lname in (b"authorization", b"cookie"):
            credentials = True
            digest.update(lname + b"\0" + value + b"\0")
    if credentials:
        identities.append("c:" + digest.hexdigest()[:32])
    return tuple(identities)


class UpstreamPool:
    """The primary and the replicas, with selection, read-your-writes pins, health checks and breakers."""

    def __init__(
        self,
        primary: httpx.URL,
        replicas: Sequence[httpx.URL] = (),
        *,
        health: HealthConfig | None = None,
        read_your_writes_window: float = DEFAULT_READ_YOUR_WRITES_WINDOW,
        breaker_failures: int = DEFAULT_BREAKER_FAILURES,
        breaker_reset: float = DEFAULT_BREAKER_RESET,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if breaker_failures < 1:
            raise ValueError(f"breaker failures must be at least 1, got {breaker_failures!r}")
        if breaker_reset < 0:
            raise ValueError(f"breaker reset must not be negative, got {breaker_reset!r}")
        if read_your_writes_window < 0:
            raise ValueError(f"read-your-writes window must not be negative, got {read_your_writes_window!r}")
        seen = {str(primary)}
        for replica in replicas:
            if str(replica) in seen:
                raise ValueError(f"upstream {str(replica)!r} given twice")
            seen.add(str(replica))
        self.health = health or HealthConfig(interval=0)
        self.clock = clock

        def node(name: str, role: Role, url: httpx.URL) -> Upstream:
            h = self.health
            probes = ProbeWindow(h.window, h.threshold, h.initial_good) if h.enabled else None
            return Upstream(name, role, url, CircuitBreaker(breaker_failures, breaker_reset), probes)

        self.primary = node("primary", "primary", primary)
        self.replicas = tuple(node(f"replica-{i}", "replica", url) for i, url in enumerate(replicas, 1))
        self.all = (self.primary, *self.replicas)
        self.read_your_writes_window = read_your_writes_window
        self._pins: TTLCache[str, bool] | None = (
            TTLCache(MAX_PINNED_CLIENTS, ttl=read_your_writes_window, timer=clock)
            if replicas and read_your_writes_window > 0
            else None
        )
        self._turn = itertools.count()
        self.retries = 0
        self.unavailable = 0  # requests answered 503 at once: no usable upstream
        self.pinned_reads: Counter[str] = Counter()
        self._probe_client: httpx.AsyncClient | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- selection --------------------------------------------------------------------------------------

    def choose(self, read: bool, pinned: bool = False, exclude: Sequence[Upstream] = ()) -> Upstream | None:
        """The upstream for the next attempt (its breaker's half-open probe claimed), or None."""
        now = self.clock()
        chosen: Upstream | None = None
        primary = self.primary
        primary_ok = primary not in exclude and primary.usable(now)
        if not read:
            chosen = primary if primary_ok else None
        elif pinned and primary_ok:
            chosen = primary
        else:
            # Availability over lag: a pinned read whose primary is down still gets a replica (the cache
            # in front would otherwise serve its stale copy, or fail).
            chosen = self._least_outstanding(now, exclude)
            if chosen is None and primary_ok:
                chosen = primary
        if chosen is not None and not chosen.breaker.allow(now):  # pragma: no cover - checked by usable()
            return None
        return chosen

    def _least_outstanding(self, now: float, exclude: Sequence[Upstream]) -> Upstream | None:
        candidates = [r for r in self.replicas if r not in exclude and r.usable(now)]
        if not candidates:
            return None
        fewest = min(r.outstanding for r in candidates)
        tied = [r for r in candidates if r.outstanding == fewest]
        return tied[next(self._turn) % len(tied)]

    # -- read-your-writes -------------------------------------------------------------------------------

    @property
    def routes_reads(self) -> bool:
        """Whether reads and writes may go to different upstreams (so pins matter)."""
        return bool(self.replicas)

    def note_write(self, identities: Iterable[str]) -> None:
        if self._pins is not None:
            for identity in identities:
                self._pins[identity] = True

    def pinned(self, identities: Iterable[str]) -> bool:
        pins = self._pins
        return pins is not None and any(identity in pins for identity in identities)

    # -- outcomes of real requests ----------------------------------------------------------------------

    def succeeded(self, upstream: Upstream) -> None:
        upstream.breaker.succeeded()

    def failed(self, upstream: Upstream, kind: ErrorKind) -> None:
        upstream.errors[kind] += 1
        if kind != "body":  # a body cut short after the headers says little about the next connection
            before = upstream.breaker.state
            upstream.breaker.failed(self.clock())
            if upstream.breaker.state is BreakerState.OPEN and before is not BreakerState.OPEN:
                logger.warning("edgecache proxy: %s (%s) ejected by its breaker", upstream.name, upstream.url)

    # -- active health checks ---------------------------------------------------------------------------

    async def start(self) -> None:
        """One probe round (so a live upstream is healthy when start-up ends), then probe every interval."""
        if not self.health.enabled or self._tasks:
            return
        self._probe_client = httpx.AsyncClient(
            timeout=httpx.Timeout(self.health.timeout),
            # A new connection per probe, as Varnish does: a probe also checks that connects work.
            limits=httpx.Limits(max_keepalive_connections=0),
            follow_redirects=False,
            trust_env=False,
        )
        await asyncio.gather(*(self.probe(u) for u in self.all))
        self._tasks = [asyncio.create_task(self._probe_loop(u)) for u in self.all]

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._probe_client is not None:
            await self._probe_client.aclose()
            self._probe_client = None

    async def _probe_loop(self, upstream: Upstream) -> None:
        while True:
            await asyncio.sleep(self.health.interval)
            await self.probe(upstream)

    async def probe(self, upstream: Upstream) -> ProbeResult:
        """Probe once and record the result."""
        assert self._probe_client is not None and upstream.probes is not None
        url = upstream.url.copy_with(raw_path=self.health.path.encode("ascii"))
        try:
            async with asyncio.timeout(self.health.timeout):
                response = await self._probe_client.get(url, headers={"user-agent": "edgecache-health"})
            ok = response.status_code < 500
            result = ProbeResult(ok, self.clock(), status=response.status_code)
        except (httpx.HTTPError, OSError, TimeoutError) as error:
            result = ProbeResult(False, self.clock(), error=str(error) or type(error).__name__)
        except Exception as error:
            result = ProbeResult(False, self.clock(), error=repr(error))
        was_healthy = upstream.healthy
        upstream.probes.record(result.ok)
        upstream.last_probe = result
        if was_healthy != upstream.healthy:
            logger.log(
                logging.INFO if upstream.healthy else logging.WARNING,
                "edgecache proxy: %s (%s) is now %s (probe: %s)",
                upstream.name,
                upstream.url,
                "healthy" if upstream.healthy else "sick",
                result.status if result.ok else result.error or result.status,
            )
        return result

    # -- reports ----------------------------------------------------------------------------------------

    def ready(self) -> bool:
        """Ready to serve: the primary (writes, pinned reads) is healthy and its breaker is not open."""
        return self.primary.healthy and self.primary.breaker.state is not BreakerState.OPEN

    def report(self) -> dict[str, Any]:
        now = self.clock()
        return {
            "upstream": self.primary.report(now),
            "replicas": [r.report(now) for r in self.replicas],
            "active_checks": self.health.enabled,
        }


class UpstreamCollector(Collector):
    """Prometheus metrics of a pool, labelled by upstream name (``primary``, ``replica-N``)."""

    def __init__(self, pool: UpstreamPool, prefix: str = "edgecache") -> None:
        self.pool = pool
        self.prefix = prefix

    def collect(self) -> Iterator[Metric]:
        p, pool = self.prefix, self.pool
        requests = CounterMetricFamily(
            f"{p}_upstream_requests", "Requests sent to each upstream", labels=["upstream"]
        )
        errors = CounterMetricFamily(
            f"{p}_upstream_errors",
            "Upstream failures by kind: connect, timeout (before the headers), protocol, body",
            labels=["upstream", "kind"],
        )
        breaker = GaugeMetricFamily(
            f"{p}_upstream_breaker_state",
            "1 for the current state of each upstream's circuit breaker",
            labels=["upstream", "state"],
        )
        opened = CounterMetricFamily(
            f"{p}_upstream_breaker_opened", "Times each upstream's breaker opened", labels=["upstream"]
        )
        healthy = GaugeMetricFamily(
            f"{p}_upstream_healthy", "1 while the active health checks say healthy", labels=["upstream"]
        )
        outstanding = GaugeMetricFamily(
            f"{p}_upstream_outstanding", "Requests in flight to each upstream", labels=["upstream"]
        )
        for upstream in pool.all:
            requests.add_metric([upstream.name], upstream.requests)
            for kind in ("connect", "timeout", "protocol", "body"):
                errors.add_metric([upstream.name, kind], upstream.errors[kind])
            for state in BreakerState:
                breaker.add_metric([upstream.name, str(state)], 1 if upstream.breaker.state is state else 0)
            opened.add_metric([upstream.name], upstream.breaker.opened_count)
            healthy.add_metric([upstream.name], 1 if upstream.healthy else 0)
            outstanding.add_metric([upstream.name], upstream.outstanding)
        yield from (requests, errors, breaker, opened, healthy, outstanding)
        yield CounterMetricFamily(
            f"{p}_upstream_retries", "GET/HEAD attempts repeated after a connect error", value=pool.retries
        )
        yield CounterMetricFamily(
            f"{p}_upstream_unavailable",
            "Requests answered 503 at once because no upstream was usable",
            value=pool.unavailable,
        )
        pinned = CounterMetricFamily(
            f"{p}_upstream_pinned_reads",
            "Reads sent to the primary instead of a replica, by reason",
            labels=["reason"],
        )
        for reason in ("read-your-writes", "invalidation"):
            pinned.add_metric([reason], pool.pinned_reads[reason])
        yield pinned
