#!/usr/bin/env python3
"""HTTP benchmark of edgecache's L2 (Redis) hit path, against its L1 hit, a bare ASGI app and fastapi-cache2.

Servers (each its own uvicorn process: ``--loop uvloop --http httptools``, one worker, on 127.0.0.1), all
serving the same ~2 KB JSON body at ``GET /``:

* ``bare``    - ``benchmarks.apps:bare_app``: pure ASGI, no framework. The floor of this server stack.
* ``l1``      - ``benchmarks.l2_apps:l1_app``: the FastAPI endpoint that takes 5 ms, wrapped from the outside
  by ``CacheInterceptor(app, default_ttl=600)``, L1 only: every request is an L1 hit.
* ``l2``      - ``benchmarks.l2_apps:l2_app``: the same with ``redis_url`` set and an L1 that holds nothing
  (see ``l2_apps``: configuration cannot turn L1 off, so the tiered store's L1 is replaced by
  ``MemoryStore(max_bytes=1)``): every request is an L2 hit (``Cache-Status: ...; detail=l2``).
* ``fastapi-cache2`` - ``benchmarks.l2_apps:fastapi_cache_app``: the same endpoint with fastapi-cache2's
  ``@cache(expire=600)`` and its ``RedisBackend``: every request is a fastapi-cache2 hit
  (``X-FastAPI-Cache: HIT``).

A private ``redis-server`` (free loopback port, no persistence) serves both Redis caches. With ``taskset``
and 2+ CPUs, the servers run on CPU 0 and wrk and redis-server on CPU 1.

Before the load, and again after it, the script checks that each cache serves hits from the intended tier,
and that the endpoint's call counter (``GET /calls``) did not move during the load. Then it runs
``wrk --latency -t1 -c<connections> -d<duration>s`` per server for ``--rounds`` rounds (server order
rotated each round) and reports the median requests/s, p50 and p99 per server, and the ratios
``l2 / fastapi-cache2`` (target >= 2x), ``l2 / l1`` and ``l2 / bare`` as the median of per-round ratios.

Run: ``.venv/bin/python benchmarks/http_l2_path.py [--quick] [--json]``. Needs ``wrk`` and ``redis-server``
on PATH, and the ``bench`` extra (``pip install -e '.[bench]'``: fastapi-cache2 and jinja2, which it
imports).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import http_hit_path as hit  # noqa: E402 - after the repository root is on sys.path
from benchmarks.private_redis import PrivateRedis, RedisUnavailable  # noqa: E402
from benchmarks.reporting import (  # noqa: E402
    log,
    log_wrk_round,
    non_negative_int,
    positive_int,
    run_and_print,
    summarize_runs,
    wrk_errors,
)

HOST = hit.HOST
PATH = hit.PATH
CALLS_PATH = "/calls"  # benchmarks.l2_apps.CALLS_PATH
REDIS_URL_ENV = "BENCH_REDIS_URL"  # benchmarks.l2_apps.REDIS_URL_ENV
TARGET_L2_OVER_FASTAPI_CACHE = 2.0  # edgecache L2 hit requests/s >= 2 x fastapi-cache2 hit requests/s
L2_FILL_TIMEOUT = 5.0  # seconds for the write-behind of the first response to reach Redis
_L2_HIT_RE = re.compile(r"(?<![\w-])hit(?![\w-]).*\bdetail=l2\b", re.IGNORECASE)
_L1_HIT_RE = re.compile(r"(?<![\w-])hit(?![\w-]).*\bdetail=l1\b", re.IGNORECASE)


@dataclass(frozen=True)
class Spec:
    name: str
    label: str
    app: str
    check: str  # "none", "l1", "l2" or "fastapi-cache"

    def server_spec(self) -> hit.ServerSpec:
        return hit.ServerSpec(self.name, self.label, self.app, expect_hit=self.check != "none")


BARE = Spec("bare", "bare ASGI", "benchmarks.apps:bare_app", "none")
L1 = Spec("l1", "edgecache L1 hit", "benchmarks.l2_apps:l1_app", "l1")
L2 = Spec("l2", "edgecache L2 hit (Redis)", "benchmarks.l2_apps:l2_app", "l2")
FASTAPI_CACHE = Spec(
    "fastapi-cache2", "fastapi-cache2 hit (Redis)", "benchmarks.l2_apps:fastapi_cache_app", "fastapi-cache"
)
SPECS = (BARE, L1, L2, FASTAPI_CACHE)
# (numerator, denominator, target or None)
RATIOS: tuple[tuple[str, str, float | None], ...] = (
    ("l2", "fastapi-cache2", TARGET_L2_OVER_FASTAPI_CACHE),
    ("l2", "l1", None),
    ("l2", "bare", None),
)
L1_NOTE = (
    "L2 server: configuration cannot turn L1 off (max_object_bytes must not exceed l1_max_bytes, and nothing "
    "larger than max_object_bytes is stored in any tier), so its cache is built from Settings(redis_url=...) "
    "and the tiered store's L1 is then replaced by MemoryStore(max_bytes=1), which refuses every object."
)


def get(port: int, path: str, timeout: float = 5.0) -> hit.Reply:
    """GET ``path`` sending only ``Host``, like wrk."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.endheaders()
        response = conn.getresponse()
        body = response.read()
        headers: dict[str, str] = {}
        for name, value in response.getheaders():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        return hit.Reply(response.status, headers, body)
    finally:
        conn.close()


