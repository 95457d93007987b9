"""TieredStore (MemoryStore L1 in front of RedisStore L2) against a real redis-server: the Store contract,
then the tiering itself (backfill, the L1 lifetime cap, write-behind), and failures injected through a
FaultProxy between the store and Redis (stopped, silent, reset, out of memory), the circuit breaker on a
fake clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, ClassVar, Literal

import pytest

from edgecache.core.breaker import BreakerState, CircuitBreaker
from edgecache.core.entry import CacheObject, StoredResponse
from edgecache.core.status import Reason
from edgecache.stores.memory import MemoryStore
from edgecache.stores.redis import DEFAULT_OP_TIMEOUT, RedisStore
from edgecache.stores.tiered import PURGE_FENCE_SECONDS, TieredStore
from tests.faultproxy import FaultProxy
from tests.helpers import FakeClock
from tests.redis_server import RedisServer
from tests.stores.contract import (
    DEFAULT_LIFETIME,
    StoreContract,
    StoreFactory,
    make_response,
    make_vary_index,
)

# Generous: a failing L2 call gives up after op_timeout (0.25 s); this only catches "waits for seconds".
FAIL_FAST_BOUND = 2.0
# Tests about behaviour, not timing, allow this much per Redis call, so a loaded machine cannot fail them.
ROOMY_OP_TIMEOUT = 5.0
L1_MAX_BYTES = 4 * 1024 * 1024
FAILURE_THRESHOLD = 3
RESET_AFTER = 10.0
L1_MAX_TTL = 30.0  # TieredStore's default

FailureMode = Literal["stopped", "blackhole", "reset"]


class TestTieredStoreContract(StoreContract):
    bounds_bytes: ClassVar[bool] = False  # L2 is bounded by Redis's maxmemory policy, not by the store

    @pytest.fixture
    def make_store(self, redis_url: str) -> StoreFactory:
        async def factory(max_bytes: int, clock: FakeClock) -> TieredStore:
            return TieredStore(
                MemoryStore(max_bytes, clock=clock),
                RedisStore.from_url(redis_url, clock=clock, op_timeout=ROOMY_OP_TIMEOUT),
                clock=clock,
                # Above the contract's lifetimes: the suite compares whole objects, and the L1 copy of a
                # longer-lived object has its stored_until capped (tested on its own below).
                l1_max_ttl=10 * DEFAULT_LIFETIME,
            )

        return factory


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def proxy(redis_url: str, redis_server: RedisServer) -> AsyncIterator[FaultProxy]:
    """A FaultProxy in front of the session's redis-server (running and flushed)."""
    async with FaultProxy(redis_server.host, redis_server.port) as proxy:
        yield proxy


@pytest.fixture
async def stores() -> AsyncIterator[list[TieredStore | RedisStore]]:
    """Everything a test builds, closed at its end even when it fails."""
    made: list[TieredStore | RedisStore] = []
    yield made
    for store in made:
        await store.aclose()


@pytest.fixture
def new_tiered(
    redis_url: str, clock: FakeClock, stores: list[TieredStore | RedisStore]
) -> Callable[..., TieredStore]:
    """``new_tiered(url=..., op_timeout=..., l2=..., **TieredStore options)``: an empty L1 over Redis (the
    test server unless ``url``), everything on the fake clock, the breaker's thresholds small."""

    def build(
        url: str = redis_url,
        *,
        op_timeout: float = ROOMY_OP_TIMEOUT,
        l2: RedisStore | None = None,
        **options: Any,
    ) -> TieredStore:
        if l2 is None:
            l2 = RedisStore.from_url(url, clock=clock, op_timeout=op_timeout)
        options.setdefault("breaker", CircuitBreaker(FAILURE_THRESHOLD, RESET_AFTER))
        store = TieredStore(MemoryStore(L1_MAX_BYTES, clock=clock), l2, clock=clock, **options)
        stores.append(store)
        return store

    return build


