"""Both listeners of ``edgecache proxy`` in one event loop: the proxied port and the admin port.

``ProxyServer`` binds the sockets itself (so a port in use is an error before anything starts, and port 0
works in tests), then runs one ``uvicorn.Server`` per listener as tasks. ``run`` adds signal handling:
SIGTERM or SIGINT stops accepting, lets in-flight requests finish within ``shutdown_timeout`` and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import socket
from collections.abc import Generator, Iterable, Sequence
from typing import Any

import httpx
import uvicorn

from edgecache.config import Settings
from edgecache.engine import Cache
from edgecache.middleware import CacheInterceptor
from edgecache.proxy.admin import AdminApp
from edgecache.proxy.app import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_TOTAL_TIMEOUT,
    Limits,
    ProxyApp,
    RequestGuard,
    UpstreamBodyError,
)
from edgecache.proxy.protocols import HttpParser, protocol_class
from edgecache.proxy.upstreams import (
    DEFAULT_BREAKER_FAILURES,
    DEFAULT_BREAKER_RESET,
    DEFAULT_READ_YOUR_WRITES_WINDOW,
    HealthConfig,
    UpstreamCollector,
)

logger = logging.getLogger("edgecache.proxy")

DEFAULT_SHUTDOWN_TIMEOUT = 10.0


class _AbortedResponses(logging.Filter):
    """Drops uvicorn's "Exception in ASGI application" traceback for an upstream that broke off a body:
    the proxy has logged it in one line, and aborting the client's connection is the intended outcome."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, UpstreamBodyError)


_ABORTED_RESPONSES = _AbortedResponses()


class _Server(uvicorn.Server):
    """A ``uvicorn.Server`` that leaves signals alone: ``run`` handles them once for both listeners (and
    uvicorn's own handling re-raises the signal after shutdown, which would end the process by it)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6); raises ``ValueError``."""
    host, sep, port = value.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=2048)
    sock.set_inheritable(True)
    return sock


