"""An example FastAPI app behind CacheInterceptor (L1 only): ``scripts/run`` serves it on 127.0.0.1:8000.

Try: ``curl -i localhost:8000/products/1`` twice and compare the ``Cache-Status`` headers.
"""

from __future__ import annotations

import asyncio
import time

from fastapi import FastAPI, Request, Response

from edgecache import Cache, CacheInterceptor

app = FastAPI(title="edgecache example")
app.add_middleware(CacheInterceptor, default_ttl=30)

PRODUCTS = {i: {"id": i, "name": f"Product {i}", "price": 10 * i} for i in range(1, 51)}


@app.get("/products/{product_id}")
async def product(product_id: int, response: Response) -> dict[str, object]:
    await asyncio.sleep(0.05)  # a slow database: the second request is a hit and skips it
    response.headers["Surrogate-Key"] = f"product:{product_id} products"
    return {**PRODUCTS.get(product_id, {"id": product_id}), "generated_at": time.time()}


@app.get("/time")
async def now(response: Response) -> dict[str, float]:
    response.headers["Cache-Control"] = "max-age=5, stale-while-revalidate=10"
    return {"now": time.time()}


@app.get("/me")
async def me(response: Response) -> dict[str, str]:
    response.headers["Cache-Control"] = "private"  # never stored by a shared cache
    return {"user": "you"}


@app.put("/products/{product_id}")
async def update(product_id: int) -> dict[str, int]:
    # A non-error response to PUT drops /products/{id} from the cache (RFC 9111 §4.4).
    return {"updated": product_id}


@app.post("/purge/{tag}")
async def purge(tag: str, request: Request) -> dict[str, int]:
    cache: Cache = request.scope["edgecache.cache"]
    return {"purged": await cache.invalidate(tags=[tag])}
