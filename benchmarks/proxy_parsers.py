#!/usr/bin/env python3
"""What the proxy's HTTP parser costs on the hit path: ``edgecache proxy`` with ``http=httptools``, ``auto``
(httptools; a connection using a method llhttp does not know is handed to h11) and ``h11``.

One upstream (uvicorn, ``cacheable_app``: a ~2 KB JSON body with ``max-age=3600``) and one proxy process per
parser (uvloop, pinned to its own core when taskset exists), each warmed up and checked to serve hits; then
``wrk --latency -t1 -c<connections> -d<duration>`` per proxy for ``--rounds`` rounds, rotating the order.
Reports the medians (requests/s, p50, p99, and the proxy process's CPU time per request, which the other
load on a shared machine disturbs far less than requests/s) and each parser's ratio to ``httptools``
measured in the same run.

Run from anywhere: ``.venv/bin/python benchmarks/proxy_parsers.py [--rounds 3] [--duration 5] [--json]``.
Needs ``wrk`` on PATH.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from starlette.types import Receive, Scope, Send  # noqa: E402

from benchmarks.apps import BODY, MEDIA_TYPE, bare_app  # noqa: E402
from benchmarks.http_hit_path import (  # noqa: E402
    HOST,
    SERVER_CPU,
    BenchmarkError,
    Server,
    ServerSpec,
    WrkResult,
    check_hit,
    pin,
    run_wrk,
)
from benchmarks.reporting import log, positive_int, require_wrk, run_and_print, summarize_runs  # noqa: E402

# ``uvicorn-httptools``: uvicorn's own HttpToolsProtocol (no head limits while parsing, no hand-over), to
# show what ProxyHttpToolsProtocol itself costs.
PARSERS = ("httptools", "auto", "h11", "uvicorn-httptools")
_HEADERS = [
    (b"content-type", MEDIA_TYPE.encode("latin-1")),
    (b"content-length", str(len(BODY)).encode("latin-1")),
    (b"cache-control", b"max-age=3600"),
]


async def cacheable_app(scope: Scope, receive: Receive, send: Send) -> None:
    """``bare_app`` with ``Cache-Control: max-age=3600``: after one miss every request is a proxy hit."""
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
        await send({"type": "http.response.body", "body": BODY})
    else:
        await bare_app(scope, receive, send)


class ProxyProcess(Server):
    """``edgecache proxy`` (``edgecache.proxy.server.run``) with one parser, in front of ``upstream``."""

    def __init__(self, http: str, upstream: str) -> None:
        super().__init__(ServerSpec(http, f"proxy http={http}", "edgecache.proxy", expect_hit=True))
        self.http = http
        self.upstream = upstream

    def command(self) -> list[str]:
        serve = [__file__, "--serve", self.http, "--upstream", self.upstream, "--port", str(self.port)]
        return [*pin(SERVER_CPU), sys.executable, *serve]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux ``/proc``): per-request cost that other load on the
    machine barely changes, unlike requests/s."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve(http: str, upstream: str, port: int) -> int:
    # Only in the proxy process:
    import uvloop  # noqa: PLC0415
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol  # noqa: PLC0415

    from edgecache.proxy import server  # noqa: PLC0415

    plain = http == "uvicorn-httptools"
    proxy = server.ProxyServer(upstream, (HOST, port), None, http="httptools" if plain else http)  # type: ignore[arg-type]
    if plain:
        proxy.protocol = HttpToolsProtocol
    return uvloop.run(server.serve(proxy))


def measure(args: argparse.Namespace, wrk: str) -> dict[str, Any]:
    upstream = Server(ServerSpec("upstream", "upstream", "benchmarks.proxy_parsers:cacheable_app", False))
    proxies: list[ProxyProcess] = []
    try:
        upstream.start()
        upstream.wait_ready()
        upstream_url = f"http://{HOST}:{upstream.port}"
        for http in PARSERS:
            proxy = ProxyProcess(http, upstream_url)
            proxies.append(proxy)
            proxy.start()
            proxy.wait_ready()  # the first request fills the cache
            check_hit(proxy, when="after the cache-filling request")
            run_wrk(wrk, proxy.port, args.connections, 1)  # warm-up
        runs: dict[str, list[WrkResult]] = {p.http: [] for p in proxies}
        cpu: dict[str, list[float]] = {p.http: [] for p in proxies}
        for round_no in range(args.rounds):
            order = proxies[round_no % len(proxies) :] + proxies[: round_no % len(proxies)]
            for proxy in order:
                assert proxy.proc is not None
                before = cpu_seconds(proxy.proc.pid)
                result = run_wrk(wrk, proxy.port, args.connections, args.duration)
                cpu[proxy.http].append((cpu_seconds(proxy.proc.pid) - before) / result.requests * 1e6)
                if result.non_2xx_3xx or result.socket_errors:
                    raise BenchmarkError(f"proxy http={proxy.http}: errors under load: {result}")
                runs[proxy.http].append(result)
                log(
                    f"round {round_no + 1} http={proxy.http}: {result.requests_per_sec:.0f} req/s, "
                    f"{cpu[proxy.http][-1]:.1f} us CPU/request"
                )
                time.sleep(0.5)
            for proxy in proxies:
                check_hit(proxy, when=f"after round {round_no + 1}")
    finally:
        for proxy in proxies:
            proxy.stop()
        upstream.stop()
    servers = {http: summarize_runs(f"proxy http={http}", "edgecache proxy", runs[http]) for http in PARSERS}
    for http in PARSERS:
        servers[http]["cpu_us_per_request"] = statistics.median(cpu[http])
    base = servers["httptools"]
    ratios = {
        http: {
            "throughput_vs_httptools": servers[http]["requests_per_sec"] / base["requests_per_sec"],
            "p99_vs_httptools": servers[http]["p99_ms"] / base["p99_ms"],
            "cpu_per_request_vs_httptools": servers[http]["cpu_us_per_request"] / base["cpu_us_per_request"],
        }
        for http in PARSERS
    }
    settings = {"rounds": args.rounds, "duration_s": args.duration, "connections": args.connections}
    return {"settings": settings, "servers": servers, "ratios": ratios}


def render_table(report: dict[str, Any]) -> str:
    lines = [
        f"{'parser':18} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>10} "
        f"{'req/s vs httptools':>19} {'p99 vs':>7} {'CPU vs':>7}"
    ]
    for http, server in report["servers"].items():
        ratio = report["ratios"][http]
        lines.append(
            f"{http:18} {server['requests_per_sec']:9.0f} {server['p50_ms']:8.2f} {server['p99_ms']:8.2f} "
            f"{server['cpu_us_per_request']:10.1f} {ratio['throughput_vs_httptools']:18.2f}x "
            f"{ratio['p99_vs_httptools']:6.2f}x {ratio['cpu_per_request_vs_httptools']:6.2f}x"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=positive_int, default=3, help="wrk rounds per parser (default 3)")
    parser.add_argument("--duration", type=positive_int, default=5, help="seconds per wrk round (default 5)")
    parser.add_argument("--connections", type=positive_int, default=50, help="wrk connections (default 50)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--serve", choices=PARSERS, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.serve:
        return serve(args.serve, args.upstream, args.port)
    wrk = require_wrk()
    if wrk is None:
        return 2
    return run_and_print(
        lambda: measure(args, wrk),
        render_table,
        as_json=args.json,
        failures=(BenchmarkError,),
        interrupted="interrupted: every server started was stopped",
    )


if __name__ == "__main__":
    sys.exit(main())
