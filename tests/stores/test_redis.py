"""RedisStore against a real redis-server (see tests/redis_server.py): the Store contract, on a standalone
server and on a one-node Redis Cluster (which rejects any command spanning two slots, as a real cluster does),
then what only L2 has: corrupt values, the shared tag index, expiry in Redis, failures and cancellation."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, ClassVar, TypeVar

import msgpack
import pytest
from redis.asyncio import Redis

from edgecache.core import codec
from edgecache.stores.redis import (
    DEFAULT_OP_TIMEOUT,
    FOREIGN_TYPE,
    RedisStore,
    StoreUnavailable,
    tag_digest,
)
from tests.helpers import FakeClock
from tests.redis_server import LocalCluster, RedisServer, SentinelDeployment, free_cluster_port, free_port
from tests.stores.contract import StoreContract, StoreFactory, make_response, make_vary_index

# Generous: the store gives up after op_timeout (0.25 s by default); this only catches "waits for seconds".
FAIL_FAST_BOUND = 2.0
# Tests about behaviour, not timing, allow this much per Redis call, so a loaded CI machine cannot fail them.
# The failure tests below use the production default.
ROOMY_OP_TIMEOUT = 5.0

T = TypeVar("T")


class TestRedisStoreContract(StoreContract):
    bounds_bytes: ClassVar[bool] = False  # Redis is bounded by its maxmemory policy, not by the store

    @pytest.fixture
    def make_store(self, redis_url: str) -> StoreFactory:
        async def factory(max_bytes: int, clock: FakeClock) -> RedisStore:
            return RedisStore.from_url(redis_url, clock=clock, op_timeout=ROOMY_OP_TIMEOUT)

        return factory


@pytest.fixture(scope="module")
def cluster_server() -> Iterator[RedisServer]:
    """A one-node cluster owning all 16384 slots."""
    with RedisServer(
        port=free_cluster_port(),
        extra_args=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"],
    ) as server:
        with server.admin_client() as admin:
            admin.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            deadline = time.monotonic() + 10
            while b"cluster_state:ok" not in admin.execute_command("CLUSTER", "INFO"):
                assert time.monotonic() < deadline, "the one-node cluster did not come up"
                time.sleep(0.05)
        yield server


class TestRedisClusterStoreContract(StoreContract):
    bounds_bytes: ClassVar[bool] = False

    @pytest.fixture
    def make_store(self, cluster_server: RedisServer) -> StoreFactory:
        with cluster_server.admin_client() as admin:
            admin.flushall()

        async def factory(max_bytes: int, clock: FakeClock) -> RedisStore:
            store = RedisStore.from_url(
                cluster_server.url.removesuffix("/0"), clock=clock, op_timeout=ROOMY_OP_TIMEOUT, cluster=True
            )
            await store.connect()
            return store

        return factory

    async def test_entry_and_tag_keys_are_in_different_slots(
        self, store: RedisStore, cluster_server: RedisServer
    ) -> None:
        # Otherwise the contract tests above would not prove anything about cross-slot safety.
        with cluster_server.admin_client() as admin:
            slots = {
                admin.execute_command("CLUSTER", "KEYSLOT", key)
                for key in (store.entry_key("a"), store.entry_key("b"), store.tag_key("red"))
            }
        assert len(slots) == 3


class TestRedisThreeNodeClusterStoreContract(StoreContract):
    """The contract on three masters with the slots split between them: a tag's set and its entries, and
    the entries among themselves, live on different nodes (redirections and per-node pipelines for real)."""

    bounds_bytes: ClassVar[bool] = False

    @pytest.fixture
    def make_store(self, redis_cluster: LocalCluster) -> StoreFactory:
        redis_cluster.reset()

        async def factory(max_bytes: int, clock: FakeClock) -> RedisStore:
            store = RedisStore.from_url(
                redis_cluster.url, clock=clock, op_timeout=ROOMY_OP_TIMEOUT, cluster=True
            )
            await store.connect()
            return store

        return factory

    async def test_keys_spread_over_every_node(self, store: RedisStore, redis_cluster: LocalCluster) -> None:
        # Otherwise the contract tests above would not prove anything about a multi-node cluster.
        keys = [store.entry_key(f"k{i}") for i in range(20)] + [store.tag_key(f"t{i}") for i in range(20)]
        nodes = {redis_cluster.node_for_slot(redis_cluster.keyslot(key)).port for key in keys}
        assert nodes == {server.port for server in redis_cluster.servers}


class TestRedisSentinelStoreContract(StoreContract):
    """The contract through Sentinel: ``redis+sentinel://`` names the sentinels, which name the master."""

    bounds_bytes: ClassVar[bool] = False

    @pytest.fixture
    def make_store(self, redis_sentinel: SentinelDeployment) -> StoreFactory:
        redis_sentinel.reset()

        async def factory(max_bytes: int, clock: FakeClock) -> RedisStore:
            return RedisStore.from_url(redis_sentinel.url, clock=clock, op_timeout=ROOMY_OP_TIMEOUT)

        return factory

    async def test_the_store_writes_to_the_master_the_sentinels_name(
        self, store: RedisStore, redis_sentinel: SentinelDeployment
    ) -> None:
        await store.set("k", make_response("k"))
        with redis_sentinel.current_master().admin_client() as admin:
            assert admin.exists(store.entry_key("k")) == 1
            info = admin.info("replication")
        assert info["role"] == "master"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def new_store(redis_url: str, clock: FakeClock) -> AsyncIterator[Callable[..., RedisStore]]:
    """``new_store(**options)``: a store on the test server (or ``url=``) with the fake clock, closed at the
    end of the test even when it fails."""
    made: list[RedisStore] = []

    def build(url: str = redis_url, **options: Any) -> RedisStore:
        options.setdefault("clock", clock)
        options.setdefault("op_timeout", ROOMY_OP_TIMEOUT)
        made.append(RedisStore.from_url(url, **options))
        return made[-1]

    yield build
    for store in made:
        await store.aclose()


