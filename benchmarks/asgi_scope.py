"""ASGI plumbing the in-process benchmarks share: a GET scope as an HTTP server builds one for a request,
and the empty request body their apps receive."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import Message, Scope

EMPTY_BODY: Message = {"type": "http.request", "body": b"", "more_body": False}


async def receive_empty() -> Message:
    """``receive`` for a GET: the one empty body message (shared, so the timed path allocates nothing)."""
    return EMPTY_BODY


def get_scope(
    path: str = "/",
    *,
    host: bytes,
    query: bytes = b"",
    headers: Iterable[tuple[bytes, bytes]] = (),
    client: tuple[str, int] = ("127.0.0.1", 50000),
    server: tuple[str, int] = ("127.0.0.1", 8000),
) -> Scope:
    """A fresh HTTP/1.1 ``GET`` scope for ``path`` (with ``query``), ``Host: host`` before ``headers``."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", host), *headers],
        "client": client,
        "server": server,
    }
