"""Two `edgecache proxy` processes sharing a private redis-server: L2 hits across proxies, purges on both."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.proxy.processes import ProxyProcess
from tests.servers import UvicornServer

TOKEN = "s3cret"
WAIT = 10.0  # seconds a write-behind or an invalidation message may take on a loaded machine


@pytest.fixture
def upstream_process() -> Iterator[UvicornServer]:
    server = UvicornServer("tests.proxy.upstream:app", None, "--http", "h11")
    server.wait_ready()
    yield server
    server.stop()


@pytest.fixture
def two_proxies(
    redis_url: str, upstream_process: UvicornServer
) -> Iterator[tuple[ProxyProcess, ProxyProcess]]:
    args = ("--upstream", upstream_process.url, "--redis-url", redis_url, "--shutdown-timeout", "2")
    proxies = [ProxyProcess(*args, env={"EDGECACHE_ADMIN_TOKEN": TOKEN}) for _ in range(2)]
    try:
        for proxy in proxies:
            proxy.wait_ready()
        yield proxies[0], proxies[1]
    finally:
        for proxy in proxies:
            proxy.stop()


def explain(proxy: ProxyProcess, path: str) -> dict[str, Any]:
    response = httpx.get(
        proxy.admin_url + "/explain",
        params={"url": path},
        headers={"Authorization": f"Bearer {TOKEN}"},
        trust_env=False,
    )
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    return report


def wait_until(what: str, condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"not within {WAIT}s: {what}"
        time.sleep(0.05)


def tier(proxy: ProxyProcess, path: str) -> str | None:
    variants = explain(proxy, path)["variants"]
    return variants[0]["tier"] if variants else None


def test_a_fill_through_one_proxy_is_an_l2_hit_through_the_other_and_a_purge_drops_it_on_both(
    two_proxies: tuple[ProxyProcess, ProxyProcess],
) -> None:
    a, b = two_proxies
    first = httpx.get(a.url + "/cacheable", trust_env=False)
    assert first.text == "cached 1" and "fwd=uri-miss; stored" in first.headers["cache-status"]
    wait_until("A's write reaches Redis", lambda: tier(b, "/cacheable") == "l2")  # B's L1 has nothing

    through_b = httpx.get(b.url + "/cacheable", trust_env=False)
    assert through_b.text == "cached 1"  # not a second upstream fetch
    assert "hit" in through_b.headers["cache-status"] and "detail=l2" in through_b.headers["cache-status"]
    assert tier(b, "/cacheable") == "both"  # the L2 hit was copied into B's L1
    assert tier(a, "/cacheable") == "both"

    purge = httpx.post(
        a.admin_url + "/purge",
        headers={"Authorization": f"Bearer {TOKEN}"},
        json={"id": "purge-1", "paths": ["/cacheable"]},
        trust_env=False,
    )
    assert purge.status_code == 200, purge.text
    wait_until(
        "the purge reaches both proxies",
        lambda: all(explain(proxy, "/cacheable")["stored"] == "nothing" for proxy in (a, b)),
    )

    refetched = httpx.get(b.url + "/cacheable", trust_env=False)
    assert refetched.text == "cached 2"
    assert "fwd=uri-miss" in refetched.headers["cache-status"]
