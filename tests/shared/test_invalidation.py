"""Shared invalidation between two nodes in one process: two ``Cache``s on one redis-server (same namespace),
each behind ``CacheInterceptor`` over the same small Starlette app, with an origin spy per node.

What is checked is behaviour (what a request gets, what L1 and L2 hold, how often the app is called);
asynchronous propagation is polled with a deadline, never slept for.

Tests marked ``ACROSS_DEPLOYMENTS`` run three times: on a standalone server, on a three-master Redis Cluster
(entries, tag sets, claims and the generation token on different nodes; invalidations sent with SPUBLISH)
and through Sentinel (``redis+sentinel://``)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from edgecache.cli import main as cli_main
from edgecache.core.breaker import BreakerState
from tests.redis_server import LocalCluster, RedisServer, SentinelDeployment
from tests.shared.nodes import (
    ACROSS_DEPLOYMENTS,
    CHECK_INTERVAL,
    RECONNECT_WITHIN,
    WITHIN,
    Deployment,
    Node,
    NodeFactory,
    Origin,
    deployment_for,
    digest_of,
    eventually,
    is_l1_hit,
    nodes,
    open_raw,
    status,
)

# ----------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def deployment(request: pytest.FixtureRequest) -> Deployment:
    return deployment_for(request)


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def origin() -> Origin:
    return Origin()


@pytest.fixture
async def raw(deployment: Deployment) -> AsyncIterator[Redis | RedisCluster]:
    async with open_raw(deployment) as client:
        yield client


@pytest.fixture
async def make_node(deployment: Deployment, namespace: str, origin: Origin) -> AsyncIterator[NodeFactory]:
    async with nodes(deployment, namespace, origin) as make:
        yield make


@pytest.fixture
async def pair(make_node: NodeFactory) -> tuple[Node, Node]:
    return await make_node("a"), await make_node("b")


async def fill(a: Node, b: Node, *paths: str) -> None:
    """Each path: stored by ``a`` (L1 and L2), then read by ``b`` from L2 into its L1."""
    for path in paths:
        assert "stored" in status(await a.get(path)), path
    await a.store.flush_writes()
    for path in paths:
        assert "detail=l2" in status(await b.get(path)), path
    for node in (a, b):
        for path in paths:
            assert node.in_l1(path), (node.name, path)


async def refetched(first: Node, second: Node, path: str) -> None:
    """``path`` is stored nowhere: ``first`` fetches it from the app again (and stores it), and ``second``
    then gets that new copy from L2, not an old one of its own."""
    calls = first.spy.calls[path]
    response = await first.get(path)
    assert "; fwd=" in status(response) and "stored" in status(response), (first.name, status(response))
    assert first.spy.calls[path] == calls + 1, first.name
    await first.store.flush_writes()
    again = await second.get(path)
    assert "detail=l2" in status(again), (second.name, status(again))
    assert again.text == response.text, second.name


async def assert_dropped_everywhere(a: Node, b: Node, path: str) -> None:
    await eventually(lambda: not a.in_l1(path) and not b.in_l1(path), what=f"{path} out of both L1s")
    # A node that hears a message drops its L1 copy first; the node that claims it then cleans L2.
    deadline = time.monotonic() + WITHIN
    while await a.in_l2(path):
        assert time.monotonic() < deadline, f"{path} still in L2"
        await asyncio.sleep(0.01)
    await refetched(b, a, path)


async def assert_kept_everywhere(a: Node, b: Node, path: str) -> None:
    assert await a.in_l2(path), f"{path} not in L2"
    for node in (a, b):
        assert node.in_l1(path), (node.name, path)
        assert is_l1_hit(await node.get(path)), (node.name, path)


async def publish_raw(raw: Redis | RedisCluster, namespace: str, message: bytes | dict[str, Any]) -> None:
    data = message if isinstance(message, bytes) else json.dumps(message).encode()
    await raw.publish(f"{namespace}:invalidate", data)


# --------------------------------------------------------------------------------- tags, paths, prefixes


@ACROSS_DEPLOYMENTS
async def test_tag_purge_drops_entries_on_both_nodes_and_in_l2(
    pair: tuple[Node, Node], origin: Origin
) -> None:
    a, b = pair
    origin.serve("/p/1", tags=["product:1"])
    origin.serve("/p/2", tags=["product:2"])
    await fill(a, b, "/p/1", "/p/2")

    await a.cache.invalidate(tags=["product:1"])
    assert not a.in_l1("/p/1")  # at once on the node that invalidates

    await assert_dropped_everywhere(a, b, "/p/1")
    await assert_kept_everywhere(a, b, "/p/2")


@ACROSS_DEPLOYMENTS
async def test_path_purge_drops_every_query_on_both_nodes_and_in_l2(
    pair: tuple[Node, Node], origin: Origin
) -> None:
    a, b = pair
    await fill(a, b, "/p/1", "/p/1?page=2", "/p/10")

    await a.cache.invalidate(paths=["/p/1"])
    assert not a.in_l1("/p/1")  # at once on the node that invalidates

    await assert_dropped_everywhere(a, b, "/p/1")
    await assert_dropped_everywhere(a, b, "/p/1?page=2")
    await assert_kept_everywhere(a, b, "/p/10")


@ACROSS_DEPLOYMENTS
async def test_prefix_purge_drops_on_segment_boundaries_on_both_nodes_and_in_l2(
    pair: tuple[Node, Node],
) -> None:
    a, b = pair
    await fill(a, b, "/catalog/a", "/catalog/a/b", "/catalogue")

    await a.cache.invalidate(prefixes=["/catalog/"])
    assert not a.in_l1("/catalog/a")  # at once on the node that invalidates

    await assert_dropped_everywhere(a, b, "/catalog/a")
    await assert_dropped_everywhere(a, b, "/catalog/a/b")
    await assert_kept_everywhere(a, b, "/catalogue")


# ----------------------------------------------------------------------------------------------- soft purge


@ACROSS_DEPLOYMENTS
async def test_soft_purge_serves_stale_while_one_refresh_runs_on_each_node(
    pair: tuple[Node, Node], origin: Origin
) -> None:
    a, b = pair
    origin.serve("/s", tags=["soft"], cache_control="max-age=60, stale-while-revalidate=30")
    await fill(a, b, "/s")

    await a.cache.invalidate(tags=["soft"], soft=True)
    await eventually(lambda: b.counters["messages_applied"] == 1, what="b applied the soft purge")

    for node in (a, b):
        calls = node.spy.calls["/s"]
        entered, release = origin.hold("/s")  # the refresh waits in the app until released
        for _ in range(3):
            response = await node.get("/s")
            assert "detail=stale-while-revalidate" in status(response), (node.name, status(response))
            assert response.text == "/s v1"
        await asyncio.wait_for(entered.wait(), WITHIN)
        release.set()
        await node.cache.drain()
        assert node.spy.calls["/s"] == calls + 1, f"{node.name}: one refresh, one app call"
        fresh = await node.get("/s")
        assert is_l1_hit(fresh), node.name
        assert fresh.text != "/s v1"


@ACROSS_DEPLOYMENTS
async def test_soft_purge_without_stale_while_revalidate_revalidates(
    pair: tuple[Node, Node], origin: Origin
) -> None:
    a, b = pair
    origin.serve("/s", tags=["soft"], cache_control="max-age=60", etag='"e1"')
    await fill(a, b, "/s")

    await a.cache.invalidate(tags=["soft"], soft=True)
    await eventually(lambda: b.counters["messages_applied"] == 1, what="b applied the soft purge")

    for node in (a, b):
        before = node.spy.calls["/s"]
        response = await node.get("/s")
        assert "fwd=stale" in status(response), (node.name, status(response))
        assert "detail=revalidated" in status(response), (node.name, status(response))
        assert response.text == "/s v1"  # the app answered 304: the stored body is still the one
        assert node.spy.calls["/s"] == before + 1
        assert is_l1_hit(await node.get("/s")), node.name


# -------------------------------------------------------------------------------------- purge-all, FLUSHALL


@ACROSS_DEPLOYMENTS
async def test_purge_all_makes_both_nodes_miss_and_changes_the_generation(
    pair: tuple[Node, Node], raw: Redis | RedisCluster, namespace: str
) -> None:
    a, b = pair
    await fill(a, b, "/x", "/y")
    token = await raw.get(f"{namespace}:generation")
    assert token is not None

    await a.cache.invalidate(everything=True)
    await eventually(lambda: b.counters["messages_applied"] == 1, what="b applied the purge-all")

    assert await raw.get(f"{namespace}:generation") not in (None, token)
    await refetched(b, a, "/x")
    await refetched(a, b, "/y")


@ACROSS_DEPLOYMENTS
async def test_flushall_on_the_server_flushes_both_l1s(
    pair: tuple[Node, Node], raw: Redis | RedisCluster
) -> None:
    a, b = pair
    await fill(a, b, "/x")

    await raw.flushall()

    # The next generation check (every CHECK_INTERVAL) finds the token gone: within a few intervals.
    await eventually(
        lambda: not a.in_l1("/x") and not b.in_l1("/x"), within=10 * CHECK_INTERVAL, what="both L1s flushed"
    )
    await refetched(a, b, "/x")
    assert a.counters["generation_changes"] == b.counters["generation_changes"] == 1


# ------------------------------------------------------------------------------- raw messages on the wire


@ACROSS_DEPLOYMENTS
async def test_the_same_message_id_twice_is_applied_once(
    pair: tuple[Node, Node], origin: Origin, raw: Redis | RedisCluster, namespace: str
) -> None:
    a, b = pair
    origin.serve("/p/1", tags=["product:1"])
    await fill(a, b, "/p/1")
    message = {"id": "dup-1", "tags": ["product:1"]}

    await publish_raw(raw, namespace, message)
    await assert_dropped_everywhere(a, b, "/p/1")  # and stored again: b from the app, a from L2
    await a.store.flush_writes()
    await b.store.flush_writes()
    for node in (a, b):
        assert node.in_l1("/p/1"), node.name

    await publish_raw(raw, namespace, message)
    await eventually(
        lambda: a.counters["duplicate_messages"] == b.counters["duplicate_messages"] == 1,
        what="the duplicate reached both nodes",
    )

    await assert_kept_everywhere(a, b, "/p/1")
    assert a.counters["messages_applied"] == b.counters["messages_applied"] == 1


GARBAGE: list[tuple[str, bytes]] = [
    ("not-json", b"purge product:1 please"),
    ("not-json", b'{"id": "x", "tags": ["product:1"]'),
    ("not-object", b'["product:1"]'),
    ("bad-field", b'{"id": "x1", "tags": "product:1"}'),
    ("bad-field", b'{"id": "x2", "tags": [1, 2]}'),
    ("bad-field", b'{"id": "x3", "tags": ["product:1"], "soft": "yes"}'),
    ("bad-id", b'{"tags": ["product:1"]}'),
    ("bad-id", b'{"id": 42, "tags": ["product:1"]}'),
    ("bad-path", b'{"id": "x4", "paths": ["p/1"]}'),
    ("empty", b'{"id": "x5"}'),
    ("too-large", json.dumps({"id": "x6", "tags": ["t" * 70_000]}).encode()),
]


@ACROSS_DEPLOYMENTS
async def test_garbage_messages_are_counted_by_reason_and_skipped(
    pair: tuple[Node, Node], origin: Origin, raw: Redis | RedisCluster, namespace: str
) -> None:
    a, b = pair
    origin.serve("/p/1", tags=["product:1"])
    await fill(a, b, "/p/1")
    expected = Counter(f"bad_message:{reason}" for reason, _ in GARBAGE)

    for _, payload in GARBAGE:
        await publish_raw(raw, namespace, payload)

    def bad_counts(node: Node) -> Counter[str]:
        return Counter({k: v for k, v in node.counters.items() if k.startswith("bad_message:")})

    await eventually(
        lambda: bad_counts(a) == expected and bad_counts(b) == expected, what="every bad message counted"
    )
    await assert_kept_everywhere(a, b, "/p/1")  # nothing was applied
    for node in (a, b):
        assert node.counters["messages_applied"] == 0
        assert node.shared.subscriber.handler_errors == 0
        assert node.shared.subscriber.connected

    await publish_raw(raw, namespace, {"id": "valid-1", "tags": ["product:1"]})
    await assert_dropped_everywhere(a, b, "/p/1")


@ACROSS_DEPLOYMENTS
async def test_the_l2_clean_up_of_a_raw_message_is_done_once(
    pair: tuple[Node, Node], origin: Origin, raw: Redis | RedisCluster, namespace: str
) -> None:
    a, b = pair
    origin.serve("/p/1", tags=["product:1"])
    await fill(a, b, "/p/1")
    for node in (a, b):
        node.record_applied()

    await publish_raw(raw, namespace, {"id": "claim-1", "tags": ["product:1"]})
    await eventually(lambda: len(a.applied) + len(b.applied) == 3, what="both nodes applied it")

    assert await raw.exists(f"{namespace}:claim:claim-1") == 1
    # Each node drops its L1 first; only the claimer then applies it to L2 as well.
    per_node = sorted(tuple(shared for _, shared in node.applied) for node in (a, b))
    assert per_node == [(False,), (False, True)]
    assert not await a.in_l2("/p/1")
    assert not a.in_l1("/p/1")
    assert not b.in_l1("/p/1")


# ---------------------------------------------------------------------------------- subscriber disconnect


async def test_lost_subscription_flushes_and_bypasses_l1_until_resubscribed(
    pair: tuple[Node, Node], redis_server: RedisServer
) -> None:
    a, b = pair
    await fill(a, b, "/x")

    redis_server.kill()
    await eventually(
        lambda: a.store.l1_bypass and b.store.l1_bypass, what="both nodes noticed the lost subscription"
    )
    for node in (a, b):
        assert len(node.store.l1) == 0, node.name
        assert node.counters["subscriber_disconnects"] == 1
        for _ in range(2):
            response = await node.get("/x")
            assert not is_l1_hit(response), (node.name, status(response))

    redis_server.start()
    await eventually(
        lambda: not a.store.l1_bypass and not b.store.l1_bypass,
        within=RECONNECT_WITHIN,
        what="both nodes subscribed again",
    )
    for node in (a, b):
        assert node.shared.subscriber.connected
        await node.get("/x")
        assert is_l1_hit(await node.get("/x")), node.name


# ---------------------------------------------------------------------------------------------- domain events


PAYMENT_RULES = {"payment.completed": ["user:{user_id}", "contract:{contract_id}"]}


@pytest.fixture
async def event_pair(pair: tuple[Node, Node], origin: Origin) -> tuple[Node, Node]:
    a, b = pair
    for node in pair:
        node.cache.on_events(PAYMENT_RULES)
    origin.serve("/u/7", tags=["user:7"])
    origin.serve("/u/8", tags=["user:8"])
    origin.serve("/c/9", tags=["contract:9"])
    await fill(a, b, "/u/7", "/u/8", "/c/9")
    return pair


@ACROSS_DEPLOYMENTS
async def test_a_domain_event_drops_the_mapped_tags_on_both_nodes(event_pair: tuple[Node, Node]) -> None:
    a, b = event_pair

    await a.cache.publish_event("payment.completed", {"user_id": 7, "contract_id": 9})

    await assert_dropped_everywhere(a, b, "/u/7")
    await assert_dropped_everywhere(a, b, "/c/9")
    await assert_kept_everywhere(a, b, "/u/8")


@ACROSS_DEPLOYMENTS
async def test_the_same_event_id_twice_is_applied_once(event_pair: tuple[Node, Node]) -> None:
    a, b = event_pair
    data = {"user_id": 7, "contract_id": 9}

    await a.cache.publish_event("payment.completed", data, event_id="evt-1")
    await assert_dropped_everywhere(a, b, "/u/7")
    await assert_dropped_everywhere(a, b, "/c/9")
    await a.store.flush_writes()
    await b.store.flush_writes()

    await b.cache.publish_event("payment.completed", data, event_id="evt-1")
    await eventually(
        lambda: a.counters["duplicate_messages"] == b.counters["duplicate_messages"] == 1,
        what="the duplicate reached both nodes",
    )

    await assert_kept_everywhere(a, b, "/u/7")
    await assert_kept_everywhere(a, b, "/c/9")
    assert a.counters["messages_applied"] == b.counters["messages_applied"] == 1


async def test_an_event_missing_a_field_drops_only_the_tags_it_can_fill(
    event_pair: tuple[Node, Node],
) -> None:
    a, b = event_pair

    await a.cache.publish_event("payment.completed", {"user_id": 7})

    await assert_dropped_everywhere(a, b, "/u/7")
    await assert_kept_everywhere(a, b, "/c/9")
    await assert_kept_everywhere(a, b, "/u/8")


# ----------------------------------------------------------------------------------- the fill/purge race


@ACROSS_DEPLOYMENTS
@pytest.mark.parametrize("source", ["other-node", "local"])
async def test_a_fill_that_began_before_an_invalidation_is_not_stored(
    pair: tuple[Node, Node], origin: Origin, source: str
) -> None:
    a, b = pair
    origin.serve("/slow", tags=["slow"])
    entered, release = origin.hold("/slow")

    request = asyncio.create_task(a.get("/slow"))
    await asyncio.wait_for(entered.wait(), WITHIN)
    if source == "local":
        await a.cache.invalidate(tags=["slow"])
    else:
        await b.cache.invalidate(tags=["slow"])
        await eventually(lambda: a.counters["messages_applied"] == 1, what="a applied the purge")
    release.set()
    response = await asyncio.wait_for(request, WITHIN)

    assert response.text == "/slow v1"  # served…
    assert "detail=not-stored" in status(response)  # …but not stored
    await a.store.flush_writes()
    assert not a.in_l1("/slow")
    assert not await a.in_l2("/slow")
    del origin.gates["/slow"]
    assert "stored" in status(await a.get("/slow"))
    assert a.spy.calls["/slow"] == 2


# ------------------------------------------------------------------------------------- Redis unreachable


@pytest.fixture
def durable_redis() -> Iterator[RedisServer]:
    """A private redis-server that keeps its data across a stop and start (append-only file)."""
    with RedisServer(extra_args=["--appendonly", "yes", "--appendfsync", "always"]) as server:
        yield server


def exists(server: RedisServer, key: str) -> bool:
    with server.admin_client() as client:
        return bool(client.exists(key))


@pytest.mark.parametrize("how", ["invalidate", "event"])
async def test_an_invalidation_made_while_redis_is_down_reaches_l2_once_it_is_back(
    durable_redis: RedisServer, make_node: NodeFactory, origin: Origin, how: str
) -> None:
    # (durable_redis first: it is torn down after the nodes are closed)
    a = await make_node("a", redis_url=durable_redis.url)
    b = await make_node("b", redis_url=durable_redis.url)
    for node in (a, b):
        node.cache.on_events(PAYMENT_RULES)
    origin.serve("/p/1", tags=["user:7"])
    await fill(a, b, "/p/1")
    entry_key = a.store.l2.entry_key(digest_of("/p/1"))
    assert exists(durable_redis, entry_key)

    durable_redis.stop()
    if how == "invalidate":
        assert await a.cache.invalidate(tags=["user:7"]) == 1  # never raises; a's L1 copy is dropped
    else:
        await a.cache.publish_event("payment.completed", {"user_id": 7})  # never raises
    assert not a.in_l1("/p/1")

    durable_redis.start()  # with its data: the entry is back in L2 until the purge reaches it
    await eventually(
        lambda: not exists(durable_redis, entry_key), within=RECONNECT_WITHIN, what="the purge reached L2"
    )
    # b, which never heard of the purge, does not find the entry in L2 either.
    await eventually(lambda: not b.store.l1_bypass, within=RECONNECT_WITHIN, what="b subscribed again")
    assert "stored" in status(await b.get("/p/1"))


# ---------------------------------------------------------------------------- Redis Cluster: sharded pub/sub


@pytest.mark.parametrize("deployment", ["cluster"], indirect=True)
async def test_on_a_cluster_invalidations_travel_sharded_and_a_classic_publish_still_works(
    pair: tuple[Node, Node], origin: Origin, namespace: str, redis_cluster: LocalCluster
) -> None:
    a, b = pair
    channel = f"{namespace}:invalidate"
    owner = redis_cluster.node_for_slot(redis_cluster.keyslot(channel))
    elsewhere = next(server for server in redis_cluster.servers if server is not owner)
    with owner.admin_client() as admin:  # both nodes listen on the channel's shard, both ways
        assert admin.execute_command("PUBSUB", "SHARDNUMSUB", channel) == [channel.encode(), 2]
        assert admin.execute_command("PUBSUB", "NUMSUB", channel) == [channel.encode(), 2]
    # A classic subscriber on another node hears what is broadcast (PUBLISH), never what is sharded.
    bystander = elsewhere.admin_client().pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    bystander.subscribe(channel)
    for item in (1, 2, 3):
        origin.serve(f"/p/{item}", tags=[f"product:{item}"])
    await fill(a, b, "/p/1", "/p/2", "/p/3")

    await a.cache.invalidate(tags=["product:1"])  # SPUBLISH
    await assert_dropped_everywhere(a, b, "/p/1")

    # A raw PUBLISH sent to a node that does not own the channel's slot: the cluster bus carries it over.
    with elsewhere.admin_client() as admin:
        admin.publish(channel, json.dumps({"id": "classic-1", "tags": ["product:2"]}))
    await assert_dropped_everywhere(a, b, "/p/2")

    # The same message both ways, as a publisher that does not know which one nodes listen to might send
    # it: applied once.
    message = json.dumps({"id": "both-1", "tags": ["product:3"]})
    with owner.admin_client() as admin:
        admin.execute_command("SPUBLISH", channel, message)
        admin.publish(channel, message)
    await assert_dropped_everywhere(a, b, "/p/3")
    await eventually(lambda: b.counters["duplicate_messages"] == 1, what="b heard both-1 twice")

    assert b.counters["messages_applied"] == 3
    assert a.counters["messages_applied"] == 2  # its own message was applied before it was sent
    heard = []
    quiet_until = time.monotonic() + 0.5  # both were sent long ago; this only drains the socket
    while time.monotonic() < quiet_until:
        received = bystander.get_message(timeout=0.05)  # None also for the ignored confirmation
        if received is not None:
            heard.append(json.loads(received["data"])["id"])
    bystander.close()
    assert heard == ["classic-1", "both-1"]


@pytest.mark.parametrize("deployment", ["cluster"], indirect=True)
async def test_on_a_cluster_a_tag_purge_reaches_entries_on_every_node(
    pair: tuple[Node, Node], origin: Origin, redis_cluster: LocalCluster
) -> None:
    a, b = pair
    paths = [f"/shared/{i}" for i in range(12)]
    for path in paths:
        origin.serve(path, tags=["shared", f"own:{path}"])
    origin.serve("/other", tags=["other"])
    await fill(a, b, *paths, "/other")
    owners = {
        redis_cluster.node_for_slot(redis_cluster.keyslot(a.store.l2.entry_key(digest_of(path)))).port
        for path in paths
    }
    assert len(owners) == len(redis_cluster.servers), "the entries should live on every node"

    await b.cache.invalidate(tags=["shared"])

    await eventually(lambda: not any(a.in_l1(path) for path in paths), what="every path out of a's L1")
    for path in paths:
        assert not await a.in_l2(path), path
    await assert_kept_everywhere(a, b, "/other")


# ------------------------------------------------------------------------------------- Sentinel failover


@pytest.fixture
def own_sentinel() -> Iterator[SentinelDeployment]:
    """A Sentinel deployment of this test's own: the test fails it over."""
    with SentinelDeployment() as deployment:
        yield deployment


