"""The tail every benchmark script shares: run the measurement, turn failures into exit codes, print."""

from __future__ import annotations

import http.client
import json
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any


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
