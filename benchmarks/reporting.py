"""The tail every benchmark script shares: run the measurement, turn failures into exit codes, print."""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import signal
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from types import FrameType
from typing import IO, Any, Protocol

STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL


class WrkRun(Protocol):
    @property
    def requests_per_sec(self) -> float: ...
    @property
    def p50_ms(self) -> float: ...
    @property
    def p99_ms(self) -> float: ...
    @property
    def non_2xx_3xx(self) -> int: ...
    @property
    def socket_errors(self) -> int: ...


def summarize_runs(label: str, app: str, runs: Sequence[WrkRun]) -> dict[str, Any]:
    """One server's rounds: medians of requests/s, p50 and p99, error totals, and every round."""
    return {
        "label": label,
        "app": app,
        "requests_per_sec": statistics.median(r.requests_per_sec for r in runs),
        "p50_ms": statistics.median(r.p50_ms for r in runs),
        "p99_ms": statistics.median(r.p99_ms for r in runs),
        "non_2xx_3xx": sum(r.non_2xx_3xx for r in runs),
        "socket_errors": sum(r.socket_errors for r in runs),
        "rounds": [asdict(r) for r in runs],  # type: ignore[call-overload]
    }


def log_wrk_round(round_no: int, rounds: int, name: str, result: WrkRun, width: int = 15) -> None:
    """One wrk run's progress line (``round_no`` from 0), and a warning when it saw errors."""
    log(
        f"round {round_no + 1}/{rounds} {name:<{width}} {result.requests_per_sec:>10.1f} req/s  "
        f"p50 {result.p50_ms:.3f} ms  p99 {result.p99_ms:.3f} ms"
    )
    if result.non_2xx_3xx or result.socket_errors:
        log(f"  warning: {result.non_2xx_3xx} non-2xx/3xx responses, {result.socket_errors} socket errors")


def wrk_errors(row: dict[str, Any]) -> list[str]:
    """The table line that flags a ``summarize_runs`` row's errors, if it had any."""
    if row["non_2xx_3xx"] or row["socket_errors"]:
        return [f"  ! {row['non_2xx_3xx']} non-2xx/3xx responses, {row['socket_errors']} socket errors"]
    return []


def wrk_rows(rows: Iterable[dict[str, Any]], label_width: int) -> list[str]:
    """``summarize_runs`` rows as table lines (label, requests/s, p50, p99), each followed by its errors."""
    lines = []
    for row in rows:
        lines.append(
            f"{row['label']:<{label_width}}{row['requests_per_sec']:>13,.1f}"
            f"{row['p50_ms']:>11.3f}{row['p99_ms']:>11.3f}"
        )
        lines += wrk_errors(row)
    return lines


def stop_process(proc: subprocess.Popen[bytes] | None, log: IO[bytes] | None) -> None:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT; the process's log file is closed (and so deleted)."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)
    if log is not None:
        log.close()


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop what was started


def run_and_print(
    measure: Callable[[], dict[str, Any]],
    render: Callable[[dict[str, Any]], str],
    *,
    as_json: bool,
    failures: tuple[type[Exception], ...],
    interrupted: str,
) -> int:
    """0 measured and printed; 1 a named failure or a server that stopped answering; 130 on Ctrl-C."""
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        report = measure()
    except failures as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (OSError, http.client.HTTPException) as exc:  # a server died or stopped answering mid-run
        print(f"error: request to a benchmark server failed: {exc!r}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
    print(json.dumps(report, indent=2) if as_json else render(report))
    return 0


def require_wrk() -> str | None:
    """The path of ``wrk``; None after saying how to install it (the benchmark then exits 2)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        print("error: 'wrk' is not on PATH. Install it with:\n    apt-get install -y wrk", file=sys.stderr)
    return wrk


def log(message: str) -> None:
    """Progress goes to stderr, so stdout carries only the table or the JSON."""
    print(message, file=sys.stderr, flush=True)


def positive_int(text: str) -> int:
    value = int(text.replace("_", ""))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text.replace("_", ""))
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value
