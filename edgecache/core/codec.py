"""The byte format of a ``CacheObject`` in shared storage (L2): a versioned msgpack envelope.

Pure functions, no I/O. The envelope is one msgpack array::

    [b"EC", VERSION, KIND, *fields]

``b"EC"`` marks the format, ``VERSION`` is bumped on any layout change (old versions are then read as
corrupt, i.e. a miss, never guessed at) and ``KIND`` selects the field layout:

- ``KIND_RESPONSE`` (1): status, headers (a flat array ``name0, value0, name1, value1, ...`` of binaries),
  body, request_time, response_time, corrected_initial_age, freshness (an array: lifetime, source,
  stale_while_revalidate, stale_if_error, must_revalidate, no_cache), stored_until, key, etag,
  last_modified, vary, vary_values, tags, size.
- ``KIND_VARY_INDEX`` (2): vary, variants, stored_until, key, tags, size.

Fields are positional (no map keys to pack or compare), so a 2 KB response costs a few µs either way.
``decode`` accepts exactly what ``encode`` writes: msgpack is parsed with bounded lengths, then every field is
type-checked; anything else raises ``CorruptEntry`` with a short reason token. Never pickle: stored bytes
may come from another node, another version, or someone else's key.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Final

import msgpack

from edgecache.core.entry import CacheObject, Freshness, StoredResponse, VaryIndex

MAGIC: Final = b"EC"
VERSION: Final = 1
KIND_RESPONSE: Final = 1
KIND_VARY_INDEX: Final = 2

_RESPONSE_LENGTH: Final = 3 + 15
_VARY_INDEX_LENGTH: Final = 3 + 6
_FRESHNESS_LENGTH: Final = 6

# Longest array anywhere in an envelope (headers are flattened, so 2 per header; tags; Vary variants).
# Bounds the Python objects a hostile value can make the parser allocate before validation.
MAX_ARRAY_LEN: Final = 1 << 16
# An envelope has no maps; a few are allowed to parse so a foreign map reads as "bad-envelope".
_MAX_MAP_LEN: Final = 32

REASONS: Final = ("too-large", "not-msgpack", "bad-envelope", "unknown-version", "wrong-type", "bad-field")


class CorruptEntry(Exception):
    """Stored bytes that are not exactly a valid current-version envelope.

    ``reason`` is one of ``REASONS``: ``too-large`` (over ``max_bytes``), ``not-msgpack`` (does not parse,
    parses with trailing bytes, or breaks a length bound), ``bad-envelope`` (not an array starting with the
    marker and an integer version), ``unknown-version``, ``wrong-type`` (unknown kind), ``bad-field``
    (wrong field count, type or value).
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


_local = threading.local()


def _packer() -> msgpack.Packer:
    # A reused Packer is ~40% faster than packb; one per thread because a Packer is not re-entrant.
    try:
        packer: msgpack.Packer = _local.packer
    except AttributeError:
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
    return packer


def encode(obj: CacheObject) -> bytes:
    """The envelope for ``obj``. Raises ``TypeError``/``ValueError`` for an object whose fields cannot be
    represented (e.g. an integer beyond 64 bits, or text with lone surrogates)."""
    if type(obj) is StoredResponse:
        f = obj.freshness
        envelope: list[Any] = [
            MAGIC,
            VERSION,
            KIND_RESPONSE,
            obj.status,
            [part for header in obj.headers for part in header],
            obj.body,
            float(obj.request_time),
            float(obj.response_time),
            float(obj.corrected_initial_age),
            [
                float(f.lifetime),
                f.source,
                float(f.stale_while_revalidate),
                float(f.stale_if_error),
                f.must_revalidate,
                f.no_cache,
            ],
            float(obj.stored_until),
            obj.key,
            obj.etag,
            obj.last_modified,
            list(obj.vary),
            list(obj.vary_values),
            list(obj.tags),
            obj.size,
        ]
    elif type(obj) is VaryIndex:
        envelope = [
            MAGIC,
            VERSION,
            KIND_VARY_INDEX,
            list(obj.vary),
            list(obj.variants),
            float(obj.stored_until),
            obj.key,
            list(obj.tags),
            obj.size,
        ]
    else:
        raise TypeError(f"not a CacheObject: {type(obj).__name__}")
    return _packer().pack(envelope)  # type: ignore[no-any-return]


