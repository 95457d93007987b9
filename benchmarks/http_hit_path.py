#!/usr/bin/env python3
"""HTTP benchmark of edgecache's hit path: a cached FastAPI app vs. a bare pure-ASGI app.

Servers (each its own uvicorn process: ``--loop uvloop --http httptools``, one worker, on 127.0.0.1):

* ``bare``     - ``benchmarks.apps:bare_app``: pure ASGI, no framework, a ~2 KB JSON body.
* ``wrapped``  - ``benchmarks.apps:wrapped_app``: FastAPI endpoint taking 5 ms to produce the same body,
  wrapped from the outside, ``CacheInterceptor(app, default_ttl=600)`` (L1 only): a hit never enters FastAPI.
* ``cached``   - ``benchmarks.apps:cached_app``: the same endpoint with ``app.add_middleware(CacheInterceptor,
  ...)``: a hit still passes FastAPI's outer layers (ServerErrorMiddleware and its own wrappers).
  After the warm-up request every request to either is a hit.
* ``uncached`` - ``benchmarks.apps:uncached_app``: the same FastAPI app without the cache
  (only with ``--include-uncached``).

Each server is warmed up (for the cached ones: one request fills the cache, the next must carry a
``Cache-Status`` with ``hit``), then loaded with ``wrk --latency -t1 -c<connections> -d<duration>`` for
``--rounds`` rounds, rotating the server order between rounds; the median per server is reported together
with the ratios ``<cached> / bare`` throughput (target >= 0.85x) and p99 (target <= 1.5x) for both placements.

Run from anywhere: ``.venv/bin/python benchmarks/http_hit_path.py [--include-uncached] [--json]``.
Needs ``wrk`` on PATH (Debian/Ubuntu: ``apt-get install -y wrk``).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.reporting import (  # noqa: E402 - after the repository root is on sys.path
    log,
    log_wrk_round,
    non_negative_int,
    positive_int,
    require_wrk,
    run_and_print,
    stop_process,
    summarize_runs,
    wrk_rows,
)

HOST = "127.0.0.1"  # every server binds here and every request targets it; never anything else
PATH = "/"  # benchmarks.apps.PATH
TARGET_THROUGHPUT_RATIO = 0.85  # cached hit requests/s >= 0.85 x bare requests/s
TARGET_P99_RATIO = 1.5  # cached hit p99 <= 1.5 x bare p99

STARTUP_TIMEOUT = 30.0  # seconds for a server to answer its first request
WRK_GRACE = 30.0  # seconds wrk may overrun --duration before it is killed
PAUSE_BETWEEN_RUNS = 0.5  # seconds
WARMUP_REQUESTS = 50  # sequential requests per server before the wrk warm-up
_HIT_RE = re.compile(r"(?<![\w-])hit(?![\w-])", re.IGNORECASE)


class BenchmarkError(Exception):
    """A problem that makes the measurement meaningless; reported as one clear message."""


# On a 2-core machine the server under test and wrk each get a core of their own (when taskset exists),
# so the load generator does not steal cycles from whichever server happens to be measured.
SERVER_CPU, WRK_CPU = "0", "1"


def pin(cpu: str) -> list[str]:
    taskset = shutil.which("taskset")
    if taskset is None or (os.cpu_count() or 1) < 2:
        return []
    return [taskset, "-c", cpu]


@dataclass(frozen=True)
class ServerSpec:
    name: str
    label: str
    app: str  # uvicorn import string, resolved with the repository root as cwd
    expect_hit: bool


BARE = ServerSpec("bare", "bare ASGI", "benchmarks.apps:bare_app", expect_hit=False)
WRAPPED = ServerSpec(
    "wrapped", "CacheInterceptor(FastAPI) hit", "benchmarks.apps:wrapped_app", expect_hit=True
)
CACHED = ServerSpec("cached", "FastAPI add_middleware hit", "benchmarks.apps:cached_app", expect_hit=True)
UNCACHED = ServerSpec("uncached", "FastAPI, no cache", "benchmarks.apps:uncached_app", expect_hit=False)


@dataclass(frozen=True)
class WrkResult:
    requests_per_sec: float
    p50_ms: float
    p99_ms: float
    requests: int
    socket_errors: int
    non_2xx_3xx: int


# --------------------------------------------------------------------------------------------- wrk output

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_DURATION_RE = re.compile(r"^([0-9]*\.?[0-9]+)(us|ms|s|m|h)$")


def parse_duration_ms(text: str) -> float:
    """A wrk time such as ``812.00us``, ``1.23ms``, ``2.01s`` or ``1.50m`` in milliseconds."""
    match = _DURATION_RE.match(text.strip())
    if match is None:
        raise ValueError(f"unrecognised wrk duration {text!r}")
    return float(match.group(1)) * _UNIT_MS[match.group(2)]


def _si_number(text: str) -> float:
    # wrk prints large counts with SI suffixes in some places (e.g. ``1.23k``).
    factor = {"k": 1e3, "M": 1e6, "G": 1e9}.get(text[-1:], 1.0)
    return float(text[:-1] if factor != 1.0 else text) * factor


def parse_wrk(output: str) -> WrkResult:
    """Requests/s, p50 and p99 (ms) and error counts from ``wrk --latency`` output."""
    rps = re.search(r"^Requests/sec:\s+([0-9.]+[kMG]?)\s*$", output, re.MULTILINE)
    p50 = re.search(r"^\s*50(?:\.0+)?%\s+(\S+)\s*$", output, re.MULTILINE)
    p99 = re.search(r"^\s*99(?:\.0+)?%\s+(\S+)\s*$", output, re.MULTILINE)
    total = re.search(r"^\s*(\d+) requests in ", output, re.MULTILINE)
    if rps is None or p50 is None or p99 is None or total is None:
        raise BenchmarkError(f"could not parse wrk output (was --latency given?):\n{output}")
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output, re.MULTILINE
    )
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return WrkResult(
        requests_per_sec=_si_number(rps.group(1)),
        p50_ms=parse_duration_ms(p50.group(1)),
        p99_ms=parse_duration_ms(p99.group(1)),
        requests=int(total.group(1)),
        socket_errors=sum(int(g) for g in errors.groups()) if errors else 0,
        non_2xx_3xx=int(non_2xx.group(1)) if non_2xx else 0,
    )


def run_wrk(wrk: str, port: int, connections: int, duration: int, path: str = PATH) -> WrkResult:
    url = f"http://{HOST}:{port}{path}"
    cmd = [*pin(WRK_CPU), wrk, "--latency", "-t1", f"-c{connections}", f"-d{duration}s", url]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + WRK_GRACE, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BenchmarkError(
            f"wrk did not finish within {duration + WRK_GRACE:.0f}s: {' '.join(cmd)}"
        ) from exc
    if done.returncode != 0:
        raise BenchmarkError(f"wrk failed ({done.returncode}): {' '.join(cmd)}\n{done.stdout}{done.stderr}")
    return parse_wrk(done.stdout)


# ------------------------------------------------------------------------------------------------ servers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names; repeated fields joined with ", "
    body: bytes


def http_get(port: int, timeout: float = 5.0, path: str = PATH) -> Reply:
    """One GET of ``path``, sending only ``Host`` like wrk does (no Accept-Encoding)."""
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
        return Reply(response.status, headers, body)
    finally:
        conn.close()


class ServerProcess:
    """One server process answering on 127.0.0.1:``port``, its output in an anonymous file; stopped by PID.
    Subclasses say what to run (``command``) and how to name it in errors (``label``)."""

    def __init__(self, label: str, port: int) -> None:
        self.label = label
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        # EDGECACHE_* variables are dropped so the cache runs with its defaults plus default_ttl (L1 only).
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECACHE_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        # Anonymous file for the server's output, closed (and so deleted) in stop().
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server process
        self.proc = subprocess.Popen(
            self.command(),
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log_tail(self, limit: int = 4000) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        text = self._log.read().decode("utf-8", "replace")
        return text[-limit:]

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT, path: str = PATH) -> Reply:
        """The first answer to ``GET path``, polled until ``timeout``; fails if the process exits first."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchmarkError(
                    f"{self.label} exited with code {self.proc.returncode} before answering. "
                    f"Its output:\n{self.log_tail()}"
                )
            try:
                return http_get(self.port, timeout=2.0, path=path)
            except (OSError, http.client.HTTPException) as exc:
                last_error = exc
                time.sleep(0.05)
        raise BenchmarkError(
            f"{self.label} did not answer on {HOST}:{self.port} within {timeout:.0f}s "
            f"(last error: {last_error!r}). Its output:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        log, self._log = self._log, None
        stop_process(proc, log)


class Server(ServerProcess):
    """One uvicorn process serving ``spec.app`` on 127.0.0.1:<free port>."""

    def __init__(self, spec: ServerSpec) -> None:
        super().__init__(f"server {spec.name!r} ({spec.app})", free_port())
        self.spec = spec

    def command(self) -> list[str]:
        return [
            *pin(SERVER_CPU),
            sys.executable,
            "-m",
            "uvicorn",
            self.spec.app,
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--lifespan",
            "on",
            "--no-access-log",
            "--log-level",
            "warning",
        ]


def _describe(reply: Reply) -> str:
    return f"status={reply.status} cache-status={reply.headers.get('cache-status')!r}"


def warm_up(
    server: Server, first: Reply, reference_body: bytes, wrk: str, connections: int, seconds: int
) -> None:
    """Check the server answers correctly (and, for the cache, with a hit), then warm it up.

    ``first`` is the server's first response (for ``cached``, the request that filled the cache);
    ``reference_body`` the bare server's body, which every server must send too.
    """
    spec = server.spec
    if first.status != 200:
        raise BenchmarkError(f"server {spec.name!r}: first request got {_describe(first)}")
    if not first.headers.get("content-type", "").startswith("application/json"):
        raise BenchmarkError(f"server {spec.name!r}: content-type {first.headers.get('content-type')!r}")
    try:
        json.loads(first.body)
    except ValueError as exc:
        raise BenchmarkError(f"server {spec.name!r}: body is not JSON: {first.body[:200]!r}") from exc
    if first.body != reference_body:
        raise BenchmarkError(f"server {spec.name!r} sent a different body than the bare server")
    if spec.expect_hit:
        check_hit(server, when="after the cache-filling request")
    for _ in range(WARMUP_REQUESTS):
        reply = http_get(server.port)
        if reply.status != 200:
            raise BenchmarkError(f"server {spec.name!r}: warm-up request got {_describe(reply)}")
    if seconds > 0:
        run_wrk(wrk, server.port, connections, seconds)


def check_hit(server: Server, when: str) -> None:
    reply = http_get(server.port)
    value = reply.headers.get("cache-status")
    if reply.status != 200 or value is None or not _HIT_RE.search(value):
        raise BenchmarkError(
            f"server {server.spec.name!r} ({server.spec.app}) is not serving cache hits {when}: "
            f"got {_describe(reply)}; expected a Cache-Status header containing 'hit'. "
            "Measuring it would not measure the hit path."
        )


# ---------------------------------------------------------------------------------------------- the run


def _environment(wrk: str) -> dict[str, Any]:
    versions: dict[str, str] = {}
    for dist in ("uvicorn", "uvloop", "httptools", "fastapi", "starlette", "edgecache"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    done = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10, check=False)
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "wrk": (done.stdout + done.stderr).splitlines()[0].strip() if done.stdout + done.stderr else "",
        "packages": versions,
    }


