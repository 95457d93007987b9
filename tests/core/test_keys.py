"""Cache keys: canonical encoding, digests, host normalisation, query filtering, variant keys, tags."""

from __future__ import annotations

import hashlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecache.core.keys import (
    KEY_VERSION,
    CacheKey,
    QueryFilter,
    canonical,
    digest,
    make_key,
    normalize_host,
    path_tag,
    primary_key,
    uri_components,
    uri_tag,
    variant_key,
)

URI = uri_components("https", "example.com", b"/a", b"x=1")

# ---------------------------------------------------------------------------------------------------------
# canonical / digest


def test_canonical_is_versioned_netstrings() -> None:
    assert canonical() == KEY_VERSION
    assert canonical(b"abc", b"", None) == KEY_VERSION + b"3:abc,0:,-,"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        pytest.param((None,), (b"",), id="none-vs-empty"),
        pytest.param((b"ab", b"c"), (b"a", b"bc"), id="shifted-boundary"),
        pytest.param((b"a,b",), (b"a", b"b"), id="separator-inside"),
        pytest.param((b"1:a,",), (b"a",), id="netstring-inside"),
        pytest.param((b"-,",), (None,), id="none-marker-inside"),
        pytest.param((), (b"",), id="no-component-vs-empty"),
        pytest.param((b"a", None), (b"a",), id="trailing-none"),
    ],
)
def test_canonical_distinguishes(a: tuple[bytes | None, ...], b: tuple[bytes | None, ...]) -> None:
    assert canonical(*a) != canonical(*b)


_components = st.lists(st.one_of(st.none(), st.binary(max_size=8)), max_size=6).map(tuple)


@given(_components, _components)
@settings(max_examples=150)
def test_canonical_is_injective(a: tuple[bytes | None, ...], b: tuple[bytes | None, ...]) -> None:
    assert (canonical(*a) == canonical(*b)) == (a == b)


@given(_components)
@settings(max_examples=50)
def test_canonical_shifting_one_byte_between_neighbours_changes_the_key(a: tuple[bytes | None, ...]) -> None:
    parts = [p for p in a if p]
    if len(parts) < 2:
        return
    shifted = [parts[0] + parts[1][:1], parts[1][1:], *parts[2:]]
    assert canonical(*parts) != canonical(*shifted)


@given(st.binary(max_size=64))
@settings(max_examples=50)
def test_digest_is_sha256_hex(data: bytes) -> None:
    value = digest(data)
    assert value == hashlib.sha256(data).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", value)
    assert make_key(data) == CacheKey(data, value)


# ---------------------------------------------------------------------------------------------------------
# hosts and URIs


@pytest.mark.parametrize(
    ("host", "scheme", "expected"),
    [
        pytest.param("Example.COM", "http", "example.com", id="rfc3986-6.2.2.1-case"),
        pytest.param("example.com:80", "http", "example.com", id="rfc3986-6.2.3-http-default-port"),
        pytest.param("example.com:443", "https", "example.com", id="rfc3986-6.2.3-https-default-port"),
        pytest.param("example.com:443", "http", "example.com:443", id="https-port-kept-for-http"),
        pytest.param("example.com:80", "https", "example.com:80", id="http-port-kept-for-https"),
        pytest.param("example.com:8080", "http", "example.com:8080", id="port-ending-in-80-kept"),
        pytest.param("example.com:1443", "https", "example.com:1443", id="port-ending-in-443-kept"),
        pytest.param(" example.com ", "http", "example.com", id="whitespace"),
        pytest.param("[::1]:443", "https", "[::1]", id="ipv6-default-port"),
        pytest.param("[::1]:8443", "https", "[::1]:8443", id="ipv6-other-port"),
    ],
)
def test_normalize_host(host: str, scheme: str, expected: str) -> None:
    assert normalize_host(host, scheme) == expected


def test_uri_components_agree_across_default_ports() -> None:
    assert uri_components("https", "Example.com:443", b"/a", b"") == (b"https", b"example.com", b"/a", b"")
    assert primary_key(uri_components("http", "a:80", b"/", b"")) == primary_key(
        uri_components("http", "A", b"/", b"")
    )


# ---------------------------------------------------------------------------------------------------------
# query filter


@pytest.mark.parametrize(
    ("ignore", "allow", "query", "expected"),
    [
        pytest.param((), None, b"b=2&a=1&&", b"b=2&a=1&&", id="inactive-keeps-everything"),
        pytest.param(("utm_*",), None, b"b=2&utm_source=x&a=1", b"b=2&a=1", id="glob"),
        pytest.param(("utm_*",), None, b"utm_a=1&utm_b=2", b"", id="all-dropped"),
        pytest.param(("utm_*",), None, b"utm%5Fsource=x&q=1", b"q=1", id="percent-encoded-name"),
        pytest.param(("utm_*",), None, b"UTM_source=x", b"UTM_source=x", id="case-sensitive"),
        pytest.param(("fbclid",), None, b"fbclid&x=1", b"x=1", id="name-without-value"),
        pytest.param(("fbclid",), None, b"fbclidx=1", b"fbclidx=1", id="exact-name-only"),
        pytest.param(("a",), None, b"b=1&a=2&b=0", b"b=1&b=0", id="repeated-order-kept"),
        pytest.param(("x",), None, b"q=%41+b&x=1", b"q=%41+b", id="bytes-kept-as-received"),
        pytest.param(("x",), None, b"a=1&&b=2", b"a=1&b=2", id="empty-pairs-dropped"),
        pytest.param((), ("q", "page"), b"page=2&utm=1&q=x", b"page=2&q=x", id="allow-list"),
        pytest.param(("q",), ("q", "page"), b"page=2&q=x", b"page=2", id="ignore-beats-allow"),
        pytest.param(("utm_*",), None, b"", b"", id="empty-query"),
    ],
)
def test_query_filter(
    ignore: tuple[str, ...], allow: tuple[str, ...] | None, query: bytes, expected: bytes
) -> None:
    assert QueryFilter(ignore, allow).apply(query) == expected


