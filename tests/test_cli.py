"""The ``edgecache`` command line: ``--version`` and ``purge`` (against a real redis-server)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

import edgecache
from edgecache.cli import main
from edgecache.core.invalidation import parse_invalidation
from tests.redis_server import free_port

WITHIN = 5.0


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGECACHE_REDIS_URL", raising=False)
    monkeypatch.delenv("EDGECACHE_NAMESPACE", raising=False)


class Listener:
    """A plain redis-py subscriber, as any other service would run one."""

    def __init__(self, url: str, channel: str) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=WITHIN)
        self.pubsub = self.client.pubsub()  # type: ignore[no-untyped-call]
        self.pubsub.subscribe(channel)
        confirmation = self.pubsub.get_message(timeout=WITHIN)
        assert confirmation is not None
        assert confirmation["type"] == "subscribe"

    def next(self) -> dict[str, Any]:
        message: dict[str, Any] | None = self.pubsub.get_message(timeout=WITHIN)
        assert message is not None, "nothing published"
        return message

    def close(self) -> None:
        self.pubsub.close()
        self.client.close()


@pytest.fixture
def listen(redis_url: str) -> Iterator[Any]:
    listeners: list[Listener] = []

    def subscribe(channel: str = "edgecache:invalidate") -> Listener:
        listener = Listener(redis_url, channel)
        listeners.append(listener)
        return listener

    yield subscribe
    for listener in listeners:
        listener.close()


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"edgecache {edgecache.__version__}\n"


def test_console_script_entry_point() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "edgecache.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0
    assert done.stdout.strip() == f"edgecache {edgecache.__version__}"


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "purge" in capsys.readouterr().err


def test_purge_publishes_the_documented_json(
    redis_url: str, listen: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    listener = listen()
    argv = ["purge", "--tag", "product:42", "--tag", "user:7", "--path", "/products/42"]
    argv += ["--prefix", "/catalog/", "--id", "7f1c", "--redis-url", redis_url]
    assert main(argv) == 0

    message = listener.next()
    assert message["channel"] == b"edgecache:invalidate"
    expected = (
        b'{"id":"7f1c","tags":["product:42","user:7"],"paths":["/products/42"],'
        b'"prefixes":["/catalog/"],"soft":false}'
    )
    assert message["data"] == expected
    out = capsys.readouterr().out.splitlines()
    assert out[0].encode() == expected
    assert out[1] == "published on edgecache:invalidate: 1 receiver(s)"


def test_purge_options_from_the_environment(
    redis_url: str, listen: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EDGECACHE_REDIS_URL", redis_url)
    monkeypatch.setenv("EDGECACHE_NAMESPACE", "shop")
    listener = listen("shop:invalidate")
    assert main(["purge", "--all", "--soft"]) == 0
    data = listener.next()["data"]
    body = json.loads(data)
    assert body == {"id": body["id"], "soft": True, "all": True}
    assert len(body["id"]) == 32  # a random uuid4 hex
    assert parse_invalidation(data).everything
    assert "shop:invalidate: 1 receiver(s)" in capsys.readouterr().out


def test_purge_flags_beat_the_environment(
    redis_url: str, listen: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGECACHE_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")  # unreachable
    monkeypatch.setenv("EDGECACHE_NAMESPACE", "wrong")
    listener = listen("right:invalidate")
    assert main(["purge", "--tag", "t", "--namespace", "right", "--redis-url", redis_url]) == 0
    assert json.loads(listener.next()["data"])["tags"] == ["t"]


def test_purge_without_subscribers_warns(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["purge", "--tag", "t", "--redis-url", redis_url]) == 0
    captured = capsys.readouterr()
    assert "0 receiver(s)" in captured.out
    assert "no node is subscribed" in captured.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["purge"], "purge needs at least one of --tag, --path, --prefix or --all"),
        (["purge", "--soft"], "at least one of"),
        (["purge", "--path", "products/42"], "--path: paths must start with '/': 'products/42'"),
        (["purge", "--prefix", "catalog"], "--prefix: "),
        (["purge", "--tag", ""], "--tag: "),
        (["purge", "--tag", "t", "--id", ""], "--id: "),
        (["purge", "--tag", "t", "--id", "x" * 129], "--id: "),
        (["purge", *(["--tag", "t"] * 1001)], "at most 1000"),
        (["purge", "--tag", "t" * 70_000], "exceed"),
        (["purge", "--tag", "t", "--namespace", "bad namespace"], "--namespace"),
        (["purge", "--tag", "t", "--timeout", "0"], "--timeout"),
        (["purge", "--tag", "t", "--timeout", "soon"], "--timeout"),
        (["purge", "--tag", "t", "--redis-url", "http://localhost"], "--redis-url"),
        (["purge", "--bogus"], "unrecognized arguments: --bogus"),
        (["nonsense"], "invalid choice"),
    ],
)
def test_purge_bad_arguments_exit_2(
    argv: list[str], message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EDGECACHE_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")  # never reached
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.out == ""


def test_purge_needs_a_redis_url(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["purge", "--tag", "t"]) == 2
    assert "purge needs --redis-url or EDGECACHE_REDIS_URL" in capsys.readouterr().err


def test_purge_unreachable_redis_exits_1_quickly(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"redis://user:s3cret@127.0.0.1:{free_port()}/0"
    began = time.monotonic()
    assert main(["purge", "--tag", "t", "--redis-url", url]) == 1
    assert time.monotonic() - began < WITHIN
    captured = capsys.readouterr()
    assert "cannot publish to Redis at redis://user:***@127.0.0.1:" in captured.err
    assert "s3cret" not in captured.err
    assert captured.out == ""
