"""A real, throwaway ``redis-server`` for tests: its own loopback port, no persistence, started and stopped
by the test suite (never the machine's shared instance, never a fake)."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Self

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

    ``extra_args`` are appended to the command line (e.g. ``["--cluster-enabled", "yes"]``). ``config``, if
    given, is written to a file in the server's directory and passed first (a sentinel needs a config file
    it can rewrite).
    """

    def __init__(
        self, port: int | None = None, extra_args: Sequence[str] = (), config: str | None = None
    ) -> None:
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
        self.config_file: Path | None = None
        if config is not None:
            self.config_file = self._dir / "redis.conf"
            self.config_file.write_text(config)
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
            *([str(self.config_file)] if self.config_file is not None else []),
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


CLUSTER_SLOTS = 16384


def wait_until(condition: Callable[[], bool], what: str, within: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + within
    while True:
        with contextlib.suppress(redis.RedisError, OSError):
            if condition():
                return
        if time.monotonic() > deadline:
            raise RedisServerError(f"{what}: not within {within}s")
        time.sleep(0.05)


class _Group:
    """Servers started as one deployment: a start that fails part-way cleans up what it started."""

    def start(self) -> None:
        raise NotImplementedError

    def cleanup(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


class LocalCluster(_Group):
    """A Redis Cluster of ``size`` masters on loopback, slots split evenly, formed by hand (CLUSTER MEET,
    ADDSLOTSRANGE) the way ``redis-cli --cluster create`` does it; no replicas."""

    def __init__(self, size: int = 3) -> None:
        self.servers = [
            RedisServer(
                port=free_cluster_port(),
                extra_args=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"],
            )
            for _ in range(size)
        ]

    @property
    def url(self) -> str:
        """One node's URL, as a deployment would give it (the cluster client finds the others)."""
        return f"redis://{self.servers[0].host}:{self.servers[0].port}"

    def start(self) -> None:
        for server in self.servers:
            server.start()
        first = self.servers[0]
        size = len(self.servers)
        for index, server in enumerate(self.servers):
            with server.admin_client() as admin:
                if index:
                    admin.execute_command("CLUSTER", "MEET", first.host, first.port)
                low = CLUSTER_SLOTS * index // size
                high = CLUSTER_SLOTS * (index + 1) // size - 1
                admin.execute_command("CLUSTER", "ADDSLOTSRANGE", low, high)
        for server in self.servers:
            wait_until(functools.partial(self._formed, server), f"cluster node {server.port} formed")

    def _formed(self, server: RedisServer) -> bool:
        with server.admin_client() as admin:
            info = admin.cluster("INFO")
        return bool(info["cluster_state"] == "ok" and int(info["cluster_known_nodes"]) == len(self.servers))

    def node_for_slot(self, slot: int) -> RedisServer:
        return self.servers[slot * len(self.servers) // CLUSTER_SLOTS]

    def keyslot(self, key: str) -> int:
        with self.servers[0].admin_client() as admin:
            return int(admin.execute_command("CLUSTER", "KEYSLOT", key))

    def reset(self) -> None:
        for server in self.servers:
            with server.admin_client() as admin:
                admin.flushall()

    def move_slot(self, slot: int, to: RedisServer, probe_key: str) -> None:
        """Give an empty ``slot`` to node ``to`` (CLUSTER SETSLOT … NODE on every node, the new owner first),
        and wait until every node redirects ``probe_key`` (a key in that slot) there."""
        with to.admin_client() as admin:
            node_id = admin.execute_command("CLUSTER", "MYID")
        for server in sorted(self.servers, key=lambda server: server is not to):
            with server.admin_client() as admin:
                admin.execute_command("CLUSTER", "SETSLOT", slot, "NODE", node_id)

        def agreed() -> bool:
            for server in self.servers:
                with server.admin_client() as admin:
                    try:
                        admin.get(probe_key)
                    except redis.ResponseError as moved:
                        if not str(moved).endswith(f":{to.port}"):
                            return False
                    else:
                        if server is not to:
                            return False
            return True

        wait_until(agreed, f"slot {slot} moved to {to.port}")

    def cleanup(self) -> None:
        for server in self.servers:
            server.cleanup()


class SentinelDeployment(_Group):
    """A master, ``replicas`` replicas and ``sentinels`` sentinels watching them as ``service``, all on
    loopback. Sentinel timings are short so that a forced failover completes in a second or two."""

    def __init__(self, service: str = "edgecache-test", replicas: int = 1, sentinels: int = 2) -> None:
        self.service = service
        self.master = RedisServer()
        self.replicas = [
            RedisServer(extra_args=["--replicaof", self.master.host, str(self.master.port)])
            for _ in range(replicas)
        ]
        config = (
            f"sentinel monitor {service} {self.master.host} {self.master.port} 1\n"
            f"sentinel down-after-milliseconds {service} 1000\n"
            f"sentinel failover-timeout {service} 5000\n"
            f"sentinel parallel-syncs {service} 1\n"
        )
        self.sentinels = [RedisServer(extra_args=["--sentinel"], config=config) for _ in range(sentinels)]

    @property
    def url(self) -> str:
        hosts = ",".join(f"{s.host}:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}"

    @property
    def data_servers(self) -> list[RedisServer]:
        return [self.master, *self.replicas]

    def start(self) -> None:
        self.master.start()
        for replica in self.replicas:
            replica.start()
        for replica in self.replicas:
            wait_until(functools.partial(self._in_sync, replica), f"replica {replica.port} in sync")
        for sentinel in self.sentinels:
            sentinel.start()
        self.wait_settled()

    @staticmethod
    def _in_sync(replica: RedisServer) -> bool:
        with replica.admin_client() as admin:
            return bool(admin.info("replication").get("master_link_status") == "up")

    def current_master(self) -> RedisServer:
        """The server the first sentinel names as the master."""
        with self.sentinels[0].admin_client() as admin:
            _, port = admin.sentinel_get_master_addr_by_name(self.service)
        return next(s for s in self.data_servers if s.port == int(port))

    def wait_settled(self, within: float = 20.0) -> None:
        """Every sentinel names the same master and knows every replica and the other sentinels; the master
        has every replica connected, and each replica's link to it is up."""

        def settled() -> bool:
            ports = set()
            for sentinel in self.sentinels:
                with sentinel.admin_client() as admin:
                    ports.add(int(admin.sentinel_get_master_addr_by_name(self.service)[1]))
                    known = [r for r in admin.sentinel_slaves(self.service) if not r["is_sdown"]]
                    master = admin.sentinel_master(self.service)
                others = master["num-other-sentinels"]
                if len(known) != len(self.replicas) or others != len(self.sentinels) - 1:
                    return False
            if len(ports) != 1:
                return False
            for server in self.data_servers:
                with server.admin_client() as admin:
                    info = admin.info("replication")
                if server.port in ports:
                    if info["role"] != "master" or info["connected_slaves"] != len(self.replicas):
                        return False
                elif info.get("master_link_status") != "up" or info.get("master_port") not in ports:
                    return False
            return True

        wait_until(settled, "the Sentinel deployment settled", within)

    def failover(self, settle: bool = True, kill: bool = False) -> RedisServer:
        """``SENTINEL FAILOVER`` (or, with ``kill``, SIGKILL the master for the sentinels to see): a replica
        is promoted; returns the new master once every sentinel names it and it says it is a master, and
        (``settle``, not with ``kill``) once the old master has become its replica, which Sentinel only does
        when it next polls it (up to ten seconds: the old one stays a master meanwhile)."""
        before = self.current_master()
        if kill:
            before.kill()
        else:
            with self.sentinels[0].admin_client() as admin:
                admin.execute_command("SENTINEL", "FAILOVER", self.service)

        def promoted() -> bool:
            named = set()
            for sentinel in self.sentinels:
                with sentinel.admin_client() as admin:
                    named.add(int(admin.sentinel_get_master_addr_by_name(self.service)[1]))
            if len(named) != 1 or before.port in named:
                return False
            with self.current_master().admin_client() as admin:
                return bool(admin.info("replication")["role"] == "master")

        wait_until(promoted, "the failover", within=30.0)
        if settle and not kill:
            self.wait_settled()
        return self.current_master()

    def reset(self) -> None:
        with self.current_master().admin_client() as admin:
            admin.flushall()

    def cleanup(self) -> None:
        for server in [*self.sentinels, *self.data_servers]:
            server.cleanup()
