"""Content codings for rewriting compressed bodies: decode within a size cap, re-encode the same way.

gzip and deflate are always available (zlib); ``br`` needs the ``brotli`` package and ``zstd`` the
``zstandard`` package (the ``cdn`` extra). Decoding stops as soon as the output passes the cap, so a small
compressed body that expands to gigabytes (a decompression bomb) costs at most ``limit`` bytes of memory.
"""

from __future__ import annotations

import importlib
import zlib
from collections.abc import Callable
from typing import Any

__all__ = ["CodingError", "TooLarge", "available_codings", "decode", "encode", "single_coding"]


class CodingError(ValueError):
    """The body is not valid in its content coding, or the coding is not available here."""


class TooLarge(ValueError):
    """The decoded body would be larger than the cap."""


_ZSTD_SLICE = 128


def _optional(name: str) -> Any:
    """An optional codec module (the `cdn` extra), or None when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:  # pragma: no cover - depends on the environment
        return None


_brotli = _optional("brotli")
if _brotli is not None and not hasattr(_brotli.Decompressor, "can_accept_more_data"):  # pragma: no cover
    _brotli = None  # brotli < 1.2 cannot bound its output: br bodies pass through rather than risk a bomb
_zstd = _optional("zstandard")


def _zlib_decode(wbits: int) -> Callable[[bytes, int], bytes]:
    def decode(data: bytes, limit: int) -> bytes:
        inflater = zlib.decompressobj(wbits)
        out = bytearray()
        pending = data
        try:
            while pending:
                # max_length bounds each step's output: the unconsumed input waits in unconsumed_tail.
                out += inflater.decompress(pending, limit + 1 - len(out))
                if len(out) > limit:
                    raise TooLarge(f"decoded body exceeds {limit} bytes")
                pending = inflater.unconsumed_tail
                if inflater.eof:
                    break
            if not inflater.eof:
                raise CodingError("truncated compressed body")
        except zlib.error as exc:
            raise CodingError(str(exc)) from None
        if inflater.unused_data:
            raise CodingError("data after the end of the compressed body")
        return bytes(out)

    return decode


def _gzip_encode(data: bytes) -> bytes:
    # mtime 0: the same body always encodes to the same bytes (stable validators, byte-equal hits).
    deflater = zlib.compressobj(6, zlib.DEFLATED, 31)
    return deflater.compress(data) + deflater.flush()


def _deflate_encode(data: bytes) -> bytes:
    return zlib.compress(data, 6)


def _br_decode(data: bytes, limit: int) -> bytes:
    assert _brotli is not None
    decompressor: Any = _brotli.Decompressor()
    out = bytearray()
    try:
        # brotli ≥ 1.2 takes an output limit per call; output not yet returned stays inside the
        # decompressor, which needs more (empty) input calls to drain it.
        out += decompressor.process(data, output_buffer_limit=limit + 1)
        while len(out) <= limit and not decompressor.is_finished():
            if not decompressor.can_accept_more_data():
                out += decompressor.process(b"", output_buffer_limit=limit + 1 - len(out))
            else:
                raise CodingError("truncated brotli body")
    except _brotli.error as exc:
        raise CodingError(str(exc)) from None
    if len(out) > limit:
        raise TooLarge(f"decoded body exceeds {limit} bytes")
    return bytes(out)


def _br_encode(data: bytes) -> bytes:
    assert _brotli is not None
    # Quality 5: most of brotli's gain for text at a fraction of the default (11)'s time, once per miss.
    return bytes(_brotli.compress(data, quality=5))


def _zstd_decode(data: bytes, limit: int) -> bytes:
    assert _zstd is not None
    decompressor = _zstd.ZstdDecompressor().decompressobj()
    out = bytearray()
    try:
        # The decompressobj has no output limit: feed small input slices, so that one step's output stays
        # bounded (at worst 4-byte RLE blocks of 128 KiB each: 128 bytes of input → 4 MiB of output).
        for start in range(0, len(data), _ZSTD_SLICE):
            out += decompressor.decompress(data[start : start + _ZSTD_SLICE])
            if len(out) > limit:
                raise TooLarge(f"decoded body exceeds {limit} bytes")
    except _zstd.ZstdError as exc:
        raise CodingError(str(exc)) from None
    if not decompressor.eof:
        raise CodingError("truncated zstd body")
    return bytes(out)


def _zstd_encode(data: bytes) -> bytes:
    assert _zstd is not None
    return bytes(_zstd.ZstdCompressor(level=3, write_content_size=True).compress(data))


_DECODERS: dict[str, Callable[[bytes, int], bytes]] = {
    "gzip": _zlib_decode(47),  # 32 + 15: gzip header (auto-detected)
    "x-gzip": _zlib_decode(47),
    "deflate": _zlib_decode(15),  # RFC 9110 §8.4.1.2: the zlib format
}
_ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": _gzip_encode,
    "x-gzip": _gzip_encode,
    "deflate": _deflate_encode,
}
if _brotli is not None:
    _DECODERS["br"], _ENCODERS["br"] = _br_decode, _br_encode
if _zstd is not None:
    _DECODERS["zstd"], _ENCODERS["zstd"] = _zstd_decode, _zstd_encode


def available_codings() -> frozenset[str]:
    """The content codings this installation can decode and encode (``identity`` included)."""
    return frozenset({"identity", *_DECODERS})


def single_coding(content_encoding: str | None) -> str | None:
    """The one coding named by a ``Content-Encoding`` value (lower-case, ``identity`` when absent), or
    None when it names several (a stack of codings is passed through untouched)."""
    if content_encoding is None:
        return "identity"
    codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    if not codings:
        return "identity"
    return codings[0] if len(codings) == 1 else None


def decode(coding: str, data: bytes, limit: int) -> bytes:
    """``data`` decoded from ``coding``; ``TooLarge`` past ``limit`` bytes, ``CodingError`` when invalid
    or when the coding is not available."""
    if coding == "identity":
        if len(data) > limit:
            raise TooLarge(f"body exceeds {limit} bytes")
        return data
    decoder = _DECODERS.get(coding)
    if decoder is None:
        raise CodingError(f"content coding {coding!r} is not available")
    return decoder(data, limit)


def encode(coding: str, data: bytes) -> bytes:
    """``data`` encoded in ``coding`` (one ``decode`` accepts)."""
    if coding == "identity":
        return data
    encoder = _ENCODERS.get(coding)
    if encoder is None:
        raise CodingError(f"content coding {coding!r} is not available")
    return encoder(data)
