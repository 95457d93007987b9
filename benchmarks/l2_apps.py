"""ASGI apps for ``http_l2_path.py``: the same 5 ms FastAPI endpoint behind three caches.

Every app is built on first access (module ``__getattr__``), in the uvicorn process that serves it, so
that importing this module needs neither Redis nor fastapi-cache2. The Redis apps read the server URL from
``BENCH_REDIS_URL`` (the benchmark starts a private ``redis-server`` on a loopback port and sets it) and a
key prefix from ``BENCH_NAMESPACE``.

Each FastAPI app counts how often its endpoint ran; ``GET /calls`` returns that count (``no-store``, so
no cache ever keeps it). The benchmark reads it before and after the load: an unchanged count proves that
every request under load was answered from the cache, not by the endpoint.

``l1_app``
    ``CacheInterceptor(app, default_ttl=600)`` wrapped from the outside, L1 only (no Redis): the L1 hit.
``l2_app``
    The same with ``redis_url`` set, and with an L1 that can hold nothing, so every hit is an L2 hit
    (``Cache-Status: ...; detail=l2``). L1 cannot be turned off by configuration: ``max_object_bytes`` must
    not exceed ``l1_max_bytes`` (a ``ConfigError`` otherwise), and the middleware does not buffer or store
    a response larger than ``max_object_bytes`` in any tier, so ``l1_max_bytes=1, max_object_bytes=1``
    stores nothing at all (``detail=too-large``). Instead the cache is built exactly as configured
    (``Cache(Settings)``: the tiered store, its Redis L2, circuit breaker, shared tier with the invalidation
    subscriber and generation watch), and only the tiered store's L1 is then replaced by
    ``MemoryStore(max_bytes=1)``, which refuses every object. An L2 hit therefore pays for what it pays in
    production: the L1 lookup that misses, one ``HGET`` to Redis, decoding, and the attempt to backfill L1
    (refused here).
``fastapi_cache_app``
    fastapi-cache2 (PyPI ``fastapi-cache2``) with its Redis backend, the way its README sets it up:
    ``FastAPICache.init(RedisBackend(redis.asyncio.from_url(url)), prefix=...)`` at lifespan start-up and
    ``@cache(expire=600)`` on the endpoint. fastapi-cache2 caches the endpoint's *return value* (JSON-coded)
    and FastAPI serialises it again on every hit, so this endpoint returns the parsed document
    (``dict``); FastAPI renders it to the same bytes as ``BODY``. A hit carries ``X-FastAPI-Cache: HIT``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.responses import JSONResponse, Response

from benchmarks.apps import BODY, CACHE_TTL, ENDPOINT_DELAY, MEDIA_TYPE, PATH

CALLS_PATH = "/calls"
REDIS_URL_ENV = "BENCH_REDIS_URL"
NAMESPACE_ENV = "BENCH_NAMESPACE"
DOCUMENT: dict[str, Any] = json.loads(BODY)

_calls = 0  # how often the cached endpoint ran in this process


def _redis_url() -> str:
    url = os.environ.get(REDIS_URL_ENV)
    if not url:
        raise RuntimeError(f"{REDIS_URL_ENV} is not set: the benchmark sets it to its private redis-server")
    return url


def _namespace(default: str) -> str:
    return os.environ.get(NAMESPACE_ENV) or default


def _add_calls_endpoint(app: FastAPI) -> None:
    @app.get(CALLS_PATH)
    async def calls() -> Response:
        return JSONResponse({"calls": _calls}, headers={"cache-control": "no-store"})


def make_counted_app() -> FastAPI:
    """The endpoint of ``benchmarks.apps`` (5 ms, then ``BODY``), counting its calls."""
    app = FastAPI(title="edgecache L2 benchmark")

    @app.get(PATH)
    async def items() -> Response:
        global _calls
        _calls += 1
        await asyncio.sleep(ENDPOINT_DELAY)
        return Response(content=BODY, media_type=MEDIA_TYPE)

    _add_calls_endpoint(app)
    return app


@functools.cache
def make_l1_app() -> Any:
    from edgecache import CacheInterceptor  # noqa: PLC0415 - deferred: built in the server process only

    return CacheInterceptor(make_counted_app(), default_ttl=CACHE_TTL)


@functools.cache
def make_l2_app() -> Any:
    from edgecache import Cache, CacheInterceptor, Settings  # noqa: PLC0415
    from edgecache.stores.memory import MemoryStore  # noqa: PLC0415
    from edgecache.stores.tiered import TieredStore  # noqa: PLC0415

    settings = Settings.load(
        {"default_ttl": CACHE_TTL, "redis_url": _redis_url(), "namespace": _namespace("bench-l2")},
        environ={},
    )
    cache = Cache(settings)
    if not isinstance(cache.store, TieredStore) or cache.shared is None:
        raise RuntimeError(f"expected a tiered store with a shared tier, got {cache.store!r}")
    # An L1 that refuses every object (each is larger than 1 byte): every hit comes from L2.
    cache.store.l1 = MemoryStore(1, clock=cache.clock)
    return CacheInterceptor(make_counted_app(), cache=cache)


@functools.cache
def make_fastapi_cache_app() -> FastAPI:
    from fastapi_cache import FastAPICache  # noqa: PLC0415 - optional dependency (extra "bench")
    from fastapi_cache.backends.redis import RedisBackend  # noqa: PLC0415
    from fastapi_cache.decorator import cache  # noqa: PLC0415
    from redis import asyncio as aioredis  # noqa: PLC0415

    url = _redis_url()
    prefix = _namespace("bench-fastapi-cache")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        redis = aioredis.from_url(url)
        FastAPICache.init(RedisBackend(redis), prefix=prefix)
        yield
        await redis.aclose()

    app = FastAPI(title="fastapi-cache2 benchmark", lifespan=lifespan)

    @app.get(PATH)
    @cache(expire=CACHE_TTL)
    async def items() -> dict[str, Any]:
        global _calls
        _calls += 1
        await asyncio.sleep(ENDPOINT_DELAY)
        return DOCUMENT

    _add_calls_endpoint(app)
    return app


def __getattr__(name: str) -> Any:
    # PEP 562: ``benchmarks.l2_apps:l2_app`` etc. are built when uvicorn first looks them up.
    if name == "l1_app":
        return make_l1_app()
    if name == "l2_app":
        return make_l2_app()
    if name == "fastapi_cache_app":
        return make_fastapi_cache_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
