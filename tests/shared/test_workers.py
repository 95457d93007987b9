"""Several uvicorn workers on one machine: ``uvicorn --workers 2`` (real processes sharing one listening
socket) serving ``tests/shared/node_app.py`` with ``redis_url`` set. Each worker is a node of its own (its own
L1, subscriber and generation watch); L2 and the invalidation channel make them one cache.

Which worker takes a connection is the kernel's choice, so the test opens a fresh connection per request
until both workers have answered (``X-Served-By`` names the worker; bounded in count and time), and asserts on
``Cache-Status`` and on the body, which names the worker whose app produced it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.servers import ROOT, free_port

WORKERS = 2
HOST = "shop.test"
MAX_REQUESTS = 400  # per round of "until every worker has answered"
ROUND_DEADLINE = 30.0
PROPAGATION_DEADLINE = 10.0


class Workers:
    """``uvicorn --workers 2`` in a session of its own; stopped by its PID (uvicorn stops its workers), and
    the session's process group by its id if anything is left."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        command = [sys.executable, "-m", "uvicorn", "tests.shared.node_app:app", "--workers", str(WORKERS)]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**os.environ, **env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_listening(self) -> None:
        deadline = time.monotonic() + ROUND_DEADLINE
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"uvicorn exited ({self.process.returncode}):\n{self.log_tail()}")
            try:
                self.get("/healthz")
                return
            except httpx.TransportError:
                assert time.monotonic() < deadline, f"uvicorn did not listen\n{self.log_tail()}"
                time.sleep(0.05)

    def get(self, path: str) -> httpx.Response:
        """One request on a connection of its own, so that any worker may take it."""
        with httpx.Client(base_url=self.url, headers={"host": HOST}, timeout=10.0) as client:
            response = client.get(path)
        assert response.status_code == 200, (path, response.status_code, response.text)
        return response

    def until_every_worker(
        self, path: str, done: Callable[[dict[int, list[httpx.Response]]], bool]
    ) -> dict[int, list[httpx.Response]]:
        """GET ``path`` on fresh connections, four at a time, until ``done(responses by worker)``; bounded."""
        seen: dict[int, list[httpx.Response]] = {}
        deadline = time.monotonic() + ROUND_DEADLINE
        sent = 0
        with ThreadPoolExecutor(4) as pool:
            while not done(seen):
                assert sent < MAX_REQUESTS and time.monotonic() < deadline, (
                    f"not every worker answered {path}: {sorted(seen)}\n{self.log_tail()}"
                )
                for response in pool.map(self.get, [path] * 4):
                    seen.setdefault(int(response.headers["x-served-by"]), []).append(response)
                sent += 4
        return seen

    def log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        # A worker the supervisor left behind: it is in the session started above, whose group id is its PID.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


@pytest.fixture
def namespace() -> str:
    return f"w{uuid.uuid4().hex[:12]}"


@pytest.fixture
def workers(redis_url: str, namespace: str) -> Iterator[Workers]:
    log_dir = Path(tempfile.mkdtemp(prefix="edgecache-workers-"))
    server = Workers(
        {"EDGECACHE_REDIS_URL": redis_url, "EDGECACHE_NAMESPACE": namespace, "EDGECACHE_REDIS_TIMEOUT": "1"},
        log_dir / "uvicorn.log",
    )
    try:
        # Ready: both workers answer, and both are subscribed to the invalidation channel.
        server.wait_listening()
        server.until_every_worker("/healthz", lambda seen: len(seen) == WORKERS)
        deadline = time.monotonic() + ROUND_DEADLINE
        with redis.Redis.from_url(redis_url, socket_timeout=5) as client:
            while client.pubsub_numsub(f"{namespace}:invalidate")[0][1] < WORKERS:
                assert time.monotonic() < deadline, f"the workers did not subscribe\n{server.log_tail()}"
                time.sleep(0.05)
        yield server
    finally:
        server.stop()


def body(response: httpx.Response) -> dict[str, Any]:
    data: dict[str, Any] = response.json()
    return data


def test_workers_share_fills_through_l2_and_a_raw_publish_drops_the_entry_in_every_worker(
    workers: Workers, redis_url: str, namespace: str
) -> None:
    first = workers.get("/items/1")
    assert "fwd=uri-miss" in first.headers["cache-status"] and "stored" in first.headers["cache-status"]
    filler = int(first.headers["x-served-by"])
    assert body(first)["pid"] == filler
    wait_for_l2_entries(redis_url, namespace, 1)  # L2 writes are queued off the request path

    # Until the other worker answers from its own L1: before that it had the entry from L2 (requests go four
    # at a time, so their order within a round is not known), and every body is the one the filling worker's
    # app produced.
    def other_has_it_in_l1(seen: dict[int, list[httpx.Response]]) -> bool:
        return any(
            "detail=l1" in r.headers["cache-status"] for pid, rs in seen.items() if pid != filler for r in rs
        )

    seen = workers.until_every_worker("/items/1", other_has_it_in_l1)
    other = next(pid for pid in seen if pid != filler)
    statuses = [r.headers["cache-status"] for r in seen[other]]
    assert all("; hit" in status for status in statuses), statuses
    assert any("detail=l2" in status for status in statuses), statuses
    assert all(body(r) == body(first) for responses in seen.values() for r in responses)

    # A raw PUBLISH of the documented JSON, as redis-cli would send it.
    message = json.dumps({"id": f"raw-{uuid.uuid4().hex}", "tags": ["item:1"]})
    with redis.Redis.from_url(redis_url, socket_timeout=5) as client:
        assert client.publish(f"{namespace}:invalidate", message) == WORKERS

    # Both workers dropped it: once each has applied the message, neither serves the old body again.
    def applied(seen: dict[int, list[httpx.Response]]) -> bool:
        return len(seen) == WORKERS and all(
            body(responses[-1])["shared_counters"].get("messages_applied") == 1 for responses in seen.values()
        )

    deadline = time.monotonic() + PROPAGATION_DEADLINE
    while not applied(workers.until_every_worker("/debug", lambda seen: len(seen) == WORKERS)):
        assert time.monotonic() < deadline, "the workers did not both apply the message"
    after = workers.until_every_worker("/items/1", lambda seen: len(seen) == WORKERS)
    responses = [r for rs in after.values() for r in rs]
    assert all(body(r) != body(first) for r in responses), "an old copy was served after the purge"


def wait_for_l2_entries(redis_url: str, namespace: str, count: int) -> None:
    deadline = time.monotonic() + PROPAGATION_DEADLINE
    with redis.Redis.from_url(redis_url, socket_timeout=5) as client:
        while len(list(client.scan_iter(match=f"{namespace}:g*:e:*"))) < count:
            assert time.monotonic() < deadline, "the fill did not reach L2"
            time.sleep(0.02)
