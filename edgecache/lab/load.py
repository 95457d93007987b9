"""``edgecache bench load``: drive a live target with a trace and read every ``Cache-Status``.

The target is a URL (an ``edgecache proxy``, an app behind ``CacheInterceptor``) or an ASGI app given as
``module:attribute`` that is served in this process by uvicorn on a free loopback port. Requests follow the
trace's keys in order (``GET`` of ``trace.path(key, path_prefix)``), sent by ``concurrency`` workers sharing
one ``httpx.AsyncClient``; the run stops after ``requests`` requests or ``duration`` seconds, whichever
comes first. Only loopback targets are allowed unless ``allow_remote`` is set: a load test aimed at someone
else's server by a typo is an attack.

Each response is classified from the ``edgecache`` member of its ``Cache-Status`` (RFC 9211; see
``edgecache.core.status``): ``hit`` with ``detail=l1`` / ``detail=l2`` counts for that tier, a hit with a
stale detail (``stale-while-revalidate``, ``max-stale``) or a ``fwd=stale`` answered with
``detail=stale-if-error`` counts as *stale* (served, but stale), ``collapsed`` marks a miss that waited for a
concurrent identical one, ``fwd=bypass`` / ``fwd=method`` are bypasses, other ``fwd`` values are misses, and
a response without an ``edgecache`` member is counted as such.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from edgecache.core.status import CACHE_NAME
from edgecache.lab.sim import Advance
from edgecache.lab.traces import Trace

STALE_DETAILS = frozenset({"stale-while-revalidate", "max-stale", "stale-if-error"})


class RemoteTarget(ValueError):
    """The target is not a loopback address and ``allow_remote`` was not given."""


def check_target(url: str, *, allow_remote: bool = False) -> str:
    """The URL without a trailing slash, if it is http(s) and loopback (or remote targets are allowed)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"target {url!r} is not an http:// or https:// URL with a host")
    if not allow_remote and not is_loopback(parts.hostname):
        raise RemoteTarget(
            f"target host {parts.hostname!r} is not a loopback address (127.0.0.0/8, ::1, localhost); "
            "pass --allow-remote to load a remote server you are allowed to load"
        )
    return url.rstrip("/")


def is_loopback(host: str) -> bool:
    # By address only: resolving a name could be steered elsewhere between the check and the requests.
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Status:
    """The parts of an ``edgecache`` Cache-Status member that the report uses."""

    hit: bool
    fwd: str | None
    detail: str | None
    collapsed: bool

    @property
    def outcome(self) -> str:
        if self.hit:
            if self.detail in STALE_DETAILS:
                return "stale"
            return "l1" if self.detail == "l1" else "l2" if self.detail == "l2" else "hit"
        if self.detail == "stale-if-error":
            return "stale"
        if self.fwd in ("bypass", "method"):
            return "bypass"
        return "miss"


def parse_cache_status(value: str | None) -> Status | None:
    """The ``edgecache`` member of a Cache-Status field value (the last one if repeated), or None."""
    if not value:
        return None
    found: Status | None = None
    for member in value.split(","):
        params = [p.strip() for p in member.split(";")]
        if params[0].strip('"') != CACHE_NAME:
            continue
        hit = collapsed = False
        fwd = detail = None
        for param in params[1:]:
            name, _, arg = param.partition("=")
            name = name.strip().lower()
            arg = arg.strip().strip('"')
            if name == "hit":
                hit = True
            elif name == "fwd":
                fwd = arg
            elif name == "detail":
                detail = arg
            elif name == "collapsed":
                collapsed = True
        found = Status(hit, fwd, detail, collapsed)
    return found


OUTCOMES = ("l1", "l2", "hit", "stale", "miss", "bypass", "no-cache-status", "error")


