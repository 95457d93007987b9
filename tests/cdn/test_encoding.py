"""Content codings for rewriting: exact round trips, a hard cap on decoded size, clear errors."""

from __future__ import annotations

import gzip
import zlib

import brotli
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecache.cdn.encoding import CodingError, TooLarge, available_codings, decode, encode, single_coding

CODINGS = ["gzip", "x-gzip", "deflate", "br", "zstd"]
PAGE = b"<html><body>" + b'<img src="/static/a.png">' * 500 + b"</body></html>"


def test_br_and_zstd_are_available_with_the_cdn_extra() -> None:
    assert {"identity", "gzip", "deflate", "br", "zstd"} <= available_codings()


@pytest.mark.parametrize("coding", CODINGS)
def test_round_trip(coding: str) -> None:
    encoded = encode(coding, PAGE)
    assert encoded != PAGE and len(encoded) < len(PAGE)
    assert decode(coding, encoded, len(PAGE)) == PAGE


@pytest.mark.parametrize(
    ("coding", "foreign"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("br", brotli.compress),
        ("zstd", zstandard.ZstdCompressor().compress),
    ],
)
def test_decodes_what_other_encoders_produce(coding, foreign) -> None:
    assert decode(coding, foreign(PAGE), 10**6) == PAGE


def test_gzip_encoding_is_deterministic() -> None:
    # Same body, same bytes: hits and other nodes serve byte-identical re-encodings.
    assert encode("gzip", PAGE) == encode("gzip", PAGE)


@pytest.mark.parametrize("coding", CODINGS)
def test_a_body_that_expands_past_the_cap_stops_decoding(coding: str) -> None:
    bomb = encode(coding, b"\0" * (64 * 1024 * 1024))  # a few KB on the wire, 64 MiB decoded
    assert len(bomb) < 200_000
    with pytest.raises(TooLarge):
        decode(coding, bomb, 1_000_000)


@pytest.mark.parametrize("coding", CODINGS)
def test_exactly_at_the_cap_is_accepted(coding: str) -> None:
    assert decode(coding, encode(coding, PAGE), len(PAGE)) == PAGE
    with pytest.raises(TooLarge):
        decode(coding, encode(coding, PAGE), len(PAGE) - 1)


@pytest.mark.parametrize("coding", CODINGS)
def test_truncated_and_garbage_bodies_are_coding_errors(coding: str) -> None:
    encoded = encode(coding, PAGE)
    with pytest.raises(CodingError):
        decode(coding, encoded[: len(encoded) // 2], 10**6)
    with pytest.raises(CodingError):
        decode(coding, b"this is not compressed at all", 10**6)


def test_trailing_garbage_after_a_gzip_member_is_an_error() -> None:
    with pytest.raises(CodingError):
        decode("gzip", gzip.compress(PAGE) + b"junk", 10**6)


def test_identity_is_bounded_too() -> None:
    assert decode("identity", b"abc", 3) == b"abc"
    with pytest.raises(TooLarge):
        decode("identity", b"abcd", 3)


def test_unknown_coding_is_an_error() -> None:
    with pytest.raises(CodingError, match="compress"):
        decode("compress", b"x", 10)
    with pytest.raises(CodingError, match="compress"):
        encode("compress", b"x")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "identity"),
        ("", "identity"),
        ("identity", "identity"),
        ("GZIP", "gzip"),
        (" br ", "br"),
        ("gzip, identity", "gzip"),
        ("gzip, br", None),  # stacked codings pass through
    ],
)
def test_single_coding(value, expected) -> None:
    assert single_coding(value) == expected


@settings(max_examples=50, deadline=None)
@given(body=st.binary(max_size=4096), coding=st.sampled_from(CODINGS))
def test_any_body_round_trips(body: bytes, coding: str) -> None:
    assert decode(coding, encode(coding, body), len(body)) == body
