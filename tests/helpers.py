"""Shared test doubles and helpers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

# A realistic epoch second, so code that formats or compares wall-clock times sees plausible values.
FAKE_EPOCH = 1_700_000_000.0


class FakeClock:
    """A wall clock that moves only when told to; pass it wherever code takes ``clock: () -> float``."""

    def __init__(self, start: float = FAKE_EPOCH) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self.now += seconds


async def eventually(condition: Callable[[], bool], within: float = 5.0, what: str = "condition") -> None:
    """Poll ``condition`` until it holds; fail after ``within`` seconds (not a fixed sleep)."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not true within {within} s")
        await asyncio.sleep(0.01)
