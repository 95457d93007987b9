"""Behaviour every ``Store`` must show. A store's test module subclasses ``StoreContract`` (as ``Test...``)
and provides the ``make_store`` fixture; capability flags switch off tests a tier cannot honour."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, ClassVar

import pytest

from edgecache.core.entry import Freshness, StoredResponse, VaryIndex, response_size
from edgecache.stores.base import Store
from tests.helpers import FAKE_EPOCH, FakeClock

StoreFactory = Callable[[int, FakeClock], Awaitable[Store]]

# Room for a few dozen default-sized responses: big enough not to evict in the plain tests.
CONTRACT_MAX_BYTES = 64 * 1024
DEFAULT_LIFETIME = 3600.0


def make_response(
    key: str,
    *,
    body: bytes = b"x" * 100,
    tags: Iterable[str] = (),
    stored_until: float | None = None,
    now: float = FAKE_EPOCH,
) -> StoredResponse:
    """A response with every field set away from its default, so a round trip that drops one shows."""
    canonical_key = f"GET https://shop.example/items/{key}".encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"cache-control", b"public, max-age=60, stale-while-revalidate=30"),
        (b"etag", f'"{key}-v1"'.encode()),
        (b"last-modified", b"Tue, 14 Nov 2023 22:13:20 GMT"),
        (b"vary", b"accept-encoding"),
        (b"content-length", str(len(body)).encode()),
    ]
    return StoredResponse(
        status=200,
        headers=headers,
        body=body,
        request_time=now - 0.05,
        response_time=now - 0.01,
        corrected_initial_age=0.04,
        freshness=Freshness(lifetime=60.0, source="max-age", stale_while_revalidate=30.0, stale_if_error=5.0),
        stored_until=now + DEFAULT_LIFETIME if stored_until is None else stored_until,
        key=canonical_key,
        etag=f'"{key}-v1"',
        last_modified="Tue, 14 Nov 2023 22:13:20 GMT",
        vary=("accept-encoding",),
        vary_values=("gzip",),
        tags=frozenset(tags),
        size=response_size(headers, body, canonical_key),
    )


def make_vary_index(key: str, *, now: float = FAKE_EPOCH) -> VaryIndex:
    canonical_key = f"GET https://shop.example/items/{key}".encode()
    variants = ("variant-gzip", "variant-br")
    return VaryIndex(
        vary=("accept-encoding", "accept-language"),
        variants=variants,
        stored_until=now + DEFAULT_LIFETIME,
        key=canonical_key,
        tags=frozenset({"items"}),
        size=response_size([], b"", canonical_key) + sum(map(len, variants)),
    )


class StoreContract(abc.ABC):
    # Stores bounded by something other than the sum of object sizes (e.g. Redis maxmemory) switch this off.
    bounds_bytes: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # pytest silently skips abstract classes, so a forgotten fixture would otherwise run zero tests.
        if cls.__name__.startswith("Test") and getattr(cls.make_store, "__isabstractmethod__", False):
            raise TypeError(f"{cls.__name__} must provide the make_store fixture")

    @pytest.fixture
    @abc.abstractmethod
    def make_store(self) -> StoreFactory:
        """Returns ``async (max_bytes, clock) -> Store``, a fresh empty store per call."""

    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock()

    @pytest.fixture
    async def store(self, make_store: StoreFactory, clock: FakeClock) -> AsyncIterator[Store]:
        store = await make_store(CONTRACT_MAX_BYTES, clock)
        yield store
        await store.aclose()

    async def test_satisfies_the_store_protocol(self, store: Store) -> None:
        assert isinstance(store, Store)
        assert isinstance(store.name, str)
        assert store.name

    async def test_get_returns_what_set_stored_with_every_field(self, store: Store, clock: FakeClock) -> None:
        response = make_response("a", tags={"items", "item:a"}, now=clock())

        assert await store.set("a", response) is True
        assert await store.get("a") == response

    async def test_vary_index_round_trips(self, store: Store, clock: FakeClock) -> None:
        index = make_vary_index("a", now=clock())

        assert await store.set("a", index) is True
        assert await store.get("a") == index

    async def test_missing_key_is_none(self, store: Store) -> None:
        assert await store.get("never-set") is None

    async def test_set_on_existing_key_replaces_the_object(self, store: Store, clock: FakeClock) -> None:
        await store.set("a", make_response("a", body=b"old", now=clock()))
        newer = make_response("a", body=b"new", now=clock())

        assert await store.set("a", newer) is True
        assert await store.get("a") == newer

    async def test_overwrite_drops_the_old_objects_tags(self, store: Store, clock: FakeClock) -> None:
        await store.set("a", make_response("a", tags={"old"}, now=clock()))
        newer = make_response("a", tags={"new"}, now=clock())
        await store.set("a", newer)

        assert await store.purge_tags(["old"]) == 0
        assert await store.get("a") == newer

    async def test_delete_returns_how_many_were_present_and_removes_them(
        self, store: Store, clock: FakeClock
    ) -> None:
        for key in ("a", "b", "c"):
            await store.set(key, make_response(key, now=clock()))

        assert await store.delete("a", "b", "never-set") == 2
        assert await store.get("a") is None
        assert await store.get("b") is None
        assert await store.get("c") is not None

    async def test_object_expires_exactly_at_stored_until(self, store: Store, clock: FakeClock) -> None:
        await store.set("a", make_response("a", stored_until=clock() + 10.0, now=clock()))

        clock.advance(9.5)
        assert await store.get("a") is not None
        clock.advance(0.5)
        assert await store.get("a") is None

    @pytest.mark.parametrize("seconds_left", [0.0, -1.0])
    async def test_already_expired_object_is_not_stored(
        self, store: Store, clock: FakeClock, seconds_left: float
    ) -> None:
        expired = make_response("a", stored_until=clock() + seconds_left, now=clock())

        assert await store.set("a", expired) is False
        assert await store.get("a") is None

    async def test_rejected_set_does_not_leave_the_older_object_behind(
        self, store: Store, clock: FakeClock
    ) -> None:
        await store.set("a", make_response("a", now=clock()))

        assert await store.set("a", make_response("a", stored_until=clock(), now=clock())) is False
        assert await store.get("a") is None

    async def test_purge_tags_removes_exactly_the_tagged_objects(
        self, store: Store, clock: FakeClock
    ) -> None:
        tags_by_key = {"a": {"red"}, "b": {"blue"}, "c": {"red", "green"}, "d": set()}
        for key, tags in tags_by_key.items():
            await store.set(key, make_response(key, tags=tags, now=clock()))

        assert await store.purge_tags(["red"]) == 2
        assert await store.get("a") is None
        assert await store.get("c") is None
        assert await store.get("b") is not None
        assert await store.get("d") is not None

    async def test_object_matching_several_purged_tags_counts_once(
        self, store: Store, clock: FakeClock
    ) -> None:
        await store.set("a", make_response("a", tags={"red", "green"}, now=clock()))
        await store.set("b", make_response("b", tags={"green"}, now=clock()))

        assert await store.purge_tags(["red", "green"]) == 2

    async def test_purge_of_unknown_tag_removes_nothing(self, store: Store, clock: FakeClock) -> None:
        await store.set("a", make_response("a", tags={"red"}, now=clock()))

        assert await store.purge_tags(["never-used"]) == 0
        assert await store.get("a") is not None

    async def test_clear_removes_everything(self, store: Store, clock: FakeClock) -> None:
        for key in ("a", "b"):
            await store.set(key, make_response(key, tags={"red"}, now=clock()))

        await store.clear()

        assert await store.get("a") is None
        assert await store.get("b") is None
        assert await store.purge_tags(["red"]) == 0

    async def test_aclose_twice_is_safe(self, store: Store) -> None:
        await store.aclose()
        await store.aclose()

    async def test_many_sets_never_exceed_max_bytes(self, make_store: StoreFactory, clock: FakeClock) -> None:
        if not self.bounds_bytes:
            pytest.skip("this store is not bounded by the sum of object sizes")
        max_bytes = 4 * 1024
        store = await make_store(max_bytes, clock)
        keys = [f"k{i}" for i in range(40)]
        try:
            for i, key in enumerate(keys):
                assert await store.set(key, make_response(key, body=b"x" * (50 * (i % 7)), now=clock()))
                held = [obj for k in keys[: i + 1] if (obj := await store.get(k)) is not None]
                assert sum(obj.size for obj in held) <= max_bytes
                assert await store.get(key) is not None  # a successful set is readable at once
        finally:
            await store.aclose()
