"""``edgecache bench load``: Cache-Status parsing, the loopback guard, and runs against real servers."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis

from edgecache.cli import main
from edgecache.lab.load import RemoteTarget, check_target, drive, drive_app, parse_cache_status
from edgecache.lab.traces import TraceSpec, generate
from tests.servers import UvicornServer

APP = "tests.lab.apps:app"


@pytest.mark.parametrize(
    ("value", "outcome", "collapsed"),
    [
        ("edgecache; hit; ttl=42; detail=l1", "l1", False),
        ("edgecache; hit; ttl=9; detail=l2", "l2", False),
        ("edgecache; hit; ttl=-3; detail=stale-while-revalidate", "stale", False),
        ("edgecache; hit; ttl=-3; detail=max-stale", "stale", False),
        ("edgecache; fwd=stale; fwd-status=503; detail=stale-if-error", "stale", False),
        ("edgecache; fwd=uri-miss; stored", "miss", False),
        ("edgecache; fwd=uri-miss; collapsed", "miss", True),
        ("edgecache; fwd=stale; fwd-status=304; ttl=60; stored; detail=revalidated", "miss", False),
        ("edgecache; fwd=bypass; detail=request-authorization", "bypass", False),
        ("edgecache; fwd=method; detail=method", "bypass", False),
        ("CDN; hit, edgecache; fwd=uri-miss; stored", "miss", False),  # our member, not the CDN's
        ('"edgecache"; hit; detail="l1"', "l1", False),
    ],
)
def test_cache_status_outcomes(value, outcome, collapsed):
    status = parse_cache_status(value)
    assert status is not None
    assert (status.outcome, status.collapsed) == (outcome, collapsed)


@pytest.mark.parametrize("value", [None, "", "CDN; hit", "varnish; fwd=miss"])
def test_no_edgecache_member(value):
    assert parse_cache_status(value) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000",
        "http://127.9.9.9/",
        "http://localhost:1",
        "http://[::1]:80",
        "https://127.0.0.1",
    ],
)
def test_loopback_targets_are_allowed(url):
    assert check_target(url) == url.rstrip("/")


@pytest.mark.parametrize(
    "url", ["http://10.0.0.1:8000", "http://example.com", "http://127.0.0.1.nip.io", "http://[2001:db8::1]/"]
)
def test_remote_targets_are_refused_unless_allowed(url):
    with pytest.raises(RemoteTarget, match="--allow-remote"):
        check_target(url)
    assert check_target(url, allow_remote=True)


def test_cli_refuses_a_remote_target_before_sending_anything(capsys):
    # 192.0.2.1 (TEST-NET-1) is not routable: were a request sent, the run would fail, not exit 2 at once.
    assert main(["bench", "load", "--url", "http://192.0.2.1:9", "--requests", "5", "--no-progress"]) == 2
    assert "not a loopback address" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "needs --url URL or --app"),
        (["--url", "ftp://127.0.0.1/"], "not an http"),
        (["--app", APP, "--concurrency", "0"], "at least 1"),
        (["--app", APP, "--duration", "0"], "positive"),
        (["--app", "tests.lab.nowhere:app"], "--app"),
    ],
)
def test_usage_errors(capsys, argv, message):
    assert main(["bench", "load", "--requests", "5", "--no-progress", *argv]) == 2
    assert message in capsys.readouterr().err


async def test_in_process_app_every_key_fetched_once():
    trace = generate(TraceSpec(keys=30, requests=300, alpha=0.9, seed=4))
    report = await drive_app(APP, trace, requests=300, duration=60.0, concurrency=4)
    assert report.requests == 300
    assert report.statuses == {200: 300}
    distinct = len(set(trace.keys))
    # Concurrent first requests for one key collapse onto one fetch: the leaders are the distinct keys.
    assert report.outcomes["miss"] - report.collapsed == distinct
    assert report.outcomes["l1"] + report.outcomes["miss"] == 300
    assert report.hit_ratio_bound == 1 - distinct / 300
    data: Any = report.as_dict()
    assert data["hit_ratio"] == pytest.approx(report.outcomes["l1"] / 300)
    assert data["hit_ratio_by_tier"] == {"l1": data["hit_ratio"], "l2": 0.0}
    assert len(report.latencies) == 300
    assert 0 < data["latency_ms"]["p50"] <= data["latency_ms"]["p99"] <= data["latency_ms"]["max"]


async def test_duration_bounds_the_run():
    trace = generate(TraceSpec(keys=10, requests=1_000_000, seed=1))
    report = await drive_app(APP, trace, requests=1_000_000, duration=0.5, concurrency=2)
    assert 0 < report.requests < 1_000_000
    assert report.seconds < 10


async def test_unreachable_target_counts_errors():
    from tests.servers import free_port  # noqa: PLC0415

    trace = generate(TraceSpec(keys=5, requests=5))
    report = await drive(f"http://127.0.0.1:{free_port()}", trace, requests=5, duration=10, concurrency=1)
    assert report.outcomes["error"] == 5
    assert "ConnectError" in report.errors[0]


def test_cli_app_json(capsys):
    argv = ["bench", "load", "--app", APP, "--keys", "20", "--requests", "100", "--concurrency", "2"]
    assert main([*argv, "--json", "--no-progress"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["requests"] == 100
    assert set(data) >= {"hit_ratio", "hit_ratio_by_tier", "stale_share", "collapsed_share", "latency_ms",
                         "requests_per_s", "outcomes", "statuses"}  # fmt: skip
    assert data["outcomes"]["l1"] >= 100 - 2 * 20


@pytest.fixture
def two_nodes(redis_url):
    """Two uvicorn processes serving the test app with one Redis L2 (and one key host: two ports)."""
    env = {"EDGECACHE_REDIS_URL": redis_url, "EDGECACHE_KEY_HOST": "lab.test"}
    nodes = [UvicornServer(APP, env) for _ in range(2)]
    try:
        for node in nodes:
            node.wait_ready()
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def test_hits_per_tier_across_two_nodes(two_nodes, redis_url, capsys):
    a, b = two_nodes
    argv = ["bench", "load", "--keys", "25", "--requests", "200", "--seed", "3", "--json", "--no-progress"]
    assert main([*argv, "--url", a.url]) == 0
    first = json.loads(capsys.readouterr().out)
    distinct = len(set(generate(TraceSpec(keys=25, requests=200, seed=3)).keys))
    # Every key reaches the app at least once. Not exactly once: until A's invalidation subscriber is
    # connected its L1 is bypassed, and a repeat that comes before the write-behind reached Redis misses.
    assert first["outcomes"]["miss"] >= distinct
    assert first["outcomes"]["l1"] + first["outcomes"]["l2"] + first["outcomes"]["miss"] == 200
    # B starts cold in L1 once A's write-behind reached Redis: each key's first request there is an L2 hit.
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 10
    while client.dbsize() < distinct and time.monotonic() < deadline:
        time.sleep(0.05)
    client.close()
    assert main([*argv, "--url", b.url, "--concurrency", "1"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["outcomes"]["miss"] == 0
    assert second["outcomes"]["l2"] >= distinct
    assert second["outcomes"]["l1"] + second["outcomes"]["l2"] == 200
    assert second["hit_ratio"] == 1.0


def test_cli_replays_a_log_against_the_app(capsys, tmp_path):
    log = tmp_path / "access.log"
    line = '10.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET /lab/{k}?utm_source={i} HTTP/1.1" 200 100\n'
    log.write_text("".join(line.format(k=i % 5, i=i) for i in range(60)) + 'broken "line\n')
    argv = [
        "bench",
        "load",
        "--app",
        APP,
        "--trace",
        "log",
        "--log-file",
        str(log),
        "--query-ignore",
        "utm_*",
    ]
    assert main([*argv, "--concurrency", "1", "--json", "--no-progress"]) == 0
    data = json.loads(capsys.readouterr().out)
    # the logged paths with utm_* dropped: 5 distinct URLs, each fetched once, then served from L1
    assert data["requests"] == 60
    assert (data["outcomes"]["miss"], data["outcomes"]["l1"]) == (5, 55)
    assert data["hit_ratio"] == data["hit_ratio_bound"] == round(55 / 60, 6)


def test_cli_unreachable_target_exits_1(capsys):
    from tests.servers import free_port  # noqa: PLC0415

    url = f"http://127.0.0.1:{free_port()}"
    assert main(["bench", "load", "--url", url, "--requests", "3", "--no-progress", "--timeout", "2"]) == 1
    assert f"every request to {url} failed" in capsys.readouterr().err


def test_path_prefix(capsys):
    argv = ["bench", "load", "--app", APP, "--keys", "5", "--requests", "20", "--path-prefix", "/other/"]
    assert main([*argv, "--json", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["statuses"] == {"404": 20}  # the test app serves /lab/ only
    assert main([*argv[:-1], "other", "--no-progress"]) == 2
    assert "--path-prefix must start with /" in capsys.readouterr().err
