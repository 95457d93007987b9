"""Fixtures of the middleware suite: a fake clock, an origin spy, and a harness that wires them together.

Every test builds a tiny Starlette app, wraps it in an ``OriginSpy`` (which counts the calls that reach the
app, per path) and puts ``CacheInterceptor`` in front, with a ``Cache`` that reads the fake clock. Requests
go through ``httpx.ASGITransport``; a ``ClientRecorder`` between the client and the middleware keeps the
ASGI messages the client was sent, so tests can look at body chunks as they left the cache.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgecache import Cache, CacheInterceptor, Settings
from edgecache.stores.memory import MemoryStore
from tests.helpers import FakeClock

BASE_URL = "http://testserver"
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "FROB"]

Endpoint = Callable[[Request], Awaitable[Response]]


class OriginSpy:
    """Wraps the app: counts the HTTP requests that reach it, per path, and keeps the scopes it saw."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.calls: Counter[str] = Counter()
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.calls[scope["path"]] += 1
            self.scopes.append(scope)
        await self.app(scope, receive, send)

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    @property
    def last(self) -> Scope:
        return self.scopes[-1]

    def last_header(self, name: str) -> list[str]:
        """Every value of one request header in the last request the app saw."""
        wanted = name.lower().encode("latin-1")
        return [v.decode("latin-1") for k, v in self.last["headers"] if k.lower() == wanted]


class ClientRecorder:
    """Sits between the client and the middleware and records, per request, the messages sent to it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.exchanges: list[list[Message]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        messages: list[Message] = []
        self.exchanges.append(messages)

        async def record(message: Message) -> None:
            messages.append(dict(message))
            await send(message)

        await self.app(scope, receive, record)

    def body_chunks(self, index: int = -1) -> list[bytes]:
        return [m.get("body", b"") for m in self.exchanges[index] if m["type"] == "http.response.body"]


@dataclass
class Harness:
    clock: FakeClock
    cache: Cache
    origin: OriginSpy
    recorder: ClientRecorder
    client: httpx.AsyncClient
    middleware: CacheInterceptor = field(repr=False)

    @property
    def store(self) -> MemoryStore:
        assert isinstance(self.cache.store, MemoryStore)
        return self.cache.store

    def stored_objects(self) -> int:
        return len(self.store)

    async def get(self, url: str, headers: Mapping[str, str] | None = None) -> httpx.Response:
        return await self.client.get(url, headers=headers)


HarnessFactory = Callable[..., Harness]


def make_app(routes: Mapping[str, Endpoint]) -> Starlette:
    """A Starlette app answering every method on each path with its endpoint."""
    return Starlette(routes=[Route(path, endpoint, methods=ALL_METHODS) for path, endpoint in routes.items()])


def versioned(
    headers: Mapping[str, str] | None = None,
    *,
    status: int = 200,
    prefix: str = "v",
    media_type: str = "text/plain",
) -> Endpoint:
    """An endpoint answering ``v1``, ``v2`` … (one more per call) with the given status and headers."""
    count = 0

    async def endpoint(request: Request) -> Response:
        nonlocal count
        count += 1
        return Response(f"{prefix}{count}", status, headers=dict(headers or {}), media_type=media_type)

    return endpoint


def cache_status(response: httpx.Response) -> str:
    values = response.headers.get_list("cache-status")
    assert len(values) == 1, f"expected one Cache-Status, got {values}"
    return values[0]


def status_params(response: httpx.Response) -> list[str]:
    return [part.strip() for part in cache_status(response).split(";")]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def harness(clock: FakeClock) -> AsyncIterator[HarnessFactory]:
    """``harness(app_or_routes, **options)``: the app behind a CacheInterceptor with a fake-clock Cache.

    Options go through ``Settings.load`` with an empty environment, so the suite never reads the real
    ``EDGECACHE_*`` variables. ``raise_app_exceptions=False`` turns an exception escaping the middleware
    into a 500 at the client instead of an error in the test.
    """
    made: list[Harness] = []

    def make(
        app: ASGIApp | Mapping[str, Endpoint],
        *,
        raise_app_exceptions: bool = True,
        wrap: Callable[[ASGIApp], ASGIApp] | None = None,
        **options: Any,
    ) -> Harness:
        asgi_app: ASGIApp = make_app(app) if isinstance(app, Mapping) else app
        spy = OriginSpy(asgi_app)
        cache = Cache(Settings.load(options, environ={}), clock=clock)
        middleware = CacheInterceptor(spy, cache=cache)
        front: ASGIApp = wrap(middleware) if wrap is not None else middleware
        recorder = ClientRecorder(front)
        transport = httpx.ASGITransport(app=recorder, raise_app_exceptions=raise_app_exceptions)
        client = httpx.AsyncClient(transport=transport, base_url=BASE_URL)
        h = Harness(clock, cache, spy, recorder, client, middleware)
        made.append(h)
        return h

    yield make
    for h in made:
        await h.cache.drain()
        await h.client.aclose()
        await h.cache.aclose()


def without(names: Iterable[str], headers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    drop = {n.lower() for n in names}
    return [(k.lower(), v) for k, v in headers if k.lower() not in drop]