@pytest.fixture
def l2_view(redis_url: str, clock: FakeClock, stores: list[TieredStore | RedisStore]) -> RedisStore:
    """A plain RedisStore straight on the server (never through the proxy): what L2 holds."""
    store = RedisStore.from_url(redis_url, clock=clock, op_timeout=ROOMY_OP_TIMEOUT)
    stores.append(store)
    return store


async def failing_store(
    new_tiered: Callable[..., TieredStore], proxy: FaultProxy, **options: Any
) -> TieredStore:
    """A store through the proxy with the production op_timeout, its connection opened while healthy."""
    store = new_tiered(proxy.url_for(), op_timeout=DEFAULT_OP_TIMEOUT, **options)
    await store.l2.connect()
    return store


def break_l2(mode: FailureMode, proxy: FaultProxy, redis_server: RedisServer) -> None:
    if mode == "stopped":
        redis_server.stop()
    elif mode == "blackhole":
        proxy.blackhole()
    else:
        proxy.reset()


async def timed(call: Awaitable[Any]) -> Any:
    started = time.monotonic()
    result = await call
    assert time.monotonic() - started < FAIL_FAST_BOUND
    return result


def state(store: TieredStore) -> BreakerState:
    return store.breaker.state


def response(key: str, clock: FakeClock, **fields: Any) -> StoredResponse:
    """A response that lives less than ``L1_MAX_TTL``, so L1 keeps it unchanged (unless told otherwise)."""
    fields.setdefault("stored_until", clock() + L1_MAX_TTL - 10)
    return make_response(key, now=clock(), **fields)


# ------------------------------------------------------------------------------------------- tiering


async def test_an_l2_hit_backfills_l1(new_tiered: Callable[..., TieredStore], clock: FakeClock) -> None:
    node_a = new_tiered()
    node_b = new_tiered()
    stored = response("a", clock)
    await node_a.set("a", stored)
    await node_a.flush_writes()

    assert await node_b.get_tiered("a") == (stored, Reason.L2)
    assert node_b.l1.get_nowait("a") == stored
    assert await node_b.get_tiered("a") == (stored, Reason.L1)


async def test_the_l1_copy_is_capped_at_l1_max_ttl_while_l2_keeps_its_own(
    new_tiered: Callable[..., TieredStore], l2_view: RedisStore, clock: FakeClock
) -> None:
    node_a = new_tiered(l1_max_ttl=L1_MAX_TTL)
    node_b = new_tiered(l1_max_ttl=L1_MAX_TTL)
    stored = response("a", clock, stored_until=clock() + 3600)
    await node_a.set("a", stored)
    await node_a.flush_writes()

    in_l1 = node_a.l1.get_nowait("a")
    assert in_l1 is not None
    assert in_l1.stored_until == clock() + L1_MAX_TTL
    assert in_l1 == dataclasses.replace(stored, stored_until=clock() + L1_MAX_TTL)
    assert await l2_view.get("a") == stored

    clock.advance(10)
    assert await node_b.get_tiered("a") == (stored, Reason.L2)  # the caller gets L2's copy...
    backfilled = node_b.l1.get_nowait("a")
    assert backfilled is not None
    assert backfilled.stored_until == clock() + L1_MAX_TTL  # ... and L1 a copy capped from now

    clock.advance(21)  # past node A's cap, not node B's
    assert await node_a.get_tiered("a") == (stored, Reason.L2)
    assert (await node_b.get_tiered("a"))[1] is Reason.L1


async def test_writes_reach_l2_after_flush_so_node_b_sees_node_a_fill(
    new_tiered: Callable[..., TieredStore], clock: FakeClock
) -> None:
    node_a = new_tiered()
    node_b = new_tiered()
    filled = {key: response(key, clock, tags={"items"}) for key in ("a", "b", "c")}
    for key, value in filled.items():
        assert await node_a.set(key, value) is True

    await node_a.flush_writes()

    for key, value in filled.items():
        assert await node_b.get_tiered(key) == (value, Reason.L2)
    assert node_a.counters["l2_set_errors"] == 0