@pytest.fixture
def store(new_store: Callable[..., RedisStore]) -> RedisStore:
    return new_store()


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[Redis]:
    """A plain client, to look at and tamper with what the store wrote."""
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------- layout


async def test_keys_are_namespaced_digests(new_store: Callable[..., RedisStore], raw: Redis) -> None:
    store = new_store(namespace="shop")
    key = digest("a")
    await store.set(key, make_response("a", tags={"product:42"}))

    keys = {text(k) for k in await raw.keys("*")}

    assert keys == {f"shop:e:{key}", f"shop:t:{hashlib.sha256(b'product:42').hexdigest()}"}
    assert await raw.smembers(f"shop:t:{tag_digest('product:42')}") == {key.encode()}


async def test_namespaces_are_isolated(new_store: Callable[..., RedisStore]) -> None:
    one = new_store(namespace="one")
    two = new_store(namespace="two")
    await one.set("a", make_response("a", tags={"red"}))
    await two.set("a", make_response("a", tags={"red"}))

    assert await one.purge_tags(["red"]) == 1
    assert await two.get("a") is not None
    await two.set("b", make_response("b"))
    await one.clear()
    assert await two.get("b") is not None


async def test_clear_escapes_glob_characters_in_the_namespace(new_store: Callable[..., RedisStore]) -> None:
    star = new_store(namespace="a*")
    other = new_store(namespace="ab")
    await star.set("a", make_response("a"))
    await other.set("a", make_response("a"))

    await star.clear()

    assert await star.get("a") is None
    assert await other.get("a") is not None


async def test_clear_removes_more_keys_than_one_scan_batch(store: RedisStore, raw: Redis) -> None:
    await raw.mset({store.entry_key(f"k{i}"): b"x" for i in range(2500)})
    await raw.set("not-ours", b"keep")

    await store.clear()

    assert await raw.keys("*") == [b"not-ours"]


