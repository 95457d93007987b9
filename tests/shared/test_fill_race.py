"""The fill/invalidate race across nodes: node A starts filling a key, node B invalidates it, A's response
(content from before the invalidation) arrives afterwards. Whatever the order in which A's fill completes,
A's L2 write lands and A hears B's message, no node may serve that old content as fresh once both know of
the invalidation, and L2 must not keep it.

Two nodes in one process on the suite's private redis-server (a Redis Cluster for some), over the same
small app. Every step is ordered with events, never with sleeps: the app holds A's request until released
(``Origin.hold``), ``MessageGate`` holds (or loses) the invalidation messages A receives before A applies
them, and ``WriteGate`` holds A's write-behind at its next L2 write. Asynchronous effects are polled with a
deadline (``eventually``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest

from edgecache.core.entry import CacheObject, StoredResponse
from edgecache.core.invalidation import Invalidation
from edgecache.stores.redis import RedisStore
from tests.redis_server import RedisServer
from tests.shared.nodes import (
    RECONNECT_WITHIN,
    WITHIN,
    Deployment,
    Node,
    NodeFactory,
    Origin,
    deployment_for,
    digest_of,
    eventually,
    nodes,
    status,
)

PATH = "/race/k"
OLD = f"{PATH} v1"  # the body of the first fill: the content the invalidation is about
KINDS = ["tag", "path", "prefix", "soft"]


@dataclass(frozen=True)
class Purge:
    """One kind of invalidation that covers ``PATH``."""

    kind: str

    @property
    def soft(self) -> bool:
        return self.kind == "soft"

    def serve(self, origin: Origin) -> None:
        # stale-while-revalidate: a soft purge then has something to serve stale.
        origin.serve(PATH, tags=["race"], cache_control="max-age=60, stale-while-revalidate=30")
        origin.serve("/race-unrelated", tags=["other"])

    async def run(self, node: Node) -> None:
        cache = node.cache
        if self.kind == "tag":
            await cache.invalidate(tags=["race"])
        elif self.kind == "path":
            await cache.invalidate(paths=[PATH])
        elif self.kind == "prefix":
            await cache.invalidate(prefixes=["/race/"])
        else:
            await cache.invalidate(tags=["race"], soft=True)


OPEN_GATES: list[asyncio.Event] = []  # released when a test ends, so that a failed test cannot hang teardown


class MessageGate:
    """Holds the invalidation messages a node receives before it applies them (``hold``), or loses them
    (``lose``): a message delayed on its way, or one that pub/sub never delivered."""

    def __init__(self, node: Node, *, lose: bool = False) -> None:
        self.received = asyncio.Event()
        self.applied = asyncio.Event()
        self.release = asyncio.Event()
        OPEN_GATES.append(self.release)
        self.lose = lose
        shared = node.shared
        apply = shared._apply_remote

        async def gated(invalidation: Invalidation) -> None:
            self.received.set()
            if self.lose:
                return
            await self.release.wait()
            await apply(invalidation)
            self.applied.set()

        shared._apply_remote = gated  # type: ignore[method-assign]


class WriteGate:
    """Holds a node's write-behind at its next L2 write of key ``only`` (any key when None) until released."""

    def __init__(self, node: Node, only: str | None = None) -> None:
        self.reached = asyncio.Event()
        self.release = asyncio.Event()
        OPEN_GATES.append(self.release)
        l2: RedisStore = node.store.l2
        write = l2.set
        armed = True

        async def gated(key: str, value: CacheObject) -> bool:
            nonlocal armed
            if armed and (only is None or key == only):
                armed = False
                self.reached.set()
                await self.release.wait()
            return await write(key, value)

        l2.set = gated  # type: ignore[method-assign]


async def wait(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), WITHIN)


async def l2_body(node: Node, path: str = PATH) -> bytes | None:
    entry = await node.store.l2.get(digest_of(path))
    return entry.body if isinstance(entry, StoredResponse) else None


async def assert_old_content_gone(a: Node, b: Node, purge: Purge) -> None:
    """L2 does not hold the old content, and neither node serves it as fresh (a soft purge may serve it
    stale while a refresh runs)."""
    await a.store.flush_writes()
    await b.store.flush_writes()
    assert await l2_body(a) != OLD.encode(), "L2 still holds the content from before the invalidation"
    for node in (b, a):
        response = await node.get(PATH)
        stale = "detail=stale-while-revalidate" in status(response)
        assert response.text != OLD or (purge.soft and stale), (node.name, status(response))
        await node.cache.drain()
        await node.store.flush_writes()