async def test_an_already_expired_set_is_refused_and_drops_the_older_object_everywhere(
    new_tiered: Callable[..., TieredStore], l2_view: RedisStore, clock: FakeClock
) -> None:
    store = new_tiered()
    await store.set("a", response("a", clock))
    await store.flush_writes()

    assert await store.set("a", response("a", clock, stored_until=clock())) is False
    assert await store.get("a") is None  # not the older object from L2, although its unlink is queued
    await store.flush_writes()
    assert await l2_view.get("a") is None


async def test_the_write_queue_is_bounded_and_set_never_waits_for_l2(
    new_tiered: Callable[..., TieredStore], proxy: FaultProxy, clock: FakeClock
) -> None:
    store = await failing_store(new_tiered, proxy, write_queue_size=2)
    proxy.blackhole()

    await store.set("k0", response("k0", clock))
    await asyncio.sleep(0)  # the writer takes k0 and waits on the silent L2
    slowest = 0.0
    for i in range(1, 10):
        started = time.monotonic()
        assert await store.set(f"k{i}", response(f"k{i}", clock)) is True  # L1 took it
        slowest = max(slowest, time.monotonic() - started)

    assert slowest < DEFAULT_OP_TIMEOUT  # never waited for one L2 call, let alone the queue
    assert store.counters["l2_write_dropped"] == 7  # one in flight, two queued
    assert all(store.get_nowait(f"k{i}") is not None for i in range(10))
    started = time.monotonic()
    await store.flush_writes()
    assert time.monotonic() - started < 3 * FAIL_FAST_BOUND
    assert store.counters["l2_set_errors"] == 3


@pytest.mark.parametrize("remove", ["purge", "delete"])
async def test_a_write_queued_before_a_purge_is_not_written_to_l2(
    new_tiered: Callable[..., TieredStore], l2_view: RedisStore, clock: FakeClock, remove: str
) -> None:
    store = new_tiered()
    await store.set("a", response("a", clock, tags={"red"}))
    await store.set("b", response("b", clock, tags={"blue"}))

    if remove == "purge":
        assert await store.purge_tags(["red"]) == 1
    else:
        assert await store.delete("a") == 1
    await store.flush_writes()

    assert await l2_view.get("a") is None
    assert await l2_view.get("b") is not None
    assert store.counters["l2_write_superseded"] == 1
    await store.set("a", response("a", clock, tags={"red"}))  # a write queued after it is not affected
    await store.flush_writes()
    assert await l2_view.get("a") is not None


