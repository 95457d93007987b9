"""End to end with real processes: two uvicorn nodes (A and B) serving ``tests/shared/node_app.py`` behind
``CacheInterceptor``, sharing an L2 and the invalidation channel in a private, real ``redis-server``.

Both nodes are reached with the same ``Host`` (as behind one load balancer), so they compute the same keys.
Propagation over pub/sub is asynchronous: every check of it polls with a deadline, and no assertion is
about how long something took.

The tests at the end pin down races found here: a purge overlapping traffic, a purge from a node whose
breaker is open, and L1 coming back after a Redis restart.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from edgecache.stores.redis import tag_digest
from tests.redis_server import RedisServer
from tests.servers import ROOT, free_port

HOST = "shop.test"  # the one public host both nodes serve: same Host, same cache keys
NAMESPACE = f"mp-{uuid.uuid4().hex[:12]}"  # unique per run of this module
CHANNEL = f"{NAMESPACE}:invalidate"
PROPAGATION_DEADLINE = 10.0  # seconds an invalidation may take to reach a node (it normally takes ms)
RESUBSCRIBE_DEADLINE = 15.0  # seconds both nodes may take to subscribe again after Redis comes back
BUG_DEADLINE = 3.0  # the race tests: a stale copy still there after this long stays for l1_max_ttl/TTL
SLOW_APP = "0.5"  # x-delay of the paired misses: both nodes' L2 reads happen before either one's fill
ONLY_IF_CACHED = {"cache-control": "only-if-cached"}  # asks a node's storage without ever filling it


# -- processes ----------------------------------------------------------------------------------------


class Node:
    """One ``uvicorn tests.shared.node_app:app`` process, with its log in a file (never a pipe: a node
    that logs a lot during an outage must not block on a full pipe). Stopped by its PID."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"node-{name}.log"
        command = [sys.executable, "-m", "uvicorn", "tests.shared.node_app:app"]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--lifespan", "on"]
        command += ["--log-level", "warning"]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**os.environ, **env, "NODE_NAME": name},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.pid = self.process.pid  # no --workers / --reload: the app runs in this very process
        self.client = self.new_client()

    def new_client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"host": HOST}, timeout=10.0)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"node {self.name} exited ({self.process.returncode}):\n{self.log_tail()}")
            try:
                answer = self.client.get("/healthz", timeout=1.0)
            except httpx.TransportError:
                time.sleep(0.05)
                continue
            assert answer.status_code == 200, answer.text
            assert answer.json()["pid"] == self.pid, "the app does not run in the process that was started"
            return
        raise TimeoutError(f"node {self.name} did not answer within {timeout}s:\n{self.log_tail()}")

    def get(self, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return self.client.get(path, headers=headers)

    def app_calls(self, item: str) -> int:
        return int(self.client.get("/calls").json()["calls"].get(item, 0))

    def debug(self) -> dict[str, Any]:
        """The node's view of its shared tier (breaker, L1 bypass, generation): diagnostics only."""
        state: dict[str, Any] = self.client.get("/debug", timeout=2.0).json()
        return state

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGTERM)  # graceful: the lifespan shutdown closes the cache
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.process.wait()


@dataclass
class Cluster:
    redis: RedisServer
    a: Node
    b: Node

    @property
    def nodes(self) -> tuple[Node, Node]:
        return self.a, self.b


@contextlib.contextmanager
def running_cluster(**settings: str) -> Iterator[Cluster]:
    """A private redis-server and two nodes on it; every process is stopped by its PID on the way out."""
    log_dir = Path(tempfile.mkdtemp(prefix="edgecache-multiprocess-"))
    server = RedisServer()  # this module's own: it is killed and restarted here
    started: list[Node] = []
    try:
        server.start()
        env = {
            "EDGECACHE_REDIS_URL": server.url,
            "EDGECACHE_NAMESPACE": NAMESPACE,
            # Room for a busy test machine: an L2 read past redis_timeout is a miss, which would read
            # as "not shared" or "dropped" here. What is tested does not depend on this budget.
            "EDGECACHE_REDIS_TIMEOUT": "1",
            **settings,
        }
        started.append(Node("A", env, log_dir))
        started.append(Node("B", env, log_dir))
        for node in started:
            node.wait_ready()
        yield Cluster(server, started[0], started[1])
    finally:
        for node in started:
            node.stop()
        server.cleanup()
        shutil.rmtree(log_dir, ignore_errors=True)


