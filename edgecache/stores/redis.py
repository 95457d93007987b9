"""The shared L2 tier: ``CacheObject``s in Redis (standalone, Sentinel or Cluster), with a tag index that
stays correct under many concurrent writers.

Key layout (``ns`` = the ``namespace`` option, default ``edgecache``):

``<ns>:e:<digest>``
    One entry: a Redis HASH ``{v: <codec envelope>, t: <space-separated sha256 hex of its tags>}``, written
    atomically (one single-key Lua script: UNLINK, HSET, PEXPIRE) with a relative TTL of
    ``stored_until - clock()`` (ms, rounded up), so it works with any clock and is immune to skew between a
    node's clock and Redis's. ``<digest>`` is the caller's key (a sha256 hex): raw request input never
    reaches a Redis key. The hit path is one ``HGET <key> v``.
``<ns>:t:<sha256(tag)>``
    One Redis SET per tag whose members are entry digests. A writer adds its digest with a single-key Lua
    script (SADD, then PEXPIRE only if that extends the set's TTL), so the set always outlives every entry
    it indexes; no shared value is ever read, modified and written back, and no command touches two keys,
    so it is correct on Redis Cluster where entry and tag keys live in different slots.

Purging tag ``T``: SSCAN the tag set; for each page, SREM exactly the members read (members added meanwhile
stay), then for each member run a single-key script that UNLINKs the entry only if its ``t`` field still
names ``T`` (an entry rewritten since with other tags stays; stale members of expired entries cost nothing).
Writers do SET-then-SADD and purgers do SREM-then-UNLINK, which orders every race so that an entry carrying
``T`` is either deleted by the purge or still indexed under ``T`` afterwards; it is never left behind
unindexed. On Cluster the two steps are separate round trips, because a cluster pipeline runs the nodes'
batches concurrently and would lose that order; on a standalone server one pipeline keeps it.

Failures: every Redis round trip is bounded by ``op_timeout`` (``asyncio.timeout`` as a backstop to the
client's own socket timeouts) and any failure surfaces as ``StoreUnavailable`` (defined here, not in
``stores.base``), the one type a tiered store or circuit breaker needs to catch. Cancellation propagates
unchanged; redis-py disconnects a connection whose reply was not read, so no reply reaches another command.
A value that is not a valid current-version envelope is a miss: it is deleted, counted in
``corrupt_entries`` (by reason) and logged, never raised.

``clear()`` SCANs ``<ns>:*`` and UNLINKs in batches: fine for tests and admin use, O(keyspace) in Redis.
A production purge-all will be a generation bump in the key prefix instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Any, Final, TypeVar, cast

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from edgecache.core.codec import CorruptEntry, decode, encode
from edgecache.core.entry import CacheObject, StoredResponse
from edgecache.stores.redis_connect import check_redis_url, is_sentinel_url, sentinel_client

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_MAX_OBJECT_BYTES: Final = 1024 * 1024
DEFAULT_OP_TIMEOUT: Final = 0.25
_SCAN_COUNT: Final = 1000

# Reason counted when the entry key holds something other than our hash (e.g. a plain string).
FOREIGN_TYPE: Final = "foreign-type"

# KEYS[1] entry; ARGV: envelope, tag digests, ttl ms. UNLINK first so a foreign value of another type
# cannot make HSET fail, and so no field of an older write survives.
_SET_ENTRY: Final = (
    "redis.call('UNLINK',KEYS[1]) redis.call('HSET',KEYS[1],'v',ARGV[1],'t',ARGV[2]) "
    "return redis.call('PEXPIRE',KEYS[1],ARGV[3])"
)
# KEYS[1] tag set; ARGV: entry digest, ttl ms. PTTL is -1 for a new set, so it always gets a TTL; an
# existing one is only ever extended.
_ADD_TAG: Final = (
    "redis.call('SADD',KEYS[1],ARGV[1]) local w=tonumber(ARGV[2]) "
    "if redis.call('PTTL',KEYS[1])<w then redis.call('PEXPIRE',KEYS[1],w) end return 1"
)
# KEYS[1] entry; ARGV: tag digest. pcall: a foreign value of another type is left to `get` to clean up.
_PURGE_IF_TAGGED: Final = (
    "local t=redis.pcall('HGET',KEYS[1],'t') "
    "if type(t)=='string' and string.find(t,ARGV[1],1,true) then return redis.call('UNLINK',KEYS[1]) end "
    "return 0"
)
# KEYS[1] entry; ARGV[1] sha1 of the envelope read before: UNLINK only if the entry is still that envelope, so
# that a newer write by another node, landed since, is never deleted on the strength of an older read.
_UNLINK_IF_UNCHANGED: Final = (
    "local v=redis.pcall('HGET',KEYS[1],'v') "
    "if type(v)=='string' and redis.sha1hex(v)==ARGV[1] then return redis.call('UNLINK',KEYS[1]) end "
    "return 0"
)


class StoreUnavailable(Exception):
    """Redis did not answer in time, refused the connection, or failed the command."""


def tag_digest(tag: str) -> str:
    return hashlib.sha256(tag.encode("utf-8", "surrogatepass")).hexdigest()


class RedisStore:
    """The Store protocol on Redis (see the module docstring for the key layout and guarantees).

    ``client`` is borrowed unless ``owns_client`` (``from_url`` builds and owns one); it must not decode
    responses. ``corrupt_entries`` counts, by reason, the unreadable values ``get`` met and deleted.
    """

    name = "l2"

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        namespace: str = "edgecache",
        clock: Callable[[], float] = time.time,
        max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES,
        op_timeout: float = DEFAULT_OP_TIMEOUT,
        owns_client: bool = False,
    ) -> None:
        if not namespace:
            raise ValueError("namespace must not be empty")
        if client.get_connection_kwargs().get("decode_responses"):
            raise ValueError("RedisStore needs a client with decode_responses=False")
        self._client = client
        self._cluster = isinstance(client, RedisCluster)
        self._namespace = namespace
        self.generation = ""
        self._entry_prefix = f"{namespace}:e:"
        self._tag_prefix = f"{namespace}:t:"
        self._clock = clock
        self._max_object_bytes = max_object_bytes
        self._op_timeout = op_timeout
        self._owns_client = owns_client
        self._closed = False
        self.corrupt_entries: Counter[str] = Counter()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        namespace: str = "edgecache",
        clock: Callable[[], float] = time.time,
        max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES,
        op_timeout: float = DEFAULT_OP_TIMEOUT,
        connect_timeout: float | None = None,
        max_connections: int = 64,
        health_check_interval: int = 30,
        cluster: bool = False,
        **client_kwargs: Any,
    ) -> RedisStore:
        """A store that owns a client built for the request path. ``url``: see ``stores.redis_connect``
        (standalone, Cluster with ``cluster``, or ``redis+sentinel://``); ``BadRedisUrl`` if unusable.

        Socket read/write timeouts default to ``op_timeout`` and connect to ``connect_timeout`` (else
        ``op_timeout``): redis-py's defaults wait seconds or forever. No retries (``Retry(NoBackoff(), 0)``;
        redis-py 8's ``Redis()`` and ``RedisCluster()`` default to 10 with exponential backoff, and
        ``retry_on_timeout`` is deprecated): a retry costs another timeout on the request path, and the
        caller's circuit breaker decides what to do next. Cluster redirections (MOVED/ASK) are still
        followed: they are not retries. A bounded pool: a standalone client waits
        at most ``op_timeout`` for a free connection (``BlockingConnectionPool``, also behind Sentinel,
        where each new connection first asks the sentinels for the master); a cluster client holds at
        most ``max_connections`` per node. ``health_check_interval`` PINGs a connection idle that long
        before reusing it. Nothing connects until the first command.
        """
        settings: dict[str, Any] = {
            "socket_timeout": op_timeout,
            "socket_connect_timeout": op_timeout if connect_timeout is None else connect_timeout,
            "socket_keepalive": True,
            "retry": Retry(NoBackoff(), 0),
            "health_check_interval": health_check_interval,
            "max_connections": max_connections,
            **client_kwargs,
        }
        client: Redis | RedisCluster
        check_redis_url(url, cluster=cluster)
        if cluster:
            client = RedisCluster.from_url(url, **settings)
        elif is_sentinel_url(url):
            client = sentinel_client(url, blocking_pool=True, timeout=op_timeout, **settings)
        else:
            pool = BlockingConnectionPool.from_url(url, timeout=op_timeout, **settings)
            client = Redis.from_pool(pool)
        return cls(
            client,
            namespace=namespace,
            clock=clock,
            max_object_bytes=max_object_bytes,
            op_timeout=op_timeout,
            owns_client=True,
        )

    @property
    def client(self) -> Redis | RedisCluster:
        return self._client

    @property
    def namespace(self) -> str:
        return self._namespace

    def set_generation(self, generation: str) -> None:
        """Switch to another key generation: ``<ns>:g<generation>:e:…``. Purge-all is a generation bump:
        every node moves to fresh keys at once and the old ones expire by their TTLs, with no O(keyspace)
        deletion in Redis."""
        self.generation = generation
        base = f"{self._namespace}:g{generation}" if generation else self._namespace
        self._entry_prefix = f"{base}:e:"
        self._tag_prefix = f"{base}:t:"

    def entry_key(self, key: str) -> str:
        return self._entry_prefix + key

    def tag_key(self, tag: str) -> str:
        return self._tag_prefix + tag_digest(tag)

    async def connect(self, within: float = 5.0) -> None:
        """Optional warm-up, outside the request path: opens a connection and, on Cluster, loads the slot
        map and command table (otherwise the first request pays for them within ``op_timeout``)."""
        client = self._client
        if isinstance(client, RedisCluster):
            await self._run(client.initialize(), within)
        await self._run(client.ping(), within)

    async def _run(self, operation: Awaitable[T], within: float | None = None) -> T:
        try:
            async with asyncio.timeout(self._op_timeout if within is None else within):
                return await operation
        except (RedisError, OSError) as error:  # OSError covers TimeoutError from asyncio.timeout
            raise StoreUnavailable(f"redis {type(error).__name__}: {error}") from error

    async def get(self, key: str) -> CacheObject | None:
        entry_key = self._entry_prefix + key
        try:
            data = await self._run(self._client.hget(entry_key, "v"))
        except StoreUnavailable as unavailable:
            cause = unavailable.__cause__
            if not (isinstance(cause, ResponseError) and str(cause).startswith("WRONGTYPE")):
                raise
            await self._drop_corrupt(key, entry_key, FOREIGN_TYPE)
            return None
        if data is None:
            return None
        try:
            # bytes: __init__ refused a client that decodes responses
            value = decode(cast(bytes, data), max_bytes=self._max_object_bytes)
        except CorruptEntry as corrupt:
            await self._drop_corrupt(key, entry_key, corrupt.reason)
            return None
        # Redis expires the key by its own clock; the store's clock is the authority on stored_until.
        if value.stored_until <= self._clock():
            return None
        return value

    async def _drop_corrupt(self, key: str, entry_key: str, reason: str) -> None:
        self.corrupt_entries[reason] += 1
        logger.warning("edgecache l2: dropping corrupt entry %s (%s)", key[:16], reason)
        try:
            await self._run(self._client.unlink(entry_key))
        except StoreUnavailable:
            logger.debug("edgecache l2: could not delete corrupt entry %s", key[:16], exc_info=True)

    async def set(self, key: str, value: CacheObject) -> bool:
        entry_key = self._entry_prefix + key
        seconds_left = value.stored_until - self._clock()
        data = self._encode_storable(key, value, seconds_left)
        if data is None:
            # A rejected write still drops the older object: the caller meant to replace it.
            await self._run(self._client.unlink(entry_key))
            return False
        ttl_ms = max(1, math.ceil(seconds_left * 1000))
        tag_digests = [tag_digest(tag) for tag in value.tags]

        pipe = self._client.pipeline(transaction=False)
        pipe.execute_command("EVAL", _SET_ENTRY, 1, entry_key, data, " ".join(tag_digests), ttl_ms)
        if self._cluster and tag_digests:
            await self._run(pipe.execute())  # the entry before its index entries (see module docstring)
            pipe = self._client.pipeline(transaction=False)
        for digest in tag_digests:
            pipe.execute_command("EVAL", _ADD_TAG, 1, self._tag_prefix + digest, key, ttl_ms)
        if len(pipe):
            try:
                await self._run(pipe.execute())
            except StoreUnavailable:
                # Part of the write was refused (e.g. OOM lets the entry in but not its tag index): an
                # entry that a tag purge could miss must not stay. UNLINK is allowed even when out of memory.
                with contextlib.suppress(StoreUnavailable):
                    await self._run(self._client.unlink(entry_key))
                raise
        return True

    def _encode_storable(self, key: str, value: CacheObject, seconds_left: float) -> bytes | None:
        if not (math.isfinite(seconds_left) and seconds_left > 0):
            return None
        try:
            data = encode(value)
        except (TypeError, ValueError, OverflowError):
            logger.warning("edgecache l2: cannot encode entry %s", key[:16], exc_info=True)
            return None
        return data if len(data) <= self._max_object_bytes else None

    async def delete(self, *keys: str) -> int:
        if not keys:
            return 0
        pipe = self._client.pipeline(transaction=False)
        for key in keys:  # one key per command: entry keys are in different cluster slots
            pipe.execute_command("UNLINK", self._entry_prefix + key)
        results = await self._run(pipe.execute())
        return sum(results)

    async def unlink_requested_before(
        self, keys: Collection[str], before: float, *, within: float | None = None
    ) -> int:
        """Delete the entries of ``keys`` holding a response whose request began before ``before``, each
        only if it is still the envelope read (another node's newer write, landed since, stays). Two
        pipelined round trips: read every entry, then compare-and-delete the ones that qualify."""
        entry_keys = [self._entry_prefix + key for key in keys]
        if not entry_keys:
            return 0
        pipe = self._client.pipeline(transaction=False)
        for entry_key in entry_keys:
            pipe.hget(entry_key, "v")
        # Per-command errors come back as values: WRONGTYPE is a key that is not an entry of ours (``get``
        # deals with it), skipped here.
        read = await self._run(pipe.execute(raise_on_error=False), within)
        pipe = self._client.pipeline(transaction=False)
        for entry_key, raw in zip(entry_keys, read, strict=True):
            if isinstance(raw, bytes) and not _requested_since(raw, before):
                digest = hashlib.sha1(raw, usedforsecurity=False).hexdigest()
                pipe.execute_command("EVAL", _UNLINK_IF_UNCHANGED, 1, entry_key, digest)
        if not len(pipe):
            return 0
        return sum(int(removed) for removed in await self._run(pipe.execute(), within))

    async def purge_tags(self, tags: Iterable[str]) -> int:
        if isinstance(tags, str):  # a bare tag would otherwise be purged character by character
            tags = (tags,)
        removed = 0
        for tag in set(tags):
            needle = tag_digest(tag)
            tag_key = self._tag_prefix + needle
            cursor = 0
            while True:
                cursor, members = await self._run(self._client.sscan(tag_key, cursor, count=_SCAN_COUNT))
                if members:
                    removed += await self._purge_members(tag_key, needle, cast(list[bytes], members))
                if cursor == 0:
                    break
        return removed

    async def keys_with_tags(self, tags: Iterable[str]) -> frozenset[str]:
        """Digests indexed under any of ``tags`` (some may have expired since)."""
        if isinstance(tags, str):
            tags = (tags,)
        found: set[str] = set()
        for tag in set(tags):
            tag_key = self._tag_prefix + tag_digest(tag)
            cursor = 0
            while True:
                cursor, members = await self._run(self._client.sscan(tag_key, cursor, count=_SCAN_COUNT))
                found.update(m.decode() for m in cast(list[bytes], members))
                if cursor == 0:
                    break
        return frozenset(found)

    async def _purge_members(self, tag_key: str, needle: str, members: list[bytes]) -> int:
        entry_prefix = self._entry_prefix.encode()
        pipe = self._client.pipeline(transaction=False)
        # Unindex exactly what was read, before deleting (see the module docstring for why this order).
        pipe.execute_command("SREM", tag_key, *members)
        if self._cluster:
            await self._run(pipe.execute())
            pipe = self._client.pipeline(transaction=False)
        for member in members:
            pipe.execute_command("EVAL", _PURGE_IF_TAGGED, 1, entry_prefix + member, needle)
        results = await self._run(pipe.execute())
        return sum(results[-len(members) :])

    async def clear(self) -> None:
        """Delete every key under the namespace (SCAN + UNLINK in batches). Admin/test use only."""
        pattern = _glob_escape(self._namespace) + ":*"
        keys = self._client.scan_iter(match=pattern, count=_SCAN_COUNT).__aiter__()
        batch: list[bytes] = []
        while True:
            try:
                batch.append(await self._run(keys.__anext__()))
            except StopAsyncIteration:
                break
            if len(batch) >= _SCAN_COUNT:
                await self._unlink_all(batch)
                batch = []
        if batch:
            await self._unlink_all(batch)

    async def _unlink_all(self, keys: list[bytes]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.execute_command("UNLINK", key)
        await self._run(pipe.execute())

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owns_client:
            await self._client.aclose()


_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


def _glob_escape(text: str) -> str:
    return _GLOB_SPECIAL.sub(r"\\\1", text)


def _requested_since(raw: bytes, before: float) -> bool:
    """Whether an envelope holds a response whose request began at ``before`` or later."""
    try:
        value = decode(raw, max_bytes=len(raw))  # already in memory: its size was bounded by Redis's reply
    except CorruptEntry:
        return False
    return isinstance(value, StoredResponse) and value.request_time >= before