def test_rejects_a_client_that_decodes_responses(redis_url: str) -> None:
    with pytest.raises(ValueError, match="decode_responses"):
        RedisStore(Redis.from_url(redis_url, decode_responses=True))


def test_from_url_builds_a_fail_fast_client(new_store: Callable[..., RedisStore]) -> None:
    store = new_store(op_timeout=0.2, connect_timeout=0.1, max_connections=7)
    client = store.client
    assert isinstance(client, Redis)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 0.2
    assert kwargs["socket_connect_timeout"] == 0.1
    assert kwargs["retry"].get_retries() == 0
    assert kwargs["health_check_interval"] == 30
    assert client.connection_pool.max_connections == 7
    connection = client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
    assert connection.retry.get_retries() == 0


# ----------------------------------------------------------------------------------------- expiry


async def test_redis_ttl_is_relative_to_the_store_clock(
    store: RedisStore, raw: Redis, clock: FakeClock
) -> None:
    # The fake clock is years in the past: an absolute PXAT would expire the entry at once.
    await store.set("a", make_response("a", stored_until=clock() + 100.0, now=clock()))

    ttl_ms = await raw.pttl(store.entry_key("a"))

    assert 99_000 < ttl_ms <= 100_000


async def test_entry_expires_in_redis(store: RedisStore, raw: Redis, clock: FakeClock) -> None:
    await store.set("a", make_response("a", stored_until=clock() + 0.05, tags={"red"}, now=clock()))

    await asyncio.sleep(0.2)

    assert await raw.exists(store.entry_key("a")) == 0
    assert await raw.exists(store.tag_key("red")) == 0


async def test_subsecond_ttl_is_rounded_up_not_down(store: RedisStore, raw: Redis, clock: FakeClock) -> None:
    # 0.4 ms left: rounded down, PEXPIRE 0 would delete the entry at once.
    assert await store.set("a", make_response("a", stored_until=clock() + 0.0004, now=clock())) is True
    await store.set("b", make_response("b", stored_until=clock() + 1.0001, now=clock()))

    assert await raw.pttl(store.entry_key("b")) > 900  # 1001 ms asked, minus the time since


async def test_tag_set_outlives_every_entry_it_indexes(
    store: RedisStore, raw: Redis, clock: FakeClock
) -> None:
    now = clock()
    await store.set("long", make_response("long", tags={"red"}, stored_until=now + 500, now=now))
    await store.set("short", make_response("short", tags={"red"}, stored_until=now + 10, now=now))
    tag_key = store.tag_key("red")

    tag_expiry = await raw.pexpiretime(tag_key)
    # A shorter-lived entry never shortens the set's TTL.
    assert tag_expiry >= await raw.pexpiretime(store.entry_key("long"))
    assert tag_expiry >= await raw.pexpiretime(store.entry_key("short"))

    await store.set("longer", make_response("longer", tags={"red"}, stored_until=now + 900, now=now))

    assert await raw.pexpiretime(tag_key) >= await raw.pexpiretime(store.entry_key("longer"))
    assert await raw.pttl(tag_key) > 800_000