def endpoint_calls(port: int) -> int:
    reply = get(port, CALLS_PATH)
    if reply.status != 200:
        raise hit.BenchmarkError(f"GET {CALLS_PATH} on port {port} answered {reply.status}")
    calls = json.loads(reply.body)["calls"]
    if not isinstance(calls, int):
        raise hit.BenchmarkError(f"GET {CALLS_PATH} on port {port}: unexpected body {reply.body!r}")
    return calls


def _describe(reply: hit.Reply) -> str:
    return (
        f"status={reply.status} cache-status={reply.headers.get('cache-status')!r} "
        f"x-fastapi-cache={reply.headers.get('x-fastapi-cache')!r}"
    )


def is_hit(spec: Spec, reply: hit.Reply) -> bool:
    if reply.status != 200:
        return False
    if spec.check == "l1":
        return bool(_L1_HIT_RE.search(reply.headers.get("cache-status", "")))
    if spec.check == "l2":
        return bool(_L2_HIT_RE.search(reply.headers.get("cache-status", "")))
    if spec.check == "fastapi-cache":
        return reply.headers.get("x-fastapi-cache", "").upper() == "HIT"
    return True


def check_hit(server: hit.Server, spec: Spec, reference_body: bytes, when: str, within: float = 0.0) -> None:
    """The next response must be a hit from the intended tier (retried ``within`` seconds)."""
    deadline = time.monotonic() + within
    while True:
        reply = get(server.port, PATH)
        if is_hit(spec, reply):
            break
        if time.monotonic() >= deadline:
            expected = {
                "l1": "Cache-Status with 'hit' and 'detail=l1'",
                "l2": "Cache-Status with 'hit' and 'detail=l2'",
                "fastapi-cache": "X-FastAPI-Cache: HIT",
            }[spec.check]
            raise hit.BenchmarkError(
                f"server {spec.name!r} ({spec.app}) is not serving the intended hits {when}: got "
                f"{_describe(reply)}; expected {expected}. Measuring it would not measure that hit path."
            )
        time.sleep(0.05)
    if reply.body != reference_body:
        raise hit.BenchmarkError(f"server {spec.name!r}: a hit sent a different body than the bare server")


def warm_up(
    server: hit.Server,
    spec: Spec,
    first: hit.Reply,
    reference_body: bytes,
    wrk: str,
    connections: int,
    seconds: int,
) -> None:
    if first.status != 200:
        raise hit.BenchmarkError(f"server {spec.name!r}: first request got {_describe(first)}")
    if not first.headers.get("content-type", "").startswith("application/json"):
        raise hit.BenchmarkError(f"server {spec.name!r}: content-type {first.headers.get('content-type')!r}")
    if first.body != reference_body:
        raise hit.BenchmarkError(f"server {spec.name!r} sent a different body than the bare server")
    if spec.check != "none":
        # For l2 the first response reaches Redis through the write-behind queue: allow it a moment.
        check_hit(server, spec, reference_body, "after the cache-filling request", within=L2_FILL_TIMEOUT)
    for _ in range(hit.WARMUP_REQUESTS):
        reply = get(server.port, PATH)
        if reply.status != 200:
            raise hit.BenchmarkError(f"server {spec.name!r}: warm-up request got {_describe(reply)}")
    if seconds > 0:
        hit.run_wrk(wrk, server.port, connections, seconds)


