"""The upstream of the CDN proxy tests, served by uvicorn in a child process (``tests.servers``).

``/`` HTML with an ETag that answers 304 to it, ``/gz`` the same page gzip-compressed (Starlette's
GZipMiddleware), ``/api/me`` JSON, ``/static/logo.png`` an asset without Cache-Control, ``/stream`` a
streamed uncacheable page, ``/tagged`` a page with a Surrogate-Key. ``/count`` reports the calls so far.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

PAGE = (
    '<!doctype html><html><head><link rel="stylesheet" href="/static/site.css"></head><body>'
    '<img src="/media/avatars/7.png" srcset="/media/avatars/7.png 1x, /media/avatars/7@2x.png 2x">'
    '<a href="/about">about</a><script>var u = "/static/not-touched.js";</script></body></html>'
)
ETAG = '"page-v1"'
calls: Counter[str] = Counter()


async def page(request: Request) -> Response:
    calls[request.url.path] += 1
    headers = {"etag": ETAG, "cache-control": "max-age=60"}
    if request.headers.get("if-none-match") == ETAG:
        return Response(status_code=304, headers=headers)
    return Response(PAGE * (20 if request.url.path == "/gz" else 1), headers=headers, media_type="text/html")


async def me(request: Request) -> Response:
    calls[request.url.path] += 1
    return JSONResponse(
        {"avatar": "/media/avatars/7.png", "about": "/about"}, headers={"cache-control": "max-age=60"}
    )


async def logo(request: Request) -> Response:
    calls[request.url.path] += 1
    return Response(
        b"\x89PNG\r\n", media_type="image/png", headers={"link": "</static/font.woff2>; rel=preload"}
    )


async def stream(request: Request) -> StreamingResponse:
    calls[request.url.path] += 1

    async def parts() -> AsyncIterator[bytes]:
        yield b"<html><body>"
        yield b'<img src="/static/a.png"></body></html>'

    return StreamingResponse(parts(), media_type="text/html", headers={"cache-control": "no-store"})


async def tagged(request: Request) -> Response:
    calls[request.url.path] += 1
    headers = {"cache-control": "max-age=60", "surrogate-key": "product:42"}
    return Response(
        f'<img src="/static/p42.png?call={calls["/tagged"]}">', headers=headers, media_type="text/html"
    )


async def count(request: Request) -> Response:
    return JSONResponse(dict(calls), headers={"cache-control": "no-store"})


app = Starlette(
    routes=[
        Route("/", page),
        Route("/gz", page),
        Route("/api/me", me),
        Route("/static/logo.png", logo),
        Route("/stream", stream),
        Route("/tagged", tagged),
        Route("/count", count),
    ],
    middleware=[Middleware(GZipMiddleware, minimum_size=500)],
)
