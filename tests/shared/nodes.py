"""Nodes in one process for the multi-node tests (shared invalidation, coalescing across nodes): each a
``Cache`` behind ``CacheInterceptor`` over one small app (``Origin``) with an origin spy per node, all on
one Redis deployment (standalone, Cluster or Sentinel).

The fixtures of these tests are thin wrappers around ``deployment_for``, ``open_raw`` and ``nodes``."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from edgecache import Cache, CacheInterceptor, Settings
from edgecache.core.invalidation import Invalidation
from edgecache.core.keys import primary_key, uri_components
from edgecache.shared import SharedTier
from edgecache.stores.redis_connect import plain_client
from edgecache.stores.tiered import TieredStore
from tests.helpers import eventually

BASE_URL = "http://testserver"
HEARTBEAT = 0.2
CHECK_INTERVAL = 0.2
WITHIN = 5.0  # generous: propagation normally takes milliseconds
RECONNECT_WITHIN = 10.0  # reconnection backs off up to 2 s between attempts

__all__ = [
    "ACROSS_DEPLOYMENTS",
    "BASE_URL",
    "CHECK_INTERVAL",
    "DEPLOYMENTS",
    "HEARTBEAT",
    "RECONNECT_WITHIN",
    "WITHIN",
    "Deployment",
    "Node",
    "NodeFactory",
    "Origin",
    "OriginSpy",
    "deployment_for",
    "digest_of",
    "eventually",
    "is_l1_hit",
    "nodes",
    "open_raw",
    "status",
]


def digest_of(path: str) -> str:
    """The key of ``GET http://testserver<path>`` (path and query)."""
    raw_path, _, query = path.partition("?")
    return primary_key(uri_components("http", "testserver", raw_path.encode(), query.encode())).digest


def status(response: httpx.Response) -> str:
    return response.headers["cache-status"]


def is_l1_hit(response: httpx.Response) -> bool:
    return "; hit" in status(response) and "detail=l1" in status(response)


class Origin:
    """The app behind both nodes: per-path response headers, a version number in each body, and gates that
    hold a request inside the app until released."""

    def __init__(self) -> None:
        self.headers: dict[str, dict[str, str]] = {}
        self.versions: Counter[str] = Counter()
        self.gates: dict[str, asyncio.Event] = {}
        self.entered: dict[str, asyncio.Event] = {}
        self.app = Starlette(routes=[Route("/{rest:path}", self.endpoint)])

    def serve(
        self,
        path: str,
        *,
        tags: Iterable[str] = (),
        cache_control: str | None = None,
        etag: str | None = None,
    ) -> None:
        headers = {}
        if tags:
            headers["surrogate-key"] = " ".join(tags)
        if cache_control is not None:
            headers["cache-control"] = cache_control
        if etag is not None:
            headers["etag"] = etag
        self.headers[path] = headers

    def hold(self, path: str) -> tuple[asyncio.Event, asyncio.Event]:
        """(entered, release): set when a request for ``path`` reached the app; set to let it answer."""
        entered, release = asyncio.Event(), asyncio.Event()
        self.entered[path], self.gates[path] = entered, release
        return entered, release

    async def endpoint(self, request: Request) -> Response:
        path = request.url.path
        if path in self.gates:
            self.entered[path].set()
            await self.gates[path].wait()
        headers = self.headers.get(path, {})
        etag = headers.get("etag")
        if etag is not None and request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        self.versions[path] += 1
        return PlainTextResponse(f"{path} v{self.versions[path]}", headers=headers)


