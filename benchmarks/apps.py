"""ASGI apps for the benchmarks in this directory.

``bare_app``
    Pure ASGI, no framework: answers every HTTP request with ``BODY``. The floor for this server stack.
``uncached_app``
    FastAPI; the endpoint at ``PATH`` takes ``ENDPOINT_DELAY`` seconds (``asyncio.sleep``) to produce the
    same ``BODY``.
``cached_app``
    The same FastAPI app wrapped by ``edgecache.CacheInterceptor`` (``default_ttl=600``, L1 only, no Redis).
    After the first request every request to ``PATH`` is a cache hit and the endpoint is not called.
``make_cache_only_app()``
    ``CacheInterceptor`` directly around ``bare_app`` (no FastAPI): used in-process to separate edgecache's
    own cost per hit from FastAPI/Starlette's outer layers.

The two FastAPI apps are built on first access (module ``__getattr__``), so that ``bare_app`` and
``uncached_app`` stay importable even when ``edgecache`` is broken or incomplete. Serve them with e.g.
``python -m uvicorn benchmarks.apps:cached_app`` from the repository root.
"""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Any

from fastapi import FastAPI
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

PATH = "/"
ENDPOINT_DELAY = 0.005  # seconds the FastAPI endpoint takes to produce the body
CACHE_TTL = 600  # CacheInterceptor(default_ttl=...)
MEDIA_TYPE = "application/json"


def _make_body(limit: int = 2048) -> bytes:
    """A deterministic compact JSON document of just under ``limit`` bytes (~2 KB)."""
    items: list[dict[str, Any]] = []
    body = b"{}"
    for i in range(1000):
        items.append(
            {
                "id": i,
                "sku": f"SKU-{i:06d}",
                "name": f"Item number {i}",
                "price": round(9.99 + i * 1.25, 2),
                "in_stock": i % 3 != 0,
                "tags": ["benchmark", f"group-{i % 4}"],
            }
        )
        candidate = json.dumps({"count": len(items), "items": items}, separators=(",", ":")).encode()
        if len(candidate) > limit:
            break
        body = candidate
    return body


BODY: bytes = _make_body()
_BARE_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-type", MEDIA_TYPE.encode("latin-1")),
    (b"content-length", str(len(BODY)).encode("latin-1")),
]


async def serve_lifespan(receive: Receive, send: Send) -> None:
    """The ASGI lifespan protocol for an app with nothing to start or stop: acknowledge both."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def bare_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Pure ASGI: 200 with ``BODY`` for any HTTP request; implements the lifespan protocol."""
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": _BARE_HEADERS})
        await send({"type": "http.response.body", "body": BODY})
        return
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)


def make_fastapi_app(*, cached: bool) -> FastAPI:
    """A FastAPI app whose endpoint at ``PATH`` sleeps ``ENDPOINT_DELAY`` then returns ``BODY``."""
    app = FastAPI(title="edgecache benchmark")

    @app.get(PATH)
    async def items() -> Response:
        await asyncio.sleep(ENDPOINT_DELAY)
        return Response(content=BODY, media_type=MEDIA_TYPE)

    if cached:
        from edgecache import CacheInterceptor  # noqa: PLC0415 - deferred so bare_app imports without it

        app.add_middleware(CacheInterceptor, default_ttl=CACHE_TTL)
    return app


@functools.cache
def make_cached_app() -> FastAPI:
    return make_fastapi_app(cached=True)


@functools.cache
def make_cache_only_app() -> Any:
    """``CacheInterceptor`` directly around ``bare_app``: edgecache's own hit cost, without FastAPI."""
    from edgecache import CacheInterceptor  # noqa: PLC0415 - deferred so bare_app imports without it

    return CacheInterceptor(bare_app, default_ttl=CACHE_TTL)


@functools.cache
def make_wrapped_app() -> Any:
    """The FastAPI app wrapped from the outside, ``CacheInterceptor(app)``: hits skip FastAPI entirely."""
    from edgecache import CacheInterceptor  # noqa: PLC0415 - deferred so bare_app imports without it

    return CacheInterceptor(make_fastapi_app(cached=False), default_ttl=CACHE_TTL)


@functools.cache
def make_uncached_app() -> FastAPI:
    return make_fastapi_app(cached=False)


def __getattr__(name: str) -> Any:
    # PEP 562: ``benchmarks.apps:cached_app`` / ``:uncached_app`` are built when first looked up.
    if name == "cached_app":
        return make_cached_app()
    if name == "uncached_app":
        return make_uncached_app()
    if name == "wrapped_app":
        return make_wrapped_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