FAILOVER_PATHS = [f"/f/{i}" for i in range(8)]


@pytest.mark.parametrize("how", ["SENTINEL FAILOVER", "master killed"])
async def test_a_sentinel_failover_fails_no_request_and_invalidation_works_after_it(
    own_sentinel: SentinelDeployment, make_node: NodeFactory, origin: Origin, namespace: str, how: str
) -> None:
    a = await make_node("a", redis_url=own_sentinel.url)
    b = await make_node("b", redis_url=own_sentinel.url)
    for path in FAILOVER_PATHS:
        origin.serve(path, tags=[f"tag:{path}"])
    await fill(a, b, *FAILOVER_PATHS)
    old_master = own_sentinel.current_master()

    kill = how == "master killed"
    failover = asyncio.create_task(asyncio.to_thread(own_sentinel.failover, False, kill))
    served = 0
    deadline = time.monotonic() + 60
    while not failover.done():  # Node.get asserts a 200 for every request
        assert time.monotonic() < deadline, "the failover did not end"
        for node in (a, b):
            for path in FAILOVER_PATHS:
                await node.get(path)
                served += 1
        await asyncio.sleep(0.01)
    new_master = await failover
    assert new_master is not old_master
    # The nodes notice the move at their next generation check and subscribe on the new master, still
    # failing no request meanwhile.
    deadline = time.monotonic() + RECONNECT_WITHIN
    while not all(node.shared.subscriber.address == (new_master.host, new_master.port) for node in (a, b)):
        assert time.monotonic() < deadline, "the nodes did not subscribe on the new master"
        for node in (a, b):
            for path in FAILOVER_PATHS:
                await node.get(path)
                served += 1
        await asyncio.sleep(0.01)
    assert served > 0
    await eventually(
        lambda: not a.store.l1_bypass and not b.store.l1_bypass, within=RECONNECT_WITHIN, what="L1 used again"
    )
    # A node whose L2 calls failed during the outage skips L2 until its breaker's probe succeeds (a miss,
    # never an error); the checks below need L2 answering again on both nodes.
    deadline = time.monotonic() + RECONNECT_WITHIN
    probes = 0
    while not all(node.store.breaker.state is BreakerState.CLOSED for node in (a, b)):
        assert time.monotonic() < deadline, "L2 not used again"
        probes += 1
        origin.serve(f"/probe/{probes}")
        for node in (a, b):  # an L1 miss: only a request that asks L2 lets the breaker's probe through
            await node.get(f"/probe/{probes}")
        await asyncio.sleep(0.05)

    # Invalidation works again: from a node, and from a raw PUBLISH to the new master.
    for node in (a, b):  # in both L1s again (from L2, or from the app and then L2)
        for path in ("/f/0", "/f/1"):
            await node.get(path)
            await node.store.flush_writes()
            assert node.in_l1(path), (node.name, path)
    await b.cache.invalidate(tags=["tag:/f/0"])
    await assert_dropped_everywhere(a, b, "/f/0")
    with new_master.admin_client() as admin:
        admin.publish(f"{namespace}:invalidate", json.dumps({"id": "after-failover", "tags": ["tag:/f/1"]}))
    await assert_dropped_everywhere(a, b, "/f/1")
    if not kill:  # a killed master drops the subscription by itself, so the node needs no reminder
        assert a.counters["master_moves"] == b.counters["master_moves"] == 1


# ------------------------------------------------------------------------------------------ edgecache purge


@ACROSS_DEPLOYMENTS
async def test_edgecache_purge_with_the_deployments_url_drops_on_both_nodes(
    pair: tuple[Node, Node], origin: Origin, deployment: Deployment, namespace: str
) -> None:
    a, b = pair
    origin.serve("/p/1", tags=["product:1"])
    origin.serve("/p/2", tags=["product:2"])
    await fill(a, b, "/p/1", "/p/2")
    argv = ["purge", "--tag", "product:1", "--namespace", namespace, "--redis-url", deployment.url]

    assert await asyncio.to_thread(cli_main, argv) == 0  # the CLI runs its own event loop

    await assert_dropped_everywhere(a, b, "/p/1")
    await assert_kept_everywhere(a, b, "/p/2")