class OriginSpy:
    """Counts the HTTP requests that reach the app, per path and query."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.calls: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query = scope.get("query_string", b"").decode("latin-1")
            self.calls[scope["path"] + ("?" + query if query else "")] += 1
        await self.app(scope, receive, send)


@dataclass
class Node:
    name: str
    cache: Cache
    spy: OriginSpy
    client: httpx.AsyncClient
    applied: list[tuple[Invalidation, bool]] = field(default_factory=list)

    @property
    def store(self) -> TieredStore:
        assert isinstance(self.cache.store, TieredStore)
        return self.cache.store

    @property
    def shared(self) -> SharedTier:
        assert self.cache.shared is not None
        return self.cache.shared

    @property
    def counters(self) -> Counter[str]:
        return self.shared.counters

    async def get(self, path: str) -> httpx.Response:
        response = await self.client.get(path)
        assert response.status_code == 200, (self.name, path, response.status_code)
        return response

    def in_l1(self, path: str) -> bool:
        return self.store.l1.get_nowait(digest_of(path)) is not None

    async def in_l2(self, path: str) -> bool:
        return await self.store.l2.get(digest_of(path)) is not None

    def record_applied(self) -> None:
        """Record every invalidation this node applies, and whether it cleaned L2 (``shared``)."""
        apply = self.cache.apply_invalidation

        async def recording(invalidation: Invalidation, *, shared: bool) -> int:
            self.applied.append((invalidation, shared))
            return await apply(invalidation, shared=shared)

        self.cache.apply_invalidation = recording  # type: ignore[method-assign]


class NodeFactory(Protocol):
    async def __call__(self, name: str, *, redis_url: str | None = None, **options: Any) -> Node: ...


@dataclass
class Deployment:
    kind: str
    url: str
    options: dict[str, Any]

    def client(self) -> Redis | RedisCluster:
        """A plain client, as another service would use one."""
        if self.kind == "cluster":
            return RedisCluster.from_url(self.url, socket_timeout=5.0)
        return plain_client(self.url, socket_timeout=5.0)


DEPLOYMENTS = ["standalone", "cluster", "sentinel"]
ACROSS_DEPLOYMENTS = pytest.mark.parametrize("deployment", DEPLOYMENTS, indirect=True)


def deployment_for(request: pytest.FixtureRequest) -> Deployment:
    """The Redis the nodes share: the session's standalone server unless parametrized (flushed either way)."""
    kind = getattr(request, "param", "standalone")
    if kind == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        cluster.reset()
        return Deployment(kind, cluster.url, {"redis_cluster": True})
    if kind == "sentinel":
        sentinel = request.getfixturevalue("redis_sentinel")
        sentinel.reset()
        return Deployment(kind, sentinel.url, {})
    return Deployment(kind, request.getfixturevalue("redis_url"), {})


@contextlib.asynccontextmanager
async def open_raw(deployment: Deployment) -> AsyncIterator[Redis | RedisCluster]:
    """A plain client for publishing and inspecting, as another service (or a crashed node) would use."""
    client = deployment.client()
    try:
        yield client
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def nodes(
    deployment: Deployment, namespace: str, origin: Origin, **defaults: Any
) -> AsyncIterator[NodeFactory]:
    """A factory of started nodes on ``deployment`` (``defaults`` and then each call's options on top of the
    suite's settings), all closed on exit. ``redis_url`` points one node at another server."""
    made: list[Node] = []

    async def make(name: str, *, redis_url: str | None = None, **options: Any) -> Node:
        settings = Settings.load(
            {
                "redis_url": redis_url or deployment.url,
                "namespace": namespace,
                "default_ttl": 60,
                "subscriber_heartbeat": HEARTBEAT,
                "generation_check_interval": CHECK_INTERVAL,
                "redis_timeout": 0.5,
                **defaults,
                **({} if redis_url else deployment.options),
                **options,
            },
            environ={},
        )
        cache = Cache(settings)
        spy = OriginSpy(origin.app)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=CacheInterceptor(spy, cache=cache)), base_url=BASE_URL
        )
        node = Node(name, cache, spy, client)
        made.append(node)
        assert await cache.start_and_wait(within=WITHIN), f"{name}: shared tier not ready"
        return node

    try:
        yield make
    finally:
        # Let timers that fell due while pytest was busy (reporting a failure) run before closing: on
        # Python 3.11 a cancellation that lands while redis-py's asyncio.wait_for completes a send is lost,
        # and the subscriber's stop() then waits for its task forever.
        await asyncio.sleep(0.05)
        for node in made:
            await node.client.aclose()
            await node.cache.aclose()
