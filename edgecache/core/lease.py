"""Coalescing across nodes, the decisions only (no I/O): what a lease key is called, what its value means,
what a holder leaves behind when it is done, and how often a waiting node looks again.

A lease key ``<ns>:lease:<digest>`` holds one of:

- a holder's token (``h:<random hex>``): some node is fetching this key from the origin;
- ``=stored``: the holder stored the response and its L2 write has landed: read L2;
- ``=pass``: the response was not shareable (hit-for-miss): go to the origin now, without waiting.

No value at all means nobody holds it (never taken, released after a failure, or its holder died and the
lease expired): the next node to ask takes it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

STORED: Final = b"=stored"
PASS: Final = b"=pass"
# How long ``=stored`` stays: it only has to cover a node that read L2 just before the write landed and asks
# for the lease just after the release (milliseconds); any later miss reads L2 itself.
STORED_MARKER_MS: Final = 2000
# ``=pass`` stays as long as hit-for-miss does, and at least this long so that current waiters see it.
PASS_MARKER_MIN_MS: Final = 2000
# A waiting node looks again after 2, 4, 8, 16 ms, then every 25 ms: the first looks are cheap for a fast
# origin; the cap bounds what a waiter adds to a slow one.
FIRST_POLL: Final = 0.002
POLL_CAP: Final = 0.025


class LeaseState(StrEnum):
    WON = "won"  # the caller now holds the lease: it fetches
    HELD = "held"  # another node holds it: wait and look again
    STORED = "stored"  # filled: read L2
    PASS = "pass"  # not shareable: go to the origin at once


def lease_key(namespace: str, digest: str) -> str:
    """The lease key of a cache key; ``digest`` is already a sha256 hex, so no raw input reaches Redis."""
    return f"{namespace}:lease:{digest}"


def read_state(value: bytes | None, token: bytes) -> LeaseState:
    """What the value returned by an acquisition attempt means for the node that tried with ``token``."""
    if value == token:
        return LeaseState.WON
    if value == STORED:
        return LeaseState.STORED
    if value == PASS:
        return LeaseState.PASS
    return LeaseState.HELD  # another token (or, defensively, anything else): someone is fetching


def release_value(*, stored: bool, unshareable: bool, hit_for_miss_ttl: float) -> tuple[bytes, int] | None:
    """What a holder leaves in the lease key when done (value, milliseconds), or None to delete it.

    Stored: ``=stored``, so that waiters read L2. Not shareable: ``=pass`` for the hit-for-miss time, so that
    waiters (and later misses elsewhere) go to the origin without waiting. Anything else (an origin error, a
    fill refused because of an invalidation, a cancelled request): delete, so that one waiter takes over.
    """
    if stored:
        return STORED, STORED_MARKER_MS
    if unshareable:
        return PASS, max(PASS_MARKER_MIN_MS, int(hit_for_miss_ttl * 1000))
    return None


def poll_delay(attempt: int) -> float:
    """Seconds to wait before look number ``attempt + 1`` (``attempt`` counts from 0)."""
    return float(min(POLL_CAP, FIRST_POLL * 2.0 ** min(attempt, 16)))
