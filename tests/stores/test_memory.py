from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest
from cachetools import LRUCache
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from edgecache.core.entry import StoredResponse
from edgecache.stores.memory import MemoryStore
from tests.helpers import FakeClock
from tests.stores.contract import StoreContract, StoreFactory, make_response

T = TypeVar("T")


class TestMemoryStoreContract(StoreContract):
    @pytest.fixture
    def make_store(self) -> StoreFactory:
        async def factory(max_bytes: int, clock: FakeClock) -> MemoryStore:
            return MemoryStore(max_bytes, clock=clock)

        return factory


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Runs a coroutine that must finish without suspending, as every MemoryStore method should."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise AssertionError("MemoryStore awaited something; it must complete within one event-loop step")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def evicted_sizes() -> list[int]:
    return []


@pytest.fixture
def new_store(clock: FakeClock, evicted_sizes: list[int]) -> Callable[..., MemoryStore]:
    def build(max_bytes: int = 64 * 1024, max_object_bytes: int | None = None) -> MemoryStore:
        return MemoryStore(
            max_bytes, clock=clock, max_object_bytes=max_object_bytes, on_evict=evicted_sizes.append
        )

    return build


ONE_RESPONSE_BYTES = make_response("a").size  # single-letter keys all have this size


async def test_name_is_l1(new_store: Callable[..., MemoryStore]) -> None:
    assert new_store().name == "l1"


async def test_read_key_survives_eviction_and_the_new_write_is_readable(
    new_store: Callable[..., MemoryStore],
) -> None:
    store = new_store(max_bytes=3 * ONE_RESPONSE_BYTES)
    for key in ("a", "b", "c"):
        await store.set(key, make_response(key))

    await store.get("a")
    await store.set("d", make_response("d"))

    assert store.get_nowait("a") is not None
    assert store.get_nowait("d") is not None
    assert len(store) == 3


async def _survivors_after(store: MemoryStore, read: Callable[[str], object]) -> list[str]:
    """Fill, read "d" ten times with ``read``, add four more keys: which keys are left."""
    for key in "abc":
        await store.set(key, make_response(key))
    for key in "abc":
        for _ in range(3):
            store.get_nowait(key)
    await store.set("d", make_response("d"))
    for _ in range(10):
        read("d")
    for key in "efgh":
        await store.set(key, make_response(key))
    return [key for key in "abcdefgh" if store.peek(key) is not None]


async def test_peek_does_not_count_as_a_use(new_store: Callable[..., MemoryStore]) -> None:
    untouched = await _survivors_after(new_store(max_bytes=3 * ONE_RESPONSE_BYTES), lambda key: None)
    store = new_store(max_bytes=3 * ONE_RESPONSE_BYTES)
    assert await _survivors_after(store, store.peek) == untouched
    used = new_store(max_bytes=3 * ONE_RESPONSE_BYTES)
    assert await _survivors_after(used, used.get_nowait) != untouched  # the scenario does tell uses apart


async def test_peek_hides_expired_objects_without_evicting_them(
    new_store: Callable[..., MemoryStore], clock: FakeClock, evicted_sizes: list[int]
) -> None:
    store = new_store()
    await store.set("a", make_response("a"))
    assert store.peek("a") == make_response("a")
    clock.advance(10_000)
    assert store.peek("a") is None
    assert evicted_sizes == []  # get_nowait would have evicted it; peek leaves that to writes and get


async def test_on_evict_reports_each_object_evicted_for_space(
    new_store: Callable[..., MemoryStore], evicted_sizes: list[int]
) -> None:
    store = new_store(max_bytes=3 * ONE_RESPONSE_BYTES)
    for key in ("a", "b", "c"):
        await store.set(key, make_response(key))
    big = make_response("d", body=b"x" * (ONE_RESPONSE_BYTES + 100))

    await store.set("d", big)

    assert evicted_sizes == [ONE_RESPONSE_BYTES, ONE_RESPONSE_BYTES]


async def test_on_evict_reports_expired_object_met_by_get(
    new_store: Callable[..., MemoryStore], evicted_sizes: list[int], clock: FakeClock
) -> None:
    store = new_store()
    await store.set("a", make_response("a", stored_until=clock() + 1))
    clock.advance(1)

    assert await store.get("a") is None
    assert evicted_sizes == [ONE_RESPONSE_BYTES]


