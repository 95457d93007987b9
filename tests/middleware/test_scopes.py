"""Non-HTTP scopes pass through untouched; a second CacheInterceptor in the stack does not cache again."""

from __future__ import annotations

from starlette.types import Message, Receive, Scope, Send

from edgecache import CacheInterceptor
from tests.middleware.conftest import HarnessFactory, cache_status, make_app, versioned


class Recording:
    """An ASGI app that records what it was called with."""

    def __init__(self) -> None:
        self.calls: list[tuple[Scope, Receive, Send]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls.append((scope, receive, send))


async def _receive() -> Message:
    return {"type": "lifespan.startup"}


async def _send(message: Message) -> None:
    return None


async def test_lifespan_scope_is_passed_through_untouched() -> None:
    app = Recording()
    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
    snapshot = dict(scope)
    await CacheInterceptor(app)(scope, _receive, _send)
    assert app.calls == [(scope, _receive, _send)]
    assert app.calls[0][0] is scope and scope == snapshot


async def test_websocket_scope_is_passed_through_untouched() -> None:
    app = Recording()
    scope: Scope = {"type": "websocket", "path": "/ws", "headers": [(b"cookie", b"a=1")], "query_string": b""}
    snapshot = dict(scope)
    await CacheInterceptor(app)(scope, _receive, _send)
    assert app.calls == [(scope, _receive, _send)]
    assert app.calls[0][0] is scope and scope == snapshot


async def test_app_wrapped_twice_caches_once(harness: HarnessFactory) -> None:
    inner = CacheInterceptor(make_app({"/r": versioned()}))
    h = harness(inner)
    first = await h.get("/r")
    second = await h.get("/r")
    assert cache_status(first) == "edgecache; fwd=uri-miss; stored"
    assert cache_status(second).startswith("edgecache; hit")
    assert second.text == "v1"
    assert h.origin.calls["/r"] == 1


async def test_inner_interceptor_stores_nothing(harness: HarnessFactory) -> None:
    inner = CacheInterceptor(make_app({"/r": versioned()}), default_ttl=60)
    h = harness(inner)
    await h.get("/r")
    await h.client.post("/r")
    assert len(inner.cache.store) == 0  # type: ignore[arg-type]


async def test_bypassed_request_through_two_interceptors_has_one_cache_status(
    harness: HarnessFactory,
) -> None:
    h = harness(CacheInterceptor(make_app({"/r": versioned()})))
    response = await h.get("/r", headers={"authorization": "Bearer x"})
    assert cache_status(response) == "edgecache; fwd=bypass; detail=request-authorization"
