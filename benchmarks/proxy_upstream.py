"""The upstream of ``proxy_vs_nginx.py``: pure ASGI, the ~2 KB JSON body of ``benchmarks.apps``.

``GET /hit`` is fresh for 10 minutes (``Cache-Control: max-age=600``), so both caches store it;
``GET /miss`` says ``Cache-Control: no-store``, so every request goes through to this app.
Serve with ``python -m uvicorn benchmarks.proxy_upstream:app`` from the repository root.
"""

from __future__ import annotations

from starlette.types import Receive, Scope, Send

from benchmarks.apps import BODY, MEDIA_TYPE, serve_lifespan

HIT_PATH = "/hit"
MISS_PATH = "/miss"


def _headers(cache_control: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", MEDIA_TYPE.encode("latin-1")),
        (b"content-length", str(len(BODY)).encode("latin-1")),
        (b"cache-control", cache_control),
    ]


_HIT_HEADERS = _headers(b"max-age=600")
_MISS_HEADERS = _headers(b"no-store")
_NOT_FOUND = [(b"content-type", b"text/plain"), (b"content-length", b"10")]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        path = scope["path"]
        if path in (HIT_PATH, MISS_PATH):
            headers = _HIT_HEADERS if path == HIT_PATH else _MISS_HEADERS
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": BODY})
        else:
            await send({"type": "http.response.start", "status": 404, "headers": _NOT_FOUND})
            await send({"type": "http.response.body", "body": b"not found\n"})
        return
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