def _environment(wrk: str) -> dict[str, Any]:
    versions: dict[str, str] = {}
    for dist in (
        "uvicorn",
        "uvloop",
        "httptools",
        "fastapi",
        "starlette",
        "redis",
        "fastapi-cache2",
        "edgecache",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    done = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10, check=False)
    redis_version = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout.strip()
    pinned = bool(hit.pin(hit.SERVER_CPU))
    return {
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "pinning": "servers on CPU 0; wrk and redis-server on CPU 1" if pinned else "none",
        "wrk": (done.stdout + done.stderr).splitlines()[0].strip() if done.stdout + done.stderr else "",
        "redis_server": redis_version,
        "packages": versions,
    }


def measure(args: argparse.Namespace, wrk: str) -> dict[str, Any]:
    servers: list[hit.Server] = []
    redis_server = PrivateRedis(cpu=hit.WRK_CPU if hit.pin(hit.WRK_CPU) else None)
    try:
        redis_server.start()
        log(f"private redis-server on {redis_server.url}")
        os.environ[REDIS_URL_ENV] = redis_server.url  # inherited by the servers (benchmarks.l2_apps)
        for spec in SPECS:
            server = hit.Server(spec.server_spec())
            servers.append(server)
            server.start()
        # Every server must be up before any load; for the caches this first request fills the cache.
        firsts = [server.wait_ready() for server in servers]
        reference = firsts[0].body
        for spec, server, first in zip(SPECS, servers, firsts, strict=True):
            log(f"warming up {spec.name} ({spec.app}) on {HOST}:{server.port}")
            warm_up(server, spec, first, reference, wrk, args.connections, args.warmup)
        calls_before = {
            spec.name: endpoint_calls(server.port)
            for spec, server in zip(SPECS, servers, strict=True)
            if spec.check != "none"
        }

        per_round: dict[str, list[hit.WrkResult]] = {spec.name: [] for spec in SPECS}
        pairs = list(zip(SPECS, servers, strict=True))
        for round_no in range(args.rounds):
            shift = round_no % len(pairs)  # rotate the order so drift affects every server alike
            for spec, server in pairs[shift:] + pairs[:shift]:
                time.sleep(hit.PAUSE_BETWEEN_RUNS)
                result = hit.run_wrk(wrk, server.port, args.connections, args.duration)
                per_round[spec.name].append(result)
                log_wrk_round(round_no, args.rounds, spec.name, result)
        calls_during_load = {
            spec.name: endpoint_calls(server.port) - calls_before[spec.name]
            for spec, server in zip(SPECS, servers, strict=True)
            if spec.check != "none"
        }
        for spec, server in zip(SPECS, servers, strict=True):
            if spec.check != "none":
                check_hit(server, spec, reference, "after the load runs")
    finally:
        for server in servers:
            server.stop()
        redis_server.stop()
        os.environ.pop(REDIS_URL_ENV, None)

    results: dict[str, Any] = {}
    for spec in SPECS:
        results[spec.name] = {
            **summarize_runs(spec.label, spec.app, per_round[spec.name]),
            "endpoint_calls_during_load": calls_during_load.get(spec.name),
        }
    # Per-round ratios (the servers of one round run back to back and share the machine's momentary speed),
    # and their median.
    ratios: dict[str, Any] = {}
    for top, bottom, target in RATIOS:
        rounds = list(zip(per_round[top], per_round[bottom], strict=True))
        tput = [a.requests_per_sec / b.requests_per_sec for a, b in rounds]
        p99 = [a.p99_ms / b.p99_ms for a, b in rounds]
        ratios[f"{top}/{bottom}"] = {
            "throughput": statistics.median(tput),
            "throughput_per_round": tput,
            "p99": statistics.median(p99),
            "p99_per_round": p99,
            "target": None if target is None else f"throughput >= {target}",
            "met": None if target is None else statistics.median(tput) >= target,
        }
    return {
        "config": {
            "connections": args.connections,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "warmup_s": args.warmup,
            "threads": 1,
            "statistic": "median over rounds; ratios: median of per-round ratios",
            "l1_disabled_how": L1_NOTE,
        },
        "environment": _environment(wrk),
        "servers": results,
        "ratios": ratios,
    }


