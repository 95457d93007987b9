"""Purge tags at the CDN too, through the provider's HTTP API (Fastly surrogate keys, Cloudflare cache tags).

Only the node where a purge originates calls the provider (``Cache.invalidate``: the app's own call, the
proxy's admin ``POST /purge``, a domain event published here) — never the nodes that apply it from the bus,
so N nodes make one call, not N. Calls run in the background with a bounded timeout; a failure is logged
and counted and never fails the invalidation (edgecache's own purge has already happened).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Final

import httpx

__all__ = ["CLOUDFLARE_API", "FASTLY_API", "CdnPurger", "batches"]

logger = logging.getLogger("edgecache.cdn")

FASTLY_API: Final = "https://api.fastly.com"
CLOUDFLARE_API: Final = "https://api.cloudflare.com/client/v4"
# Provider limits per call: Fastly takes up to 256 surrogate keys, Cloudflare up to 30 tags.
FASTLY_BATCH: Final = 256
CLOUDFLARE_BATCH: Final = 30


def batches(tags: Sequence[str], size: int) -> list[list[str]]:
    return [list(tags[i : i + size]) for i in range(0, len(tags), size)]


class CdnPurger:
    """Sends tag purges to one provider; ``counts[(provider, "ok" | "error")]`` counts the calls."""

    def __init__(
        self,
        provider: str,
        target: str,
        token: str,
        *,
        timeout: float = 5.0,
        counts: Counter[tuple[str, str]] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if provider not in ("fastly", "cloudflare"):
            raise ValueError(f"unknown CDN purge provider {provider!r}")
        self.provider = provider
        self.target = target
        self._token = token
        self.timeout = timeout
        self.counts: Counter[tuple[str, str]] = counts if counts is not None else Counter()
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[bool]] = set()

    def __repr__(self) -> str:  # never the token
        return f"CdnPurger({self.provider!r}, {self.target!r})"

    def schedule(self, tags: Iterable[str], *, soft: bool = False) -> None:
        """Purge ``tags`` in the background (the caller does not wait for the provider)."""
        unique = sorted(set(tags))
        if not unique:
            return
        task = asyncio.get_running_loop().create_task(self.purge(unique, soft=soft))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def purge(self, tags: Sequence[str], *, soft: bool = False) -> bool:
        """Purge ``tags`` now, in calls of the provider's batch size; True when every call succeeded.

        ``soft`` marks them stale at Fastly (``Fastly-Soft-Purge: 1``) instead of removing them; Cloudflare
        has no soft purge, so its tags are purged either way."""
        size = FASTLY_BATCH if self.provider == "fastly" else CLOUDFLARE_BATCH
        ok = True
        for batch in batches(list(tags), size):
            ok = await self._call(batch, soft) and ok
        return ok

    async def _call(self, tags: list[str], soft: bool) -> bool:
        client = self._http()
        if self.provider == "fastly":
            headers = {
                "Fastly-Key": self._token,
                "Surrogate-Key": " ".join(tags),
                "Accept": "application/json",
            }
            if soft:
                headers["Fastly-Soft-Purge"] = "1"
            request = client.build_request(
                "POST", f"{FASTLY_API}/service/{self.target}/purge", headers=headers
            )
        else:
            request = client.build_request(
                "POST",
                f"{CLOUDFLARE_API}/zones/{self.target}/purge_cache",
                headers={"Authorization": f"Bearer {self._token}"},
                json={"tags": tags},
            )
        try:
            async with asyncio.timeout(self.timeout):  # the whole call, not just each phase
                response = await client.send(request)
                await response.aread()
        except TimeoutError:
            return self._failed(tags, f"no answer within {self.timeout} s")
        except httpx.HTTPError as error:
            return self._failed(tags, f"{type(error).__name__}: {error}")
        if response.status_code >= 300:
            return self._failed(tags, f"HTTP {response.status_code}: {response.text[:200]}")
        if self.provider == "cloudflare":
            try:
                success = response.json().get("success") is True
            except ValueError:
                success = False
            if not success:
                return self._failed(tags, f"not successful: {response.text[:200]}")
        self.counts[(self.provider, "ok")] += 1
        return True

    def _failed(self, tags: list[str], why: str) -> bool:
        self.counts[(self.provider, "error")] += 1
        logger.warning("edgecache: %s purge of %d tag(s) failed: %s", self.provider, len(tags), why)
        return False

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout), transport=self._transport, trust_env=False
            )
        return self._client

    async def drain(self) -> None:
        """Wait for the purges scheduled so far (each bounded by the timeout)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def aclose(self) -> None:
        """Let scheduled purges finish (bounded by their timeouts), then close the HTTP client."""
        await self.drain()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
