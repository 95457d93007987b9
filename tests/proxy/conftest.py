"""In-process fixtures: a real upstream and the proxy, both uvicorn servers on the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn

from edgecache.proxy.server import ProxyServer, bind
from tests.proxy.upstream import Upstream

# respx intercepts httpx inside httpcore's connection pool, which the proxy's default EdgeTransport does not
# use: a test that scripts an upstream with respx gives the proxy httpx's own transport.
RESPX_TRANSPORT = httpx.AsyncHTTPTransport


class QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class RunningUpstream:
    app: Upstream
    port: int
    server: QuietServer
    task: asyncio.Task[None]
    sock: socket.socket

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        """Stop serving and close the listening socket: connecting is then refused. Idempotent."""
        if not self.task.done():
            self.server.should_exit = True
            await self.task
        self.sock.close()


async def start_upstream(app: Upstream, port: int = 0) -> RunningUpstream:
    """Serve ``app`` with uvicorn on 127.0.0.1 (``port`` 0: a free one) until ``stop``."""
    sock = bind("127.0.0.1", port)
    config = uvicorn.Config(
        app,
        http="h11",  # accepts any method token (httptools knows a fixed list), so BREW can reach it
        ws="none",
        lifespan="off",
        proxy_headers=False,
        server_header=False,
        date_header=False,
        log_level="warning",
        timeout_graceful_shutdown=1,
    )
    server = QuietServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        assert not task.done()
        await asyncio.sleep(0.01)
    return RunningUpstream(app, sock.getsockname()[1], server, task, sock)


@pytest.fixture
async def upstream() -> AsyncIterator[RunningUpstream]:
    running = await start_upstream(Upstream("primary"))
    yield running
    await running.stop()


MakeUpstream = Callable[[str], Awaitable[RunningUpstream]]


@pytest.fixture
async def make_upstream() -> AsyncIterator[MakeUpstream]:
    """More upstreams (replicas), each answering ``/who`` with its name."""
    started: list[RunningUpstream] = []

    async def make(name: str) -> RunningUpstream:
        running = await start_upstream(Upstream(name))
        started.append(running)
        return running

    yield make
    for running in started:
        await running.stop()


@dataclass
class RunningProxy:
    server: ProxyServer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.server.admin_port}"

    @property
    def port(self) -> int:
        return self.server.port


MakeProxy = Callable[..., Awaitable[RunningProxy]]


@pytest.fixture
async def make_proxy(upstream: RunningUpstream) -> AsyncIterator[MakeProxy]:
    started: list[ProxyServer] = []

    async def make(
        upstream_url: str | None = None, prepare: Callable[[ProxyServer], Any] | None = None, **options: Any
    ) -> RunningProxy:
        """A started proxy; ``prepare`` gets the server before it starts."""
        options.setdefault("read_timeout", 2.0)
        options.setdefault("connect_timeout", 1.0)
        options.setdefault("shutdown_timeout", 1.0)
        server = ProxyServer(upstream_url or upstream.url, ("127.0.0.1", 0), ("127.0.0.1", 0), **options)
        if prepare is not None:
            prepare(server)
        await server.start()
        started.append(server)
        return RunningProxy(server)

    yield make
    for server in started:
        server.stop()
        await server.wait()


@pytest.fixture
async def proxy(make_proxy: MakeProxy) -> RunningProxy:
    return await make_proxy(admin_token="s3cret")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        yield http


async def raw_exchange(port: int, data: bytes, wait: float = 2.0) -> tuple[bytes, bool]:
    """Send raw bytes; return what came back and whether the server closed the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    received = b""
    closed = False
    try:
        async with asyncio.timeout(wait):
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    closed = True
                    break
                received += chunk
    except TimeoutError:
        pass
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return received, closed


async def wait_for_readyz(
    client: httpx.AsyncClient,
    proxy: RunningProxy,
    until: Callable[[dict[str, Any]], bool],
    within: float = 10,
) -> dict[str, Any]:
    """Poll ``/readyz`` until ``until(report)`` holds (the health checks run on their own clock)."""
    async with asyncio.timeout(within):
        while True:
            report: dict[str, Any] = (await client.get(proxy.admin_url + "/readyz")).json()
            if until(report):
                return report
            await asyncio.sleep(0.02)
