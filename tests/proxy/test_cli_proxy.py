"""`edgecache proxy` as a process: flags and their environment twins, and a graceful SIGTERM."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgecache.cli import _proxy_sources, build_parser
from edgecache.config import OPTION_NAMES, SECRET_OPTIONS, ConfigError, Settings, first_value
from tests.proxy.processes import ProxyProcess, run_proxy_cli
from tests.servers import ROOT, UvicornServer, free_port


def test_help_documents_each_flag_with_its_default_and_environment_variable() -> None:
    done = run_proxy_cli("--help")
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


def _proxy_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    proxy: argparse.ArgumentParser = subparsers.choices["proxy"]
    return proxy


def test_help_documents_every_option_its_variable_and_its_default() -> None:
    options = [a for a in _proxy_parser()._actions if a.option_strings and a.dest != "help"]
    assert {a.dest for a in options} >= set(OPTION_NAMES) - SECRET_OPTIONS  # every cache option has a flag
    for action in options:
        text = " ".join((action.help or "").split())
        assert f"$EDGECACHE_{action.dest.upper()}" in text, action.dest
        assert "default" in text or "required" in text, action.dest
    done = run_proxy_cli("--help")
    text = " ".join(done.stdout.split())
    assert "--stale-if-error" in text and "top-level key" in text
    for secret in SECRET_OPTIONS:  # no flag (it would show in `ps`), only its variable
        assert f"--{secret.replace('_', '-')} " not in text
        assert f"environment only: $EDGECACHE_ADMIN_TOKEN, $EDGECACHE_{secret.upper()}" in text


def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("EDGECACHE_"):
            monkeypatch.delenv(name)


def test_flags_then_environment_then_file_then_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _clean_environment(monkeypatch)
    path = tmp_path / "proxy.toml"
    path.write_text(
        'upstream = "http://127.0.0.1:9"\nconnect_timeout = 1\nread_timeout = 2\nshutdown_timeout = 3\n'
        'trusted_proxies = ["10.0.0.0/8"]\npreserve_host = true\nreplicas = ["http://127.0.0.1:8001"]\n'
        "health_window = 4\nhealth_interval = 7\n"
        "default_ttl = 4\nkeep_ttl = 5\nstale_if_error = 6\ncoalesce = false\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("EDGECACHE_CONFIG", str(path))
    for name, value in {"READ_TIMEOUT": "20", "SHUTDOWN_TIMEOUT": "30", "DEFAULT_TTL": "40"}.items():
        monkeypatch.setenv(f"EDGECACHE_{name}", value)
    monkeypatch.setenv("EDGECACHE_KEEP_TTL", "50")
    monkeypatch.setenv("EDGECACHE_HEALTH_INTERVAL", "8")
    monkeypatch.setenv("EDGECACHE_LISTEN", "")  # set but empty counts as unset
    argv = ["proxy", "--shutdown-timeout", "300", "--default-ttl", "400", "--coalesce"]
    sources = _proxy_sources(build_parser().parse_args(argv))

    file = f"config file {path}: key "
    assert first_value("shutdown_timeout", sources) == ("300", "--shutdown-timeout")
    assert first_value("read_timeout", sources) == ("20", "environment variable EDGECACHE_READ_TIMEOUT")
    assert first_value("connect_timeout", sources) == (1, file + "connect_timeout")
    assert first_value("trusted_proxies", sources) == (["10.0.0.0/8"], file + "trusted_proxies")
    assert first_value("preserve_host", sources) == (True, file + "preserve_host")
    assert first_value("replicas", sources) == (["http://127.0.0.1:8001"], file + "replicas")
    assert first_value("health_window", sources) == (4, file + "health_window")
    assert first_value("health_interval", sources) == ("8", "environment variable EDGECACHE_HEALTH_INTERVAL")
    assert first_value("listen", sources) is None  # the default applies
    settings = Settings.from_sources(sources)
    assert (settings.default_ttl, settings.keep_ttl, settings.stale_if_error) == (400, 50, 6)
    assert settings.coalesce is True  # --coalesce beats the file's false
    assert settings.stale_while_revalidate == 0


def test_the_file_may_hold_only_known_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _clean_environment(monkeypatch)
    path = tmp_path / "proxy.toml"
    path.write_text("conect_timeout = 1\n", encoding="utf-8")
    args = build_parser().parse_args(["proxy", "--config", str(path)])
    with pytest.raises(ConfigError, match=r"unknown key 'conect_timeout' \(did you mean connect_timeout\?\)"):
        _proxy_sources(args)
    path.write_text("preserve_host = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="key preserve_host: expected true or false, got an integer"):
        _proxy_sources(args)
    path.write_text("connect_timeout = [1]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="key connect_timeout: expected a string or a number, got an array"):
        _proxy_sources(args)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('upstream = "ftp://x"\n', "key upstream: "),
        ('listen = "nowhere"\n', "key listen: expected HOST:PORT"),
        ("connect_timeout = 0\n", "key connect_timeout: expected a positive number"),
        ('trusted_proxies = ["not-an-ip"]\n', "key trusted_proxies: "),
        ('namespace = "bad space"\n', "(set by config file"),
        ("nonsense = 1\n", "unknown key 'nonsense'"),
        ('admin_token = "t"\n', "key admin_token: not read from files; set $EDGECACHE_ADMIN_TOKEN"),
        ("default_ttl = \n", "not valid TOML"),
    ],
)
def test_bad_config_files_exit_2_naming_the_file_and_key(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "bad.toml"
    base = {"upstream": '"http://127.0.0.1:9"', "listen": '"127.0.0.1:0"'}
    lines = [f"{key} = {value}\n" for key, value in base.items() if not text.startswith(key)]
    path.write_text("".join(lines) + text, encoding="utf-8")
    done = run_proxy_cli("--config", str(path), "--admin-listen", "127.0.0.1:0")
    assert done.returncode == 2, done.stderr
    assert f"config file {path}" in done.stderr and named in done.stderr


def test_a_missing_config_file_exits_2(tmp_path: Path) -> None:
    done = run_proxy_cli("--config", str(tmp_path / "absent.toml"), *BASE)
    assert done.returncode == 2
    assert f"config file {tmp_path / 'absent.toml'}: cannot read it" in done.stderr


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
    done = run_proxy_cli(*args, env=env)
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
    # A bounded graceful shutdown: a test may leave a /slow request in flight at the upstream.
    server = UvicornServer(
        "tests.proxy.upstream:app", None, "--http", "h11", "--timeout-graceful-shutdown", "1"
    )
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


def test_a_proxy_configured_by_file_and_environment(tmp_path: Path, upstream_process: UvicornServer) -> None:
    unused, listen = free_port(), free_port()
    path = tmp_path / "proxy.toml"
    path.write_text(
        f'upstream = "{upstream_process.url}"\nlisten = "127.0.0.1:{unused}"\n'
        'admin_listen = "127.0.0.1:0"\ndefault_ttl = 60\nshutdown_timeout = 1\n',
        encoding="utf-8",
    )
    # The environment's listen wins over the file's; the file's default_ttl makes /plain cacheable.
    proxy = ProxyProcess(
        env={"EDGECACHE_CONFIG": str(path), "EDGECACHE_LISTEN": f"127.0.0.1:{listen}"}, listen=False
    )
    proxy.port = listen
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proxy.process.poll() is None, proxy.stderr()
            try:
                first = httpx.get(proxy.url + "/plain", timeout=2, trust_env=False)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        second = httpx.get(proxy.url + "/plain", timeout=2, trust_env=False)
        assert first.text == second.text
        assert "hit" in second.headers["cache-status"]
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{unused}/plain", timeout=1, trust_env=False)
    finally:
        proxy.stop()
    assert proxy.process.returncode == 0


def test_sigterm_exits_within_the_bound_when_a_request_outlasts_it(upstream_process: UvicornServer) -> None:
    proxy = ProxyProcess("--upstream", upstream_process.url, "--shutdown-timeout", "1")
    try:
        proxy.wait_ready()
        outcome: list[object] = []

        def slow() -> None:
            try:
                outcome.append(httpx.get(proxy.url + "/slow?s=60", timeout=30, trust_env=False))
            except httpx.TransportError as error:
                outcome.append(error)

        thread = threading.Thread(target=slow)
        thread.start()
        time.sleep(0.5)  # the request is in flight at the upstream
        started = time.monotonic()
        proxy.terminate()
        # The bound is 1 s; the rest is slack for a loaded machine, far below the request's 60 s.
        assert proxy.process.wait(timeout=15) == 0
        assert time.monotonic() - started < 15
        thread.join(15)
        assert outcome and not (isinstance(outcome[0], httpx.Response) and outcome[0].status_code == 200)
    finally:
        proxy.stop()
