#!/usr/bin/env python3
"""In-process cost of one edgecache L1 hit, in microseconds: no sockets, no HTTP parsing, no server.

ASGI callables from ``benchmarks.apps`` are awaited directly, ``--iterations`` times each, on one
event loop (uvloop when installed):

* ``bare``   - the pure-ASGI app: sends a ~2 KB JSON body. The baseline.
* ``cached`` - the FastAPI app wrapped by ``CacheInterceptor(default_ttl=600)`` (L1 only), after one request
  has filled the cache. On a hit the inner FastAPI app is not called, so this times the whole middleware
  stack serving a hit: FastAPI/Starlette's outer layers (``ServerErrorMiddleware`` etc.) plus the cache.
* ``cache_only`` (diagnostic) - ``CacheInterceptor`` directly around the bare app, after one filling request:
  edgecache's own cost per hit, without FastAPI.

Every call gets a fresh minimal HTTP scope (``GET /``, ``Host: 127.0.0.1``), a ``receive`` that returns an
empty request body and a ``send`` that discards; every app is started with the ASGI lifespan protocol first,
as a server would. After each call the loop gets one turn (``asyncio.sleep(0)``, disable with ``--no-yield``)
so that work the middleware defers with ``create_task``/``call_soon`` is run and counted. Each app is timed
``--repeats`` times (rotating the order) with ``time.perf_counter``; the best and the median are
reported, and ``cached - bare`` = the middleware's cost per hit, broken down into ``cache_only - bare``
(CacheInterceptor alone) and ``cached - cache_only`` (FastAPI's outer layers).

Run: ``.venv/bin/python benchmarks/inprocess_hit_cost.py [--iterations 50000] [--json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Message, Scope

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # so ``benchmarks.*`` and ``edgecache`` import from a checkout

from benchmarks.asgi_scope import get_scope, receive_empty  # noqa: E402 - after sys.path is set up
from benchmarks.reporting import positive_int  # noqa: E402

_HIT_RE = re.compile(r"(?<![\w-])hit(?![\w-])", re.IGNORECASE)
_BASE_SCOPE: dict[str, Any] = {
    **get_scope("/", host=b"127.0.0.1:8000"),
    "asgi": {"version": "3.0", "spec_version": "2.4"},
}
_HEADERS: list[tuple[bytes, bytes]] = [(b"host", b"127.0.0.1:8000")]


class BenchmarkError(Exception):
    pass


async def _discard(message: Message) -> None:
    return None


class Lifespan:
    """Runs an app's ASGI lifespan startup on enter and shutdown on exit, like a server does."""

    def __init__(self, app: ASGIApp, name: str) -> None:
        self.app = app
        self.name = name
        self.state: dict[str, Any] = {}
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._outbox: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def _expect(self, wanted: str) -> None:
        assert self._task is not None
        getter = asyncio.ensure_future(self._outbox.get())
        done, _ = await asyncio.wait({getter, self._task}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if getter not in done:
            getter.cancel()
            if self._task in done:
                self._task.result()  # re-raises the app's exception, if any
                raise BenchmarkError(f"{self.name}: lifespan returned without sending {wanted!r}")
            raise BenchmarkError(f"{self.name}: no {wanted!r} within 30 s")
        message = getter.result()
        if message["type"] != wanted:
            raise BenchmarkError(f"{self.name}: expected {wanted!r}, got {message}")

    async def __aenter__(self) -> Lifespan:
        scope: Scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }

        async def run() -> None:
            await self.app(scope, self._inbox.get, self._outbox.put)

        self._task = asyncio.create_task(run())
        await self._inbox.put({"type": "lifespan.startup"})
        await self._expect("lifespan.startup.complete")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is None or self._task.done():
            return
        await self._inbox.put({"type": "lifespan.shutdown"})
        await self._expect("lifespan.shutdown.complete")
        await asyncio.wait_for(self._task, timeout=30)

    def scope_factory(self) -> Callable[[], Scope]:
        state = self.state

        def make_scope() -> Scope:
            # A fresh scope per request, as a server builds one (uvicorn also copies the lifespan state).
            return {**_BASE_SCOPE, "headers": list(_HEADERS), "state": state.copy()}

        return make_scope


