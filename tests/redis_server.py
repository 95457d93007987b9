"""A real, throwaway ``redis-server`` for tests: its own loopback port, no persistence, started and stopped
by the test suite (never the machine's shared instance, never a fake)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import redis

START_TIMEOUT = 10.0


class RedisServerError(RuntimeError):
    pass


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the test process dies, so a killed run leaks no server."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def free_port(below: int = 65536) -> int:
    """A free loopback port under ``below`` (a cluster node also needs port + 10000 for its bus)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port < below:
            return port
    raise RuntimeError(f"no free loopback port below {below}")


def free_cluster_port() -> int:
    while True:
        port = free_port(below=55536)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))  # the cluster bus port must be free too
            except OSError:
                continue
        return port


class RedisServer:
    """``start()`` / ``stop()`` / ``kill()`` / ``restart()`` one redis-server process on a fixed port.

    ``extra_args`` are appended to the command line (e.g. ``["--cluster-enabled", "yes"]``).
    """

    def __init__(self, port: int | None = None, extra_args: Sequence[str] = ()) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise RedisServerError(
                "redis-server is not on PATH: the Redis tests run against a real server "
                "(install it, e.g. `apt-get install redis-server`)"
            )
        self.executable = executable
        self.host = "127.0.0.1"
        self.port = port if port is not None else free_port()
        self.extra_args = list(extra_args)
        self._dir = Path(tempfile.mkdtemp(prefix=f"edgecache-redis-{self.port}-"))
        self.process: subprocess.Popen[bytes] | None = None
        self._paused_until = 0.0  # time.monotonic() when the last CLIENT PAUSE ends

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        if self.running:
            return
        command = [
            self.executable,
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(self._dir),
            "--logfile",
            str(self._dir / "redis.log"),
            *self.extra_args,
        ]
        self._reap()  # a process that exited by itself
        # Output to a file, not a pipe: no pipe object to leak if the server dies or is killed.
        with open(self._dir / "stderr.log", "ab") as stderr:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
            )
        self._wait_for_ping()

    def _wait_for_ping(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RedisServerError(f"redis-server exited at start:\n{self.log_tail()}")
            with contextlib.suppress(redis.RedisError, OSError), self.admin_client() as client:
                if client.ping():
                    return
            time.sleep(0.02)
        self.kill()
        raise RedisServerError(
            f"redis-server did not answer PING within {START_TIMEOUT}s:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 20) -> str:
        tail = []
        for name in ("redis.log", "stderr.log"):
            log = self._dir / name
            if log.exists():
                tail += log.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(tail)

    def admin_client(self) -> redis.Redis:
        """A synchronous client with short timeouts, for set-up and inspection."""
        return redis.Redis(host=self.host, port=self.port, socket_timeout=2.0, socket_connect_timeout=2.0)

    def stop(self, timeout: float = 5.0) -> None:
        """Graceful: SIGTERM (no persistence is configured, so nothing is written), then wait."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reap()

    def kill(self) -> None:
        """Abrupt: SIGKILL by PID, as a crash would."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._reap()

    def _reap(self) -> None:
        if self.process is not None:
            self.process.poll()
        self.process = None

    def restart(self) -> None:
        """Stop, then start again on the same port (the data is gone: nothing is persisted)."""
        self.stop()
        self.start()

    def pause(self, ms: int) -> None:
        """``CLIENT PAUSE <ms> ALL``: the server accepts connections and reads commands but answers none
        until the pause ends. Redis 7.0 holds every command meanwhile, ``CLIENT UNPAUSE`` included, so a
        pause cannot be cut short: keep it short, and ``wait_unpaused()`` before using the server again."""
        with self.admin_client() as client:
            client.execute_command("CLIENT", "PAUSE", ms, "ALL")
        self._paused_until = time.monotonic() + ms / 1000

    def wait_unpaused(self) -> None:
        remaining = self._paused_until - time.monotonic()
        if remaining > 0:
            time.sleep(remaining + 0.01)

    def reset(self) -> None:
        """Running, unpaused and empty: what each test starts from."""
        if self.running:
            self.wait_unpaused()
        else:
            self.start()
        self._paused_until = 0.0
        with self.admin_client() as client:
            client.flushall()

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