class ProxyServer:
    """The proxy (``RequestGuard(CacheInterceptor(ProxyApp))``) and the admin app, ready to serve."""

    def __init__(
        self,
        upstream: str,
        listen: tuple[str, int],
        admin_listen: tuple[str, int] | None = ("127.0.0.1", 9901),
        *,
        settings: Settings | None = None,
        replicas: Sequence[str] = (),
        read_your_writes_window: float = DEFAULT_READ_YOUR_WRITES_WINDOW,
        health: HealthConfig | None = None,
        breaker_failures: int = DEFAULT_BREAKER_FAILURES,
        breaker_reset: float = DEFAULT_BREAKER_RESET,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        total_timeout: float | None = DEFAULT_TOTAL_TIMEOUT,
        limits: Limits | None = None,
        trusted_proxies: Iterable[str] = (),
        preserve_host: bool = False,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
        http: HttpParser = "auto",
        admin_token: str | None = None,
        log_level: str = "warning",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        settings = settings or Settings(default_ttl=0)
        if settings.key_host is None:
            # One upstream: keys on its host, whatever Host clients send.
            settings = dataclasses.replace(settings, key_host=httpx.URL(upstream).netloc.decode("ascii"))
        self.cache = Cache(settings)
        self.limits = limits or Limits()
        self.proxy = ProxyApp(
            upstream,
            replicas=replicas,
            read_your_writes_window=read_your_writes_window,
            health=HealthConfig() if health is None else health,
            breaker_failures=breaker_failures,
            breaker_reset=breaker_reset,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            total_timeout=total_timeout,
            limits=self.limits,
            trusted_proxies=trusted_proxies,
            preserve_host=preserve_host,
            transport=transport,
        )
        self.app = RequestGuard(CacheInterceptor(self.proxy, cache=self.cache), self.limits)
        self.upstreams = self.proxy.pool
        self.admin = AdminApp(self.cache, self.upstreams, token=admin_token)
        self.admin.registry.register(UpstreamCollector(self.upstreams))
        self.listen = listen
        self.admin_listen = admin_listen
        self.shutdown_timeout = shutdown_timeout
        self.http = http
        self.protocol = protocol_class(
            http,
            max_target=self.limits.max_target,
            max_header_bytes=self.limits.max_header_bytes,
            fast_hit=self.app.hit_nowait,
        )
        logging.getLogger("uvicorn.error").addFilter(_ABORTED_RESPONSES)
        self.log_level = log_level
        self.sockets: list[socket.socket] = []
        self.servers: list[_Server] = []
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def port(self) -> int:
        return int(self.sockets[0].getsockname()[1])

    @property
    def admin_port(self) -> int | None:
        return int(self.sockets[1].getsockname()[1]) if len(self.sockets) > 1 else None

    def _config(self, app: Any, http: Any = "httptools") -> uvicorn.Config:
        return uvicorn.Config(
            app,
            http=http,
            # Above h11's own cap ProxyH11Protocol answers 431 itself (uvicorn would say 400).
            h11_max_incomplete_event_size=2 * (self.limits.max_header_bytes + self.limits.max_target),
            loop="none",
            lifespan="off",  # this class starts and stops the cache and the client itself
            proxy_headers=False,  # the peer address must be the real one (X-Forwarded-For trust)
            server_header=False,  # the upstream's Server and Date pass through, once
            date_header=False,
            access_log=False,
            log_level=self.log_level,
            timeout_graceful_shutdown=self.shutdown_timeout,  # type: ignore[arg-type]  # a float works
        )

    async def start(self) -> None:
        """Bind both listeners (``OSError`` when a port is taken) and start serving."""
        self.sockets.append(bind(*self.listen))
        try:
            if self.admin_listen is not None:
                self.sockets.append(bind(*self.admin_listen))
        except OSError:
            self.sockets[0].close()
            raise
        await self.proxy.start()  # one health-probe round first: live upstreams are healthy when we serve
        if not await self.cache.start_and_wait():
            logger.warning("edgecache proxy: Redis not reachable at start-up; the shared tier joins later")
        configs = [self._config(self.app, self.protocol), self._config(self.admin)]
        for sock, config in zip(self.sockets, configs, strict=False):
            server = _Server(config)
            self.servers.append(server)
            self._tasks.append(asyncio.create_task(server.serve(sockets=[sock])))
        while not all(s.started for s in self.servers):
            if any(t.done() for t in self._tasks):
                break
            await asyncio.sleep(0.01)

    def stop(self) -> None:
        """Begin a graceful shutdown of both listeners."""
        for server in self.servers:
            server.should_exit = True

    async def wait(self) -> None:
        """Until both servers have stopped; then close the upstream client and the cache."""
        try:
            await asyncio.gather(*self._tasks)
        finally:
            await self.proxy.aclose()
            await self.cache.aclose()
            for sock in self.sockets:
                sock.close()


async def serve(server: ProxyServer) -> int:
    """Serve until SIGTERM/SIGINT; 0 after a graceful stop, 1 when a listener cannot be bound."""
    try:
        await server.start()
    except OSError as error:
        logger.error("edgecache proxy: cannot listen: %s", error)
        await server.proxy.aclose()
        await server.cache.aclose()
        return 1
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.stop)
    try:
        await server.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return 0


def run(
    upstream: str,
    listen: tuple[str, int],
    admin_listen: tuple[str, int] | None = ("127.0.0.1", 9901),
    redis_url: str | None = None,
    *,
    settings: Settings | None = None,
    **options: Any,
) -> int:
    """Run the proxy in a new event loop (uvloop when installed) until SIGTERM; returns the exit status."""
    if settings is None:
        settings = Settings.load({"default_ttl": 0, "redis_url": redis_url})
    elif redis_url is not None:
        settings = dataclasses.replace(settings, redis_url=redis_url)
        settings._check()
    server = ProxyServer(upstream, listen, admin_listen, settings=settings, **options)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request (each proxied one, each health probe) at INFO: far too much for a proxy.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        import uvloop  # noqa: PLC0415 - optional

        loop_factory: Any = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(serve(server))
