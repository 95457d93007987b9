"""`edgecache proxy` as a process: flags and their environment twins, and a graceful SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.servers import ROOT, UvicornServer, free_port


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgecache.cli", "proxy", *args],
        cwd=ROOT,
        check=False,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_help_documents_each_flag_with_its_default_and_environment_variable() -> None:
    done = _cli("--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    for env in (
        "EDGECACHE_UPSTREAM",
        "EDGECACHE_LISTEN",
        "EDGECACHE_ADMIN_LISTEN",
        "EDGECACHE_REDIS_URL",
        "EDGECACHE_NAMESPACE",
        "EDGECACHE_DEFAULT_TTL",
        "EDGECACHE_L1_MAX_BYTES",
        "EDGECACHE_MAX_REQUEST_BODY",
        "EDGECACHE_CONNECT_TIMEOUT",
        "EDGECACHE_READ_TIMEOUT",
        "EDGECACHE_TRUSTED_PROXIES",
        "EDGECACHE_PRESERVE_HOST",
        "EDGECACHE_SHUTDOWN_TIMEOUT",
        "EDGECACHE_ADMIN_TOKEN",
        "EDGECACHE_REPLICAS",
        "EDGECACHE_READ_YOUR_WRITES_WINDOW",
        "EDGECACHE_HEALTH_PATH",
        "EDGECACHE_HEALTH_INTERVAL",
        "EDGECACHE_HEALTH_TIMEOUT",
        "EDGECACHE_HEALTH_WINDOW",
        "EDGECACHE_HEALTH_THRESHOLD",
        "EDGECACHE_HEALTH_INITIAL",
        "EDGECACHE_UPSTREAM_BREAKER_FAILURES",
        "EDGECACHE_UPSTREAM_BREAKER_RESET",
    ):
        assert env in text
    assert "default 0" in text and "default 127.0.0.1:9901" in text


BASE = ["--upstream", "http://127.0.0.1:9", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--listen", "127.0.0.1:0"], {}, "--upstream"),
        (["--upstream", "http://127.0.0.1:9"], {}, "--listen"),
        ([*BASE, "--upstream", "ftp://x"], {}, "--upstream"),
        ([*BASE, "--upstream", "http://h/prefix"], {}, "--upstream"),
        ([*BASE, "--listen", "nowhere"], {}, "--listen"),
        ([*BASE, "--admin-listen", "h:99999"], {}, "--admin-listen"),
        ([*BASE, "--default-ttl", "soon"], {}, "--default-ttl"),
        ([*BASE, "--l1-max-bytes", "lots"], {}, "--l1-max-bytes"),
        ([*BASE, "--namespace", "bad space"], {}, "--namespace"),
        ([*BASE, "--redis-url", "http://r"], {}, "--redis-url"),
        ([*BASE, "--max-request-body", "-1"], {}, "--max-request-body"),
        ([*BASE, "--connect-timeout", "0"], {}, "--connect-timeout"),
        ([*BASE, "--read-timeout", "x"], {}, "--read-timeout"),
        ([*BASE, "--trusted-proxy", "not-an-ip"], {}, "--trusted-proxy"),
        ([*BASE], {"EDGECACHE_READ_TIMEOUT": "x"}, "EDGECACHE_READ_TIMEOUT"),
        ([*BASE], {"EDGECACHE_DEFAULT_TTL": "x"}, "EDGECACHE_DEFAULT_TTL"),
        ([*BASE], {"EDGECACHE_PRESERVE_HOST": "maybe"}, "EDGECACHE_PRESERVE_HOST"),
        ([*BASE, "--replica", "http://r/path"], {}, "--replica"),
        ([*BASE], {"EDGECACHE_REPLICAS": "http://r1:1, ftp://r2"}, "EDGECACHE_REPLICAS"),
        ([*BASE, "--read-your-writes-window", "-1"], {}, "--read-your-writes-window"),
        ([*BASE, "--health-path", "healthz"], {}, "--health-path"),
        ([*BASE, "--health-interval", "often"], {}, "--health-interval"),
        ([*BASE, "--health-timeout", "0"], {}, "--health-timeout"),
        ([*BASE, "--health-window", "0"], {}, "--health-window"),
        ([*BASE, "--health-window", "3", "--health-threshold", "4"], {}, "--health-threshold"),
        ([*BASE, "--health-initial", "9"], {}, "--health-initial"),
        ([*BASE, "--upstream-breaker-failures", "0"], {}, "--upstream-breaker-failures"),
        ([*BASE], {"EDGECACHE_UPSTREAM_BREAKER_RESET": "x"}, "EDGECACHE_UPSTREAM_BREAKER_RESET"),
    ],
)
def test_bad_values_exit_2_naming_the_flag(args: list[str], env: dict[str, str], named: str) -> None:
    done = _cli(*args, env=env)
    assert done.returncode == 2, done.stderr
    assert named in done.stderr


def test_upstream_options_reach_the_server_from_flags_and_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from edgecache import cli  # noqa: PLC0415
    from edgecache.proxy import server  # noqa: PLC0415
    from edgecache.proxy.upstreams import HealthConfig  # noqa: PLC0415

    seen: dict[str, Any] = {}
    monkeypatch.setattr(server, "run", lambda *args, **options: seen.update(options) or 0)
    monkeypatch.setenv("EDGECACHE_REPLICAS", "http://127.0.0.1:8001, http://127.0.0.1:8002")
    monkeypatch.setenv("EDGECACHE_HEALTH_THRESHOLD", "2")
    assert cli.main(["proxy", *BASE, "--health-path", "/healthz", "--read-your-writes-window", "2.5"]) == 0
    assert seen["replicas"] == ["http://127.0.0.1:8001", "http://127.0.0.1:8002"]
    assert seen["read_your_writes_window"] == 2.5
    assert seen["health"] == HealthConfig(path="/healthz", threshold=2)
    assert (seen["breaker_failures"], seen["breaker_reset"]) == (5, 5.0)
    assert cli.main(["proxy", *BASE, "--replica", "http://127.0.0.1:9001", "--health-interval", "0"]) == 0
    assert seen["replicas"] == ["http://127.0.0.1:9001"]  # the flag replaces the environment's list
    assert seen["health"].enabled is False


def test_the_cli_repeats_the_upstream_defaults_exactly() -> None:
    from edgecache import cli  # noqa: PLC0415
    from edgecache.proxy import upstreams  # noqa: PLC0415

    defaults = upstreams.HealthConfig()
    assert vars(cli._HEALTH) == {
        name: getattr(defaults, name) for name in ("path", "interval", "timeout", "window", "threshold")
    }
    assert cli.DEFAULT_READ_YOUR_WRITES_WINDOW == upstreams.DEFAULT_READ_YOUR_WRITES_WINDOW
    assert cli.DEFAULT_BREAKER_FAILURES == upstreams.DEFAULT_BREAKER_FAILURES
    assert cli.DEFAULT_BREAKER_RESET == upstreams.DEFAULT_BREAKER_RESET


@pytest.fixture
def upstream_process() -> Iterator[UvicornServer]:
    server = UvicornServer("tests.proxy.upstream:app", None, "--http", "h11")
    server.wait_ready()
    yield server
    server.stop()


def _wait_for(url: str, process: subprocess.Popen[str], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        try:
            httpx.get(url, timeout=0.5, trust_env=False)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise TimeoutError(url)


def test_sigterm_lets_the_in_flight_request_finish_then_exits_0(upstream_process: UvicornServer) -> None:
    port, admin = free_port(), free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgecache.cli",
            "proxy",
            "--upstream",
            upstream_process.url,
            "--listen",
            f"127.0.0.1:{port}",
            "--admin-listen",
            f"127.0.0.1:{admin}",
            "--connect-timeout",
            "2",  # the flag wins over the bad environment value
            "--shutdown-timeout",
            "5",
        ],
        cwd=ROOT,
        env={**os.environ, "EDGECACHE_CONNECT_TIMEOUT": "bogus", "EDGECACHE_ADMIN_TOKEN": "t"},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(f"http://127.0.0.1:{admin}/healthz", process)
        cached = [httpx.get(f"http://127.0.0.1:{port}/cacheable", trust_env=False) for _ in range(2)]
        assert "hit" in cached[1].headers["cache-status"]
        results: list[httpx.Response] = []
        slow = threading.Thread(
            target=lambda: results.append(
                httpx.get(f"http://127.0.0.1:{port}/slow?s=1.5", timeout=10, trust_env=False)
            )
        )
        slow.start()
        time.sleep(0.5)  # the request is in flight at the upstream
        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/plain", timeout=1, trust_env=False)  # no longer accepting
        slow.join(10)
        assert results and results[0].status_code == 200
        assert results[0].text == "slow done"
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()