def test_query_filter_active_flag() -> None:
    assert not QueryFilter().active
    assert QueryFilter(ignore=("a",)).active
    assert QueryFilter(allow=()).active


_names = st.text(alphabet="abcutm_xyz", min_size=1, max_size=8)
_pairs = st.lists(st.tuples(_names, st.binary(max_size=6).map(lambda b: b.hex().encode())), max_size=8)


@given(_pairs)
@settings(max_examples=100)
def test_query_filter_keeps_order_and_bytes(pairs: list[tuple[str, bytes]]) -> None:
    raw = [n.encode() + b"=" + v for n, v in pairs]
    result = QueryFilter(ignore=("utm_*", "x")).apply(b"&".join(raw))
    expected = [p for (n, _), p in zip(pairs, raw, strict=True) if not n.startswith("utm_") and n != "x"]
    assert result == b"&".join(expected)


# ---------------------------------------------------------------------------------------------------------
# primary and variant keys


def test_primary_key_depends_on_every_uri_component() -> None:
    keys = {
        primary_key(uri_components(scheme, host, path, query)).digest
        for scheme, host, path, query in [
            ("https", "a", b"/p", b"q"),
            ("http", "a", b"/p", b"q"),
            ("https", "b", b"/p", b"q"),
            ("https", "a", b"/P", b"q"),
            ("https", "a", b"/p", b"Q"),
            ("https", "a", b"/p", b""),
            ("https", "a", b"/pq", b""),
        ]
    }
    assert len(keys) == 7


def test_primary_key_distinguishes_missing_and_empty_recipe_values() -> None:
    keys = {
        primary_key(URI).digest,
        primary_key(URI, [None]).digest,
        primary_key(URI, [""]).digest,
        primary_key(URI, ["a"]).digest,
        primary_key(URI, [], [None]).digest,
        primary_key(URI, [], [""]).digest,
        primary_key(URI, ["a"], [""]).digest,
        primary_key(URI, ["a", None]).digest,
    }
    assert len(keys) == 8
    assert primary_key(URI, ["a"], ["b"]) == primary_key(URI, ["a"], ["b"])


def test_primary_key_canonical_travels_with_digest() -> None:
    key = primary_key(URI)
    assert key.digest == digest(key.canonical)
    assert key.canonical.startswith(KEY_VERSION)


_vary_values = st.lists(st.one_of(st.none(), st.text(alphabet="ab, ", max_size=4)), min_size=2, max_size=2)


@given(_vary_values, _vary_values)
@settings(max_examples=200)
def test_variant_keys_differ_exactly_when_values_differ(a: list[str | None], b: list[str | None]) -> None:
    primary = primary_key(URI)
    vary = ("accept-encoding", "accept-language")
    same = variant_key(primary, vary, tuple(a)) == variant_key(primary, vary, tuple(b))
    assert same == (a == b)


def test_variant_keys() -> None:
    primary = primary_key(URI)
    other = primary_key(uri_components("https", "example.com", b"/b", b""))
    vary = ("accept",)
    assert variant_key(primary, vary, (None,)) != variant_key(primary, vary, ("",))  # missing vs empty
    assert variant_key(primary, vary, ("a",)) != variant_key(other, vary, ("a",))
    assert variant_key(primary, vary, ("a",)) != variant_key(primary, ("origin",), ("a",))
    assert variant_key(primary, vary, ("a",)) != primary
    assert variant_key(primary, (), ()) != primary
    with pytest.raises(ValueError, match="zip"):
        variant_key(primary, vary, ())


# ---------------------------------------------------------------------------------------------------------
# internal tags


def test_uri_tag_covers_the_whole_uri_and_path_tag_only_the_path() -> None:
    a = uri_components("https", "a.example", b"/p", b"x=1")
    b = uri_components("https", "b.example", b"/p", b"")
    assert uri_tag(a) != uri_tag(b)
    assert uri_tag(a) == uri_tag(uri_components("https", "A.example:443", b"/p", b"x=1"))
    assert re.fullmatch(r"uri:[0-9a-f]{64}", uri_tag(a))
    assert path_tag(b"/p") == path_tag(a[2]) == path_tag(b[2])
    assert path_tag(b"/p") != path_tag(b"/q")
    assert re.fullmatch(r"path:[0-9a-f]{64}", path_tag(b"/p"))
    # the tag spaces never collide with a primary key's canonical form
    assert uri_tag(a).removeprefix("uri:") != primary_key(a).digest
