#!/usr/bin/env python3
"""What CDN asset rewriting costs a miss and a hit, through ``CacheInterceptor`` (in process, no sockets).

The page is the throughput benchmark's marketplace listing (``cdn_rewrite_throughput.make_html``: ~100 KB,
200 asset references), served by a pure-ASGI app with ``Cache-Control: max-age=600``, identity or
compressed (gzip, br). Two caches are compared in the same run, on the same bytes:

* ``plain``: ``CacheInterceptor`` without CDN options;
* ``cdn``: the same with ``cdn_origin`` and ``cdn_paths``.

A *miss* is a GET of a new URL (``/?i=N``): the app is called, the response rewritten (``cdn``) and stored.
A *hit* is a GET of a stored URL. Each measurement runs ``--iterations`` requests per round for ``--rounds``
rounds (each bounded by ``--max-seconds``), the two caches alternating round by round; the best round
and the median are reported in microseconds per request, with the ratio cdn / plain of the best rounds.

Run: ``.venv/bin/python benchmarks/cdn_miss_hit_cost.py [--iterations 200] [--rounds 5] [--json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from starlette.types import Message, Receive, Scope, Send

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.asgi_scope import get_scope, receive_empty
from benchmarks.cdn_rewrite_throughput import make_html
from edgecache import CacheInterceptor
from edgecache.cdn.encoding import encode

CDN_OPTIONS: dict[str, Any] = {"cdn_origin": "https://cdn.example.com", "cdn_paths": ["/static/", "/media/"]}


def page_app(body: bytes, coding: str) -> Any:
    headers = [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"cache-control", b"max-age=600"),
        (b"content-length", b"%d" % len(body)),
    ]
    if coding != "identity":
        headers.append((b"content-encoding", coding.encode()))

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def _scope(query: bytes) -> Scope:
    return get_scope("/", host=b"127.0.0.1:8000", query=query, headers=[(b"accept-encoding", b"gzip, br")])


async def _round(
    middleware: CacheInterceptor, queries: list[bytes], expect: str, max_seconds: float
) -> float:
    statuses: list[bytes] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(dict(message["headers"])[b"cache-status"])

    started = time.perf_counter()
    done = 0
    for query in queries:
        await middleware(_scope(query), receive_empty, send)
        done += 1
        if time.perf_counter() - started > max_seconds:
            break
    elapsed = time.perf_counter() - started
    if not all(expect.encode() in s for s in statuses):
        raise SystemExit(f"expected every request to be a {expect}: {statuses[:3]}")
    return elapsed / done * 1e6


async def measure(iterations: int, rounds: int, max_seconds: float) -> dict[str, Any]:
    page = make_html()
    report: dict[str, Any] = {"page_bytes": len(page), "iterations": iterations, "rounds": rounds, "rows": []}
    for coding in ("identity", "gzip", "br"):
        body = page if coding == "identity" else encode(coding, page)
        app = page_app(body, coding)
        caches = {
            "plain": CacheInterceptor(app, l1_max_bytes="1GiB", max_object_bytes="8MiB"),
            "cdn": CacheInterceptor(app, l1_max_bytes="1GiB", max_object_bytes="8MiB", **CDN_OPTIONS),
        }
        times: dict[tuple[str, str], list[float]] = {}
        serial = 0
        for _ in range(rounds):
            for name, middleware in caches.items():
                queries = [b"i=%d" % (serial + i) for i in range(iterations)]
                serial += iterations
                times.setdefault((name, "miss"), []).append(
                    await _round(middleware, queries, "fwd=", max_seconds)
                )
                hits = [queries[0]] * iterations
                times.setdefault((name, "hit"), []).append(await _round(middleware, hits, "hit", max_seconds))
        stats = caches["cdn"].cache.stats.cdn
        if stats["rewritten"] == 0:
            raise SystemExit(f"nothing was rewritten for {coding}: {dict(stats)}")
        for kind in ("miss", "hit"):
            plain, cdn = times[("plain", kind)], times[("cdn", kind)]
            report["rows"].append(
                {
                    "coding": coding,
                    "kind": kind,
                    "wire_bytes": len(body),
                    "plain_us": min(plain),
                    "plain_median_us": statistics.median(plain),
                    "cdn_us": min(cdn),
                    "cdn_median_us": statistics.median(cdn),
                    "ratio": min(cdn) / min(plain),
                }
            )
    return report


def render(report: dict[str, Any]) -> str:
    lines = [
        f"CDN rewriting through CacheInterceptor: {report['page_bytes'] / 1000:.1f} KB page, 200 asset URLs "
        f"({report['iterations']} requests x {report['rounds']} rounds; best round, median in brackets)",
        f"  {'coding':8} {'kind':5} {'wire':>8}  {'plain µs/req':>18}  {'cdn µs/req':>18}  cdn/plain",
    ]
    for row in report["rows"]:
        lines.append(
            f"  {row['coding']:8} {row['kind']:5} {row['wire_bytes']:>8}  "
            f"{row['plain_us']:>8.1f} ({row['plain_median_us']:>7.1f})  "
            f"{row['cdn_us']:>8.1f} ({row['cdn_median_us']:>7.1f})  {row['ratio']:>8.2f}x"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--iterations", type=int, default=200, help="requests per round (default 200)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per cache (default 5)")
    parser.add_argument("--max-seconds", type=float, default=10.0, help="bound on one round (default 10)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if args.iterations < 1 or args.rounds < 1 or args.max_seconds <= 0:
        parser.error("--iterations and --rounds must be at least 1, --max-seconds positive")
    report = asyncio.run(measure(args.iterations, args.rounds, args.max_seconds))
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
