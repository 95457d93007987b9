"""`edgecache proxy` as a child process: run to its end, or on free loopback ports and stopped by its PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx

from tests.servers import ROOT, free_port


def run_proxy_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``edgecache proxy ARGS`` run to its end (at most 30 s), with ``env`` on top of this environment."""
    return subprocess.run(
        [sys.executable, "-m", "edgecache.cli", "proxy", *args],
        cwd=ROOT,
        check=False,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


class ProxyProcess:
    def __init__(self, *args: str, env: dict[str, str] | None = None, listen: bool = True) -> None:
        self.port, self.admin_port = free_port(), free_port()
        command = [sys.executable, "-m", "edgecache.cli", "proxy", *args]
        if listen:
            command += [
                "--listen",
                f"127.0.0.1:{self.port}",
                "--admin-listen",
                f"127.0.0.1:{self.admin_port}",
            ]
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Until the admin listener answers /healthz (the proxied port is bound before it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"proxy exited {self.process.returncode}: {self.stderr()}")
            try:
                httpx.get(self.admin_url + "/healthz", timeout=0.5, trust_env=False)
                return
            except httpx.TransportError:
                time.sleep(0.05)
        raise TimeoutError(f"proxy did not answer on {self.admin_url} within {timeout}s")

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        self.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()

    def stderr(self) -> str:
        if self.process.stderr is None or self.process.poll() is None:
            return ""
        return self.process.stderr.read()
