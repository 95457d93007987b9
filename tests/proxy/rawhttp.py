"""A raw HTTP/1.1 client for the edge tests: one connection, exact bytes out, responses read as sent.

``read_response`` reports whether the message was complete, so a test can tell an aborted response (the
connection closed before the declared length or the last chunk) from a complete short one.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass


@dataclass
class RawResponse:
    status: int
    fields: dict[str, list[str]]
    body: bytes
    complete: bool

    def field(self, name: str) -> str | None:
        values = self.fields.get(name)
        return ", ".join(values) if values else None


class RawConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> RawConnection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self, within: float = 5.0, *, head: bool = False) -> RawResponse:
        async with asyncio.timeout(within):
            return await read_response(self.reader, head=head)

    async def closed(self, within: float = 5.0) -> bool:
        """Whether the server closes the connection (EOF or reset) with nothing more to read."""
        try:
            async with asyncio.timeout(within):
                return await self.reader.read(1) == b""
        except ConnectionError:
            return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


async def read_response(reader: asyncio.StreamReader, *, head: bool = False) -> RawResponse:
    """The next response; ``head``: it answers a HEAD request (a head only, whatever its fields say)."""
    section = await reader.readuntil(b"\r\n\r\n")
    lines = section.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    fields: dict[str, list[str]] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            fields.setdefault(name.strip().lower(), []).append(value.strip())
    if head or 100 <= status < 200 or status in (204, 304):
        return RawResponse(status, fields, b"", True)
    if "content-length" in fields:
        length = int(fields["content-length"][0])
        try:
            body = await reader.readexactly(length)
        except asyncio.IncompleteReadError as short:
            return RawResponse(status, fields, short.partial, False)
        return RawResponse(status, fields, body, True)
    if "chunked" in ",".join(fields.get("transfer-encoding", [])).lower():
        return await _chunked(reader, status, fields)
    return RawResponse(status, fields, await reader.read(), True)  # close-delimited


async def _chunked(reader: asyncio.StreamReader, status: int, fields: dict[str, list[str]]) -> RawResponse:
    body = b""
    try:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return RawResponse(status, fields, body, True)
            body += (await reader.readexactly(size + 2))[:-2]
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        return RawResponse(status, fields, body, False)  # the chunks received whole; no last chunk
