"""InvalidationSubscriber against a real redis-server (tests/redis_server.py): delivery, handler failures,
a killed and restarted server, a silent (paused) server, stopping; and the publishing helpers.

Timing bounds are generous ("within 5 s"): the assertions are about behaviour and call counts."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from edgecache.bus.redis import (
    InvalidationSubscriber,
    backoff_delay,
    publish_event,
    publish_invalidation,
    publisher_client,
    pubsub_client_factory,
    shard_owner_factory,
)
from edgecache.core.invalidation import (
    Invalidation,
    new_event,
    parse_event,
    parse_invalidation,
)
from tests.helpers import eventually
from tests.redis_server import LocalCluster, RedisServer, free_port

HEARTBEAT = 0.2
WITHIN = 5.0
INVALIDATE = "test:invalidate"
EVENTS = "test:events"


class Recorder:
    """Callbacks and handlers that record what they were called with."""

    def __init__(self) -> None:
        self.calls: list[str] = []  # "connected" / "disconnected", in order
        self.received: dict[str, list[bytes]] = {INVALIDATE: [], EVENTS: []}

    async def on_connected(self) -> None:
        self.calls.append("connected")

    async def on_disconnected(self) -> None:
        self.calls.append("disconnected")

    def handler(self, channel: str) -> Callable[[bytes], Awaitable[None]]:
        async def handle(data: bytes) -> None:
            self.received[channel].append(data)

        return handle

    def count(self, call: str) -> int:
        return self.calls.count(call)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def publisher(redis_url: str) -> AsyncIterator[Redis]:
    client = publisher_client(redis_url, timeout=2.0)
    yield client
    await client.aclose()


SubscriberFactory = Callable[..., InvalidationSubscriber]


@pytest.fixture
async def make_subscriber(redis_url: str, recorder: Recorder) -> AsyncIterator[SubscriberFactory]:
    made: list[InvalidationSubscriber] = []

    def make(**options: object) -> InvalidationSubscriber:
        settings: dict[str, object] = {
            "channels": {INVALIDATE: recorder.handler(INVALIDATE), EVENTS: recorder.handler(EVENTS)},
            "on_connected": recorder.on_connected,
            "on_disconnected": recorder.on_disconnected,
            "heartbeat": HEARTBEAT,
        }
        settings.update(options)
        url = str(settings.pop("url", redis_url))
        subscriber = InvalidationSubscriber(pubsub_client_factory(url), **settings)  # type: ignore[arg-type]
        made.append(subscriber)
        return subscriber

    yield make
    for subscriber in made:
        await subscriber.stop()


async def started(make: SubscriberFactory, recorder: Recorder, **options: object) -> InvalidationSubscriber:
    subscriber = make(**options)
    subscriber.start()
    await eventually(lambda: recorder.count("connected") == 1, what="first on_connected")
    assert subscriber.connected
    return subscriber


async def test_delivers_each_channel_to_its_handler(
    make_subscriber: SubscriberFactory, recorder: Recorder, publisher: Redis
) -> None:
    subscriber = await started(make_subscriber, recorder)
    assert await publisher.publish(INVALIDATE, b"one") == 1
    assert await publisher.publish(EVENTS, b"two") == 1
    assert await publisher.publish(INVALIDATE, b"three") == 1
    assert await publisher.publish("test:other", b"nobody") == 0
    await eventually(lambda: subscriber.messages == 3, what="three messages")
    assert recorder.received == {INVALIDATE: [b"one", b"three"], EVENTS: [b"two"]}
    assert recorder.calls == ["connected"]
    assert subscriber.handler_errors == 0


async def test_passes_raw_bytes_garbage_included(
    make_subscriber: SubscriberFactory, recorder: Recorder, publisher: Redis
) -> None:
    subscriber = await started(make_subscriber, recorder)
    garbage = [b"", b"\xff\xfe\x00", b"{not json", b"x" * 100_000]
    for payload in garbage:
        await publisher.publish(INVALIDATE, payload)
    await eventually(lambda: subscriber.messages == len(garbage), what="all payloads")
    assert recorder.received[INVALIDATE] == garbage
    assert subscriber.connected


async def test_handler_exception_is_counted_and_the_loop_continues(
    make_subscriber: SubscriberFactory, recorder: Recorder, publisher: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[bytes] = []

    async def fragile(data: bytes) -> None:
        if data == b"boom":
            raise RuntimeError("handler bug")
        seen.append(data)

    subscriber = await started(make_subscriber, recorder, channels={INVALIDATE: fragile})
    for payload in (b"boom", b"after", b"boom", b"again"):
        await publisher.publish(INVALIDATE, payload)
    await eventually(lambda: seen == [b"after", b"again"], what="messages after the failures")
    assert subscriber.handler_errors == 2
    assert subscriber.messages == 4
    assert subscriber.connected
    assert recorder.calls == ["connected"]
    assert "handler bug" in caplog.text


async def test_handler_overrunning_its_timeout_is_counted(
    make_subscriber: SubscriberFactory, recorder: Recorder, publisher: Redis
) -> None:
    seen: list[bytes] = []

    async def slow(data: bytes) -> None:
        if data == b"hang":
            await asyncio.sleep(60)
        seen.append(data)

    subscriber = await started(make_subscriber, recorder, channels={INVALIDATE: slow}, handler_timeout=0.1)
    await publisher.publish(INVALIDATE, b"hang")
    await publisher.publish(INVALIDATE, b"next")
    await eventually(lambda: seen == [b"next"], what="the message after the hung one")
    assert subscriber.handler_errors == 1
    assert recorder.calls == ["connected"]


async def test_callback_exception_is_counted_and_callbacks_still_alternate(
    make_subscriber: SubscriberFactory, recorder: Recorder, publisher: Redis, redis_server: RedisServer
) -> None:
    async def failing_on_connected() -> None:
        await recorder.on_connected()
        raise RuntimeError("on_connected bug")

    subscriber = await started(make_subscriber, recorder, on_connected=failing_on_connected)
    assert subscriber.callback_errors == 1
    assert subscriber.connected  # the subscription itself is fine
    await publisher.publish(INVALIDATE, b"x")
    await eventually(lambda: recorder.received[INVALIDATE] == [b"x"], what="delivery")
    with redis_server.admin_client() as admin:
        admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    await eventually(
        lambda: recorder.calls == ["connected", "disconnected", "connected"], what="reconnection"
    )
    assert subscriber.callback_errors == 2


async def test_killed_server_then_restarted(
    make_subscriber: SubscriberFactory, recorder: Recorder, redis_server: RedisServer
) -> None:
    subscriber = await started(make_subscriber, recorder)

    redis_server.kill()
    await eventually(lambda: recorder.count("disconnected") == 1, what="on_disconnected")
    assert not subscriber.connected
    await asyncio.sleep(0.6)  # several failed attempts while the server is down...
    assert recorder.calls == ["connected", "disconnected"]  # ...and still one on_disconnected
    failures = subscriber.connect_failures
    assert 1 <= failures <= 10  # backing off, not spinning

    redis_server.restart()  # same port, empty
    await eventually(lambda: recorder.count("connected") == 2, what="on_connected after the restart")
    assert recorder.calls == ["connected", "disconnected", "connected"]
    assert subscriber.connected
    assert subscriber.reconnects == 1
    assert subscriber.disconnects == 1

    client = publisher_client(redis_server.url)
    try:
        assert await client.publish(INVALIDATE, b"after restart") == 1
    finally:
        await client.aclose()
    await eventually(lambda: recorder.received[INVALIDATE] == [b"after restart"], what="delivery")


async def test_silent_server_is_detected_by_the_heartbeat(
    make_subscriber: SubscriberFactory, recorder: Recorder, redis_server: RedisServer
) -> None:
    subscriber = await started(make_subscriber, recorder)
    await asyncio.sleep(3 * HEARTBEAT)
    assert recorder.calls == ["connected"]  # an idle but healthy connection is not mistaken for dead
    assert subscriber.pings >= 1

    paused_at = time.monotonic()
    redis_server.pause(1500)  # > 2 × heartbeat; the TCP connection stays open, nothing is answered
    await eventually(lambda: recorder.count("disconnected") == 1, what="silent connection detected")
    assert time.monotonic() - paused_at < 1.5  # noticed during the pause, not after it
    assert not subscriber.connected

    await eventually(lambda: recorder.count("connected") == 2, what="resubscribed after the pause")
    assert recorder.calls == ["connected", "disconnected", "connected"]
    client = publisher_client(redis_server.url)
    try:
        assert await client.publish(INVALIDATE, b"after pause") == 1
    finally:
        await client.aclose()
    await eventually(lambda: recorder.received[INVALIDATE] == [b"after pause"], what="delivery")


async def test_unreachable_from_the_start(make_subscriber: SubscriberFactory, recorder: Recorder) -> None:
    subscriber = make_subscriber(url=f"redis://127.0.0.1:{free_port()}/0")
    subscriber.start()
    await eventually(lambda: subscriber.connect_failures >= 2, what="failed attempts")
    await asyncio.sleep(0.5)
    assert recorder.calls == []  # never connected: no callback at all
    assert not subscriber.connected
    assert subscriber.connect_failures <= 10  # backing off, not spinning
    began = time.monotonic()
    await subscriber.stop()
    assert time.monotonic() - began < 1.0
    assert not subscriber.running


async def test_start_and_stop_are_idempotent_and_stop_is_prompt(
    make_subscriber: SubscriberFactory, recorder: Recorder, publisher: Redis
) -> None:
    subscriber = make_subscriber()
    await subscriber.stop()  # before start: nothing to do
    subscriber.start()
    subscriber.start()  # still one task, one subscription
    await eventually(lambda: subscriber.connected, what="connected")
    await asyncio.sleep(0.1)
    assert recorder.calls == ["connected"]
    assert await publisher.publish(INVALIDATE, b"x") == 1  # one subscriber connection, not two

    began = time.monotonic()
    await subscriber.stop()
    assert time.monotonic() - began < 1.0
    await subscriber.stop()
    assert not subscriber.running
    assert not subscriber.connected
    assert recorder.calls == ["connected"]  # stop() calls no callback
    assert await publisher.publish(INVALIDATE, b"y") == 0  # unsubscribed: the connection is closed

    subscriber.start()  # can run again
    await eventually(lambda: recorder.count("connected") == 2, what="connected again")


async def test_stop_while_a_handler_runs(
    make_subscriber: SubscriberFactory, recorder: Recorder, publisher: Redis
) -> None:
    entered = asyncio.Event()

    async def stuck(data: bytes) -> None:
        entered.set()
        await asyncio.sleep(60)

    subscriber = await started(make_subscriber, recorder, channels={INVALIDATE: stuck})
    await publisher.publish(INVALIDATE, b"x")
    await asyncio.wait_for(entered.wait(), WITHIN)
    began = time.monotonic()
    await subscriber.stop()
    assert time.monotonic() - began < 1.0


def test_constructor_validates() -> None:
    async def nothing() -> None:
        return None

    def factory() -> Redis:
        raise AssertionError("not called")

    with pytest.raises(ValueError, match="channel"):
        InvalidationSubscriber(factory, {}, on_connected=nothing, on_disconnected=nothing)
    with pytest.raises(ValueError, match="heartbeat"):
        InvalidationSubscriber(
            factory, {"c": lambda _: nothing()}, on_connected=nothing, on_disconnected=nothing, heartbeat=0
        )
    with pytest.raises(ValueError, match="reconnect_backoff"):
        InvalidationSubscriber(
            factory,
            {"c": lambda _: nothing()},
            on_connected=nothing,
            on_disconnected=nothing,
            reconnect_backoff=(1.0, 0.5),
        )


def test_backoff_delay_is_capped_exponential_with_jitter() -> None:
    assert [backoff_delay(n, 0.05, 2.0, jitter=0.999999) for n in range(8)] == pytest.approx(
        [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0], rel=1e-5
    )
    assert backoff_delay(0, 0.05, 2.0, jitter=0.0) == pytest.approx(0.025)  # never below half the step
    assert backoff_delay(10_000, 0.05, 2.0, jitter=0.0) == pytest.approx(1.0)


# -- publishing -------------------------------------------------------------------------------------------


async def test_publish_invalidation_and_event(redis_url: str, publisher: Redis) -> None:
    listener = Redis.from_url(redis_url)
    pubsub = listener.pubsub()
    try:
        await pubsub.subscribe("shop:invalidate", "shop:events")
        for _ in range(2):
            assert (await pubsub.get_message(timeout=WITHIN))["type"] == "subscribe"
        inv = Invalidation("id-1", tags=("product:42",), paths=("/products/42",))
        assert await publish_invalidation(publisher, "shop", inv) == 1
        event = new_event("payment.completed", {"user_id": 7})
        assert await publish_event(publisher, "shop", event) == 1
        assert await publish_invalidation(publisher, "elsewhere", inv) == 0

        first = await pubsub.get_message(timeout=WITHIN)
        second = await pubsub.get_message(timeout=WITHIN)
        assert first is not None
        assert second is not None
        assert first["channel"] == b"shop:invalidate"
        assert json.loads(first["data"]) == {
            "id": "id-1",
            "tags": ["product:42"],
            "paths": ["/products/42"],
            "soft": False,
        }
        assert parse_invalidation(first["data"]) == inv
        assert second["channel"] == b"shop:events"
        assert parse_event(second["data"]) == event
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await listener.aclose()


async def test_stop_from_inside_a_handler(
    make_subscriber: SubscriberFactory, recorder: Recorder, publisher: Redis
) -> None:
    holder: list[InvalidationSubscriber] = []

    async def stopping(data: bytes) -> None:
        await holder[0].stop()

    subscriber = await started(make_subscriber, recorder, channels={INVALIDATE: stopping})
    holder.append(subscriber)
    await publisher.publish(INVALIDATE, b"stop")
    await eventually(lambda: not subscriber.running, what="the task ended")
    assert not subscriber.connected
    assert recorder.calls == ["connected"]
    assert await publisher.publish(INVALIDATE, b"y") == 0


# -- Redis Cluster: sharded pub/sub --------------------------------------------------------------------------

RESUBSCRIBE_WITHIN = 10.0  # reconnection backs off up to 2 s between attempts


async def test_a_sharded_subscription_hears_both_ways_and_follows_its_slot_to_another_node(
    redis_cluster: LocalCluster, recorder: Recorder
) -> None:
    redis_cluster.reset()
    cluster = RedisCluster.from_url(redis_cluster.url, socket_timeout=2.0)
    subscriber = InvalidationSubscriber(
        shard_owner_factory(cluster, INVALIDATE),
        {INVALIDATE: recorder.handler(INVALIDATE)},
        sharded=[INVALIDATE],
        on_connected=recorder.on_connected,
        on_disconnected=recorder.on_disconnected,
        heartbeat=HEARTBEAT,
    )
    slot = redis_cluster.keyslot(INVALIDATE)
    owner = redis_cluster.node_for_slot(slot)
    elsewhere = next(server for server in redis_cluster.servers if server is not owner)
    moved = False
    try:
        subscriber.start()
        await eventually(lambda: subscriber.connected, what="subscribed")
        assert subscriber.address == (owner.host, owner.port)

        # SPUBLISH through the cluster client (routed to the owner), then a classic PUBLISH to another node.
        inv = Invalidation(id="sharded-1", tags=("t",))
        assert await publish_invalidation(cluster, "test", inv, sharded=True) == 1
        with elsewhere.admin_client() as admin:
            admin.publish(INVALIDATE, b"classic")
        await eventually(lambda: len(recorder.received[INVALIDATE]) == 2, what="both messages")
        assert parse_invalidation(recorder.received[INVALIDATE][0]) == inv
        assert recorder.received[INVALIDATE][1] == b"classic"

        # The slot moves: the old owner ends the sharded subscription, the subscriber goes to the new one.
        redis_cluster.move_slot(slot, elsewhere, probe_key=INVALIDATE)
        moved = True
        await eventually(
            lambda: subscriber.connected and subscriber.address == (elsewhere.host, elsewhere.port),
            within=RESUBSCRIBE_WITHIN,
            what="subscribed on the new owner",
        )
        assert recorder.calls == ["connected", "disconnected", "connected"]
        with elsewhere.admin_client() as admin:
            assert admin.execute_command("SPUBLISH", INVALIDATE, b"after the move") == 1
        await eventually(lambda: recorder.received[INVALIDATE][-1] == b"after the move", what="heard there")
    finally:
        await subscriber.stop()
        await cluster.aclose()
        if moved:  # the session's cluster goes back to its even split
            redis_cluster.move_slot(slot, owner, probe_key=INVALIDATE)
