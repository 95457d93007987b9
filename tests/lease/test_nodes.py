"""Coalescing across nodes against a real redis-server: two (or three) ``Cache``s on one Redis, each behind
``CacheInterceptor`` over the same app, with an origin spy per node.

What is checked is behaviour: how often the app is called, what each request gets, what each node counted.
Waits are on events and conditions with deadlines; no assertion depends on how long something took (a
waiter that wrongly waited out ``lease_wait`` shows in its ``timeout`` counter, not in a stopwatch)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from starlette.types import Receive, Scope, Send

from edgecache.lease import LeaseOutcome, Leases
from edgecache.observe.prometheus import CacheCollector
from edgecache.stores.redis import RedisStore
from tests.redis_server import RedisServer
from tests.shared.nodes import (
    ACROSS_DEPLOYMENTS,
    WITHIN,
    Deployment,
    Node,
    NodeFactory,
    Origin,
    deployment_for,
    digest_of,
    eventually,
    nodes,
    open_raw,
    status,
)

LEASE_WAIT = 5.0
COLLAPSED_BY_LEASE = re.compile(r"edgecache; fwd=uri-miss; ttl=\d+; collapsed; detail=lease")


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def origin() -> Origin:
    return Origin()


@pytest.fixture
def deployment(request: pytest.FixtureRequest) -> Deployment:
    return deployment_for(request)


@pytest.fixture
async def raw(deployment: Deployment) -> AsyncIterator[Redis | RedisCluster]:
    """A plain client, as another (crashed or stuck) node would have used."""
    async with open_raw(deployment) as client:
        yield client


@pytest.fixture
async def make_node(deployment: Deployment, namespace: str, origin: Origin) -> AsyncIterator[NodeFactory]:
    options = {"coalesce_across_nodes": True, "lease_ttl": 1.5, "lease_wait": LEASE_WAIT}
    async with nodes(deployment, namespace, origin, **options) as make:
        yield make


def lease_samples(node: Node) -> dict[tuple[str, str | None], float]:
    collected = CacheCollector(node.cache).collect()
    return {(s.name, s.labels.get("result")): s.value for m in collected for s in m.samples}


def leases(node: Node) -> Leases:
    assert node.cache.leases is not None
    return node.cache.leases


async def holding(
    node: Node, origin: Origin, path: str
) -> tuple[asyncio.Task[httpx.Response], asyncio.Event]:
    """A request on ``node`` that took the lease and is inside the app until the returned event is set."""
    entered, release = origin.hold(path)
    task = asyncio.create_task(node.client.get(path))
    await asyncio.wait_for(entered.wait(), WITHIN)
    assert leases(node).counters["won"] == 1, "the first request should have taken the lease"
    return task, release


# ------------------------------------------------------------------------------------------- one fetch


@ACROSS_DEPLOYMENTS
async def test_concurrent_misses_on_two_nodes_make_one_origin_call(
    make_node: NodeFactory, origin: Origin
) -> None:
    a, b = await make_node("a"), await make_node("b")
    entered, release = origin.hold("/r")
    tasks = [asyncio.create_task(node.client.get("/r")) for _ in range(10) for node in (a, b)]
    await asyncio.wait_for(entered.wait(), WITHIN)
    # One node's leader is in the app; the other's waits for the lease (their other requests wait locally).
    await eventually(lambda: leases(a).waiting + leases(b).waiting == 1, what="one node waiting")

    release.set()
    responses = await asyncio.gather(*tasks)

    assert a.spy.calls["/r"] + b.spy.calls["/r"] == 1
    assert {(r.status_code, r.text) for r in responses} == {(200, "/r v1")}
    winner, waiter = (a, b) if a.spy.calls["/r"] else (b, a)
    assert leases(winner).counters["won"] == 1
    assert leases(waiter).counters["stored"] == 1
    waiter_statuses = [status(r) for r in responses[(0 if waiter is a else 1) :: 2]]
    assert any(COLLAPSED_BY_LEASE.fullmatch(s) for s in waiter_statuses), waiter_statuses
    # Its other requests were collapsed into its leader, or came late enough to hit.
    assert all("collapsed" in s or "; hit;" in s for s in waiter_statuses), waiter_statuses


async def test_the_lease_is_counted_in_stats_and_prometheus(make_node: NodeFactory, origin: Origin) -> None:
    a, b = await make_node("a"), await make_node("b")
    task, release = await holding(a, origin, "/r")
    waiting = asyncio.create_task(b.client.get("/r"))
    await eventually(lambda: leases(b).waiting == 1, what="b waiting")
    samples = lease_samples(b)
    assert samples[("edgecache_lease_waiting", None)] == 1

    release.set()
    await asyncio.gather(task, waiting)

    samples = lease_samples(b)
    assert samples[("edgecache_lease_total", "stored")] == 1
    assert samples[("edgecache_lease_waiting", None)] == 0
    tiers = {
        (s.labels["outcome"], s.labels["reason"], s.labels["tier"])
        for m in CacheCollector(b.cache).collect()
        if m.name == "edgecache_requests"
        for s in m.samples
    }
    assert ("miss", "lease", "l2") in tiers


async def test_a_fetch_longer_than_lease_ttl_keeps_its_lease(
    make_node: NodeFactory, origin: Origin, raw: Redis | RedisCluster
) -> None:
    a = await make_node("a")
    task, release = await holding(a, origin, "/slow")
    key = leases(a).key(digest_of("/slow"))
    lowest = await raw.pttl(key)
    assert lowest > 0
    deadline = asyncio.get_running_loop().time() + WITHIN
    while True:  # the time left falls, then jumps back up when the holder renews
        left = await raw.pttl(key)
        if left > lowest + 100:
            break
        lowest = min(lowest, left)
        assert asyncio.get_running_loop().time() < deadline, "the holder never renewed its lease"
        await asyncio.sleep(0.02)
    release.set()
    assert (await task).status_code == 200


# ------------------------------------------------------------------------------------ holder failures


async def test_a_holder_cancelled_mid_fetch_lets_a_waiter_take_over(
    make_node: NodeFactory, origin: Origin
) -> None:
    a, b = await make_node("a"), await make_node("b")
    held, release = await holding(a, origin, "/r")
    waiting = asyncio.create_task(b.client.get("/r"))
    await eventually(lambda: leases(b).waiting == 1, what="b waiting")

    held.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await held
    release.set()  # lets b's own call through the gate
    response = await waiting

    assert (response.status_code, response.text) == (200, "/r v1")
    assert b.spy.calls["/r"] == 1
    assert leases(b).counters["took_over"] == 1
    assert leases(b).counters["timeout"] == 0


@ACROSS_DEPLOYMENTS
async def test_a_dead_holders_lease_expires_and_a_waiter_takes_over(
    make_node: NodeFactory, origin: Origin, raw: Redis | RedisCluster
) -> None:
    b = await make_node("b")
    # A node that took the lease and died: nobody renews or releases it.
    await raw.set(leases(b).key(digest_of("/r")), b"h:crashed-node", px=300)

    response = await b.get("/r")

    assert "stored" in status(response)
    assert b.spy.calls["/r"] == 1
    assert leases(b).counters["took_over"] == 1
    assert leases(b).counters["timeout"] == 0


async def test_a_waiter_never_waits_past_lease_wait(
    make_node: NodeFactory, origin: Origin, raw: Redis | RedisCluster
) -> None:
    b = await make_node("b", lease_wait=0.3)
    await raw.set(leases(b).key(digest_of("/r")), b"h:stuck-node", px=60_000)

    response = await b.get("/r")

    assert response.text == "/r v1"
    assert b.spy.calls["/r"] == 1
    assert leases(b).counters["timeout"] == 1


async def test_an_origin_error_lets_one_waiter_fetch_at_once(make_node: NodeFactory) -> None:
    a, b = await make_node("a"), await make_node("b")
    calls = 0
    entered, release = asyncio.Event(), asyncio.Event()

    async def failing_once(scope: Scope, receive: Receive, send: Send) -> None:
        """The first call waits for ``release`` and fails; later ones succeed."""
        nonlocal calls
        calls += 1
        code = 200
        if calls == 1:
            entered.set()
            await release.wait()
            code = 500
        headers = [(b"cache-control", b"max-age=60"), (b"content-length", b"2")]
        await send({"type": "http.response.start", "status": code, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    a.spy.app = b.spy.app = failing_once
    held = asyncio.create_task(a.client.get("/e"))
    await asyncio.wait_for(entered.wait(), WITHIN)
    waiting = asyncio.create_task(b.client.get("/e"))
    await eventually(lambda: leases(b).waiting == 1, what="b waiting")

    release.set()
    first, second = await asyncio.gather(held, waiting)

    assert (first.status_code, second.status_code) == (500, 200)
    assert "stored" in status(second)
    assert leases(b).counters["took_over"] == 1  # the failed holder deleted its lease: b took it
    assert leases(b).counters["timeout"] == 0
    assert calls == 2


# ------------------------------------------------------------------------------------- not shareable


@ACROSS_DEPLOYMENTS
async def test_an_unshareable_response_sends_waiters_to_the_origin_at_once(
    make_node: NodeFactory, origin: Origin
) -> None:
    a, b = await make_node("a"), await make_node("b")
    origin.serve("/u", cache_control="private, max-age=60")
    task, release = await holding(a, origin, "/u")
    waiting = asyncio.create_task(b.client.get("/u"))
    await eventually(lambda: leases(b).waiting == 1, what="b waiting")

    release.set()
    first, second = await asyncio.gather(task, waiting)

    assert (first.text, second.text) == ("/u v1", "/u v2")  # each its own private response
    assert "detail=private" in status(second)
    assert leases(b).counters["pass"] == 1
    assert leases(b).counters["timeout"] == 0

    # A later miss on a third node sees the marker and goes to the origin without waiting either.
    c = await make_node("c")
    assert (await c.get("/u")).text == "/u v3"
    assert leases(c).counters["pass"] == 1
    assert leases(c).waiting == 0


# ------------------------------------------------------------------------------------- Redis failures


def failed_l2_reads(node: Node) -> int:
    """L2 reads that failed or were skipped (breaker open): a request counted here goes on to its local
    flight without yielding, so once all are counted, all are coalesced or fetching."""
    return sum(count for name, count in node.store.counters.items() if name.startswith("l2_get"))


async def misses_while_redis_fails(
    nodes: tuple[Node, ...], origin: Origin, path: str
) -> list[httpx.Response]:
    """Five concurrent misses of ``path`` on each node, all past their lookup before the app answers."""
    entered, release = origin.hold(path)
    before = [failed_l2_reads(node) for node in nodes]
    tasks = [asyncio.create_task(node.client.get(path)) for _ in range(5) for node in nodes]
    await asyncio.wait_for(entered.wait(), WITHIN)
    await eventually(
        lambda: [failed_l2_reads(n) - b for n, b in zip(nodes, before, strict=True)] == [5] * len(nodes),
        what="every request past its lookup",
    )
    release.set()
    return await asyncio.gather(*tasks)


async def test_paused_redis_falls_back_to_local_coalescing(
    make_node: NodeFactory, origin: Origin, redis_server: RedisServer
) -> None:
    a, b = await make_node("a"), await make_node("b")
    # Long enough for an L2 read and a lease attempt (0.5 s each) to time out while it lasts.
    redis_server.pause(2500)
    try:
        responses = await misses_while_redis_fails((a, b), origin, "/p")
    finally:
        redis_server.wait_unpaused()

    assert {r.status_code for r in responses} == {200}
    assert (a.spy.calls["/p"], b.spy.calls["/p"]) == (1, 1)  # one call per node: local coalescing
    for node in (a, b):
        assert leases(node).counters["unavailable"] >= 1
        assert leases(node).counters["timeout"] == 0


async def test_stopped_redis_falls_back_to_local_coalescing(
    make_node: NodeFactory, origin: Origin, redis_server: RedisServer
) -> None:
    a, b = await make_node("a"), await make_node("b")
    redis_server.stop()
    try:
        for path in ("/down1", "/down2"):  # the breaker opens along the way: then the lease is not tried
            responses = await misses_while_redis_fails((a, b), origin, path)
            assert {r.status_code for r in responses} == {200}
            assert (a.spy.calls[path], b.spy.calls[path]) == (1, 1)  # one call per node: local coalescing
    finally:
        redis_server.start()
    for node in (a, b):
        assert leases(node).counters["unavailable"] == 2
        assert leases(node).counters["won"] == 0


# ------------------------------------------------------------------------------------- cancellation


async def test_a_waiter_cancelled_mid_call_leaves_no_unread_reply(
    redis_url: str, redis_server: RedisServer, raw: Redis | RedisCluster, namespace: str
) -> None:
    # One connection, so a reply left unread by the cancelled script would be the next command's.
    store = RedisStore.from_url(redis_url, namespace=namespace, op_timeout=10.0, max_connections=1)
    leases_ = Leases(store.client, namespace=namespace, ttl=5.0, wait=10.0, op_timeout=10.0)
    await raw.set("k2", b"v2")
    await raw.set(leases_.key("d" * 64), b"h:other", px=60_000)
    try:
        redis_server.pause(800)
        in_flight = asyncio.create_task(leases_.acquire("d" * 64))
        await asyncio.sleep(0.2)  # its script is on the wire, the reply held back by the pause
        in_flight.cancel()
        with pytest.raises(asyncio.CancelledError):
            await in_flight

        assert await store.client.get("k2") == b"v2"
        assert await store.client.get(leases_.key("d" * 64)) == b"h:other"  # not ours: left alone
        assert leases_.waiting == 0
    finally:
        redis_server.wait_unpaused()
        await leases_.aclose()
        await store.aclose()


async def test_a_lease_already_stored_is_reported_without_waiting(
    redis_url: str, raw: Redis | RedisCluster
) -> None:
    client = Redis.from_url(redis_url)
    leases_ = Leases(client, namespace="ns", ttl=5.0, wait=5.0, op_timeout=1.0)
    try:
        await raw.set(leases_.key("e" * 64), b"=stored", px=2000)
        assert await leases_.acquire("e" * 64) == (LeaseOutcome.STORED, None)
    finally:
        await leases_.aclose()
        await client.aclose()


async def test_a_release_never_touches_a_lease_taken_by_another_node(
    redis_url: str, raw: Redis | RedisCluster
) -> None:
    client = Redis.from_url(redis_url)
    leases_ = Leases(client, namespace="ns", ttl=5.0, wait=5.0, op_timeout=1.0)
    try:
        outcome, lease = await leases_.acquire("f" * 64)
        assert outcome is LeaseOutcome.WON
        assert lease is not None
        # Ours expired (a long pause of this process) and another node took it over.
        await raw.set(lease.key, b"h:the-next-holder", px=5000)

        leases_.release(lease, "f" * 64, stored=False, unshareable=False)
        await leases_.aclose()  # waits for the release

        assert await raw.get(lease.key) == b"h:the-next-holder"
        assert lease.renewer.done()
    finally:
        await client.aclose()