class GatedRedisStore(RedisStore):
    """A RedisStore whose next ``set`` (before it reaches Redis) or ``get`` (after Redis answered) waits
    for ``release``: it puts a chosen L2 call in flight while the test does something else."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate: Literal["set", "get"] | None = None
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    async def _wait(self, what: str) -> None:
        if self.gate == what:
            self.gate = None
            self.reached.set()
            await self.release.wait()

    async def set(self, key: str, value: CacheObject) -> bool:
        await self._wait("set")
        return await super().set(key, value)

    async def get(self, key: str) -> CacheObject | None:
        value = await super().get(key)
        await self._wait("get")
        return value


def gated_l2(redis_url: str, clock: FakeClock) -> GatedRedisStore:
    store = RedisStore.from_url(redis_url, clock=clock, op_timeout=ROOMY_OP_TIMEOUT)
    return GatedRedisStore(store.client, clock=clock, op_timeout=ROOMY_OP_TIMEOUT, owns_client=True)


async def test_a_purge_while_the_write_is_in_flight_still_wins_in_l2(
    new_tiered: Callable[..., TieredStore], l2_view: RedisStore, redis_url: str, clock: FakeClock
) -> None:
    l2 = gated_l2(redis_url, clock)
    store = new_tiered(l2=l2)
    l2.gate = "set"
    await store.set("a", response("a", clock, tags={"red"}))
    await l2.reached.wait()  # the writer passed its purge check; the write is on its way

    await store.purge_tags(["red"])  # finds nothing in L2 yet
    l2.release.set()
    await store.flush_writes()

    assert await l2_view.get("a") is None
    assert store.counters["l2_write_superseded"] == 1


async def test_a_purge_during_an_l2_read_keeps_the_copy_out_of_l1(
    new_tiered: Callable[..., TieredStore], redis_url: str, clock: FakeClock
) -> None:
    node_a = new_tiered()
    await node_a.set("a", response("a", clock, tags={"red"}))
    await node_a.flush_writes()
    l2 = gated_l2(redis_url, clock)
    node_b = new_tiered(l2=l2)
    l2.gate = "get"
    read = asyncio.create_task(node_b.get_tiered("a"))
    await l2.reached.wait()  # Redis answered with the entry; the answer is on its way

    await node_b.purge_tags(["red"])
    l2.release.set()
    await read

    assert node_b.l1.get_nowait("a") is None  # never backfilled with what the purge removed
    assert await node_b.get("a") is None


# ------------------------------------------------------------------------------------------ failures


@pytest.mark.parametrize("mode", ["stopped", "blackhole", "reset"])
async def test_get_answers_from_l1_or_misses_when_l2_fails(
    new_tiered: Callable[..., TieredStore],
    proxy: FaultProxy,
    redis_server: RedisServer,
    clock: FakeClock,
    mode: FailureMode,
) -> None:
    store = await failing_store(new_tiered, proxy, breaker=CircuitBreaker(failure_threshold=100))
    cached = response("cached", clock, tags={"red"})
    await store.set("cached", cached)
    await store.flush_writes()

    break_l2(mode, proxy, redis_server)

    assert await timed(store.get_tiered("cached")) == (cached, Reason.L1)
    assert await timed(store.get_tiered("absent")) == (None, Reason.L2)
    assert await timed(store.get("absent")) is None
    assert store.counters["l2_get_errors"] == 2
    # Nothing else raises or waits either.
    assert await timed(store.set("new", response("new", clock))) is True
    await timed(store.flush_writes())
    assert store.counters["l2_set_errors"] == 1
    assert await timed(store.delete("cached")) == 1
    assert await timed(store.purge_tags(["red"])) == 0
    await timed(store.clear())
    assert store.counters["l2_delete_errors"] == store.counters["l2_purge_errors"] == 1
    assert store.counters["l2_clear_errors"] == 1


async def test_the_breaker_opens_after_failure_threshold_and_l2_is_left_alone(
    new_tiered: Callable[..., TieredStore], proxy: FaultProxy, clock: FakeClock
) -> None:
    store = await failing_store(new_tiered, proxy)
    proxy.reset()
    for i in range(FAILURE_THRESHOLD):
        assert await timed(store.get(f"miss{i}")) is None
    assert store.counters["l2_get_errors"] == FAILURE_THRESHOLD
    assert state(store) is BreakerState.OPEN

    connections, sent = proxy.connections, proxy.bytes_from_clients
    for i in range(10):
        assert await store.get(f"skip{i}") is None
    await store.set("w", response("w", clock))
    await store.flush_writes()
    await store.purge_tags(["red"])

    assert store.counters["l2_get_skipped"] == 10
    assert store.counters["l2_set_skipped"] == 1
    assert store.counters["l2_purge_skipped"] == 1
    assert store.counters["l2_get_errors"] == FAILURE_THRESHOLD
    assert (proxy.connections, proxy.bytes_from_clients) == (connections, sent)  # not one packet


async def test_after_reset_after_one_probe_goes_through_and_a_healthy_l2_closes_the_breaker(
    new_tiered: Callable[..., TieredStore], proxy: FaultProxy, l2_view: RedisStore, clock: FakeClock
) -> None:
    store = await failing_store(new_tiered, proxy)
    await l2_view.set("a", response("a", clock))
    proxy.reset()
    for i in range(FAILURE_THRESHOLD):
        await store.get(f"miss{i}")
    assert state(store) is BreakerState.OPEN
    proxy.heal()

    clock.advance(RESET_AFTER - 0.5)
    assert await store.get("a") is None
    assert store.counters["l2_get_skipped"] == 1

    clock.advance(0.5)
    connections = proxy.connections
    sent = proxy.bytes_from_clients
    probe, concurrent = await asyncio.gather(store.get_tiered("a"), store.get_tiered("b"))

    assert probe[0] is not None  # the probe reached L2 ...
    assert concurrent == (None, Reason.L2)
    assert store.counters["l2_get_skipped"] == 2  # ... and only the probe
    assert proxy.bytes_from_clients > sent
    assert proxy.connections >= connections
    assert state(store) is BreakerState.CLOSED
    assert (await store.get_tiered("a"))[1] is Reason.L1  # backfilled by the probe
    await store.l1.clear()
    assert (await store.get_tiered("a"))[1] is Reason.L2


async def test_a_failed_probe_opens_the_breaker_again(
    new_tiered: Callable[..., TieredStore], proxy: FaultProxy, clock: FakeClock
) -> None:
    store = await failing_store(new_tiered, proxy)
    proxy.reset()
    for i in range(FAILURE_THRESHOLD):
        await store.get(f"miss{i}")

    clock.advance(RESET_AFTER)
    assert await timed(store.get("probe")) is None
    assert store.counters["l2_get_errors"] == FAILURE_THRESHOLD + 1
    assert state(store) is BreakerState.OPEN
    assert store.breaker.opened_at == clock()
    await store.get("skipped")
    assert store.counters["l2_get_skipped"] == 1


async def test_a_cancelled_probe_does_not_keep_l2_skipped(
    new_tiered: Callable[..., TieredStore], proxy: FaultProxy, clock: FakeClock
) -> None:
    store = await failing_store(new_tiered, proxy)
    proxy.reset()
    for i in range(FAILURE_THRESHOLD):
        await store.get(f"miss{i}")
    proxy.blackhole()
    clock.advance(RESET_AFTER)

    probe = asyncio.create_task(store.get("probe"))  # e.g. the client went away mid-request
    await asyncio.sleep(0.05)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    proxy.heal()

    assert await timed(store.get("next")) is None
    assert store.counters["l2_get_skipped"] == 0  # the next call probed instead of being skipped
    assert state(store) is BreakerState.CLOSED


async def test_a_purge_while_l2_is_down_is_applied_to_l1_and_to_l2_once_it_answers(
    new_tiered: Callable[..., TieredStore], proxy: FaultProxy, l2_view: RedisStore, clock: FakeClock
) -> None:
    store = await failing_store(new_tiered, proxy)
    for key, tag in (("a", "red"), ("b", "blue"), ("c", "green")):
        await store.set(key, response(key, clock, tags={tag}))
    await store.flush_writes()
    proxy.reset()

    assert await timed(store.purge_tags(["red"])) == 1
    assert await timed(store.delete("b")) == 1
    assert store.counters["l2_purge_errors"] == store.counters["l2_delete_errors"] == 1
    assert store.get_nowait("a") is None
    assert store.get_nowait("b") is None
    assert await l2_view.get("a") is not None  # L2 missed both
    assert await l2_view.get("b") is not None
    proxy.heal()

    # L2 answers again, but the purges have not reached it yet: what they removed is not served.
    assert await store.get_tiered("a") == (None, Reason.L2)
    assert await store.get_tiered("b") == (None, Reason.L2)
    assert await store.get_tiered("c") == (store.get_nowait("c"), Reason.L1)

    await store.set("d", response("d", clock))  # the next successful write retries them
    await store.flush_writes()

    assert await l2_view.get("a") is None
    assert await l2_view.get("b") is None
    assert await l2_view.get("c") is not None
    assert await l2_view.get("d") is not None
    assert not store._pending_purges


async def test_l1_bypass_reads_and_writes_only_l2(
    new_tiered: Callable[..., TieredStore], l2_view: RedisStore, clock: FakeClock
) -> None:
    store = new_tiered()
    await store.set("old", response("old", clock, body=b"l1 copy"))
    await store.flush_writes()
    in_l2 = response("old", clock, body=b"l2 copy")
    await l2_view.set("old", in_l2)

    store.l1_bypass = True
    fresh = response("new", clock)
    assert await store.set("new", fresh) is True
    await store.flush_writes()

    assert store.l1.get_nowait("new") is None
    assert await l2_view.get("new") == fresh
    assert store.get_nowait("old") is None
    assert await store.get_tiered("old") == (in_l2, Reason.L2)  # not L1's copy
    assert await store.get_tiered("new") == (fresh, Reason.L2)
    assert store.l1.get_nowait("new") is None  # no backfill either
    assert len(store.l1) == 1  # only what was there before the bypass

    store.l1_bypass = False
    assert (await store.get_tiered("old"))[0] == response("old", clock, body=b"l1 copy")


async def test_soften_l2_rewrites_the_tagged_l2_entries(
    new_tiered: Callable[..., TieredStore], l2_view: RedisStore, clock: FakeClock
) -> None:
    store = new_tiered()
    for key, tags in (("a", {"red"}), ("b", {"red", "blue"}), ("c", {"blue"})):
        await store.set(key, response(key, clock, tags=tags))
    await store.set("index", make_vary_index("index", now=clock()))  # tagged "items", not a response
    await store.flush_writes()

    def soften(entry: StoredResponse) -> StoredResponse:
        return dataclasses.replace(entry, etag='"softened"')

    assert await store.soften_l2(frozenset({"red", "items"}), soften) == 2

    for key, softened in (("a", True), ("b", True), ("c", False)):
        entry = await l2_view.get(key)
        assert isinstance(entry, StoredResponse)
        assert (entry.etag == '"softened"') is softened
        in_l1 = store.l1.get_nowait(key)
        assert isinstance(in_l1, StoredResponse)
        assert in_l1.etag != '"softened"'  # L1 is the engine's to soften
    assert await l2_view.get("index") == make_vary_index("index", now=clock())


@pytest.fixture(scope="module")
def full_server() -> Iterator[RedisServer]:
    with RedisServer(extra_args=["--maxmemory", "1mb", "--maxmemory-policy", "noeviction"]) as server:
        yield server


async def fill(
    server: RedisServer, new_tiered: Callable[..., TieredStore], clock: FakeClock
) -> dict[str, Any]:
    """Seeds the server past its 1 MB maxmemory (lifted meanwhile); returns what it holds."""
    with server.admin_client() as admin:
        admin.flushall()
        admin.config_set("maxmemory", 0)
    try:
        filler = new_tiered(server.url)
        seeded = {f"seed{i}": response(f"seed{i}", clock, body=b"s" * 5000, tags={"seed"}) for i in range(40)}
        for key, value in seeded.items():
            await filler.set(key, value)
        await filler.flush_writes()
        assert filler.counters["l2_set_errors"] == 0
    finally:
        with server.admin_client() as admin:
            admin.config_set("maxmemory", "1mb")
            assert admin.info("memory")["used_memory"] > 1024 * 1024  # full: noeviction refuses writes
    return seeded


async def test_an_out_of_memory_redis_refuses_writes_but_still_serves_reads(
    new_tiered: Callable[..., TieredStore], full_server: RedisServer, clock: FakeClock
) -> None:
    seeded = await fill(full_server, new_tiered, clock)

    store = new_tiered(full_server.url)
    failed_writes = 2 * FAILURE_THRESHOLD
    for i in range(failed_writes):
        assert await store.set(f"new{i}", response(f"new{i}", clock, tags={"seed"})) is True  # L1 has it
    await store.flush_writes()

    assert store.counters["l2_set_errors"] == failed_writes
    assert state(store) is BreakerState.CLOSED  # Redis answered: refusing writes is not being down
    reader = new_tiered(full_server.url)
    for key, value in seeded.items():
        assert await reader.get_tiered(key) == (value, Reason.L2)
    assert reader.counters["l2_get_errors"] == 0
    assert await store.get_tiered("new0") == (store.get_nowait("new0"), Reason.L1)


async def test_a_write_refused_for_memory_leaves_no_unindexed_entry(
    new_tiered: Callable[..., TieredStore], full_server: RedisServer, clock: FakeClock
) -> None:
    await fill(full_server, new_tiered, clock)
    store = new_tiered(full_server.url)
    await store.set("late", response("late", clock, tags={"late"}))
    await store.flush_writes()
    assert store.counters["l2_set_errors"] == 1

    await store.purge_tags(["late"])

    assert await new_tiered(full_server.url).get("late") is None


# ------------------------------------------------- the fill/invalidate race: what this node wrote recently


async def test_purge_recent_writes_deletes_this_nodes_older_matching_writes_from_l2_again(
    new_tiered: Callable[..., TieredStore], l2_view: RedisStore, clock: FakeClock
) -> None:
    store = new_tiered()
    await store.set("a", response("a", clock, tags={"red"}))
    await store.set("b", response("b", clock, tags={"blue"}))
    await store.set("c", response("c", clock, tags={"red"}))
    await store.flush_writes()
    await l2_view.set("theirs", response("theirs", clock, tags={"red"}))  # another node's write
    clock.advance(1)
    purge_applied_at = clock()
    clock.advance(1)
    # Another node's fill that began after this node applied the purge replaced "c": it stays.
    await l2_view.set("c", response("c", clock, tags={"red"}, body=b"newer"))

    assert await store.purge_recent_writes(frozenset({"red"}), before=purge_applied_at) == 1

    assert await l2_view.get("a") is None
    assert await l2_view.get("b") is not None
    assert await l2_view.get("theirs") is not None  # not this node's: the claimer's purge is for those
    newer = await l2_view.get("c")
    assert isinstance(newer, StoredResponse) and newer.body == b"newer"
    assert store.counters["recent_writes_checked"] == 2
    assert store.counters["recent_writes_purged"] == 1
    assert await store.purge_recent_writes(frozenset({"red"}), before=purge_applied_at) == 0  # idempotent


async def test_writes_older_than_recent_write_seconds_are_not_deleted_again(
    new_tiered: Callable[..., TieredStore], l2_view: RedisStore, clock: FakeClock
) -> None:
    store = new_tiered()
    await store.set("a", response("a", clock, tags={"red"}))
    await store.flush_writes()

    clock.advance(store.recent_write_seconds + 1)
    assert await store.purge_recent_writes(frozenset({"red"}), before=clock()) == 0
    assert await l2_view.get("a") is not None


async def test_when_the_log_overflowed_a_purge_falls_back_to_the_whole_tag_in_l2(
    new_tiered: Callable[..., TieredStore], l2_view: RedisStore, clock: FakeClock
) -> None:
    store = new_tiered(recent_writes_max=2)
    await l2_view.set("theirs", response("theirs", clock, tags={"red"}))
    for key, tag in (("a", "red"), ("b", "blue"), ("c", "blue")):
        await store.set(key, response(key, clock, tags={tag}))
    await store.flush_writes()  # "a" is pushed out of the log, still within recent_write_seconds

    assert await store.purge_recent_writes(frozenset({"red"}), before=clock()) == 2
    assert await l2_view.get("a") is None
    assert await l2_view.get("theirs") is None  # more than needed, never less
    assert await l2_view.get("b") is not None
    assert store.counters["recent_writes_overflow"] == 1

    assert await store.purge_recent_writes(None, before=clock()) == 2  # all it remembers: b and c
    assert await l2_view.get("b") is None and await l2_view.get("c") is None
    assert store.counters["recent_writes_overflow"] == 2


async def test_a_recent_write_that_cannot_be_deleted_now_is_deleted_once_l2_answers(
    new_tiered: Callable[..., TieredStore], l2_view: RedisStore, clock: FakeClock
) -> None:
    store = new_tiered()
    await store.set("a", response("a", clock, tags={"red"}))
    await store.flush_writes()
    for _ in range(FAILURE_THRESHOLD):
        store.breaker.failed(clock())
    assert state(store) is BreakerState.OPEN

    assert await store.purge_recent_writes(frozenset({"red"}), before=clock()) == 0
    assert await l2_view.get("a") is not None
    # Not a pending purge: it neither hides L2 entries meanwhile nor keeps this node from claiming purges.
    assert not store.has_pending_purges()
    clock.advance(RESET_AFTER)
    await store.retry_pending_purges()  # the half-open probe
    assert await l2_view.get("a") is None
    assert store.counters["recent_writes_purged"] == 1


async def test_paused_l2_writes_keep_to_l1(
    new_tiered: Callable[..., TieredStore], l2_view: RedisStore, clock: FakeClock
) -> None:
    store = new_tiered()
    store.l2_writes_paused = True
    assert await store.set("a", response("a", clock)) is True  # accepted: L1 has it
    await store.flush_writes()

    assert store.l1.get_nowait("a") is not None
    assert await l2_view.get("a") is None
    assert store.counters["l2_write_paused"] == 1


async def test_a_soft_invalidation_drops_a_queued_write_and_serves_older_l2_copies_stale(
    new_tiered: Callable[..., TieredStore], l2_view: RedisStore, redis_url: str, clock: FakeClock
) -> None:
    l2 = gated_l2(redis_url, clock)
    store = new_tiered(l2=l2)
    l2.gate = "set"
    await store.set("x", response("x", clock, tags={"blue"}))
    await l2.reached.wait()  # the writer is busy: the next write waits in the queue
    await store.set("a", response("a", clock, tags={"red"}))
    await l2_view.set("older", response("older", clock, tags={"red"}))

    store.note_invalidation(frozenset({"red"}), soft=True)
    l2.release.set()
    await store.flush_writes()

    assert await l2_view.get("a") is None
    assert await l2_view.get("x") is not None
    assert store.counters["l2_write_superseded"] == 1
    clock.advance(1)
    await l2_view.set("newer", response("newer", clock, tags={"red"}))  # its request came after
    older, tier = await store.get_tiered("older")
    assert tier is Reason.L2 and isinstance(older, StoredResponse) and older.ttl(clock()) <= 0
    in_l1 = store.l1.get_nowait("older")
    assert isinstance(in_l1, StoredResponse) and in_l1.ttl(clock()) <= 0
    newer, _ = await store.get_tiered("newer")
    assert isinstance(newer, StoredResponse) and newer.ttl(clock()) > 0

    await store.l1.delete("older")
    clock.advance(PURGE_FENCE_SECONDS)
    older, _ = await store.get_tiered("older")
    assert isinstance(older, StoredResponse) and older.ttl(clock()) > 0  # the fence has lapsed


async def test_the_purge_fence_refuses_a_response_whose_request_began_before_the_purge(
    new_tiered: Callable[..., TieredStore], l2_view: RedisStore, clock: FakeClock
) -> None:
    store = new_tiered()
    purged_at = clock()
    await store.purge_tags(["red"])
    clock.advance(1)
    # Another node's fill: its request went out before the purge, its response arrived after.
    late = dataclasses.replace(response("late", clock, tags={"red"}), request_time=purged_at - 1)
    await l2_view.set("late", late)
    await l2_view.set("after", response("after", clock, tags={"red"}))

    assert await store.get_tiered("late") == (None, Reason.L2)
    assert store.l1.get_nowait("late") is None
    assert (await store.get_tiered("after"))[0] is not None