def render_table(report: dict[str, Any]) -> str:
    cfg = report["config"]
    lines = [
        f"wrk --latency -t1 -c{cfg['connections']} -d{cfg['duration_s']}s, {cfg['rounds']} round(s), "
        f"median per server, ratios = median of per-round ratios; GET http://{HOST}:<port>{PATH}",
        f"({report['environment']['pinning']})",
        "",
        f"{'server':<30}{'requests/s':>12}{'p50 (ms)':>10}{'p99 (ms)':>10}{'endpoint calls':>16}",
        "-" * 78,
    ]
    for row in report["servers"].values():
        calls = row["endpoint_calls_during_load"]
        lines.append(
            f"{row['label']:<30}{row['requests_per_sec']:>12,.1f}{row['p50_ms']:>10.3f}{row['p99_ms']:>10.3f}"
            f"{'-' if calls is None else str(calls):>16}"
        )
        lines += wrk_errors(row)
        if calls:
            lines.append(f"  ! the endpoint ran {calls} times under load: not every request was a hit")
    lines.append("")
    for name, ratio in report["ratios"].items():
        verdict = ""
        if ratio["met"] is not None:
            verdict = f"  (target {ratio['target']}x)  {'met' if ratio['met'] else 'NOT MET'}"
        lines.append(
            f"{name + ' throughput:':<30}{ratio['throughput']:>7.3f}x  "
            f"(rounds: {', '.join(f'{v:.2f}' for v in ratio['throughput_per_round'])}){verdict}"
        )
        lines.append(f"{name + ' p99:':<30}{ratio['p99']:>7.3f}x")
    lines += ["", "endpoint calls = calls of the 5 ms endpoint during the load runs (0: every request a hit)"]
    lines.append(cfg["l1_disabled_how"])
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=(
            "Throughput and latency of edgecache's L2 (Redis) hit over HTTP (uvicorn + uvloop + httptools, "
            "wrk on 127.0.0.1), against its L1 hit, a bare ASGI app and fastapi-cache2 with Redis."
        ),
    )
    parser.add_argument("--connections", type=positive_int, default=32, help="wrk -c (default: 32)")
    parser.add_argument("--duration", type=positive_int, default=5, help="seconds per wrk run (default: 5)")
    parser.add_argument(
        "--rounds",
        type=positive_int,
        default=5,
        help="wrk runs per server, server order rotated each round; the median is reported (default: 5)",
    )
    parser.add_argument(
        "--warmup",
        type=non_negative_int,
        default=2,
        help="seconds of wrk warm-up per server (default: 2)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short run (about 30 s): --rounds 2 --duration 2 --warmup 1 unless given explicitly",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quick:
        given = set(argv if argv is not None else sys.argv[1:])
        for option, value in (("--rounds", 2), ("--duration", 2), ("--warmup", 1)):
            if not any(arg == option or arg.startswith(option + "=") for arg in given):
                setattr(args, option.lstrip("-"), value)
    return args


def missing_tools() -> str | None:
    if shutil.which("wrk") is None:
        return "'wrk' is not on PATH. Install it with:\n    apt-get install -y wrk"
    if shutil.which("redis-server") is None:
        return "'redis-server' is not on PATH. Install it with:\n    apt-get install -y redis-server"
    for module in ("fastapi_cache", "jinja2", "uvloop", "httptools"):
        if importlib.util.find_spec(module) is None:
            return (
                f"Python module {module!r} is missing. Install the benchmark extras with:\n"
                "    .venv/bin/pip install -e '.[bench]'"
            )
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = missing_tools()
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    wrk = shutil.which("wrk")
    assert wrk is not None
    return run_and_print(
        lambda: measure(args, wrk),
        render_table,
        as_json=args.json,
        failures=(hit.BenchmarkError, RedisUnavailable),
        interrupted="interrupted; servers stopped",
    )


if __name__ == "__main__":
    sys.exit(main())
