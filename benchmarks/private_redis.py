"""A private ``redis-server`` for the benchmarks: a free loopback port (never 6379), no persistence, stopped
by PID.

    with PrivateRedis(cpu="1") as redis_server:
        url = redis_server.url  # redis://127.0.0.1:<port>/0
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from types import TracebackType
from typing import IO

from benchmarks.reporting import stop_process

HOST = "127.0.0.1"
DEFAULT_PORT = 6379  # the machine's own Redis, if any: never used
START_TIMEOUT = 10.0  # seconds until the server must answer PING


class RedisUnavailable(Exception):
    """redis-server is missing, or did not start."""


def free_loopback_port() -> int:
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port: int = sock.getsockname()[1]
        if port != DEFAULT_PORT:
            return port
    raise RedisUnavailable("no free loopback port")


def _ping(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def pin_prefix(cpu: str | None) -> list[str]:
    """``taskset -c <cpu>`` when ``cpu`` is given, taskset exists and the machine has 2 CPUs or more."""
    taskset = shutil.which("taskset")
    if cpu is None or taskset is None or (os.cpu_count() or 1) < 2:
        return []
    return [taskset, "-c", cpu]


class PrivateRedis:
    """``redis-server --port N --bind 127.0.0.1 --save "" --appendonly no`` in a temporary directory."""

    def __init__(self, cpu: str | None = None) -> None:
        self.cpu = cpu
        self.port = free_loopback_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def command(self, binary: str, directory: str) -> list[str]:
        return [
            *pin_prefix(self.cpu),
            binary,
            "--port",
            str(self.port),
            "--bind",
            HOST,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            directory,
        ]

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisUnavailable(
                "'redis-server' is not on PATH (Debian/Ubuntu: apt-get install -y redis-server)"
            )
        self._dir = tempfile.TemporaryDirectory(prefix="edgecache-bench-redis-")
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server process
        self.proc = subprocess.Popen(
            self.command(binary, self._dir.name),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RedisUnavailable(
                    f"redis-server exited with code {self.proc.returncode}:\n{self.log_tail()}"
                )
            if _ping(self.port):
                return
            time.sleep(0.05)
        raise RedisUnavailable(f"redis-server did not answer PING within {START_TIMEOUT:.0f}s")

    def log_tail(self, limit: int = 2000) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")[-limit:]

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        log, self._log = self._log, None
        stop_process(proc, log)
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> PrivateRedis:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
