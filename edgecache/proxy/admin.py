"""The admin listener's ASGI app: health, readiness, metrics and purges. Never served on the proxied port.

``GET /healthz`` 200 ``ok``; ``GET /readyz`` JSON about the upstream, the replicas and Redis (503 while
the primary upstream is sick or its breaker open); ``GET /metrics`` Prometheus text; ``POST /purge`` an
invalidation (JSON, as on the bus), authorised by ``Authorization: Bearer $EDGECACHE_ADMIN_TOKEN``;
``GET /explain?url=/path?query`` what the cache holds for a URL (``Cache.explain``), behind the same token
when one is configured.
"""

from __future__ import annotations

import hmac
import json
import os
import re
from typing import Any, Final
from urllib.parse import parse_qsl

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.types import Receive, Scope, Send

from edgecache.core.invalidation import MAX_MESSAGE_BYTES, BadInvalidation, parse_invalidation
from edgecache.engine import Cache
from edgecache.observe.prometheus import CacheCollector
from edgecache.proxy.upstreams import UpstreamPool

ENV_ADMIN_TOKEN: Final = "EDGECACHE_ADMIN_TOKEN"
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # a header field name


class AdminApp:
    def __init__(
        self,
        cache: Cache,
        upstreams: UpstreamPool,
        *,
        token: str | None = None,
        read_token_from_env: bool = True,
    ) -> None:
        self.cache = cache
        self.upstreams = upstreams
        if token is None and read_token_from_env:
            token = os.environ.get(ENV_ADMIN_TOKEN) or None
        self.token = token
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(CacheCollector(cache))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        routes = {"/healthz": "GET", "/readyz": "GET", "/metrics": "GET", "/purge": "POST", "/explain": "GET"}
        allowed = routes.get(path)
        if allowed is None:
            await _respond(send, 404, b"not found\n")
            return
        if method != allowed and not (allowed == "GET" and method == "HEAD"):
            await _respond(send, 405, b"method not allowed\n", [(b"allow", allowed.encode())])
            return
        if path == "/healthz":
            await _respond(send, 200, b"ok\n")
        elif path == "/readyz":
            await self._readyz(send)
        elif path == "/metrics":
            await _respond(send, 200, generate_latest(self.registry), content_type=CONTENT_TYPE_LATEST)
        elif path == "/explain":
            await self._explain(scope, send)
        else:
            await self._purge(scope, receive, send)

    async def _readyz(self, send: Send) -> None:
        ready = self.upstreams.ready()
        store = self.cache.store
        breaker = getattr(store, "breaker", None)
        state = getattr(breaker, "state", None)
        report = {
            "ready": ready,
            **self.upstreams.report(),
            "redis": {
                "configured": self.cache.settings.redis_url is not None,
                "breaker": str(state) if state is not None else None,
            },
            "cache": {"l1_bytes": getattr(store, "current_bytes", None)},
        }
        await _json(send, 200 if ready else 503, report)

    async def _authorized(self, scope: Scope, send: Send) -> bool:
        """Whether the request carries the admin token; answers 401 itself when it does not."""
        assert self.token is not None
        given = b""
        for name, value in scope["headers"]:
            if name.lower() == b"authorization":
                given = value
        scheme, _, credentials = given.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(
            credentials.strip(), self.token.encode("utf-8")
        ):
            await _json(
                send, 401, {"error": "bad or missing bearer token"}, [(b"www-authenticate", b"Bearer")]
            )
            return False
        return True

    async def _explain(self, scope: Scope, send: Send) -> None:
        # Keys, tags and ages say what users fetched: behind the token whenever there is one.
        if self.token is not None and not await self._authorized(scope, send):
            return
        try:
            params = parse_qsl(
                scope["query_string"].decode("latin-1"), keep_blank_values=True, errors="strict"
            )
        except ValueError as error:  # UnicodeDecodeError: percent-escapes that are not UTF-8
            await _json(send, 400, {"error": "bad query string", "detail": str(error)})
            return
        urls = [value for name, value in params if name == "url"]
        if len(urls) != 1:
            detail = "missing url parameter" if not urls else "give one url parameter"
            await _json(send, 400, {"error": detail, "hint": "GET /explain?url=/path%3Fquery"})
            return
        headers: list[tuple[str, str]] = []
        for name, value in params:
            if name == "header":  # header=Accept-Language:%20fr, for key_headers, key_cookies and Vary
                field, sep, field_value = value.partition(":")
                if not sep or not _TOKEN.fullmatch(field.strip()) or not field_value.isascii():
                    await _json(send, 400, {"error": "bad header parameter", "detail": value[:200]})
                    return
                headers.append((field.strip(), field_value.strip()))
            elif name != "url":
                await _json(send, 400, {"error": f"unknown parameter {name[:64]!r}"})
                return
        try:
            report = await self.cache.explain(urls[0], headers)
        except ValueError as error:
            await _json(send, 400, {"error": "bad url parameter", "detail": str(error)})
            return
        await _json(send, 200, report)

    async def _purge(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token is None:
            await _json(send, 403, {"error": "admin token not configured", "hint": ENV_ADMIN_TOKEN})
            return
        if not await self._authorized(scope, send):
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > MAX_MESSAGE_BYTES:
                await _json(send, 413, {"error": f"body over {MAX_MESSAGE_BYTES} bytes"})
                return
            if not message.get("more_body", False):
                break
        try:
            invalidation = parse_invalidation(bytes(body))
        except BadInvalidation as bad:
            await _json(send, 400, {"error": bad.reason, "detail": bad.detail, "field": bad.field})
            return
        removed = await self.cache.invalidate(
            tags=invalidation.tags,
            paths=invalidation.paths,
            prefixes=invalidation.prefixes,
            soft=invalidation.soft,
            everything=invalidation.everything,
        )
        await _json(send, 200, {"id": invalidation.id, "removed": removed})


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    extra: list[tuple[bytes, bytes]] | None = None,
    content_type: str = "text/plain; charset=utf-8",
) -> None:
    headers = [
        (b"content-type", content_type.encode("latin-1")),
        (b"content-length", b"%d" % len(body)),
        (b"cache-control", b"no-store"),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _json(
    send: Send, status: int, value: dict[str, Any], extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps(value, separators=(",", ":")).encode("utf-8")
    await _respond(send, status, body, extra, content_type="application/json")