# ------------------------------------------------------------------------------------ corrupt values


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\xc1 not msgpack at all", "not-msgpack"),
        (msgpack.packb({"status": 200, "body": b"hello"}), "bad-envelope"),  # someone else's msgpack
        (b"", "not-msgpack"),
        (msgpack.packb([b"EC", 0, 1, 200]), "unknown-version"),  # an older format
        (msgpack.packb([b"EC", 1, 9]), "wrong-type"),
        (msgpack.packb([b"EC", 1, 1, 200]), "bad-field"),
    ],
)
async def test_corrupt_entry_is_a_miss_deleted_counted_and_logged(
    store: RedisStore, raw: Redis, value: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    await raw.hset(store.entry_key("a"), mapping={"v": value, "t": ""})

    with caplog.at_level(logging.WARNING, logger="edgecache.stores.redis"):
        assert await store.get("a") is None

    assert await raw.exists(store.entry_key("a")) == 0
    assert store.corrupt_entries == {reason: 1}
    assert reason in caplog.text


async def test_old_version_of_a_real_entry_is_a_miss(store: RedisStore, raw: Redis) -> None:
    envelope = msgpack.unpackb(codec.encode(make_response("a")))
    envelope[1] = codec.VERSION - 1
    await raw.hset(store.entry_key("a"), mapping={"v": msgpack.packb(envelope), "t": ""})

    assert await store.get("a") is None
    assert store.corrupt_entries == {"unknown-version": 1}


async def test_value_of_a_foreign_redis_type_is_a_miss(store: RedisStore, raw: Redis) -> None:
    await raw.set(store.entry_key("a"), codec.encode(make_response("a")))  # a plain string, not our hash

    assert await store.get("a") is None
    assert await raw.exists(store.entry_key("a")) == 0
    assert store.corrupt_entries == {FOREIGN_TYPE: 1}
    # ... and a purge or a write meeting such a value does not fail either.
    await raw.set(store.entry_key("a"), b"junk")
    await raw.sadd(store.tag_key("red"), "a")
    assert await store.purge_tags(["red"]) == 0
    assert await store.set("a", make_response("a")) is True


async def test_oversize_value_is_not_stored_and_is_a_miss_when_found(
    new_store: Callable[..., RedisStore], raw: Redis
) -> None:
    small = new_store(max_object_bytes=1000)
    large = new_store()
    big = make_response("a", body=b"x" * 2000)

    assert await small.set("a", big) is False
    assert await raw.exists(small.entry_key("a")) == 0
    assert await large.set("a", big) is True  # e.g. a node configured with a larger limit
    assert await small.get("a") is None
    assert small.corrupt_entries == {"too-large": 1}
    assert await raw.exists(small.entry_key("a")) == 0


async def test_unencodable_object_is_not_stored(store: RedisStore) -> None:
    too_big = dataclasses.replace(make_response("a"), size=1 << 70)  # beyond msgpack's 64-bit integers

    assert await store.set("a", too_big) is False
    assert await store.get("a") is None


async def test_vary_index_and_response_share_the_key_space(store: RedisStore) -> None:
    await store.set("a", make_vary_index("a"))
    await store.set("b", make_response("b"))

    assert await store.purge_tags(["items"]) == 1  # the index's tag
    assert await store.get("b") is not None


# -------------------------------------------------------------------------------------------- tags


async def test_purge_removes_many_entries_across_scan_pages(store: RedisStore, raw: Redis) -> None:
    tagged = [f"k{i}" for i in range(2500)]
    for chunk in range(0, len(tagged), 250):
        await asyncio.gather(
            *(store.set(key, make_response(key, tags={"bulk", key})) for key in tagged[chunk : chunk + 250])
        )
    await store.set("other", make_response("other", tags={"other"}))

    assert await store.purge_tags(["bulk"]) == 2500

    assert [await store.get(key) for key in tagged[::97]] == [None] * len(tagged[::97])
    assert await store.get("other") is not None
    assert await raw.exists(store.tag_key("bulk")) == 0
    assert await store.purge_tags(["k7"]) == 0  # its entry is gone; the stale member costs nothing


async def test_purge_keeps_an_entry_rewritten_without_the_tag(store: RedisStore) -> None:
    await store.set("a", make_response("a", tags={"old"}))
    await store.set("b", make_response("b", tags={"old"}))
    await store.set("a", make_response("a", tags={"new"}))

    assert await store.purge_tags(["old"]) == 1
    assert await store.get("a") is not None
    assert await store.purge_tags(["new"]) == 1


async def test_purge_of_a_bare_string_is_one_tag(store: RedisStore) -> None:
    await store.set("a", make_response("a", tags={"r"}))
    await store.set("b", make_response("b", tags={"red"}))

    assert await store.purge_tags("red") == 1
    assert await store.get("a") is not None


async def test_concurrent_writers_on_many_nodes_all_reach_the_tag_index(
    new_store: Callable[..., RedisStore],
) -> None:
    nodes = [new_store() for _ in range(4)]
    keys = [digest(f"k{i}") for i in range(400)]

    await asyncio.gather(
        *(
            nodes[i % len(nodes)].set(key, make_response(key, tags={"shared", f"own-{i % 7}"}))
            for i, key in enumerate(keys)
        )
    )

    assert await nodes[0].purge_tags(["shared"]) == len(keys)
    assert [await nodes[1].get(key) for key in keys] == [None] * len(keys)


async def test_no_tagged_entry_escapes_its_index_while_purges_race_writes(
    new_store: Callable[..., RedisStore], raw: Redis
) -> None:
    """Writers and purgers on separate nodes interleave freely; afterwards every entry still carrying the
    tag must be in the tag set, or the next purge would miss it."""
    writers = [new_store() for _ in range(3)]
    purger = new_store()
    keys = [f"k{i}" for i in range(20)]
    rng = random.Random(7)

    async def write(node: RedisStore) -> None:
        for _ in range(150):
            key = rng.choice(keys)
            tags = {"hot"} if rng.random() < 0.7 else {"cold"}
            await node.set(key, make_response(key, tags=tags))

    async def purge() -> None:
        for _ in range(60):
            await purger.purge_tags(["hot"])
            await asyncio.sleep(0)

    await asyncio.gather(*(write(node) for node in writers), purge())

    indexed = {text(member) for member in await raw.smembers(purger.tag_key("hot"))}
    for key in keys:
        value = await purger.get(key)
        if value is not None and "hot" in value.tags:
            assert key in indexed
    # And so one more purge leaves no "hot" entry behind.
    await purger.purge_tags(["hot"])
    for key in keys:
        value = await purger.get(key)
        assert value is None or "hot" not in value.tags


# ----------------------------------------------------------------------------------------- failures


async def fail_fast_store(new_store: Callable[..., RedisStore], **options: Any) -> RedisStore:
    """A store with the production op_timeout, its connection opened beforehand with a roomy timeout."""
    store = new_store(op_timeout=DEFAULT_OP_TIMEOUT, **options)
    await store.connect()
    return store


async def eventually(call: Callable[[], Awaitable[T]], within: float = 3.0) -> T:
    """The first result of ``call`` that is not StoreUnavailable: a pooled connection may only be found
    dead on use, and the test machine may be slow."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await call()
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def _assert_fails_fast(store: RedisStore) -> None:
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await store.get("a")
    assert time.monotonic() - started < FAIL_FAST_BOUND
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await store.set("b", make_response("b", tags={"red"}))
    assert time.monotonic() - started < FAIL_FAST_BOUND


async def test_unavailable_when_the_server_is_stopped(
    new_store: Callable[..., RedisStore], redis_server: RedisServer
) -> None:
    store = await fail_fast_store(new_store)
    await store.set("a", make_response("a"))  # a pooled connection exists when the server goes away

    redis_server.stop()

    await _assert_fails_fast(store)
    with pytest.raises(StoreUnavailable):
        await store.purge_tags(["red"])
    with pytest.raises(StoreUnavailable):
        await store.delete("a")
    with pytest.raises(StoreUnavailable):
        await store.clear()


async def test_unavailable_when_the_server_is_killed_then_recovers_after_restart(
    new_store: Callable[..., RedisStore], redis_server: RedisServer
) -> None:
    store = await fail_fast_store(new_store)
    await store.set("a", make_response("a"))

    redis_server.kill()
    await _assert_fails_fast(store)
    redis_server.start()

    assert await eventually(lambda: store.get("a")) is None  # nothing was persisted
    assert await eventually(lambda: store.set("a", make_response("a"))) is True
    assert await eventually(lambda: store.get("a")) is not None


async def test_unavailable_when_the_server_does_not_answer(
    new_store: Callable[..., RedisStore], redis_server: RedisServer
) -> None:
    store = await fail_fast_store(new_store)
    await store.set("a", make_response("a"))

    redis_server.pause(1500)

    await _assert_fails_fast(store)
    redis_server.wait_unpaused()
    assert await eventually(lambda: store.get("a")) is not None


async def test_op_timeout_bounds_a_call_even_with_slow_socket_timeouts(
    new_store: Callable[..., RedisStore], redis_server: RedisServer
) -> None:
    # socket_timeout of 10 s: only the store's own asyncio.timeout can end the wait in time.
    store = new_store(op_timeout=0.2, socket_timeout=10.0)
    await store.connect()
    await store.set("a", make_response("a"))

    redis_server.pause(1500)

    await _assert_fails_fast(store)


async def test_unavailable_when_nothing_listens(new_store: Callable[..., RedisStore]) -> None:
    store = new_store(url=f"redis://127.0.0.1:{free_port()}/0", op_timeout=DEFAULT_OP_TIMEOUT)

    await _assert_fails_fast(store)


async def test_cancelled_get_leaves_no_unread_reply_for_the_next_command(
    new_store: Callable[..., RedisStore], redis_server: RedisServer, clock: FakeClock
) -> None:
    # One connection, so a reply left unread by the cancelled command would be the next command's.
    store = new_store(op_timeout=10.0, max_connections=1)
    for key in ("k1", "k2", "k3"):
        await store.set(key, make_response(key, body=key.encode() * 50, now=clock()))

    redis_server.pause(800)
    in_flight = asyncio.create_task(store.get("k1"))
    await asyncio.sleep(0.2)  # HGET k1 is on the wire, its reply held back by the pause
    in_flight.cancel()
    with pytest.raises(asyncio.CancelledError):
        await in_flight

    # Queued behind the pause on a fresh connection; the held-back reply for k1 must never surface here.
    got2 = await store.get("k2")
    got3 = await store.get("k3")
    assert got2 is not None
    assert got2.key.endswith(b"/k2")
    assert got3 is not None
    assert got3.key.endswith(b"/k3")
    got1 = await store.get("k1")
    assert got1 is not None
    assert got1.key.endswith(b"/k1")


async def test_timed_out_get_leaves_no_unread_reply_for_the_next_command(
    new_store: Callable[..., RedisStore], redis_server: RedisServer, clock: FakeClock
) -> None:
    # The store's asyncio.timeout, not the socket timeout, ends the call: that is a cancellation inside
    # redis-py, the path that must disconnect.
    store = new_store(op_timeout=0.2, socket_timeout=10.0, max_connections=1)
    await store.connect()
    for key in ("k1", "k2"):
        await store.set(key, make_response(key, body=key.encode() * 50, now=clock()))

    redis_server.pause(600)
    with pytest.raises(StoreUnavailable):
        await store.get("k1")
    redis_server.wait_unpaused()

    got2 = await eventually(lambda: store.get("k2"))
    assert got2 is not None
    assert got2.key.endswith(b"/k2")


async def test_cancelled_write_pipeline_leaves_no_unread_replies(
    new_store: Callable[..., RedisStore], redis_server: RedisServer, clock: FakeClock
) -> None:
    store = new_store(op_timeout=10.0, max_connections=1)
    await store.set("k2", make_response("k2", tags={"red"}, now=clock()))

    redis_server.pause(800)
    in_flight = asyncio.create_task(store.set("k1", make_response("k1", tags={"red", "blue"}, now=clock())))
    await asyncio.sleep(0.2)
    in_flight.cancel()
    with pytest.raises(asyncio.CancelledError):
        await in_flight

    got2 = await store.get("k2")
    assert got2 is not None
    assert got2.key.endswith(b"/k2")
    assert await store.delete("k2", "never-set") == 1


async def test_aclose_leaves_a_borrowed_client_open(redis_url: str, clock: FakeClock) -> None:
    client = Redis.from_url(redis_url)
    store = RedisStore(client, clock=clock)
    await store.set("a", make_response("a", now=clock()))

    await store.aclose()

    assert await client.exists(store.entry_key("a")) == 1
    await client.aclose()