async def test_on_evict_not_called_for_delete_purge_overwrite_or_clear(
    new_store: Callable[..., MemoryStore], evicted_sizes: list[int]
) -> None:
    store = new_store()
    for key in ("a", "b", "c", "d"):
        await store.set(key, make_response(key, tags={key}))

    await store.delete("a")
    await store.purge_tags(["b"])
    await store.set("c", make_response("c"))
    await store.clear()

    assert evicted_sizes == []


async def test_expired_objects_are_evicted_before_live_ones(
    new_store: Callable[..., MemoryStore], clock: FakeClock, evicted_sizes: list[int]
) -> None:
    store = new_store(max_bytes=3 * ONE_RESPONSE_BYTES)
    await store.set("b", make_response("b"))
    await store.set("a", make_response("a", stored_until=clock() + 5))
    await store.set("c", make_response("c"))
    await store.get("a")  # most recently used, yet the first to go once expired
    clock.advance(5)

    await store.set("d", make_response("d"))

    assert await store.get("b") is not None  # least recently used, but live
    assert await store.get("c") is not None
    assert evicted_sizes == [ONE_RESPONSE_BYTES]


async def test_current_bytes_is_the_sum_of_stored_sizes(new_store: Callable[..., MemoryStore]) -> None:
    store = new_store()
    small, large = make_response("a"), make_response("b", body=b"y" * 1000)
    await store.set("a", small)
    await store.set("b", large)

    assert store.current_bytes == small.size + large.size


async def test_current_bytes_after_overwrite(new_store: Callable[..., MemoryStore]) -> None:
    store = new_store()
    await store.set("a", make_response("a", body=b"y" * 1000))
    smaller = make_response("a", body=b"y" * 10)

    await store.set("a", smaller)

    assert store.current_bytes == smaller.size


async def test_current_bytes_after_delete(new_store: Callable[..., MemoryStore]) -> None:
    store = new_store()
    await store.set("a", make_response("a"))
    await store.set("b", make_response("b"))

    await store.delete("a")

    assert store.current_bytes == ONE_RESPONSE_BYTES


async def test_current_bytes_after_purge(new_store: Callable[..., MemoryStore]) -> None:
    store = new_store()
    await store.set("a", make_response("a", tags={"red"}))
    await store.set("b", make_response("b"))

    await store.purge_tags(["red"])

    assert store.current_bytes == ONE_RESPONSE_BYTES


async def test_current_bytes_after_expiry_without_a_read(
    new_store: Callable[..., MemoryStore], clock: FakeClock
) -> None:
    store = new_store()
    await store.set("a", make_response("a", stored_until=clock() + 1))
    await store.set("b", make_response("b"))
    clock.advance(1)

    assert store.current_bytes == ONE_RESPONSE_BYTES
    assert len(store) == 1


async def test_object_larger_than_max_object_bytes_is_rejected(
    new_store: Callable[..., MemoryStore],
) -> None:
    store = new_store(max_object_bytes=ONE_RESPONSE_BYTES)

    assert await store.set("a", make_response("a")) is True
    assert await store.set("b", make_response("b", body=b"x" * 101)) is False
    assert await store.get("b") is None
    assert store.current_bytes == ONE_RESPONSE_BYTES


async def test_object_larger_than_max_bytes_is_rejected_without_evicting(
    new_store: Callable[..., MemoryStore], evicted_sizes: list[int]
) -> None:
    store = new_store(max_bytes=2 * ONE_RESPONSE_BYTES)
    await store.set("a", make_response("a"))

    assert await store.set("b", make_response("b", body=b"x" * (2 * ONE_RESPONSE_BYTES))) is False
    assert await store.get("a") is not None
    assert evicted_sizes == []


async def _serve(store: MemoryStore, key: str) -> bool:
    """One request through the store as the middleware makes it: a read, and a write on a miss."""
    if store.get_nowait(key) is not None:
        return True
    await store.set(key, make_response(key))
    return False


