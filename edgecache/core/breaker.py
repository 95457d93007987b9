"""A circuit breaker as a pure state machine: closed → open → half-open → closed.

Used in front of Redis (L2) and of upstreams. The caller passes ``now``; nothing here sleeps or reads a
clock. While open, ``allow`` says no without touching the failing dependency; after ``reset_after``
seconds one probe is let through (half-open), and its result closes or re-opens the breaker.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass(slots=True)
class CircuitBreaker:
    failure_threshold: int = 5  # consecutive failures that open the breaker
    reset_after: float = 5.0  # seconds open before a probe is allowed
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    probing: bool = False  # a half-open probe is in flight: everyone else still skips
    opened_count: int = 0  # how many times it opened (a metric)

    def allow(self, now: float) -> bool:
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            if now - self.opened_at < self.reset_after:
                return False
            self.state = BreakerState.HALF_OPEN
            self.probing = False
        if self.probing:
            return False
        self.probing = True
        return True

    def available(self, now: float) -> bool:
        """Whether ``allow`` would say yes at ``now``, without claiming the half-open probe (to choose
        among several breakers before calling ``allow`` on the chosen one)."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            return now - self.opened_at >= self.reset_after
        return not self.probing

    def abandoned(self) -> None:
        """The call ``allow`` let through ended with no verdict (e.g. the client left): a half-open
        breaker lets the next call probe instead of waiting forever for this one."""
        self.probing = False

    def succeeded(self) -> None:
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.probing = False

    def failed(self, now: float) -> None:
        self.probing = False
        if self.state is BreakerState.HALF_OPEN:
            self._open(now)
            return
        self.failures += 1
        if self.failures >= self.failure_threshold and self.state is BreakerState.CLOSED:
            self._open(now)

    def _open(self, now: float) -> None:
        self.state = BreakerState.OPEN
        self.opened_at = now
        self.opened_count += 1
