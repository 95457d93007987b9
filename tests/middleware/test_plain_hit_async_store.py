"""The plain hit path on a store that has no synchronous read (no ``peek``): a ``Store`` of the user's own.

The memory L1 and the tiered store are read synchronously; any other ``Store`` is awaited, and its hits
must still take the plain path with the same answer."""

from __future__ import annotations

from collections.abc import Iterable

import httpx
import pytest

import edgecache.middleware
from edgecache import Cache, CacheInterceptor, Settings
from edgecache.core.entry import CacheObject
from edgecache.stores.memory import MemoryStore
from tests.helpers import FakeClock
from tests.middleware.conftest import make_app, versioned


class AwaitOnlyStore:
    """The ``Store`` protocol and nothing more, kept in a MemoryStore."""

    name = "await-only"

    def __init__(self, clock: FakeClock) -> None:
        self._inner = MemoryStore(1 << 20, clock=clock)
        self.reads = 0

    async def get(self, key: str) -> CacheObject | None:
        self.reads += 1
        return await self._inner.get(key)

    async def set(self, key: str, value: CacheObject) -> bool:
        return await self._inner.set(key, value)

    async def delete(self, *keys: str) -> int:
        return await self._inner.delete(*keys)

    async def purge_tags(self, tags: Iterable[str]) -> int:
        return await self._inner.purge_tags(tags)

    async def clear(self) -> None:
        await self._inner.clear()

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_a_hit_on_an_awaited_store_takes_the_plain_path(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    store = AwaitOnlyStore(clock)
    cache = Cache(Settings.load({"default_ttl": 60}, environ={}), store=store, clock=clock)
    middleware = CacheInterceptor(make_app({"/r": versioned({"x-app": "1"})}), cache=cache)
    assert middleware._peek is None
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=middleware), base_url="http://testserver"
    ) as client:
        first = await client.get("/r")
        await cache.drain()
        clock.advance(5)

        def no_full_path(*args: object) -> None:
            raise AssertionError("the hit took the full path")

        monkeypatch.setattr(edgecache.middleware, "_Exchange", no_full_path)
        reads = store.reads
        hit = await client.get("/r")
        head = await client.head("/r")
    await cache.aclose()
    assert first.text == hit.text == "v1" and head.content == b""
    assert hit.headers["age"] == "5" and hit.headers["cache-status"].startswith("edgecache; hit")
    assert head.headers["cache-status"] == hit.headers["cache-status"]
    assert store.reads == reads + 2  # one awaited read per request


class AwaitOnlyStoreCountingUses(AwaitOnlyStore):
    """A store with ``record_use`` but no ``peek``: its ``get`` counts the use already."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.recorded: list[str] = []

    def record_use(self, key: str) -> None:
        self.recorded.append(key)


async def test_a_store_read_with_get_is_not_told_of_the_use_again() -> None:
    clock = FakeClock()
    store = AwaitOnlyStoreCountingUses(clock)
    cache = Cache(Settings.load({"default_ttl": 60}, environ={}), store=store, clock=clock)
    middleware = CacheInterceptor(make_app({"/r": versioned()}), cache=cache)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=middleware), base_url="http://testserver"
    ) as client:
        await client.get("/r")
        await cache.drain()
        hit = await client.get("/r")
    await cache.aclose()
    assert hit.headers["cache-status"].startswith("edgecache; hit")
    assert store.recorded == []