async def test_one_hit_wonder_flood_does_not_evict_the_hot_set_while_lru_would(
    new_store: Callable[..., MemoryStore],
) -> None:
    # 80 hot keys asked for round-robin, each request followed by a key asked for once (cache-busting
    # query strings): a hot key comes back after 160 distinct keys, beyond an LRU of 100 objects.
    capacity = 100 * ONE_RESPONSE_BYTES
    store = new_store(max_bytes=capacity)
    lru: LRUCache[str, StoredResponse] = LRUCache(maxsize=capacity, getsizeof=lambda value: value.size)
    hot = [f"hot{i:02}" for i in range(80)]  # as long as the flood's keys: every object the same size
    store_hot_hits = lru_hot_hits = 0
    for i in range(8000):
        for key, is_hot in ((hot[i % 80], True), (f"f{i:04}", False)):
            hit = await _serve(store, key)
            lru_hit = lru.get(key) is not None
            if not lru_hit:
                lru[key] = make_response(key)
            store_hot_hits += hit and is_hot
            lru_hot_hits += lru_hit and is_hot

    assert lru_hot_hits == 0  # every hot key was pushed out before it came back
    assert store_hot_hits >= 0.9 * 8000
    assert sum(store.get_nowait(key) is not None for key in hot) >= 75
    assert store.current_bytes <= capacity


async def test_a_purged_popular_key_keeps_its_frequency(new_store: Callable[..., MemoryStore]) -> None:
    store = new_store(max_bytes=10 * ONE_RESPONSE_BYTES)
    await store.set("p", make_response("p", tags={"page"}))
    for _ in range(10):
        store.get_nowait("p")
    frequency = store.policy._counts["p"]

    await store.purge_tags(["page"])
    assert store.get_nowait("p") is None
    await store.set("p", make_response("p"))

    assert store.policy._counts["p"] >= frequency


async def _remove_by_delete(store: MemoryStore, clock: FakeClock) -> None:
    await store.delete("a", "b", "c")


async def _remove_by_purge(store: MemoryStore, clock: FakeClock) -> None:
    await store.purge_tags(["shared"])


async def _remove_by_overwrite_without_tags(store: MemoryStore, clock: FakeClock) -> None:
    for key in ("a", "b", "c"):
        await store.set(key, make_response(key))


async def _remove_by_expiry(store: MemoryStore, clock: FakeClock) -> None:
    clock.advance(3600)
    await store.get("a")  # removed on read; the rest by the sweep behind len()
    assert len(store) == 0


async def _remove_by_eviction(store: MemoryStore, clock: FakeClock) -> None:
    await store.set("big", make_response("big", body=b"x" * (3 * ONE_RESPONSE_BYTES)))


async def _remove_by_clear(store: MemoryStore, clock: FakeClock) -> None:
    await store.clear()


@pytest.mark.parametrize(
    "remove_tagged_objects",
    [
        _remove_by_delete,
        _remove_by_purge,
        _remove_by_overwrite_without_tags,
        _remove_by_expiry,
        _remove_by_eviction,
        _remove_by_clear,
    ],
)
async def test_tag_index_forgets_tags_whose_objects_are_gone(
    new_store: Callable[..., MemoryStore],
    clock: FakeClock,
    remove_tagged_objects: Callable[[MemoryStore, FakeClock], Coroutine[Any, Any, None]],
) -> None:
    store = new_store(max_bytes=4 * ONE_RESPONSE_BYTES)
    for key in ("a", "b", "c"):
        await store.set(key, make_response(key, tags={"shared", f"only-{key}"}))

    await remove_tagged_objects(store, clock)

    assert store._keys_by_tag == {}


async def test_expiry_heap_stays_bounded_under_rewrites_and_deletes(
    new_store: Callable[..., MemoryStore],
) -> None:
    store = new_store()
    for _ in range(1000):
        await store.set("a", make_response("a"))
    for i in range(1000):
        await store.set(f"k{i}", make_response("b"))
        await store.delete(f"k{i}")

    assert len(store._expiry_heap) <= 2 * len(store) + 64


async def test_no_method_suspends(new_store: Callable[..., MemoryStore]) -> None:
    store = new_store()

    assert run_sync(store.set("a", make_response("a", tags={"red"}))) is True
    assert run_sync(store.get("a")) is not None
    assert run_sync(store.purge_tags(["red"])) == 1
    assert run_sync(store.delete("a")) == 0
    run_sync(store.clear())
    run_sync(store.aclose())


