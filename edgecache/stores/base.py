"""The storage seam: every tier (memory, Redis, tiered) implements this small protocol."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from edgecache.core.entry import CacheObject


@runtime_checkable
class Store(Protocol):
    """An async key → ``CacheObject`` map with per-entry expiry and tag purges.

    Keys are opaque strings made by ``edgecache.core.keys`` (hex digests, never raw request input).
    ``get`` never returns an object whose ``stored_until`` has passed. No method raises for a missing key.
    """

    name: str

    async def get(self, key: str) -> CacheObject | None: ...

    async def set(self, key: str, value: CacheObject) -> bool:
        """Store ``value``; False when it was not stored (too large, already expired)."""
        ...

    async def delete(self, *keys: str) -> int:
        """Remove the keys; returns how many were present."""
        ...

    async def purge_tags(self, tags: Iterable[str]) -> int:
        """Remove every object carrying any of ``tags``; returns how many were removed."""
        ...

    async def clear(self) -> None: ...

    async def aclose(self) -> None: ...
