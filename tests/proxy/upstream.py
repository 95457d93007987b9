"""A real upstream for the proxy tests: a pure-ASGI app served by uvicorn on 127.0.0.1.

Routes: ``/cacheable`` (max-age=60), ``/chunked`` (max-age=60, two body messages and no
Content-Length: chunked on the wire), ``/plain`` (no freshness), ``/big`` (5 MB streamed; ``?gated=1`` waits
for ``gate`` after the first chunk), ``/upload`` (counts a streamed body; sets ``first_chunk``),
``/slow?s=N``, ``/headers`` (hop-by-hop fields, its own Date and Server), ``/who`` (its name, for any
method; no freshness), ``/who-cached`` (its name; max-age=60, stale-if-error=300), ``/login`` (sets a
session cookie), ``/health`` (200, or 503 while ``healthy`` is false); anything else echoes the request as
JSON.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from typing import Any

from starlette.types import Receive, Scope, Send

BIG_SIZE = 5 * 1024 * 1024
CHUNK = 64 * 1024
FIXED_DATE = b"Tue, 01 Jul 2025 10:00:00 GMT"


class Upstream:
    def __init__(self, name: str = "upstream") -> None:
        self.name = name
        self.healthy = True
        self.hits: Counter[str] = Counter()
        self.gate = asyncio.Event()
        self.first_chunk = asyncio.Event()
        self.big_finished = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path: str = scope["path"]
        self.hits[path] += 1
        query = scope["query_string"].decode()
        if path in ("/who", "/who-cached"):
            await _drain(receive)
            cached = [(b"cache-control", b"max-age=60, stale-if-error=300")] if path == "/who-cached" else []
            await _text(send, self.name, [(b"x-instance", self.name.encode()), *cached])
        elif path == "/health":
            status = 200 if self.healthy else 503
            await _text(send, "ok" if self.healthy else "sick", status=status)
        elif path == "/cacheable":
            await _text(send, f"cached {self.hits[path]}", [(b"cache-control", b"max-age=60")])
        elif path == "/chunked":
            headers = [(b"content-type", b"text/plain"), (b"cache-control", b"max-age=60")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"chunked ", "more_body": True})
            await send({"type": "http.response.body", "body": b"%d" % self.hits[path]})
        elif path == "/plain":
            await _text(send, f"plain {self.hits[path]}")
        elif path == "/login":
            await _text(send, "welcome", [(b"set-cookie", b"session=secret-of-one-user; Path=/")])
        elif path == "/big":
            await self._big(send, gated="gated=1" in query)
        elif path == "/upload":
            await self._upload(receive, send)
        elif path == "/slow":
            await asyncio.sleep(float(query.partition("s=")[2] or 1))
            await _text(send, "slow done")
        elif path == "/headers":
            headers = [
                (b"connection", b"x-hop"),
                (b"x-hop", b"secret"),
                (b"keep-alive", b"timeout=5"),
                (b"proxy-authenticate", b"Basic"),
                (b"upgrade", b"h2c"),
                (b"x-end", b"kept"),
                (b"server", b"upstream-server"),
                (b"date", FIXED_DATE),
            ]
            await _text(send, "headers", headers)
        else:
            await self._echo(scope, receive, send)

    async def _big(self, send: Send, gated: bool) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"x/bytes")]})
        sent = 0
        while sent < BIG_SIZE:
            await send({"type": "http.response.body", "body": b"x" * CHUNK, "more_body": True})
            sent += CHUNK
            if gated and sent == CHUNK:
                # Only a proxy that streams lets the client see this chunk before the rest exists.
                await asyncio.wait_for(self.gate.wait(), 10)
        self.big_finished = True
        await send({"type": "http.response.body", "body": b""})

    async def _upload(self, receive: Receive, send: Send) -> None:
        digest = hashlib.sha256()
        size = 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            if chunk and not self.first_chunk.is_set():
                self.first_chunk.set()
            digest.update(chunk)
            size += len(chunk)
            if not message.get("more_body", False):
                break
        await _json(send, {"bytes": size, "sha256": digest.hexdigest()})

    async def _echo(self, scope: Scope, receive: Receive, send: Send) -> None:
        size = 0
        while True:
            message = await receive()
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
        await _json(
            send,
            {
                "method": scope["method"],
                "raw_path": scope["raw_path"].decode("latin-1"),
                "query": scope["query_string"].decode("latin-1"),
                "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
                "body_bytes": size,
            },
        )


async def _drain(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect" or not message.get("more_body", False):
            return


async def _text(
    send: Send, text: str, headers: list[tuple[bytes, bytes]] | None = None, status: int = 200
) -> None:
    body = text.encode()
    out = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body)), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": body})


async def _json(send: Send, value: dict[str, Any]) -> None:
    body = json.dumps(value).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


app = Upstream()  # for `uvicorn tests.proxy.upstream:app` in the subprocess tests
