"""The fault-injecting relay used by the failure tests, against a loopback echo server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from tests.faultproxy import FaultProxy

# Generous: these bound "hangs" and "waits for the delay", not performance.
TIMEOUT = 0.5


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(4096):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()


@pytest.fixture
async def proxy(echo_port: int) -> AsyncIterator[FaultProxy]:
    async with FaultProxy("127.0.0.1", echo_port) as proxy:
        yield proxy


async def roundtrip(proxy: FaultProxy, payload: bytes = b"ping") -> tuple[bytes, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        started = time.monotonic()
        writer.write(payload)
        await writer.drain()
        async with asyncio.timeout(TIMEOUT + 2.0):
            data = await reader.readexactly(len(payload))
        return data, time.monotonic() - started
    finally:
        writer.close()
        await asyncio.gather(writer.wait_closed(), return_exceptions=True)


async def test_relays_both_ways_and_counts_connections(proxy: FaultProxy) -> None:
    assert proxy.url_for(3) == f"redis://127.0.0.1:{proxy.port}/3"

    assert (await roundtrip(proxy, b"hello"))[0] == b"hello"
    assert (await roundtrip(proxy, b"x" * 200_000))[0] == b"x" * 200_000

    assert proxy.connections == 2
    assert proxy.bytes_from_clients == proxy.bytes_to_clients == 200_005


async def test_delay_holds_each_chunk_in_both_directions(proxy: FaultProxy) -> None:
    proxy.delay(0.15)

    data, elapsed = await roundtrip(proxy)

    assert data == b"ping"
    assert elapsed >= 0.3  # once on the way in, once on the way out
    proxy.heal()
    assert (await roundtrip(proxy))[1] < 0.3


async def test_blackhole_makes_new_and_open_connections_time_out(proxy: FaultProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"one")
    assert await reader.readexactly(3) == b"one"

    proxy.blackhole()

    writer.write(b"two")  # an open connection goes silent
    await writer.drain()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await reader.read(1)
    with pytest.raises(TimeoutError):  # and so does a new one
        async with asyncio.timeout(0.3):
            await roundtrip(proxy)
    assert proxy.connections == 2
    writer.close()

    proxy.heal()
    assert (await roundtrip(proxy))[0] == b"ping"


async def test_reset_aborts_open_connections_and_resets_new_ones(proxy: FaultProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"one")
    assert await reader.readexactly(3) == b"one"

    proxy.reset()

    with pytest.raises(ConnectionResetError):
        async with asyncio.timeout(TIMEOUT):
            await reader.read(1)
    writer.close()
    with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
        await roundtrip(proxy)
    assert proxy.connections == 2

    proxy.heal()
    assert (await roundtrip(proxy))[0] == b"ping"
    assert proxy.connections == 3


async def test_a_target_that_is_down_closes_the_client_connection() -> None:
    async with FaultProxy("127.0.0.1", 9) as proxy:  # discard port: nothing listens on loopback
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await roundtrip(proxy)


def test_refuses_a_target_that_is_not_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy("10.0.0.1", 6379)