KEYS = ("a", "b", "c", "d", "e", "f", "g")
TAGS = ("red", "green", "blue")
MODEL_MAX_BYTES = 3000
MODEL_MAX_OBJECT_BYTES = 1000


class MemoryStoreMachine(RuleBasedStateMachine):
    """Checks the store against a model of what it may hold: which objects the policy keeps is its own
    business, but whatever the store holds must be the latest object written under that key, unexpired,
    within the byte bound, readable right after its write, and indexed by its tags; and every byte
    written is either held, evicted (reported through ``on_evict``) or removed by a delete, purge,
    overwrite or rejected write."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.evicted_bytes = 0
        self.store = MemoryStore(
            MODEL_MAX_BYTES,
            clock=self.clock,
            max_object_bytes=MODEL_MAX_OBJECT_BYTES,
            on_evict=self._count_eviction,
        )
        self.latest: dict[str, StoredResponse] = {}  # the last object stored under each key
        self.written_bytes = 0
        self.removed_bytes = 0  # by delete, purge, overwrite, rejected write

    def _count_eviction(self, size: int) -> None:
        self.evicted_bytes += size

    def _held(self) -> dict[str, StoredResponse]:
        """What the store holds once due expiries are swept (the sweep counts as eviction)."""
        len(self.store)
        return {key: value for key, value in self.store._objects.items() if isinstance(value, StoredResponse)}

    @rule(
        key=st.sampled_from(KEYS),
        body_length=st.integers(0, 600),
        tags=st.frozensets(st.sampled_from(TAGS)),
        # Quarter seconds, like the clock steps, so objects hit the expiry boundary exactly.
        ttl=st.integers(-2, 20).map(lambda quarters: quarters / 4),
    )
    def set(self, key: str, body_length: int, tags: frozenset[str], ttl: float) -> None:
        now = self.clock()
        value = make_response(key, body=b"x" * body_length, tags=tags, stored_until=now + ttl, now=now)
        previous = self._held().get(key)

        stored = run_sync(self.store.set(key, value))

        if previous is not None:
            self.removed_bytes += previous.size
        assert stored == (value.size <= MODEL_MAX_OBJECT_BYTES and ttl > 0)
        if stored:
            self.written_bytes += value.size
            self.latest[key] = value
            assert self.store.get_nowait(key) is value
        else:
            assert key not in self.store._objects

    @rule(key=st.sampled_from(KEYS))
    def get(self, key: str) -> None:
        got = run_sync(self.store.get(key))

        if got is not None:
            assert got is self.latest[key]
            assert got.stored_until > self.clock()

    @rule(keys=st.lists(st.sampled_from(KEYS), max_size=3))
    def delete(self, keys: list[str]) -> None:
        held = self._held()

        removed = run_sync(self.store.delete(*keys))

        present = {key for key in keys if key in held}
        assert removed == len(present)
        self.removed_bytes += sum(held[key].size for key in present)

    @rule(tags=st.frozensets(st.sampled_from(TAGS), max_size=2))
    def purge(self, tags: frozenset[str]) -> None:
        held = self._held()

        removed = run_sync(self.store.purge_tags(tags))

        tagged = [key for key, value in held.items() if value.tags & tags]
        assert removed == len(tagged)
        self.removed_bytes += sum(held[key].size for key in tagged)

    @rule(seconds=st.integers(1, 12).map(lambda quarters: quarters / 4))
    def advance_clock(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def agrees_with_model(self) -> None:
        current_bytes = self.store.current_bytes
        held = self._held()
        now = self.clock()
        assert current_bytes == sum(value.size for value in held.values()) <= MODEL_MAX_BYTES
        assert len(self.store) == len(held) == len(self.store.policy)
        for key, value in held.items():
            assert value is self.latest[key]
            assert value.stored_until > now
            assert key in self.store.policy
        assert self.written_bytes == current_bytes + self.evicted_bytes + self.removed_bytes
        expected_index: dict[str, set[str]] = {}
        for key, value in held.items():
            for tag in value.tags:
                expected_index.setdefault(tag, set()).add(key)
        assert self.store._keys_by_tag == expected_index


TestMemoryStoreMachine = MemoryStoreMachine.TestCase
TestMemoryStoreMachine.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