def ready(cluster: Cluster) -> Cluster:
    """Redis up and both nodes subscribed to the invalidation channel."""
    if not cluster.redis.running:
        cluster.redis.start()
    wait_for(lambda: subscribers(cluster.redis) == 2, RESUBSCRIBE_DEADLINE, "both nodes subscribed", cluster)
    return cluster


@pytest.fixture(scope="module")
def nodes() -> Iterator[Cluster]:
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture
def cluster(nodes: Cluster) -> Cluster:
    """Each test starts with Redis up and both nodes subscribed."""
    return ready(nodes)


@pytest.fixture(scope="module")
def slow_breaker_nodes() -> Iterator[Cluster]:
    # A breaker that stays open for the whole test once it has opened: the state a node is in for
    # redis_breaker_reset seconds (default 5) after Redis failures, made to last.
    with running_cluster(EDGECACHE_REDIS_BREAKER_RESET="60") as cluster:
        yield cluster


# -- helpers ------------------------------------------------------------------------------------------


def wait_for(condition: Callable[[], Any], timeout: float, what: str, cluster: Cluster | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}\n{diagnostics(cluster)}")
        time.sleep(0.05)


def diagnostics(cluster: Cluster | None) -> str:
    """Each node's view of the shared tier and the end of its log, for failure messages."""
    if cluster is None:
        return ""
    parts = []
    for node in cluster.nodes:
        try:
            state = json.dumps(node.debug())
        except (httpx.HTTPError, ValueError) as error:
            state = repr(error)
        parts.append(f"--- node {node.name}: {state}\n{node.log_tail()}")
    return "\n".join(parts)


def subscribers(server: RedisServer) -> int:
    with contextlib.suppress(redis.RedisError, OSError), server.admin_client() as client:
        return int(dict(client.pubsub_numsub(CHANNEL)).get(CHANNEL.encode(), 0))
    return -1


