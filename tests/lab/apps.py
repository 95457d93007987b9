"""Small real apps for the lab's load tests: a pure-ASGI origin wrapped in CacheInterceptor."""

from __future__ import annotations

from edgecache import CacheInterceptor


async def origin(scope, receive, send):
    if scope["type"] != "http":
        return
    path = scope["path"]
    status = 200 if path.startswith("/lab/") else 404
    body = f"object {path}".encode()
    headers = [(b"content-type", b"text/plain"), (b"cache-control", b"max-age=60")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


app = CacheInterceptor(origin)