# ----------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def deployment(request: pytest.FixtureRequest) -> Deployment:
    return deployment_for(request)


@pytest.fixture
async def make_node(deployment: Deployment, origin: Origin, namespace: str) -> AsyncIterator[NodeFactory]:
    async with nodes(deployment, namespace, origin) as make:
        try:
            yield make
        finally:
            # Before the nodes close: a gate a failed test left shut would hang their teardown.
            for gate in OPEN_GATES:
                gate.set()
            OPEN_GATES.clear()
            for path in list(origin.gates):
                origin.gates[path].set()


@pytest.fixture
def origin() -> Origin:
    return Origin()


@pytest.fixture
def namespace() -> str:
    return f"race{time.monotonic_ns() % 10**9}"


@pytest.fixture
async def pair(make_node: NodeFactory) -> tuple[Node, Node]:
    return await make_node("a"), await make_node("b")


async def start_fill(a: Node, origin: Origin) -> asyncio.Task[httpx.Response]:
    """A's request for ``PATH``, held inside the app: the fill has begun."""
    entered, _ = origin.hold(PATH)
    request = asyncio.create_task(a.get(PATH))
    await wait(entered)
    return request


async def finish_fill(origin: Origin, request: asyncio.Task[httpx.Response]) -> httpx.Response:
    origin.gates[PATH].set()
    response = await asyncio.wait_for(request, WITHIN)
    assert response.text == OLD
    del origin.gates[PATH]
    return response


# ------------------------------------------------------------- (1) the message arrives before the fill ends


@pytest.mark.parametrize("kind", KINDS)
async def test_a_message_that_arrives_before_the_fill_completes_stops_its_store(
    pair: tuple[Node, Node], origin: Origin, kind: str
) -> None:
    a, b = pair
    purge = Purge(kind)
    purge.serve(origin)
    request = await start_fill(a, origin)

    await purge.run(b)
    await eventually(lambda: a.counters["messages_applied"] == 1, what="a applied the message")
    response = await finish_fill(origin, request)

    assert "detail=not-stored" in status(response)
    await a.store.flush_writes()
    assert await l2_body(a) is None
    await assert_old_content_gone(a, b, purge)


# --------------------------------------- (2) A's write lands in L2 after B's clean-up, before A hears of it


@pytest.mark.parametrize(
    ("deployment", "kind"),
    [*(("standalone", kind) for kind in KINDS), ("cluster", "tag"), ("cluster", "prefix")],
    indirect=["deployment"],
)
async def test_a_write_that_landed_before_the_message_is_deleted_again_when_it_arrives(
    pair: tuple[Node, Node], origin: Origin, kind: str
) -> None:
    a, b = pair
    purge = Purge(kind)
    purge.serve(origin)
    request = await start_fill(a, origin)
    gate = MessageGate(a)

    await purge.run(b)  # B cleans L2 (nothing there yet) and publishes
    await wait(gate.received)  # A has the message but has not applied it
    response = await finish_fill(origin, request)
    assert "stored" in status(response)  # A does not know yet: its fill stores
    await a.store.flush_writes()
    assert await l2_body(a) == OLD.encode()  # the race: L2 holds the old content after the clean-up

    # Meanwhile B, which applied its own invalidation, does not take that copy for fresh (purge fence).
    early = await b.get(PATH)
    assert early.text != OLD or (purge.soft and "detail=stale-while-revalidate" in status(early)), status(
        early
    )
    await b.cache.drain()
    await b.store.flush_writes()

    gate.release.set()
    await wait(gate.applied)
    assert a.store.counters["recent_writes_purged"] >= 1
    await assert_old_content_gone(a, b, purge)


# --------------------------------------------- (3) A's write is still queued or in flight when A applies it