async def request_once(app: ASGIApp, make_scope: Callable[[], Scope]) -> tuple[int, dict[str, str], bytes]:
    """One call that records the response, for the correctness checks around the timing."""
    messages: list[Message] = []

    async def send(message: Message) -> None:
        messages.append(message)

    await app(make_scope(), receive_empty, send)
    starts = [m for m in messages if m["type"] == "http.response.start"]
    if len(starts) != 1:
        raise BenchmarkError(f"expected one http.response.start, got {messages!r:.500}")
    headers: dict[str, str] = {}
    for raw_name, raw_value in starts[0].get("headers", []):
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return int(starts[0]["status"]), headers, body


async def check_response(
    app: ASGIApp, make_scope: Callable[[], Scope], name: str, body: bytes, expect_hit: bool, when: str
) -> None:
    status, headers, got = await request_once(app, make_scope)
    if status != 200 or got != body:
        raise BenchmarkError(
            f"{name}: {when}: status {status}, body of {len(got)} bytes (expected the ~2 KB body)"
        )
    if expect_hit:
        value = headers.get("cache-status")
        if value is None or not _HIT_RE.search(value):
            raise BenchmarkError(
                f"{name}: {when}: not a cache hit (cache-status={value!r}); "
                "the hit path would not be measured"
            )


async def time_calls(app: ASGIApp, make_scope: Callable[[], Scope], iterations: int, yield_: bool) -> float:
    """Microseconds per call, averaged over ``iterations`` calls."""
    receive, send, sleep = receive_empty, _discard, asyncio.sleep
    gc.collect()
    start = time.perf_counter()
    if yield_:
        for _ in range(iterations):
            await app(make_scope(), receive, send)
            await sleep(0)
    else:
        for _ in range(iterations):
            await app(make_scope(), receive, send)
    return (time.perf_counter() - start) / iterations * 1e6