def redis_cli(server: RedisServer, *args: str) -> str:
    """The real ``redis-cli`` (shipped with redis-server); redis-py only where it is missing."""
    cli = shutil.which("redis-cli")
    if cli is None:
        with server.admin_client() as client:
            return str(client.execute_command(*args))
    done = subprocess.run(
        [cli, "-h", server.host, "-p", str(server.port), *args],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return done.stdout.strip()


def publish(server: RedisServer, message: dict[str, Any]) -> int:
    """PUBLISH on the invalidation channel with redis-cli; returns how many subscribers received it."""
    return int(redis_cli(server, "PUBLISH", CHANNEL, json.dumps(message)))


def wait_both_resubscribed(cluster: Cluster) -> None:
    # PUBLISH returns how many connections received it: 2 once both nodes have subscribed again.
    wait_for(
        lambda: publish(cluster.redis, {"id": uuid.uuid4().hex, "tags": ["mp:probe"]}) == 2,
        RESUBSCRIBE_DEADLINE,
        "a PUBLISH reaches both nodes",
        cluster,
    )


def cache_status(response: httpx.Response) -> str:
    return str(response.headers.get("cache-status", "<none>"))


def is_l1_hit(response: httpx.Response) -> bool:
    return response.status_code == 200 and cache_status(response).endswith("detail=l1")


def l2_holds(server: RedisServer, tag: str) -> bool:
    """Some entry in Redis carries ``tag`` (every entry hash lists its tags' digests in field ``t``)."""
    needle = tag_digest(tag).encode()
    with server.admin_client() as client:
        for key in client.scan_iter(match=f"{NAMESPACE}:g*:e:*", count=1000):
            tags = client.hget(key, "t")
            if tags is not None and needle in tags.split():
                return True
    return False


def l2_clean(server: RedisServer, tag: str) -> bool:
    return not l2_holds(server, tag)


def warm(cluster: Cluster, item: str) -> dict[str, dict[str, Any]]:
    """Item stored on both nodes and served from both L1s; returns the body each node serves."""
    path = f"/items/{item}"
    first = cluster.a.get(path)
    assert first.status_code == 200, first.text
    bodies: dict[str, dict[str, Any]] = {}
    for node in cluster.nodes:

        def l1_hit(node: Node = node) -> httpx.Response | None:
            answer = node.get(path)
            return answer if is_l1_hit(answer) else None

        hit = wait_for(l1_hit, PROPAGATION_DEADLINE, f"{path} is an L1 hit on node {node.name}", cluster)
        bodies[node.name] = hit.json()
    return bodies


def wait_dropped(cluster: Cluster, item: str, deadline: float) -> None:
    """Poll both nodes with only-if-cached until each answers 504 ``fwd=uri-miss`` (nothing stored) three
    times in a row: one L2 read that overran ``redis_timeout`` on a busy machine is a 504 too."""
    path = f"/items/{item}"
    for node in cluster.nodes:
        last: list[str] = []
        misses = [0]

        def gone(node: Node = node, last: list[str] = last, misses: list[int] = misses) -> bool:
            probe = node.get(path, ONLY_IF_CACHED)
            last[:] = [f"{probe.status_code} {cache_status(probe)} {probe.text[:120]}"]
            miss = probe.status_code == 504 and cache_status(probe).startswith("edgecache; fwd=uri-miss")
            misses[0] = misses[0] + 1 if miss else 0
            return misses[0] >= 3

        try:
            wait_for(gone, deadline, f"{path} dropped on node {node.name}", cluster)
        except AssertionError as error:
            raise AssertionError(f"node {node.name} still answers from storage: {last}\n{error}") from None


def assert_dropped_on_both(
    cluster: Cluster, item: str, before: dict[str, dict[str, Any]], deadline: float = PROPAGATION_DEADLINE
) -> None:
    """Neither Redis (L2) nor either node (L1) holds the item any more, and the next request on each node
    is a miss that its own app answers.

    Redis is watched first, and the nodes are asked only once it is clean: a request that reaches a node
    while the L2 purge is still under way can put the purged entry back into that node's L1 (the bug that
    ``test_traffic_during_a_purge_never_brings_the_purged_entry_back`` pins down)."""
    tag = f"item:{item}"
    wait_for(functools.partial(l2_clean, cluster.redis, tag), deadline, f"{tag} purged from L2", cluster)
    wait_dropped(cluster, item, deadline)
    # The two misses run together, each app slow, so neither node's fill reaches L2 before the other's read.
    path = f"/items/{item}"
    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(pool.map(lambda n: n.get(path, {"x-delay": SLOW_APP}), cluster.nodes))
    for node, answer in zip(cluster.nodes, answers, strict=True):
        assert answer.status_code == 200, answer.text
        assert cache_status(answer).startswith("edgecache; fwd=uri-miss"), (
            f"node {node.name}: {cache_status(answer)}\n{diagnostics(cluster)}"
        )
        body = answer.json()
        assert body["pid"] == node.pid, f"node {node.name}'s miss was not answered by its own app: {body}"
        assert body != before[node.name]


# -- tests --------------------------------------------------------------------------------------------


def test_a_fill_on_node_a_is_an_l2_hit_on_node_b(cluster: Cluster) -> None:
    filled = cluster.a.get("/items/1")
    assert filled.status_code == 200
    assert cache_status(filled) == "edgecache; fwd=uri-miss; stored"
    assert filled.json()["pid"] == cluster.a.pid
    # A writes L2 behind its response: wait until the entry is in Redis before B's first request.
    wait_for(lambda: l2_holds(cluster.redis, "item:1"), PROPAGATION_DEADLINE, "item 1 in L2", cluster)

    shared = cluster.b.get("/items/1")

    assert shared.status_code == 200
    status = cache_status(shared)
    assert status.startswith("edgecache; hit; ") and status.endswith("; detail=l2"), status
    assert shared.json() == filled.json()
    assert "age" in shared.headers
    assert "surrogate-key" not in shared.headers
    assert cluster.b.app_calls("1") == 0, "B's app was called although A's fill was in L2"
    again = cluster.b.get("/items/1")
    assert is_l1_hit(again), cache_status(again)  # backfilled into B's L1
    assert again.json() == filled.json()


def test_raw_publish_with_redis_cli_drops_the_entry_on_both_nodes(cluster: Cluster) -> None:
    before = warm(cluster, "21")

    receivers = publish(cluster.redis, {"id": uuid.uuid4().hex, "tags": ["item:21"]})

    assert receivers == 2
    assert_dropped_on_both(cluster, "21", before)


def test_purge_through_the_python_api_on_a_drops_the_entry_on_b(cluster: Cluster) -> None:
    before = warm(cluster, "2")

    purged = cluster.a.client.post("/purge/item:2")

    assert purged.status_code == 200, purged.text
    assert purged.json()["purged"] >= 1
    assert_dropped_on_both(cluster, "2", before)


def test_redis_killed_mid_traffic_costs_no_failed_request(cluster: Cluster) -> None:
    items = [str(i) for i in range(40, 45)]
    total, kill_at, workers, time_limit = 400, 100, 4, 10.0
    lock = threading.Lock()
    issued = 0
    killed = threading.Event()
    records: list[tuple[bool, str, str, int | None, str, Any]] = []  # outage?, node, item, status, cs, body
    stop_at = time.monotonic() + time_limit

    def next_index() -> int | None:
        nonlocal issued
        with lock:
            if issued >= total or time.monotonic() > stop_at:
                return None
            issued += 1
            return issued - 1

    def worker() -> None:
        clients = {node.name: node.new_client() for node in cluster.nodes}
        try:
            while (index := next_index()) is not None:
                if index == kill_at:
                    cluster.redis.kill()  # SIGKILL, while the other workers' requests are in flight
                    killed.set()
                node = cluster.nodes[index % 2]
                item = items[(index // 2) % len(items)]
                outage = killed.is_set()
                try:
                    answer = clients[node.name].get(f"/items/{item}")
                except httpx.HTTPError as error:
                    records.append((outage, node.name, item, None, repr(error), None))
                    continue
                body = answer.json() if answer.status_code == 200 else answer.text
                records.append((outage, node.name, item, answer.status_code, cache_status(answer), body))
        finally:
            for client in clients.values():
                client.close()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for future in [pool.submit(worker) for _ in range(workers)]:
            future.result()

    assert killed.is_set(), f"the loop ended after {issued} requests, before Redis was killed"
    assert not cluster.redis.running
    pids = {node.name: node.pid for node in cluster.nodes}
    failures = []
    for outage, node_name, item, status, status_header, body in records:
        ok = (
            status == 200
            and isinstance(body, dict)
            and body["id"] == item
            and body["pid"] in pids.values()
            and status_header.startswith("edgecache; ")
            # what an app answered (a miss) comes from the node's own app; a hit may come from either
            and (" hit;" in status_header or body["pid"] == pids[node_name])
        )
        if not ok:
            failures.append((outage, node_name, item, status, status_header, body))
    during = [r for r in records if r[0]]
    outcomes = Counter(r[4].split(";")[1].strip() if r[3] == 200 else "error" for r in during)
    print(
        f"\nRedis outage: {len(during)} of {len(records)} requests were sent after the kill, "
        f"{sum(1 for r in during if r[3] == 200)} served with 200; outcomes: {dict(outcomes)}"
    )
    assert not failures, f"{len(failures)} bad responses, e.g. {failures[:5]}"
    assert len(records) == issued
    assert len(during) >= 1


def test_redis_restarted_brings_invalidation_back_by_itself(cluster: Cluster) -> None:
    cluster.redis.kill()
    cluster.redis.start()  # same port, empty (nothing persisted)

    wait_both_resubscribed(cluster)
    before = warm(cluster, "5")
    purged = cluster.a.client.post("/purge/item:5")

    assert purged.status_code == 200, purged.text
    assert_dropped_on_both(cluster, "5", before)


def test_cli_purge_drops_the_entry_on_both_nodes(cluster: Cluster) -> None:
    before = warm(cluster, "3")
    script = Path(sys.executable).with_name("edgecache")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "edgecache.cli"]
    command += ["purge", "--tag", "item:3", "--redis-url", cluster.redis.url, "--namespace", NAMESPACE]

    done = subprocess.run(command, capture_output=True, text=True, timeout=30, cwd=ROOT, check=False)

    assert done.returncode == 0, done.stderr
    assert f"published on {CHANNEL}: 2 receiver(s)" in done.stdout, done.stdout
    assert_dropped_on_both(cluster, "3", before)


# -- races found here ----------------------------------------------------------------------------------------


def wait_breakers_closed(cluster: Cluster) -> None:
    """After a Redis outage a node's breaker stays open until a probe succeeds; writes made meanwhile
    reach only L1. Send requests until both nodes use L2 again."""

    def closed() -> bool:
        for node in cluster.nodes:
            node.get("/items/breaker-probe")
        return all(node.debug()["breaker"] == "closed" for node in cluster.nodes)

    wait_for(closed, RESUBSCRIBE_DEADLINE, "both L2 breakers closed", cluster)


def test_traffic_during_a_purge_never_brings_the_purged_entry_back(cluster: Cluster) -> None:
    wait_breakers_closed(cluster)
    stale = ""
    for round_ in range(3):
        item = f"6{round_}"
        path = f"/items/{item}"
        warm(cluster, item)
        tag = f"item:{item}"
        wait_for(functools.partial(l2_holds, cluster.redis, tag), PROPAGATION_DEADLINE, f"{tag} in L2")
        # A popular tag: 20,000 more members in its index (entries that have expired since), so the L2
        # purge takes tens of milliseconds instead of one; the requests below overlap it.
        with cluster.redis.admin_client() as client:
            (tag_key,) = client.scan_iter(match=f"{NAMESPACE}:g*:t:{tag_digest(tag)}")
            client.sadd(tag_key, *(uuid.uuid4().hex * 2 for _ in range(20_000)))
        stop = threading.Event()

        def traffic(node: Node, path: str = path, stop: threading.Event = stop) -> None:
            with node.new_client() as client:  # only-if-cached: reads both tiers, never fills
                while not stop.is_set():
                    client.get(path, headers=ONLY_IF_CACHED)

        with ThreadPoolExecutor(max_workers=4) as pool:
            running = [pool.submit(traffic, node) for node in (*cluster.nodes, *cluster.nodes)]
            try:
                assert publish(cluster.redis, {"id": uuid.uuid4().hex, "tags": [tag]}) == 2
                # How long the 20,000-member purge takes depends on the machine's load; what is checked is
                # what the nodes serve once it is done.
                wait_for(functools.partial(l2_clean, cluster.redis, tag), PROPAGATION_DEADLINE, "L2 purged")
            finally:
                stop.set()
            for future in running:
                future.result()
        # Nothing can refill it now (L2 is clean, only-if-cached never fills): both nodes must drop it.
        try:
            wait_dropped(cluster, item, BUG_DEADLINE)
        except AssertionError as error:
            stale = str(error)
            break
    assert not stale, f"a purged entry is still served from L1 after the purge completed: {stale}"


def test_after_a_redis_restart_l1_comes_back_only_on_the_current_generation(cluster: Cluster) -> None:
    mismatches: list[str] = []
    for _ in range(4):
        cluster.redis.kill()
        cluster.redis.start()
        wait_for(
            lambda: (
                all(not node.debug()["l1_bypass"] for node in cluster.nodes)
                and subscribers(cluster.redis) == 2
            ),
            RESUBSCRIBE_DEADLINE,
            "both nodes resubscribed with L1 in use",
            cluster,
        )
        with cluster.redis.admin_client() as client:
            token = client.get(f"{NAMESPACE}:generation")
        current = token.decode() if token is not None else None
        for node in cluster.nodes:
            state = node.debug()
            if not state["l1_bypass"] and state["generation"] != current:
                mismatches.append(f"node {node.name}: L1 in use on generation {state['generation']}")
        if mismatches:
            break
    assert not mismatches, f"Redis holds generation {current}: {mismatches}"


def test_purge_from_a_node_whose_breaker_is_open_still_reaches_l2(slow_breaker_nodes: Cluster) -> None:
    cluster = ready(slow_breaker_nodes)
    # Open A's breaker only: Redis down while A alone takes traffic (B takes none, so its breaker stays
    # closed), then Redis back, and both nodes on the generation it now holds.
    cluster.redis.kill()
    for i in range(10):
        assert cluster.a.get(f"/items/{90 + i}").status_code == 200
    cluster.redis.start()
    wait_both_resubscribed(cluster)

    def same_generation() -> bool:
        with cluster.redis.admin_client() as client:
            token = client.get(f"{NAMESPACE}:generation")
        return token is not None and all(n.debug()["generation"] == token.decode() for n in cluster.nodes)

    wait_for(same_generation, RESUBSCRIBE_DEADLINE, "both nodes on Redis's generation", cluster)
    states = {node.name: node.debug()["breaker"] for node in cluster.nodes}
    assert states == {"A": "open", "B": "closed"}, states  # the precondition
    filled = cluster.b.get("/items/7")  # B's breaker is closed: its fill reaches L2
    assert cache_status(filled) == "edgecache; fwd=uri-miss; stored"
    wait_for(lambda: l2_holds(cluster.redis, "item:7"), PROPAGATION_DEADLINE, "item 7 in L2", cluster)
    warm(cluster, "7")

    purged = cluster.a.client.post("/purge/item:7")  # A: L2 purge skipped (breaker), message claimed

    assert purged.status_code == 200, purged.text
    wait_dropped(cluster, "7", BUG_DEADLINE)  # B: L1 dropped, then the purged entry again from L2