@dataclass(slots=True)
class LoadReport:
    target: str
    requests: int = 0
    seconds: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    collapsed: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, of completed responses
    errors: list[str] = field(default_factory=list)  # the first few transport errors
    paths: set[str] = field(default_factory=set)  # distinct paths sent

    @property
    def hit_ratio_bound(self) -> float:
        """The best any cache could do on these requests: every path's first request must miss."""
        return 1 - len(self.paths) / self.requests if self.requests else 0.0

    def share(self, *outcomes: str) -> float:
        return sum(self.outcomes[o] for o in outcomes) / self.requests if self.requests else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]

    def as_dict(self) -> dict[str, object]:
        return {
            "target": self.target,
            "requests": self.requests,
            "seconds": round(self.seconds, 4),
            "requests_per_s": round(self.requests / self.seconds, 1) if self.seconds else 0.0,
            "hit_ratio": round(self.share("l1", "l2", "hit", "stale"), 6),
            "hit_ratio_bound": round(self.hit_ratio_bound, 6),
            "hit_ratio_by_tier": {"l1": round(self.share("l1"), 6), "l2": round(self.share("l2"), 6)},
            "stale_share": round(self.share("stale"), 6),
            "collapsed_share": round(self.collapsed / self.requests, 6) if self.requests else 0.0,
            "outcomes": {o: self.outcomes[o] for o in OUTCOMES},
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "latency_ms": {f"p{p:g}": round(1000 * self.percentile(p), 3) for p in (50, 90, 99, 99.9)}
            | {"max": round(1000 * max(self.latencies, default=0.0), 3)},
            "errors": self.errors,
        }

    def text(self) -> str:
        d = self.as_dict()
        lat = d["latency_ms"]
        assert isinstance(lat, dict)
        lines = [
            f"target {self.target}: {self.requests} requests in {self.seconds:.2f} s "
            f"({d['requests_per_s']:,} requests/s)",
            f"hit ratio {100 * self.share('l1', 'l2', 'hit', 'stale'):.2f} % "
            f"(l1 {100 * self.share('l1'):.2f} %, l2 {100 * self.share('l2'):.2f} %, "
            f"stale {100 * self.share('stale'):.2f} %); collapsed {d['collapsed_share']:.2%}; "
            f"at most {100 * self.hit_ratio_bound:.2f} % possible ({len(self.paths)} distinct paths)",
            "outcomes: " + ", ".join(f"{o} {self.outcomes[o]}" for o in OUTCOMES if self.outcomes[o]),
            "statuses: " + ", ".join(f"{k} {v}" for k, v in sorted(self.statuses.items())),
            "latency ms: " + ", ".join(f"{k} {v}" for k, v in lat.items()),
        ]
        if self.errors:
            lines.append("first errors: " + "; ".join(self.errors))
        return "\n".join(lines)


def _paths(trace: Trace, count: int, prefix: str) -> Iterator[str]:
    path = trace.path
    for key in trace.keys[:count]:
        yield path(key, prefix)


async def drive(
    base_url: str,
    trace: Trace,
    *,
    requests: int,
    duration: float,
    concurrency: int = 16,
    request_timeout: float = 10.0,
    path_prefix: str = "/lab/",
    advance: Advance = lambda n: None,
) -> LoadReport:
    """Send up to ``requests`` GETs (and for at most ``duration`` s) to ``base_url`` following ``trace``."""
    if requests < 1 or concurrency < 1 or not duration > 0:
        raise ValueError("requests and concurrency must be at least 1 and duration positive")
    report = LoadReport(base_url)
    work = _paths(trace, requests, path_prefix)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    started = time.perf_counter()
    deadline = started + duration

    async def worker(client: httpx.AsyncClient) -> None:
        for path in work:  # one shared iterator: each path is sent exactly once
            if time.perf_counter() >= deadline:
                return
            report.paths.add(path)
            sent = time.perf_counter()
            try:
                response = await client.get(path)
            except httpx.HTTPError as error:
                report.requests += 1
                report.outcomes["error"] += 1
                if len(report.errors) < 5:
                    report.errors.append(f"{path}: {type(error).__name__}: {error}")
                advance(1)
                continue
            report.latencies.append(time.perf_counter() - sent)
            report.requests += 1
            report.statuses[response.status_code] += 1
            status = parse_cache_status(response.headers.get("cache-status"))
            if status is None:
                report.outcomes["no-cache-status"] += 1
            else:
                report.outcomes[status.outcome] += 1
                report.collapsed += status.collapsed
            advance(1)

    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=request_timeout) as client:
        try:
            # A backstop: a request hung past its own timeout still ends the run.
            async with asyncio.timeout(duration + request_timeout):
                await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        except TimeoutError:
            report.errors.append(
                f"stopped after {duration + request_timeout:g} s with requests still in flight"
            )
    report.seconds = time.perf_counter() - started
    return report


async def drive_app(app_spec: str, trace: Trace, **options: object) -> LoadReport:
    """Serve ``module:attribute`` with uvicorn on a free 127.0.0.1 port in this process and drive it."""
    try:
        import uvicorn  # noqa: PLC0415 - the `server` extra
        from uvicorn.importer import ImportFromStringError, import_from_string  # noqa: PLC0415
    except ImportError:
        raise RuntimeError(
            "serving an app in-process needs uvicorn, which is not installed: pip install 'edgecache[server]'"
        ) from None
    try:
        app = import_from_string(app_spec)
    except ImportFromStringError as error:
        raise ValueError(f"--app {app_spec!r}: {error}") from None
    import socket  # noqa: PLC0415

    # The port stays ours from bind to serve: no window for another process to take it. proto=IPPROTO_TCP
    # because asyncio sets TCP_NODELAY only on sockets that say so; without it Nagle and delayed ACKs add
    # ~40 ms to every response.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="auto")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if serving.done():
                serving.result()  # raises what stopped it
                raise RuntimeError("the in-process server stopped before it started")
            await asyncio.sleep(0.01)
        return await drive(f"http://127.0.0.1:{port}", trace, **options)  # type: ignore[arg-type]
    finally:
        server.should_exit = True
        await serving
        sock.close()