def decode(data: bytes, *, max_bytes: int) -> CacheObject:
    """The object in an envelope made by ``encode``; ``CorruptEntry`` for anything else."""
    if len(data) > max_bytes:
        raise CorruptEntry("too-large", f"{len(data)} > {max_bytes} bytes")
    try:
        envelope = msgpack.unpackb(
            data,
            raw=False,  # msgpack str -> str (strict UTF-8), bin -> bytes
            use_list=False,  # arrays -> tuples, which the dataclasses want anyway
            strict_map_key=True,
            max_bin_len=max_bytes,
            max_str_len=max_bytes,
            max_array_len=MAX_ARRAY_LEN,
            max_map_len=_MAX_MAP_LEN,
            max_ext_len=0,
        )
    except Exception as error:  # ExtraData, FormatError, StackError, ValueError (bounds, UTF-8), ...
        raise CorruptEntry("not-msgpack", type(error).__name__) from None
    if type(envelope) is not tuple or len(envelope) < 3 or envelope[0] != MAGIC:
        raise CorruptEntry("bad-envelope")
    version, kind = envelope[1], envelope[2]
    if type(version) is not int:
        raise CorruptEntry("bad-envelope", "version")
    if version != VERSION:
        raise CorruptEntry("unknown-version", str(version))
    if type(kind) is int:
        if kind == KIND_RESPONSE:
            return _decode_response(envelope)
        if kind == KIND_VARY_INDEX:
            return _decode_vary_index(envelope)
    raise CorruptEntry("wrong-type", repr(kind)[:20])


def _bad(field: str) -> CorruptEntry:
    return CorruptEntry("bad-field", field)


# Validation is on the L2 hit path, so it checks whole tuples at C speed (set of element types) rather than
# looping in Python; the error path then says which field.
_BYTES_ONLY: Final = frozenset({bytes})
_STR_ONLY: Final = frozenset({str})
_STR_OR_NONE: Final = frozenset({str, type(None)})
_FLOAT_ONLY: Final = frozenset({float})


def _is_str_tuple(value: object) -> bool:
    return type(value) is tuple and set(map(type, value)) <= _STR_ONLY


def _valid_floats(values: tuple[object, ...]) -> bool:
    return set(map(type, values)) == _FLOAT_ONLY and all(map(math.isfinite, values))  # type: ignore[arg-type]


def _is_size(value: object) -> bool:
    return type(value) is int and value >= 0


def _decode_response(envelope: tuple[Any, ...]) -> StoredResponse:
    if len(envelope) != _RESPONSE_LENGTH:
        raise _bad("length")
    (
        _,
        _,
        _,
        status,
        flat_headers,
        body,
        request_time,
        response_time,
        corrected_initial_age,
        freshness,
        stored_until,
        key,
        etag,
        last_modified,
        vary,
        vary_values,
        tags,
        size,
    ) = envelope
    if type(status) is not int or not 100 <= status <= 999:
        raise _bad("status")
    if (
        type(flat_headers) is not tuple
        or len(flat_headers) % 2
        or not set(map(type, flat_headers)) <= _BYTES_ONLY
    ):
        raise _bad("headers")
    if type(body) is not bytes:
        raise _bad("body")
    if not _valid_floats((request_time, response_time, corrected_initial_age, stored_until)):
        raise _bad("times")
    if type(key) is not bytes:
        raise _bad("key")
    if not {type(etag), type(last_modified)} <= _STR_OR_NONE:
        raise _bad("validators")
    if not _is_str_tuple(vary):
        raise _bad("vary")
    if type(vary_values) is not tuple or not set(map(type, vary_values)) <= _STR_OR_NONE:
        raise _bad("vary_values")
    if not _is_str_tuple(tags):
        raise _bad("tags")
    if not _is_size(size):
        raise _bad("size")
    pairs = iter(flat_headers)
    return StoredResponse(
        status=status,
        headers=list(zip(pairs, pairs, strict=True)),
        body=body,
        request_time=request_time,
        response_time=response_time,
        corrected_initial_age=corrected_initial_age,
        freshness=_decode_freshness(freshness),
        stored_until=stored_until,
        key=key,
        etag=etag,
        last_modified=last_modified,
        vary=vary,
        vary_values=vary_values,
        tags=frozenset(tags),
        size=size,
    )


def _decode_freshness(value: object) -> Freshness:
    if type(value) is not tuple or len(value) != _FRESHNESS_LENGTH:
        raise _bad("freshness")
    lifetime, source, stale_while_revalidate, stale_if_error, must_revalidate, no_cache = value
    if (
        not _valid_floats((lifetime, stale_while_revalidate, stale_if_error))
        or type(source) is not str
        or type(must_revalidate) is not bool
        or type(no_cache) is not bool
    ):
        raise _bad("freshness")
    return Freshness(
        lifetime=lifetime,
        source=source,
        stale_while_revalidate=stale_while_revalidate,
        stale_if_error=stale_if_error,
        must_revalidate=must_revalidate,
        no_cache=no_cache,
    )


def _decode_vary_index(envelope: tuple[Any, ...]) -> VaryIndex:
    if len(envelope) != _VARY_INDEX_LENGTH:
        raise _bad("length")
    _, _, _, vary, variants, stored_until, key, tags, size = envelope
    if not _is_str_tuple(vary):
        raise _bad("vary")
    if not _is_str_tuple(variants):
        raise _bad("variants")
    if not _valid_floats((stored_until,)):
        raise _bad("stored_until")
    if type(key) is not bytes:
        raise _bad("key")
    if not _is_str_tuple(tags):
        raise _bad("tags")
    if not _is_size(size):
        raise _bad("size")
    return VaryIndex(
        vary=vary,
        variants=variants,
        stored_until=stored_until,
        key=key,
        tags=frozenset(tags),
        size=size,
    )
