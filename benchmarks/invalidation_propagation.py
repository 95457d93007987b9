#!/usr/bin/env python3
"""How long an invalidation published on Redis takes to remove an entry from another node's L1.

Setup: a private ``redis-server`` (free loopback port, no persistence), and **node B**: a separate Python
process started by this script (``multiprocessing``, spawn), running an edgecache ``Cache`` with
``redis_url`` set (its shared tier subscribed to ``<namespace>:invalidate``) behind ``CacheInterceptor``, on
uvloop like a uvicorn node. This process plays the publishing node and talks to node B over a pipe.

One sample:

1. node B fills one entry through its middleware (``GET /items/<i>`` answered by a tiny ASGI app with
   ``Surrogate-Key: bench-item:<i>``), checks that the entry is in its L1 and reports "armed";
2. after a short random pause (so node B's loop is idle, as a node between requests is), this process
   claims the message id as a publishing node does (``SET <ns>:claim:<id> NX``; ``--unclaimed`` skips it:
   node B then claims it and also cleans L2, after its L1), reads ``time.monotonic()`` and PUBLISHes
   ``{"id": ..., "tags": ["bench-item:<i>"]}`` with redis-py;
3. node B records ``time.monotonic()`` when the entry is gone from its L1 and sends it back. Both processes
   run on one machine and read the same CLOCK_MONOTONIC, so the difference is the propagation time. No
   HTTP request is involved in the measurement.

Detection (``--detect``): ``hook`` (default) wraps node B's ``store.l1.purge_tags`` (the L1 ``MemoryStore``
that both ``TieredStore.purge_tags`` and ``purge_l1_tags`` end in) and takes the time as soon as a purge
has completed and ``l1.get_nowait(key)`` returns None; node B is otherwise idle. ``poll`` instead spins on
``l1.get_nowait(key)`` with ``await asyncio.sleep(0)`` between reads (bounded by ``--timeout``), which keeps
node B's loop busy, so it removes the wake-up of an idle process from the measurement.
With ``hook`` the time is also split, by timestamps taken in node B, into: publish -> message handled
(delivery by Redis, wake-up, parsing), -> invalidation applied (node B's own work before it; no round trip:
node B drops its L1 before it claims the L2 clean-up), and -> L1 purged.

Reports p50, p90, p99, max and mean in ms over ``--samples`` samples (after ``--warmup`` unreported ones);
target: p99 < 5 ms on loopback. Run: ``.venv/bin/python benchmarks/invalidation_propagation.py [--quick]
[--json]``. Needs ``redis-server`` on PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import random
import shutil
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.asgi_scope import get_scope, receive_empty  # noqa: E402
from benchmarks.private_redis import PrivateRedis, RedisUnavailable  # noqa: E402
from benchmarks.reporting import log, non_negative_int, run_and_print  # noqa: E402

if TYPE_CHECKING:
    from starlette.types import Message, Receive, Scope, Send

NAMESPACE = "bench-inv"
TAG_PREFIX = "bench-item:"
TARGET_P99_MS = 5.0
MAX_SAMPLES = 100_000
NODE_START_TIMEOUT = 20.0  # seconds for node B to import, connect and subscribe
NODE_STOP_TIMEOUT = 5.0
CLAIM_TTL_MS = 10 * 60 * 1000  # as edgecache.shared.CLAIM_TTL_MS
NODE_CPU, INFRA_CPU = 0, 1  # node B alone on CPU 0; redis-server and this process on CPU 1


class BenchmarkError(Exception):
    """A problem that makes the measurement meaningless."""


# ------------------------------------------------------------------------------------------------ node B


@dataclass
class _Armed:
    index: int
    key: str
    received: float | None = None  # monotonic time the invalidation reached the node's handler
    applying: float | None = None  # monotonic time it started to be applied
    reported: bool = False


def node_main(
    conn: Connection, redis_url: str, detect: str, loop_kind: str, cpu: int | None, max_seconds: float
) -> None:
    """Entry point of node B's process."""
    if cpu is not None:
        with contextlib.suppress(OSError, AttributeError):
            os.sched_setaffinity(0, {cpu})
    loop_factory = None
    if loop_kind == "uvloop":
        import uvloop  # noqa: PLC0415 - node B's process only

        loop_factory = uvloop.new_event_loop
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(asyncio.wait_for(_node(conn, redis_url, detect), timeout=max_seconds))
    except TimeoutError:
        with contextlib.suppress(OSError):
            conn.send(("error", f"node B stopped itself after {max_seconds:.0f}s"))
    except Exception as exc:  # reported to the benchmark, which stops with it
        with contextlib.suppress(OSError):
            conn.send(("error", f"node B failed: {exc!r}"))
    finally:
        conn.close()


