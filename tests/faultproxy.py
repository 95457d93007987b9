"""A small asyncio TCP relay that injects network faults between a client and a real server (loopback only).

``FaultProxy(host, port)`` listens on ``127.0.0.1:<free port>`` and relays every connection to the target.
Its mode can be switched at any time and applies to connections already open as well as new ones:

``pass``        relay bytes both ways (``heal()`` returns here);
``delay(s)``    hold each chunk ``s`` seconds before forwarding it, in both directions;
``blackhole()`` accept and read, but never forward or answer: open connections go silent too (what they
                receive meanwhile is discarded, so a client sees a timeout, not an error);
``reset()``     close every open connection abruptly (SO_LINGER 0, so the peer gets an RST) and reset each
                new connection as soon as it is accepted.

A connection accepted while blackholed has no upstream and stays silent even after ``heal()``; clients drop
such connections after their timeout and reconnect. ``connections`` counts the connections accepted;
``bytes_from_clients`` / ``bytes_to_clients`` count what was relayed (the traffic a test can watch).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Literal

Mode = Literal["pass", "delay", "blackhole", "reset"]

_CHUNK = 64 * 1024
_LOOPBACK = "127.0.0.1"


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    """Close at once, with an RST rather than a FIN, discarding anything unsent."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Connection:
    """One client connection and, unless it was accepted while blackholed, its upstream connection."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def writers(self) -> list[asyncio.StreamWriter]:
        return [self.client] if self.upstream is None else [self.client, self.upstream]

    def reset(self) -> None:
        for writer in self.writers():
            _abort_with_rst(writer)

    def close(self) -> None:
        for writer in self.writers():
            writer.transport.abort()


class FaultProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        if target_host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("FaultProxy only relays to loopback")
        self.target_host = target_host
        self.target_port = target_port
        self.mode: Mode = "pass"
        self.delay_seconds = 0.0
        self.connections = 0  # accepted, in any mode
        self.bytes_from_clients = 0
        self.bytes_to_clients = 0
        self._server: asyncio.Server | None = None
        self._open: set[_Connection] = set()
        self._handlers: set[asyncio.Task[object]] = set()
        self._port: int | None = None

    # -- lifecycle --------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._accept, _LOOPBACK, 0)
        self._port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for connection in list(self._open):
            connection.close()
        # Aborted, every handler ends by itself; cancelling one would make asyncio's stream callback log it.
        handlers = list(self._handlers)
        if handlers:
            _, stuck = await asyncio.wait(handlers, timeout=2.0)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FaultProxy is not started")
        return self._port

    @property
    def host(self) -> str:
        return _LOOPBACK

    def url_for(self, db: int = 0) -> str:
        """A Redis URL that reaches the target through this proxy."""
        return f"redis://{_LOOPBACK}:{self.port}/{db}"

    @property
    def active(self) -> int:
        return len(self._open)

    # -- modes ------------------------------------------------------------------------------------------

    def heal(self) -> None:
        self.mode = "pass"
        self.delay_seconds = 0.0

    def delay(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("delay must be >= 0")
        self.delay_seconds = seconds
        self.mode = "delay"

    def blackhole(self) -> None:
        self.mode = "blackhole"

    def reset(self) -> None:
        self.mode = "reset"
        for connection in list(self._open):
            connection.reset()

    def _current_mode(self) -> Mode:
        return self.mode  # (a call: mypy would keep a narrowing of ``self.mode`` across an await)

    # -- relaying ---------------------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.mode == "reset":
            _abort_with_rst(writer)
            return
        handler = asyncio.current_task()
        assert handler is not None
        connection = _Connection(writer)
        self._open.add(connection)
        self._handlers.add(handler)
        try:
            if self.mode == "blackhole":
                await self._sink(reader)
                return
            try:
                up_reader, connection.upstream = await asyncio.open_connection(
                    self.target_host, self.target_port
                )
            except OSError:
                return  # nothing listens: the client sees its connection closed
            if self._current_mode() == "reset":  # switched while connecting
                return
            pumps = (
                asyncio.create_task(self._pump(reader, connection.upstream, from_client=True)),
                asyncio.create_task(self._pump(up_reader, writer, from_client=False)),
            )
            connection.tasks.update(pumps)
            # Either side closing ends the connection (a half-close is not needed for these tests).
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._open.discard(connection)
            self._handlers.discard(handler)
            for task in connection.tasks:
                task.cancel()
            await asyncio.gather(*connection.tasks, return_exceptions=True)
            connection.close()

    async def _sink(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError):
            while await reader.read(_CHUNK):
                pass

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, from_client: bool
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(_CHUNK):
                if self.mode == "delay" and self.delay_seconds > 0:
                    await asyncio.sleep(self.delay_seconds)
                if self.mode in ("blackhole", "reset"):
                    continue  # swallowed (a reset connection is being torn down anyway)
                if from_client:
                    self.bytes_from_clients += len(data)
                else:
                    self.bytes_to_clients += len(data)
                writer.write(data)
                await writer.drain()