@pytest.mark.parametrize("where", ["queued", "in-flight"])
@pytest.mark.parametrize("kind", KINDS)
async def test_a_write_still_on_its_way_to_l2_when_the_message_arrives_never_lands(
    pair: tuple[Node, Node], origin: Origin, kind: str, where: str
) -> None:
    a, b = pair
    purge = Purge(kind)
    purge.serve(origin)
    if where == "queued":
        # The writer is busy with another key: A's write of PATH waits in the queue behind it.
        writes = WriteGate(a)
        assert "stored" in status(await a.get("/race-unrelated"))
        await wait(writes.reached)
    else:
        writes = WriteGate(a, digest_of(PATH))
    request = await start_fill(a, origin)
    messages = MessageGate(a)

    await purge.run(b)
    await wait(messages.received)
    response = await finish_fill(origin, request)
    assert "stored" in status(response)
    if where == "in-flight":
        await wait(writes.reached)  # past the writer's own check, on its way to Redis
    messages.release.set()
    await wait(messages.applied)
    writes.release.set()
    await a.store.flush_writes()

    assert a.store.counters["l2_write_superseded"] == 1
    await assert_old_content_gone(a, b, purge)


# ----------------------------------------------------------------- a message that A never receives at all


async def test_a_lost_message_noticed_as_a_lost_subscription_deletes_the_writes_it_may_have_preceded(
    pair: tuple[Node, Node], origin: Origin
) -> None:
    a, b = pair
    purge = Purge("tag")
    purge.serve(origin)
    request = await start_fill(a, origin)
    gate = MessageGate(a, lose=True)

    await purge.run(b)
    await wait(gate.received)  # …and dropped: A never applies it
    await finish_fill(origin, request)
    await a.store.flush_writes()
    assert await l2_body(a) == OLD.encode()

    a.shared.subscriber.reconnect()  # what a heartbeat does when the connection went silent
    await eventually(lambda: a.counters["subscriber_disconnects"] == 1, what="a noticed the loss")
    await eventually(lambda: not a.store.l1_bypass, within=RECONNECT_WITHIN, what="a subscribed again")
    assert a.store.counters["recent_writes_purged"] >= 1
    await assert_old_content_gone(a, b, purge)


async def test_a_fill_in_flight_across_a_lost_subscription_is_not_stored(
    pair: tuple[Node, Node], origin: Origin
) -> None:
    a, _ = pair
    Purge("tag").serve(origin)
    request = await start_fill(a, origin)

    a.shared.subscriber.reconnect()  # any message published meanwhile may be lost
    await eventually(lambda: a.counters["subscriber_disconnects"] == 1, what="a noticed the loss")
    await eventually(lambda: not a.store.l1_bypass, within=RECONNECT_WITHIN, what="a subscribed again")
    response = await finish_fill(origin, request)

    assert "detail=not-stored" in status(response)
    await a.store.flush_writes()
    assert await l2_body(a) is None


@pytest.fixture
def deaf_user(redis_server: RedisServer, redis_url: str) -> Iterator[tuple[str, Callable[[bool], None]]]:
    """A Redis user for node A, and ``hear(False)`` / ``hear(True)`` to revoke or grant its pub/sub
    channels: revoking disconnects its subscription (Redis 7) and keeps it from subscribing again, while its
    L2 commands go on working. A real outage of the channel alone, as when only that connection fails."""
    name = f"deaf{time.monotonic_ns() % 10**9}"

    def hear(allowed: bool) -> None:
        with redis_server.admin_client() as admin:
            admin.execute_command("ACL", "SETUSER", name, "allchannels" if allowed else "resetchannels")

    with redis_server.admin_client() as admin:
        admin.execute_command("ACL", "SETUSER", name, "on", ">secret", "~*", "+@all", "allchannels")
    try:
        yield f"redis://{name}:secret@{redis_server.host}:{redis_server.port}/0", hear
    finally:
        with redis_server.admin_client() as admin:
            admin.execute_command("ACL", "DELUSER", name)


async def test_a_node_that_cannot_hear_invalidations_writes_nothing_to_l2(
    make_node: NodeFactory, origin: Origin, deaf_user: tuple[str, Callable[[bool], None]]
) -> None:
    url, hear = deaf_user
    a, b = await make_node("a", redis_url=url), await make_node("b")
    purge = Purge("tag")
    purge.serve(origin)

    hear(False)
    await eventually(lambda: a.store.l1_bypass, what="a noticed its lost subscription")
    await purge.run(b)  # A never hears of it
    await a.get(PATH)  # L2 itself still works for A: it is read, not written
    await a.store.flush_writes()
    assert a.store.counters["l2_write_paused"] == 1
    assert await l2_body(a) is None

    hear(True)
    await eventually(lambda: not a.store.l1_bypass, within=RECONNECT_WITHIN, what="a subscribed again")
    assert "stored" in status(await a.get(PATH))
    await a.store.flush_writes()
    assert await l2_body(b) is not None  # shared again