async def _node(conn: Connection, redis_url: str, detect: str) -> None:
    from edgecache import Cache, CacheInterceptor, Settings  # noqa: PLC0415 - node B's process only
    from edgecache.stores.tiered import TieredStore  # noqa: PLC0415

    settings = Settings.load({"redis_url": redis_url, "namespace": NAMESPACE, "default_ttl": 600}, environ={})
    cache = Cache(settings)
    store = cache.store
    shared_tier = cache.shared
    if not isinstance(store, TieredStore) or shared_tier is None:
        raise BenchmarkError("node B's cache has no Redis tier")
    l1 = store.l1

    async def origin(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        item = scope["path"].rsplit("/", 1)[-1]
        headers = [
            (b"content-type", b"text/plain"),
            (b"cache-control", b"max-age=600"),
            (b"surrogate-key", f"{TAG_PREFIX}{item}".encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"x" * 1024})

    app = CacheInterceptor(origin, cache=cache)
    if not await cache.start_and_wait(10.0):
        raise BenchmarkError("node B could not subscribe to the invalidation channel within 10 s")

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    armed: _Armed | None = None
    tasks: set[asyncio.Task[None]] = set()

    def report(entry: _Armed, gone_at: float) -> None:
        entry.reported = True
        loop.call_soon(conn.send, ("gone", entry.index, gone_at, entry.received, entry.applying))

    # -- observation hooks (instance attributes; they only read the clock) --------------------------------
    original_purge = l1.purge_tags

    async def purge_tags(tags: Any) -> int:
        removed = await original_purge(tags)
        gone_at = time.monotonic()
        if detect == "hook" and armed is not None and not armed.reported and l1.get_nowait(armed.key) is None:
            report(armed, gone_at)
        return removed

    setattr(l1, "purge_tags", purge_tags)  # noqa: B010 - mypy refuses assigning to a method

    original_apply_remote = getattr(shared_tier, "_apply_remote", None)
    if original_apply_remote is not None:

        async def apply_remote(invalidation: Any) -> None:
            if armed is not None and armed.received is None:
                armed.received = time.monotonic()
            await original_apply_remote(invalidation)

        setattr(shared_tier, "_apply_remote", apply_remote)  # noqa: B010

    original_apply = cache.apply_invalidation

    async def apply_invalidation(invalidation: Any, *, shared: bool) -> int:
        if armed is not None and armed.applying is None:
            armed.applying = time.monotonic()
        return await original_apply(invalidation, shared=shared)

    setattr(cache, "apply_invalidation", apply_invalidation)  # noqa: B010

    # -- commands from the benchmark ------------------------------------------------------------------------
    async def fill(index: int, poll_for: float) -> None:
        nonlocal armed
        armed = None
        messages: list[Message] = []

        async def send(message: Message) -> None:
            messages.append(message)

        path = f"/items/{index}"
        scope = get_scope(path, host=b"node-b.test", client=("127.0.0.1", 40000))
        await app(scope, receive_empty, send)
        status = next((m.get("status") for m in messages if m["type"] == "http.response.start"), None)
        keys = l1.keys_with_tags([f"{TAG_PREFIX}{index}"])
        if status != 200 or len(keys) != 1:
            conn.send(("error", f"fill {index}: status {status}, {len(keys)} L1 keys with its tag"))
            return
        key = next(iter(keys))
        if l1.get_nowait(key) is None:
            conn.send(("error", f"fill {index}: the entry is not in L1"))
            return
        armed = _Armed(index, key)
        if detect == "poll":
            task = loop.create_task(poll(armed, time.monotonic() + poll_for))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        conn.send(("armed", index))

    async def poll(entry: _Armed, deadline: float) -> None:
        while l1.get_nowait(entry.key) is not None:
            if time.monotonic() > deadline or armed is not entry:
                return
            await asyncio.sleep(0)
        report(entry, time.monotonic())

    def on_command() -> None:
        try:
            while conn.poll():
                command = conn.recv()
                if command[0] == "fill":
                    task = loop.create_task(fill(command[1], command[2]))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                elif command[0] == "stop":
                    stop.set()
        except (EOFError, OSError):
            stop.set()  # the benchmark went away

    loop.add_reader(conn.fileno(), on_command)
    conn.send(("ready", os.getpid()))
    try:
        await stop.wait()
    finally:
        loop.remove_reader(conn.fileno())
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await cache.aclose()


# ------------------------------------------------------------------------------------------ the benchmark


class NodeB:
    def __init__(self, redis_url: str, args: argparse.Namespace, pinned: bool) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child_conn = context.Pipe()
        self.proc = context.Process(
            target=node_main,
            args=(
                child_conn,
                redis_url,
                args.detect,
                args.loop,
                NODE_CPU if pinned else None,
                args.max_seconds + 60.0,
            ),
            name="edgecache-node-b",
            daemon=True,
        )
        self.proc.start()
        child_conn.close()

    def receive(self, timeout: float) -> tuple[Any, ...] | None:
        if not self.conn.poll(timeout):
            return None
        try:
            message: tuple[Any, ...] = self.conn.recv()
        except EOFError:
            raise BenchmarkError(f"node B exited (code {self.proc.exitcode})") from None
        if message[0] == "error":
            raise BenchmarkError(message[1])
        return message

    def expect(self, kind: str, timeout: float, index: int | None = None) -> tuple[Any, ...] | None:
        """The next message of ``kind`` (for ``index``), skipping late ones of earlier samples."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            message = self.receive(left)
            if message is None:
                return None
            if message[0] == kind and (index is None or message[1] == index):
                return message

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(("stop",))
        self.proc.join(NODE_STOP_TIMEOUT)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(NODE_STOP_TIMEOUT)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(NODE_STOP_TIMEOUT)
        self.conn.close()


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    return {
        "p50_ms": percentile(ordered, 0.50),
        "p90_ms": percentile(ordered, 0.90),
        "p99_ms": percentile(ordered, 0.99),
        "max_ms": ordered[-1],
        "min_ms": ordered[0],
        "mean_ms": statistics.fmean(ordered),
    }


def can_pin() -> bool:
    return hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import redis  # noqa: PLC0415 - a dependency of edgecache

    pinned = can_pin() and not args.no_pin
    if pinned:
        os.sched_setaffinity(0, {INFRA_CPU})
    total = args.warmup + args.samples
    latencies: list[float] = []
    parts: dict[str, list[float]] = {"delivery": [], "claim": [], "purge": []}
    timeouts = 0
    receivers: list[int] = []
    started = time.monotonic()
    redis_server = PrivateRedis(cpu=str(INFRA_CPU) if pinned else None)
    node: NodeB | None = None
    client: redis.Redis | None = None
    try:
        redis_server.start()
        log(f"private redis-server on {redis_server.url}")
        client = redis.Redis.from_url(redis_server.url, socket_timeout=5.0, socket_connect_timeout=5.0)
        client.ping()
        node = NodeB(redis_server.url, args, pinned)
        ready = node.expect("ready", NODE_START_TIMEOUT)
        if ready is None:
            raise BenchmarkError(f"node B did not become ready within {NODE_START_TIMEOUT:.0f}s")
        log(f"node B (pid {ready[1]}) subscribed; {args.warmup} warm-up + {args.samples} samples")
        channel = f"{NAMESPACE}:invalidate"
        done = 0
        for index in range(total):
            if time.monotonic() - started > args.max_seconds:
                log(f"stopping after {args.max_seconds:.0f}s (--max-seconds): {done} samples taken")
                break
            node.conn.send(("fill", index, args.timeout))
            if node.expect("armed", 5.0, index) is None:
                raise BenchmarkError(f"node B did not fill entry {index} within 5 s")
            time.sleep(args.gap_ms / 1000.0 * (1.0 + random.random()))
            message_id = uuid.uuid4().hex
            payload = json.dumps({"id": message_id, "tags": [f"{TAG_PREFIX}{index}"]}).encode()
            if not args.unclaimed:
                client.set(f"{NAMESPACE}:claim:{message_id}", b"1", nx=True, px=CLAIM_TTL_MS)
            published_at = time.monotonic()
            receivers.append(int(client.publish(channel, payload)))
            gone = node.expect("gone", args.timeout, index)
            if index < args.warmup:
                continue
            done += 1
            if gone is None:
                timeouts += 1
                continue
            _, _, gone_at, received_at, applying_at = gone
            latencies.append((gone_at - published_at) * 1000.0)
            if received_at is not None and applying_at is not None:
                parts["delivery"].append((received_at - published_at) * 1000.0)
                parts["claim"].append((applying_at - received_at) * 1000.0)
                parts["purge"].append((gone_at - applying_at) * 1000.0)
            if done % 100 == 0:
                log(f"  {done} samples, last {latencies[-1]:.3f} ms")
    finally:
        if node is not None:
            node.stop()
        if client is not None:
            client.close()
        redis_server.stop()

    if not latencies:
        raise BenchmarkError(f"no sample completed ({timeouts} timed out)")
    summary = summarize(latencies)
    assert summary is not None
    return {
        "config": {
            "samples": args.samples,
            "warmup": args.warmup,
            "detect": args.detect,
            "publisher_claims": not args.unclaimed,
            "gap_ms": f"uniform in [{args.gap_ms}, {2 * args.gap_ms}]",
            "timeout_s": args.timeout,
            "node_loop": args.loop,
            "pinning": "node B on CPU 0; redis-server and the publisher on CPU 1" if pinned else "none",
        },
        "environment": {"python": sys.version.split()[0], "cpu_count": os.cpu_count()},
        "samples_measured": len(latencies),
        "timeouts": timeouts,
        "subscribers_per_publish": sorted(set(receivers)),
        "publish_to_gone": summary,
        "breakdown": {name: summarize(values) for name, values in parts.items()},
        "target": f"p99 < {TARGET_P99_MS} ms",
        "met": timeouts == 0 and summary["p99_ms"] < TARGET_P99_MS,
        "seconds": time.monotonic() - started,
    }


def render_table(report: dict[str, Any]) -> str:
    cfg = report["config"]
    lines = [
        "invalidation propagation: PUBLISH (redis-py, this process) -> entry gone from node B's L1",
        f"{report['samples_measured']} samples (+{cfg['warmup']} warm-up), detect={cfg['detect']}, "
        f"publisher {'claims the message first' if cfg['publisher_claims'] else 'does not claim'}, "
        f"pause {cfg['gap_ms']} ms, node B on {cfg['node_loop']} ({cfg['pinning']})",
        "",
        f"{'':<44}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}{'mean':>8}  (ms)",
        "-" * 90,
    ]

    def row(label: str, stats: dict[str, float] | None) -> None:
        if stats is None:
            return
        lines.append(
            f"{label:<44}{stats['p50_ms']:>8.3f}{stats['p90_ms']:>8.3f}{stats['p99_ms']:>8.3f}"
            f"{stats['max_ms']:>8.3f}{stats['mean_ms']:>8.3f}"
        )

    row("PUBLISH -> gone from node B's L1", report["publish_to_gone"])
    breakdown = report["breakdown"]
    row("  PUBLISH -> node B's handler has it", breakdown["delivery"])
    row("  -> applying (handler to L1 purge start)", breakdown["claim"])
    row("  -> L1 purged", breakdown["purge"])
    p99 = report["publish_to_gone"]["p99_ms"]
    lines += [
        "",
        f"timeouts: {report['timeouts']}; subscribers per PUBLISH: {report['subscribers_per_publish']}",
        f"p99 {p99:.3f} ms (target < {TARGET_P99_MS} ms): {'met' if report['met'] else 'NOT MET'}",
    ]
    return "\n".join(lines)


def _samples(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_SAMPLES:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_SAMPLES}, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=(
            "Time from an invalidation PUBLISHed on Redis to the entry being gone from another node's L1 "
            "(node B: a separate process with edgecache's shared tier; private redis-server on 127.0.0.1)."
        ),
    )
    parser.add_argument(
        "--samples", type=_samples, default=500, help=f"measured samples, 1..{MAX_SAMPLES} (default: 500)"
    )
    parser.add_argument(
        "--warmup", type=non_negative_int, default=20, help="unreported samples first (default: 20)"
    )
    parser.add_argument(
        "--detect",
        choices=("hook", "poll"),
        default="hook",
        help="hook: time taken when node B's L1 purge completes (node idle until the message); poll: node B "
        "spins on l1.get_nowait(key) (default: hook)",
    )
    parser.add_argument(
        "--unclaimed",
        action="store_true",
        help="do not claim the message id before publishing (node B claims it and also cleans L2, after L1)",
    )
    parser.add_argument(
        "--gap-ms",
        type=_non_negative_float,
        default=5.0,
        help="pause before each PUBLISH, uniform in [gap, 2*gap] ms (default: 5)",
    )
    parser.add_argument(
        "--timeout", type=_positive_float, default=2.0, help="seconds to wait for one sample (default: 2)"
    )
    parser.add_argument(
        "--max-seconds",
        type=_positive_float,
        default=300.0,
        help="stop taking samples after this many seconds (default: 300)",
    )
    parser.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="node B's event loop (default: uvloop)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin node B / redis-server to CPUs")
    parser.add_argument(
        "--quick", action="store_true", help="a short run: --samples 50 --warmup 5 unless given explicitly"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.quick:
        given = argv if argv is not None else sys.argv[1:]
        for option, value in (("--samples", 50), ("--warmup", 5)):
            if not any(arg == option or arg.startswith(option + "=") for arg in given):
                setattr(args, option.lstrip("-"), value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("redis-server") is None:
        print(
            "error: 'redis-server' is not on PATH. Install it with:\n    apt-get install -y redis-server",
            file=sys.stderr,
        )
        return 2
    if args.loop == "uvloop":
        import importlib.util  # noqa: PLC0415

        if importlib.util.find_spec("uvloop") is None:
            print(
                "error: uvloop is not installed (use --loop asyncio, or pip install uvloop)", file=sys.stderr
            )
            return 2
    return run_and_print(
        lambda: measure(args),
        render_table,
        as_json=args.json,
        failures=(BenchmarkError, RedisUnavailable),
        interrupted="interrupted; node B and redis-server stopped",
    )


if __name__ == "__main__":
    sys.exit(main())
