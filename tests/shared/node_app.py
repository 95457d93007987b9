"""The app each node of the multi-process tests serves (``uvicorn tests.shared.node_app:app``).

Its cache settings come from the environment (``EDGECACHE_REDIS_URL``, ``EDGECACHE_NAMESPACE``), as a
deployed node's would. Every body names the process that produced it, so a test can tell which node's app
answered, and ``/calls`` tells how often this node's app was called for each item. The ``X-Served-By``
header, added outside the cache, names the process that answered the request (under ``uvicorn --workers``
a cached body names the worker that filled it, this header the one that served it).
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter

from fastapi import FastAPI, Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgecache import Cache, CacheInterceptor

PID = os.getpid()


class ServedBy:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_pid(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (b"x-served-by", str(PID).encode())],
                }
            await send(message)

        await self.app(scope, receive, send_with_pid)


app = FastAPI(title="edgecache multi-process node")
app.add_middleware(CacheInterceptor)
app.add_middleware(ServedBy)  # added last, so it is outside the cache

NODE = os.environ.get("NODE_NAME", "?")
calls: Counter[str] = Counter()  # app calls per item id in this process
served = 0  # app calls for any item in this process


@app.get("/items/{item_id}")
async def item(item_id: str, request: Request, response: Response) -> dict[str, object]:
    global served
    served += 1
    calls[item_id] += 1
    count = served
    # A slow "database" on request: lets a test keep two misses on two nodes in flight together.
    delay = float(request.headers.get("x-delay", "0"))
    if delay > 0:
        await asyncio.sleep(delay)
    response.headers["Surrogate-Key"] = f"item:{item_id}"
    return {"id": item_id, "node": NODE, "pid": PID, "count": count}


@app.post("/purge/{tag}")
async def purge(tag: str, request: Request) -> dict[str, int]:
    cache: Cache = request.scope["edgecache.cache"]
    return {"purged": await cache.invalidate(tags=[tag])}


@app.get("/calls")
async def app_calls(response: Response) -> dict[str, object]:
    response.headers["Cache-Control"] = "no-store"
    return {"pid": PID, "node": NODE, "calls": dict(calls)}


@app.get("/healthz")
async def healthz(response: Response) -> dict[str, object]:
    response.headers["Cache-Control"] = "no-store"
    return {"pid": PID, "node": NODE}


@app.get("/debug")
async def debug(request: Request, response: Response) -> dict[str, object]:
    """This node's view of the shared tier, for test diagnostics only."""
    response.headers["Cache-Control"] = "no-store"
    cache: Cache = request.scope["edgecache.cache"]
    store = cache.store
    shared = cache.shared
    breaker = getattr(store, "breaker", None)
    return {
        "pid": PID,
        "node": NODE,
        "breaker": None if breaker is None else str(breaker.state),
        "l1_bypass": getattr(store, "l1_bypass", None),
        "store_counters": dict(getattr(store, "counters", {})),
        "shared_counters": {} if shared is None else dict(shared.counters),
        "generation": None if shared is None else shared.generation,
        "invalidations": cache.stats.invalidations,
    }