TARGETS = ("bare", "cache_only", "wrapped", "cached")


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks import apps  # noqa: PLC0415 - FastAPI and the apps load only to measure (not for --help)

    try:
        built: dict[str, ASGIApp] = {
            "bare": apps.bare_app,
            "cache_only": apps.make_cache_only_app(),
            "wrapped": apps.make_wrapped_app(),
            "cached": apps.make_cached_app(),
        }
    except ImportError as exc:
        raise BenchmarkError(f"cannot build the cached app (edgecache.CacheInterceptor): {exc}") from exc
    samples: dict[str, list[float]] = {name: [] for name in TARGETS}
    async with contextlib.AsyncExitStack() as stack:
        targets: dict[str, tuple[ASGIApp, Callable[[], Scope], bool]] = {}
        for name in TARGETS:
            life = await stack.enter_async_context(Lifespan(built[name], name))
            targets[name] = (built[name], life.scope_factory(), name != "bare")
        for name, (app, make_scope, hit) in targets.items():
            if hit:  # the first request is a miss that stores the response (FastAPI's endpoint sleeps 5 ms)
                await request_once(app, make_scope)
            await check_response(app, make_scope, name, apps.BODY, hit, "before timing")
            await time_calls(app, make_scope, min(args.iterations, 5_000), args.yield_)  # warm-up
        for repeat in range(args.repeats):
            shift = repeat % len(TARGETS)  # rotate the order so drift affects every app alike
            for name in TARGETS[shift:] + TARGETS[:shift]:
                app, make_scope, _ = targets[name]
                samples[name].append(await time_calls(app, make_scope, args.iterations, args.yield_))
        for name, (app, make_scope, hit) in targets.items():
            await check_response(app, make_scope, name, apps.BODY, hit, "after timing")

    def summary(values: list[float]) -> dict[str, Any]:
        return {"best_us": min(values), "median_us": statistics.median(values), "runs_us": values}

    def difference(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
        return {"best_us": a["best_us"] - b["best_us"], "median_us": a["median_us"] - b["median_us"]}

    bare, cache_only, wrapped, cached = (summary(samples[name]) for name in TARGETS)
    return {
        "config": {
            "iterations": args.iterations,
            "repeats": args.repeats,
            "loop": args.loop_name,
            "yield_after_each_call": args.yield_,
            "body_bytes": len(apps.BODY),
        },
        "environment": {"python": platform.python_version(), "platform": platform.platform()},
        "bare": bare,
        # CacheInterceptor(FastAPI app): a hit never enters FastAPI
        "wrapped_hit": wrapped,
        "wrapped_cost_per_hit": difference(wrapped, bare),
        # app.add_middleware(CacheInterceptor): a hit still passes FastAPI's outer layers
        "cached_hit": cached,
        # cached - bare: the whole stack on a hit (FastAPI/Starlette outer layers + CacheInterceptor)
        "middleware_cost_per_hit": difference(cached, bare),
        # diagnostics: CacheInterceptor alone around the bare app, and what FastAPI's outer layers add
        "cache_only_hit": cache_only,
        "cache_interceptor_alone_per_hit": difference(cache_only, bare),
        "fastapi_outer_layers_per_hit": difference(cached, cache_only),
    }


def render(report: dict[str, Any]) -> str:
    cfg = report["config"]
    rule = "-" * 62
    lines = [
        f"in-process ASGI calls: {cfg['iterations']:,} calls x {cfg['repeats']} repeats, loop={cfg['loop']}, "
        f"yield after each call={'yes' if cfg['yield_after_each_call'] else 'no'}, "
        f"body={cfg['body_bytes']} B",
        "",
        f"{'µs per call':<36}{'best':>12}{'median':>14}",
        rule,
    ]

    def row(label: str, values: dict[str, Any]) -> None:
        lines.append(f"{label:<36}{values['best_us']:>12.3f}{values['median_us']:>14.3f}")

    row("bare ASGI app", report["bare"])
    row("CacheInterceptor(FastAPI), L1 hit", report["wrapped_hit"])
    row("FastAPI add_middleware, L1 hit", report["cached_hit"])
    lines.append(rule)
    row("cost per L1 hit, wrapped (difference)", report["wrapped_cost_per_hit"])
    row("cost per L1 hit, add_middleware", report["middleware_cost_per_hit"])
    lines += ["", "breakdown (diagnostic):"]
    row("  CacheInterceptor(bare_app), L1 hit", report["cache_only_hit"])
    row("  CacheInterceptor alone per hit", report["cache_interceptor_alone_per_hit"])
    row("  FastAPI/Starlette outer layers", report["fastapi_outer_layers_per_hit"])
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=(
            "Microseconds per in-process ASGI call: the bare ASGI app vs. the FastAPI app behind "
            "CacheInterceptor serving an L1 hit; their difference is the middleware's cost per hit."
        )
    )
    parser.add_argument(
        "--iterations", type=positive_int, default=50_000, help="calls per timed run (default: 50000)"
    )
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed runs per app (default: 5)")
    parser.add_argument(
        "--loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="event loop: uvloop if installed (auto, the default), or force one",
    )
    parser.add_argument(
        "--no-yield",
        dest="yield_",
        action="store_false",
        help="do not give the event loop a turn (asyncio.sleep(0)) after each call",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    return parser


def _loop_factory(choice: str) -> tuple[str, Callable[[], asyncio.AbstractEventLoop] | None]:
    if choice in ("auto", "uvloop"):
        try:
            import uvloop  # noqa: PLC0415 - optional
        except ImportError:
            if choice == "uvloop":
                raise
        else:
            return "uvloop", uvloop.new_event_loop
    return "asyncio", None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in [n for n in os.environ if n.startswith("EDGECACHE_")]:
        del os.environ[name]  # measure the defaults: L1 only, whatever the shell has configured
    args.loop_name, factory = _loop_factory(args.loop)
    coro: Coroutine[Any, Any, dict[str, Any]] = measure(args)
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            report = runner.run(coro)
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
