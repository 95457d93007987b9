#!/usr/bin/env python3
"""``edgecache proxy`` against nginx ``proxy_cache`` in front of the same upstream, in the same run.

Processes (each its own, on 127.0.0.1 and free ports; with ``taskset`` and 2+ CPUs every server runs on
CPU 0 and wrk on CPU 1):

* ``upstream`` - ``benchmarks.proxy_upstream:app`` under uvicorn (uvloop, httptools, one worker): the
  ~2 KB JSON body of ``benchmarks.apps``; ``/hit`` says ``max-age=600``, ``/miss`` says ``no-store``.
* ``nginx``    - the Debian package's nginx, one worker process, ``proxy_cache`` (a keys zone and a cache
  directory in a temporary directory), keep-alive connections to the upstream, no access log.
* ``edgecache`` - ``python -m edgecache.cli proxy --upstream … --listen …``: one process, L1 only,
  every option at its default.

Targets measured with ``wrk --latency -t1 -c<connections> -d<duration>s``, the order rotated each round:

* hits: ``nginx /hit`` and ``edgecache /hit`` (before and after the load, each must answer from its cache:
  ``X-Cache-Status: HIT`` and ``Cache-Status: …; hit``), and for context ``upstream /hit``: the bare ASGI
  app on the same uvicorn stack, the cost of uvicorn's request cycle (which the proxy's fast path for
  plain hits skips: see edgecache.proxy.protocols);
* the miss path: ``upstream /miss`` directly, ``edgecache /miss`` and, for context, ``nginx /miss`` (every
  request reaches the upstream; the proxy and the upstream then share CPU 0, as a sidecar shares its pod).
  With ``--transport both`` (the default) a second proxy process on httpx's own transport
  (``benchmarks.proxy_httpx_transport``, the transport ``EdgeTransport`` replaced) adds
  ``edgecache_httpx_miss``; ``--transport httpx`` measures that proxy alone.

Reported: the median per target of requests/s, p50, p99, and the ratios (median of per-round ratios)
``edgecache hit / nginx hit`` (target >= 0.5x requests/s) and its p99 ratio, and ``edgecache miss /
upstream direct`` (and nginx's) for the miss path.

Run: ``.venv/bin/python benchmarks/proxy_vs_nginx.py [--json]``; about 2 minutes with the defaults.
Needs ``wrk`` and ``nginx`` on PATH: ``apt-get install -y wrk nginx-light`` (Debian/Ubuntu; the ``nginx``
package works too).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import http_hit_path as hit  # noqa: E402 - after the repository root is on sys.path
from benchmarks.proxy_upstream import HIT_PATH, MISS_PATH  # noqa: E402
from benchmarks.reporting import (  # noqa: E402
    log,
    log_wrk_round,
    non_negative_int,
    positive_int,
    run_and_print,
    summarize_runs,
    wrk_rows,
)

HOST = hit.HOST
TARGET_HIT_RATIO = 0.5  # edgecache proxy hit requests/s >= 0.5 x nginx proxy_cache hit requests/s
NGINX_CONF = """\
worker_processes 1;
daemon off;
{user}
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {root}/client_body;
    proxy_temp_path {root}/proxy_temp;
    fastcgi_temp_path {root}/fastcgi_temp;
    uwsgi_temp_path {root}/uwsgi_temp;
    scgi_temp_path {root}/scgi_temp;
    proxy_cache_path {root}/cache levels=1:2 keys_zone=bench:10m max_size=100m inactive=10m use_temp_path=off;
    upstream backend {{
        server {host}:{upstream_port};
        keepalive 64;
    }}
    server {{
        listen {host}:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache bench;
            add_header X-Cache-Status $upstream_cache_status;
        }}
    }}
}}
"""


@dataclass(frozen=True)
class Target:
    name: str
    label: str
    server: str  # "upstream", "nginx" or "edgecache"
    path: str
    hit: bool  # must be answered from the cache


TARGETS = (
    Target("nginx_hit", "nginx proxy_cache, hit", "nginx", HIT_PATH, hit=True),
    Target("edgecache_hit", "edgecache proxy, hit", "edgecache", HIT_PATH, hit=True),
    # uvicorn's request cycle alone: the upstream itself is a bare ASGI app on the same uvicorn.
    Target("upstream_hit", "upstream directly (bare ASGI, /hit)", "upstream", HIT_PATH, hit=False),
    Target("upstream_miss", "upstream directly (no-store)", "upstream", MISS_PATH, hit=False),
    Target("edgecache_miss", "edgecache proxy, miss (no-store)", "edgecache", MISS_PATH, hit=False),
    Target("nginx_miss", "nginx proxy_cache, miss (no-store)", "nginx", MISS_PATH, hit=False),
)
# ``--transport httpx`` or ``both``: the proxy on httpx's own transport (httpcore's pool), the "before".
HTTPX_MISS = Target(
    "edgecache_httpx_miss", "edgecache proxy on httpx, miss", "edgecache-httpx", MISS_PATH, hit=False
)


class Process(hit.ServerProcess):
    """``command``, started at once, answering on 127.0.0.1:``port``."""

    def __init__(self, name: str, command: list[str], port: int) -> None:
        super().__init__(name, port)
        self._command = command
        self.start()

    def command(self) -> list[str]:
        return self._command


def start_upstream() -> Process:
    server = hit.Server(hit.ServerSpec("upstream", "upstream", "benchmarks.proxy_upstream:app", False))
    return Process("upstream", server.command(), server.port)


def start_edgecache(upstream_port: int, transport: str = "edgecache") -> Process:
    port, admin = hit.free_port(), hit.free_port()
    module = "edgecache.cli" if transport == "edgecache" else "benchmarks.proxy_httpx_transport"
    command = [
        *hit.pin(hit.SERVER_CPU),
        sys.executable,
        "-m",
        module,
        "proxy",
        "--upstream",
        f"http://{HOST}:{upstream_port}",
        "--listen",
        f"{HOST}:{port}",
        "--admin-listen",
        f"{HOST}:{admin}",
    ]
    return Process("edgecache" if transport == "edgecache" else "edgecache-httpx", command, port)


def start_nginx(nginx: str, upstream_port: int, root: Path) -> Process:
    port = hit.free_port()
    # As root, nginx's worker would switch to "nobody", which cannot write the temporary directory.
    user = "user root;" if hasattr(os, "geteuid") and os.geteuid() == 0 else ""
    conf = NGINX_CONF.format(user=user, root=root, host=HOST, port=port, upstream_port=upstream_port)
    (root / "nginx.conf").write_text(conf, encoding="utf-8")
    command = [
        *hit.pin(hit.SERVER_CPU),
        nginx,
        "-p",
        str(root),
        "-c",
        str(root / "nginx.conf"),
        "-e",
        "stderr",
    ]
    return Process("nginx", command, port)


def answered_from_cache(server: str, reply: hit.Reply) -> bool:
    if server == "nginx":
        return reply.headers.get("x-cache-status") == "HIT"
    return "; hit" in reply.headers.get("cache-status", "")


def check(target: Target, process: Process, body: bytes, when: str) -> None:
    reply = hit.http_get(process.port, path=target.path)
    if reply.status != 200 or reply.body != body:
        raise hit.BenchmarkError(f"{target.name} {when}: status {reply.status}, body {reply.body[:100]!r}")
    if answered_from_cache(target.server, reply) != target.hit:
        raise hit.BenchmarkError(
            f"{target.name} {when}: expected {'a hit' if target.hit else 'no hit'}, "
            f"got headers {reply.headers}"
        )


def _environment(wrk: str, nginx: str) -> dict[str, Any]:
    versions: dict[str, str] = {}
    for dist in ("uvicorn", "uvloop", "httptools", "httpx", "edgecache"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    tools = {}
    for name, cmd in (("wrk", [wrk, "-v"]), ("nginx", [nginx, "-v"])):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
        text = (done.stdout + done.stderr).strip()
        tools[name] = text.splitlines()[0] if text else ""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        **tools,
        "packages": versions,
    }


def _ratio(per_round: dict[str, list[hit.WrkResult]], over: str, under: str) -> dict[str, Any]:
    pairs = list(zip(per_round[over], per_round[under], strict=True))
    throughput = [a.requests_per_sec / b.requests_per_sec for a, b in pairs]
    p99 = [a.p99_ms / b.p99_ms for a, b in pairs]
    return {
        "throughput": statistics.median(throughput),
        "throughput_per_round": throughput,
        "p99": statistics.median(p99),
        "p99_per_round": p99,
    }


def targets_for(transport: str) -> tuple[Target, ...]:
    """The targets for ``--transport``: ``edgecache`` (the default transport), ``httpx`` (the proxy on
    httpx's transport in place of it) or ``both`` (the two proxies side by side)."""
    if transport == "edgecache":
        return TARGETS
    if transport == "httpx":
        return tuple(
            HTTPX_MISS if t.name == "edgecache_miss" else _on_httpx(t) if t.server == "edgecache" else t
            for t in TARGETS
        )
    return (*TARGETS, HTTPX_MISS)


def _on_httpx(target: Target) -> Target:
    return Target(target.name, target.label + " (httpx)", "edgecache-httpx", target.path, target.hit)


def measure(args: argparse.Namespace, wrk: str, nginx: str) -> dict[str, Any]:
    processes: dict[str, Process] = {}
    targets = targets_for(args.transport)
    with tempfile.TemporaryDirectory(prefix="edgecache-nginx-") as tmp:
        try:
            processes["upstream"] = upstream = start_upstream()
            body = upstream.wait_ready(path=HIT_PATH).body
            processes["nginx"] = start_nginx(nginx, upstream.port, Path(tmp))
            servers = {t.server for t in targets}
            if "edgecache" in servers:
                processes["edgecache"] = start_edgecache(upstream.port)
            if "edgecache-httpx" in servers:
                processes["edgecache-httpx"] = start_edgecache(upstream.port, "httpx")
            for name, process in processes.items():
                if name != "upstream":
                    process.wait_ready(path=HIT_PATH)  # the first /hit fills the cache
            for target in targets:
                process = processes[target.server]
                log(f"warming up {target.name} on {HOST}:{process.port}{target.path}")
                check(target, process, body, "before the load")
                for _ in range(hit.WARMUP_REQUESTS):
                    hit.http_get(process.port, path=target.path)
                if args.warmup:
                    hit.run_wrk(wrk, process.port, args.connections, args.warmup, target.path)

            per_round: dict[str, list[hit.WrkResult]] = {t.name: [] for t in targets}
            for round_no in range(args.rounds):
                shift = round_no % len(targets)
                for target in targets[shift:] + targets[:shift]:
                    time.sleep(hit.PAUSE_BETWEEN_RUNS)
                    port = processes[target.server].port
                    result = hit.run_wrk(wrk, port, args.connections, args.duration, target.path)
                    per_round[target.name].append(result)
                    log_wrk_round(round_no, args.rounds, target.name, result)
            for target in targets:
                check(target, processes[target.server], body, "after the load")
        finally:
            for process in processes.values():
                process.stop()

    names = {t.name for t in targets}
    hit_ratio = _ratio(per_round, "edgecache_hit", "nginx_hit")
    hit_ratio["target"] = f">= {TARGET_HIT_RATIO}"
    hit_ratio["met"] = hit_ratio["throughput"] >= TARGET_HIT_RATIO
    return {
        "config": {
            "connections": args.connections,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "warmup_s": args.warmup,
            "transport": args.transport,
            "threads": 1,
            "pinned": bool(hit.pin(hit.SERVER_CPU)),
            "statistic": "median over rounds; ratios: median of per-round ratios",
        },
        "environment": _environment(wrk, nginx),
        "targets": {
            t.name: summarize_runs(t.label, f"{t.server} {t.path}", per_round[t.name]) for t in targets
        },
        "ratios": {
            "edgecache_hit_over_nginx_hit": hit_ratio,
            "edgecache_hit_over_bare_uvicorn": _ratio(per_round, "edgecache_hit", "upstream_hit"),
            **(
                {"edgecache_miss_over_upstream": _ratio(per_round, "edgecache_miss", "upstream_miss")}
                if "edgecache_miss" in names
                else {}
            ),
            **(
                {
                    "edgecache_httpx_miss_over_upstream": _ratio(
                        per_round, "edgecache_httpx_miss", "upstream_miss"
                    )
                }
                if "edgecache_httpx_miss" in names
                else {}
            ),
            **(
                {
                    "edgecache_miss_over_httpx_miss": _ratio(
                        per_round, "edgecache_miss", "edgecache_httpx_miss"
                    )
                }
                if {"edgecache_miss", "edgecache_httpx_miss"} <= names
                else {}
            ),
            "nginx_miss_over_upstream": _ratio(per_round, "nginx_miss", "upstream_miss"),
        },
    }


def render_table(report: dict[str, Any]) -> str:
    cfg = report["config"]
    lines = [
        f"wrk --latency -t1 -c{cfg['connections']} -d{cfg['duration_s']}s, {cfg['rounds']} round(s), "
        f"median per target, ratios = median of per-round ratios; servers pinned: {cfg['pinned']}",
        "",
        f"{'target':<38}{'requests/s':>13}{'p50 (ms)':>11}{'p99 (ms)':>11}",
        "-" * 73,
    ]
    lines += wrk_rows(report["targets"].values(), label_width=38)
    lines.append("")
    names = {
        "edgecache_hit_over_nginx_hit": "edgecache hit / nginx hit",
        "edgecache_hit_over_bare_uvicorn": "edgecache hit / bare ASGI app",
        "edgecache_miss_over_upstream": "edgecache miss / upstream direct",
        "edgecache_httpx_miss_over_upstream": "edgecache on httpx miss / upstream",
        "edgecache_miss_over_httpx_miss": "edgecache miss / on httpx",
        "nginx_miss_over_upstream": "nginx miss / upstream direct",
    }
    for key, label in names.items():
        ratio = report["ratios"].get(key)
        if ratio is None:
            continue
        line = (
            f"{label:<34} throughput {ratio['throughput']:.3f}x "
            f"(rounds: {', '.join(f'{v:.2f}' for v in ratio['throughput_per_round'])}), "
            f"p99 {ratio['p99']:.3f}x"
        )
        if "target" in ratio:
            line += f"  (target {ratio['target']}x: {'met' if ratio['met'] else 'NOT MET'})"
        lines.append(line)
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="edgecache proxy vs nginx proxy_cache (hits) and vs the upstream alone (misses), one run."
    )
    parser.add_argument("--connections", type=positive_int, default=32, help="wrk -c (default: 32)")
    parser.add_argument("--duration", type=positive_int, default=5, help="seconds per wrk run (default: 5)")
    parser.add_argument("--rounds", type=positive_int, default=3, help="wrk runs per target (default: 3)")
    parser.add_argument(
        "--warmup", type=non_negative_int, default=1, help="seconds of wrk warm-up (default: 1)"
    )
    parser.add_argument(
        "--transport",
        choices=("edgecache", "httpx", "both"),
        default="both",
        help="the proxy's upstream transport: its own (edgecache), httpx's (the one it replaced), or both "
        "side by side on the miss path (default: both)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    wrk, nginx = shutil.which("wrk"), shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if wrk is None or nginx is None:
        missing = " and ".join(n for n, p in (("wrk", wrk), ("nginx", nginx)) if p is None)
        print(
            f"error: {missing} not on PATH. Install with:\n    apt-get install -y wrk nginx-light",
            file=sys.stderr,
        )
        return 2
    return run_and_print(
        lambda: measure(args, wrk, nginx),
        render_table,
        as_json=args.json,
        failures=(hit.BenchmarkError,),
        interrupted="interrupted; servers stopped",
    )


if __name__ == "__main__":
    sys.exit(main())