def measure(args: argparse.Namespace, wrk: str) -> dict[str, Any]:
    specs = [BARE, WRAPPED, CACHED] + ([UNCACHED] if args.include_uncached else [])
    servers: list[Server] = []
    try:
        for spec in specs:
            server = Server(spec)
            servers.append(server)
            server.start()
        # Every server must be up before any load is applied; for ``cached`` this first request fills
        # the cache.
        firsts = [server.wait_ready() for server in servers]
        for server, first in zip(servers, firsts, strict=True):
            log(f"warming up {server.spec.name} ({server.spec.app}) on {HOST}:{server.port}")
            warm_up(server, first, firsts[0].body, wrk, args.connections, args.warmup)

        per_round: dict[str, list[WrkResult]] = {spec.name: [] for spec in specs}
        for round_no in range(args.rounds):
            shift = round_no % len(servers)  # rotate the order so drift affects every server alike
            for server in servers[shift:] + servers[:shift]:
                time.sleep(PAUSE_BETWEEN_RUNS)
                result = run_wrk(wrk, server.port, args.connections, args.duration)
                per_round[server.spec.name].append(result)
                log_wrk_round(round_no, args.rounds, server.spec.name, result, width=8)
        for server in servers:
            if server.spec.expect_hit:
                check_hit(server, when="after the load runs")
    finally:
        for server in servers:
            server.stop()

    results: dict[str, Any] = {}
    for spec in specs:
        results[spec.name] = summarize_runs(spec.label, spec.app, per_round[spec.name])
    # Ratios are taken per round (the servers of one round run back to back, so they share the machine's
    # momentary speed) and the median of those is reported: on a shared machine the absolute numbers
    # drift by tens of percent between rounds.
    ratios: dict[str, Any] = {}
    for name in ("wrapped", "cached"):
        pairs = list(zip(per_round[name], per_round["bare"], strict=True))
        throughput_ratio = statistics.median(r.requests_per_sec / b.requests_per_sec for r, b in pairs)
        p99_ratio = statistics.median(r.p99_ms / b.p99_ms for r, b in pairs)
        ratios[f"{name}_over_bare_throughput"] = {
            "value": throughput_ratio,
            "per_round": [r.requests_per_sec / b.requests_per_sec for r, b in pairs],
            "target": f">= {TARGET_THROUGHPUT_RATIO}",
            "met": throughput_ratio >= TARGET_THROUGHPUT_RATIO,
        }
        ratios[f"{name}_over_bare_p99"] = {
            "value": p99_ratio,
            "per_round": [r.p99_ms / b.p99_ms for r, b in pairs],
            "target": f"<= {TARGET_P99_RATIO}",
            "met": p99_ratio <= TARGET_P99_RATIO,
        }
    return {
        "config": {
            "connections": args.connections,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "warmup_s": args.warmup,
            "threads": 1,
            "statistic": "median over rounds; ratios: median of per-round ratios",
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
        "",
        f"{'server':<32}{'requests/s':>13}{'p50 (ms)':>11}{'p99 (ms)':>11}",
        "-" * 67,
    ]
    lines += wrk_rows(report["servers"].values(), label_width=32)
    lines.append("")
    for name in ("wrapped", "cached"):
        tput = report["ratios"][f"{name}_over_bare_throughput"]
        p99 = report["ratios"][f"{name}_over_bare_p99"]
        lines += [
            f"{name} hit / bare throughput: {tput['value']:.3f}x  "
            f"(rounds: {', '.join(f'{v:.2f}' for v in tput['per_round'])})  "
            f"(target >= {TARGET_THROUGHPUT_RATIO}x)  {'met' if tput['met'] else 'NOT MET'}",
            f"{name} p99 / bare p99:        {p99['value']:.3f}x  "
            f"(target <= {TARGET_P99_RATIO}x)  {'met' if p99['met'] else 'NOT MET'}",
        ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=(
            "Throughput and latency of edgecache's L1 hit path over real HTTP (uvicorn + uvloop + httptools, "
            "driven by wrk on 127.0.0.1): a FastAPI app behind CacheInterceptor vs. a bare ASGI app."
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
        "--warmup", type=non_negative_int, default=2, help="seconds of wrk warm-up per server (default: 2)"
    )
    parser.add_argument(
        "--include-uncached", action="store_true", help="also measure the FastAPI app without the cache"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    wrk = require_wrk()
    if wrk is None:
        return 2
    return run_and_print(
        lambda: measure(args, wrk),
        render_table,
        as_json=args.json,
        failures=(BenchmarkError,),
        interrupted="interrupted; servers stopped",
    )


if __name__ == "__main__":
    sys.exit(main())
