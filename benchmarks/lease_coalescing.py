#!/usr/bin/env python3
"""Origin calls and request latency for misses spread over several nodes, without and with
``coalesce_across_nodes``, in one run.

Setup: a private ``redis-server`` (free loopback port, no persistence) and ``--nodes`` edgecache nodes in
this process: each its own ``Cache`` (its own Redis connections, L1, subscriber and lease client) behind its
own ``CacheInterceptor``, over one ASGI origin that sleeps ``--origin-ms`` and counts its calls. Requests
are ASGI calls (no HTTP), so what is measured is the cache and Redis, not a client library.

For each of ``--keys`` distinct URLs, ``--per-node`` concurrent GETs go to every node at once: nodes ×
per-node simultaneous misses of one key; ``--parallel`` keys run at a time. Mode ``local`` (lease off) runs
first, then ``lease`` (on), each on a fresh namespace. Reported per mode: origin calls per key, request
latency p50/p99/max in ms, and the lease counters of all nodes together. Bounded: at most 1000 keys, and
each mode stops after ``--max-seconds``.

Run: ``.venv/bin/python benchmarks/lease_coalescing.py [--json]``. Needs ``redis-server`` on PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from starlette.types import Message, Receive, Scope, Send

from benchmarks.asgi_scope import get_scope, receive_empty
from benchmarks.private_redis import PrivateRedis, RedisUnavailable
from benchmarks.reporting import log, positive_int, run_and_print
from edgecache import Cache, CacheInterceptor, Settings

MAX_KEYS = 1000


class Origin:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        await asyncio.sleep(self.delay)
        body = b"x" * 512
        headers = [(b"cache-control", b"max-age=600"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def get(app: CacheInterceptor, path: str) -> tuple[int, float]:
    scope = get_scope(path, host=b"bench.local", client=("127.0.0.1", 1), server=("bench.local", 80))
    status = 0

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    started = time.perf_counter()
    await app(scope, receive_empty, send)
    return status, (time.perf_counter() - started) * 1000


async def run_mode(url: str, lease: bool, args: argparse.Namespace) -> dict[str, Any]:
    origin = Origin(args.origin_ms / 1000)
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    caches = [
        Cache(
            Settings.load(
                {
                    "redis_url": url,
                    "namespace": namespace,
                    "default_ttl": 600,
                    "coalesce_across_nodes": lease,
                },
                environ={},
            )
        )
        for _ in range(args.nodes)
    ]
    apps = [CacheInterceptor(origin, cache=cache) for cache in caches]
    try:
        for cache in caches:
            if not await cache.start_and_wait(within=5.0):
                raise RedisUnavailable("a node's shared tier did not become ready")
        latencies: list[float] = []
        errors = 0
        keys = min(args.keys, MAX_KEYS)
        deadline = time.monotonic() + args.max_seconds
        done = 0
        for first in range(0, keys, args.parallel):
            if time.monotonic() > deadline:
                break
            batch = range(first, min(first + args.parallel, keys))
            results = await asyncio.gather(
                *(get(app, f"/item/{k}") for k in batch for app in apps for _ in range(args.per_node))
            )
            for status, ms in results:
                latencies.append(ms)
                errors += status != 200
            done += len(batch)
        counters: Counter[str] = Counter()
        for cache in caches:
            counters.update(cache.stats.lease)
        latencies.sort()
        return {
            "mode": "lease" if lease else "local",
            "keys": done,
            "requests": len(latencies),
            "errors": errors,
            "origin_calls": origin.calls,
            "origin_calls_per_key": origin.calls / done if done else 0.0,
            "p50_ms": statistics.median(latencies),
            "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            "max_ms": latencies[-1],
            "lease": dict(sorted(counters.items())),
        }
    finally:
        for cache in caches:
            await cache.aclose()


def measure(args: argparse.Namespace) -> dict[str, Any]:
    with PrivateRedis() as redis_server:
        log(f"redis-server on {redis_server.url}; {args.nodes} nodes, origin {args.origin_ms} ms")
        modes = []
        for lease in (False, True):
            log(f"mode {'lease' if lease else 'local'} …")
            modes.append(asyncio.run(run_mode(redis_server.url, lease, args)))
    local, leased = modes
    return {
        "nodes": args.nodes,
        "per_node": args.per_node,
        "origin_ms": args.origin_ms,
        "modes": modes,
        "origin_call_ratio_local_to_lease": (
            local["origin_calls"] / leased["origin_calls"] if leased["origin_calls"] else None
        ),
    }


def render(report: dict[str, Any]) -> str:
    lines = [
        f"{report['nodes']} nodes × {report['per_node']} concurrent misses per key, origin "
        f"{report['origin_ms']} ms",
        f"{'mode':<6} {'keys':>5} {'requests':>8} {'errors':>6} {'origin calls':>12} {'per key':>8} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}  lease counters",
    ]
    for m in report["modes"]:
        lines.append(
            f"{m['mode']:<6} {m['keys']:>5} {m['requests']:>8} {m['errors']:>6} {m['origin_calls']:>12} "
            f"{m['origin_calls_per_key']:>8.2f} {m['p50_ms']:>7.1f} {m['p99_ms']:>7.1f} {m['max_ms']:>7.1f}"
            f"  {m['lease']}"
        )
    ratio = report["origin_call_ratio_local_to_lease"]
    if ratio is not None:
        lines.append(f"origin calls, local / lease: {ratio:.2f}×")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=positive_int, default=4)
    parser.add_argument("--per-node", type=positive_int, default=5)
    parser.add_argument("--keys", type=positive_int, default=100)
    parser.add_argument("--parallel", type=positive_int, default=10, help="keys in flight at once")
    parser.add_argument("--origin-ms", type=positive_int, default=50)
    parser.add_argument("--max-seconds", type=positive_int, default=60, help="per mode")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    return run_and_print(
        lambda: measure(args),
        render,
        as_json=args.json,
        failures=(RedisUnavailable,),
        interrupted="interrupted",
    )


if __name__ == "__main__":
    sys.exit(main())
