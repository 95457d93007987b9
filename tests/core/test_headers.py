"""Header parsing: Fields, Cache-Control, HTTP dates, entity tags, Vary, Accept-Encoding, tags, cookies."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecache.core.headers import (
    DELTA_SECONDS_MAX,
    EMPTY_CACHE_CONTROL,
    MAX_DIRECTIVES,
    MAX_TAG_CHARS,
    MAX_TAGS,
    CacheControl,
    EntityTag,
    Fields,
    format_http_date,
    if_none_match_matches,
    normalize_accept_encoding,
    normalize_vary_value,
    parse_cache_tags,
    parse_cookie_header,
    parse_delta_seconds,
    parse_etag,
    parse_http_date,
    parse_surrogate_keys,
    parse_vary,
    split_list,
    unquote,
)

NUMERIC = ("max-age", "s-maxage", "stale-while-revalidate", "stale-if-error", "min-fresh")

# RFC 9110 §5.6.2 tchar
TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
tokens = st.text(alphabet=TCHARS, min_size=1, max_size=12)

# ---------------------------------------------------------------------------------------------------------
# Fields


def test_fields_names_are_case_insensitive_and_values_kept_in_order() -> None:
    fields = Fields([(b"Vary", b"Accept"), (b"X-A", b"1"), (b"vary", b"Cookie")])
    assert "vary" in fields
    assert "x-a" in fields
    assert "missing" not in fields
    assert fields.get("vary") == "Accept"
    assert fields.get_all("vary") == ["Accept", "Cookie"]
    assert fields.get_all("missing") == []
    assert fields.get("missing") is None
    assert sorted(fields.names()) == ["vary", "x-a"]


def test_fields_joined_combines_field_lines_as_one_list() -> None:
    fields = Fields([(b"cache-control", b"max-age=1"), (b"Cache-Control", b"public"), (b"x", b"y")])
    assert fields.joined("cache-control") == "max-age=1, public"
    assert fields.joined("x") == "y"
    assert fields.joined("absent") is None


def test_fields_decode_latin1_without_errors() -> None:
    fields = Fields([(b"x-bin", bytes(range(256)))])
    value = fields.get("x-bin")
    assert value is not None
    assert value.encode("latin-1") == bytes(range(256))


# ---------------------------------------------------------------------------------------------------------
# split_list / unquote / delta-seconds


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("a, b,c", ["a", "b", "c"], id="rfc9110-5.6.1-plain"),
        pytest.param(" , a ,, b , ", ["a", "b"], id="rfc9110-5.6.1-empty-members-dropped"),
        pytest.param('a="x, y", b', ['a="x, y"', "b"], id="rfc9110-5.6.4-comma-inside-quotes"),
        pytest.param(r'a="x\", y", b', [r'a="x\", y"', "b"], id="rfc9110-5.6.4-escaped-quote"),
        pytest.param('a="unterminated, b', ['a="unterminated, b'], id="unterminated-quote"),
        pytest.param("", [], id="empty"),
    ],
)
def test_split_list(value: str, expected: list[str]) -> None:
    assert split_list(value) == expected


def test_split_list_is_bounded() -> None:
    assert len(split_list(",".join(["a"] * 1000))) == MAX_DIRECTIVES
    assert len(split_list(",".join(['"a"'] * 1000))) == MAX_DIRECTIVES
    assert split_list("a,b,c", limit=2) == ["a", "b"]


@given(st.lists(tokens, max_size=MAX_DIRECTIVES), st.sampled_from([",", ", ", " ,", " , ", ",\t"]))
@settings(max_examples=60)
def test_split_list_round_trips_token_lists(members: list[str], sep: str) -> None:
    assert split_list(sep.join(members)) == members


@given(st.lists(st.text(alphabet=TCHARS + " ,=", max_size=10), max_size=10))
@settings(max_examples=60)
def test_split_list_round_trips_quoted_strings(contents: list[str]) -> None:
    members = [f'n="{c}"' for c in contents]
    assert split_list(", ".join(members)) == members


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"abc"', "abc"),
        (' "a\\"b" ', 'a"b'),
        ('"a\\\\b"', "a\\b"),
        ("plain", "plain"),
        ('"', '"'),
        ('""', ""),
    ],
)
def test_unquote(value: str, expected: str) -> None:
    assert unquote(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(None, None, id="absent"),
        pytest.param("60", 60, id="rfc9111-1.2.2-plain"),
        pytest.param('"60"', 60, id="rfc9111-5.2-quoted"),
        pytest.param("0", 0, id="zero"),
        pytest.param("2147483648", DELTA_SECONDS_MAX, id="rfc9111-1.2.2-exactly-2**31"),
        pytest.param("2147483649", DELTA_SECONDS_MAX, id="rfc9111-1.2.2-clamped"),
        pytest.param("9" * 40, DELTA_SECONDS_MAX, id="rfc9111-1.2.2-huge-clamped"),
        pytest.param("00000000060", 60, id="rfc9111-1.2.2-leading-zeros-are-not-huge"),
        pytest.param("0" * 40, 0, id="rfc9111-1.2.2-many-zeros"),
        pytest.param("-1", None, id="negative"),
        pytest.param("1.5", None, id="fraction"),
        pytest.param("", None, id="empty"),
        pytest.param("6 0", None, id="inner-space"),
        pytest.param("١٢", None, id="non-ascii-digits"),
        pytest.param("²", None, id="superscript-digit"),
    ],
)
def test_parse_delta_seconds(value: str | None, expected: int | None) -> None:
    assert parse_delta_seconds(value) == expected


# ---------------------------------------------------------------------------------------------------------
# Cache-Control


@pytest.mark.parametrize(
    ("value", "directives"),
    [
        pytest.param(None, {}, id="absent"),
        pytest.param("", {}, id="empty"),
        pytest.param("public, max-age=60", {"public": None, "max-age": "60"}, id="rfc9111-5.2-basic"),
        pytest.param("Max-Age=60, PUBLIC", {"max-age": "60", "public": None}, id="rfc9111-5.2-case"),
        pytest.param('max-age="60"', {"max-age": "60"}, id="rfc9111-5.2-quoted-numeric"),
        pytest.param("max-age=60, max-age=60", {"max-age": "60"}, id="rfc9111-4.2.1-duplicate-same"),
        pytest.param("max-age=60, max-age=120", {"max-age": "0"}, id="rfc9111-4.2.1-duplicate-conflict"),
        pytest.param("max-age=60, max-age=120, max-age=60", {"max-age": "0"}, id="rfc9111-4.2.1-conflict-3"),
        pytest.param("max-age=abc", {"max-age": "0"}, id="rfc9111-4.2.1-invalid-is-stale"),
        pytest.param("max-age", {"max-age": "0"}, id="rfc9111-4.2.1-missing-arg-is-stale"),
        pytest.param("max-age=-5", {"max-age": "0"}, id="rfc9111-1.2.2-negative-is-stale"),
        pytest.param("s-maxage=99999999999", {"s-maxage": "2147483648"}, id="rfc9111-1.2.2-clamp"),
        pytest.param(
            'private="Set-Cookie, X-Token", no-cache',
            {"private": "Set-Cookie, X-Token", "no-cache": None},
            id="rfc9111-5.2.2.7-qualified-private",
        ),
        pytest.param("private, private=x", {"private": None}, id="first-non-numeric-wins"),
        pytest.param("=60, ,public", {"public": None}, id="empty-names-skipped"),
        pytest.param("max-stale", {"max-stale": None}, id="rfc9111-5.2.1.2-max-stale-bare"),
        pytest.param('ext="a\\"b"', {"ext": 'a"b'}, id="rfc9111-5.2.3-extension-quoted"),
    ],
)
def test_cache_control_parse(value: str | None, directives: dict[str, str | None]) -> None:
    assert dict(CacheControl.parse(value).directives) == directives


def test_cache_control_accessors() -> None:
    cc = CacheControl.parse('max-age=60, public, private="Set-Cookie,  X-A ", no-cache')
    assert cc.has("public")
    assert not cc.has("no-store")
    assert cc.seconds("max-age") == 60
    assert cc.seconds("s-maxage") is None
    assert cc.field_names("private") == frozenset({"set-cookie", "x-a"})
    assert cc.field_names("no-cache") is None  # the unqualified form
    assert cc.field_names("absent") is None
    assert CacheControl.parse(None) is EMPTY_CACHE_CONTROL


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("", None, id="rfc9111-5.2.1.2-absent"),
        pytest.param("max-stale", float("inf"), id="rfc9111-5.2.1.2-any-staleness"),
        pytest.param("max-stale=30", 30.0, id="rfc9111-5.2.1.2-bounded"),
        pytest.param('max-stale="30"', 30.0, id="rfc9111-5.2.1.2-quoted"),
        pytest.param("max-stale=abc", 0.0, id="rfc9111-5.2.1.2-invalid-is-zero"),
        pytest.param("max-stale=99999999999999", float(DELTA_SECONDS_MAX), id="rfc9111-1.2.2-clamped"),
    ],
)
def test_cache_control_max_stale(value: str, expected: float | None) -> None:
    assert CacheControl.parse(value).max_stale == expected


def test_cache_control_is_bounded() -> None:
    cc = CacheControl.parse(", ".join(f"x{i}" for i in range(10_000)))
    assert len(cc.directives) == MAX_DIRECTIVES
    huge = "max-age=" + "9" * 1_000_000
    assert CacheControl.parse(huge).seconds("max-age") == DELTA_SECONDS_MAX


_directive_names = st.sampled_from([*NUMERIC, "max-stale", "no-cache", "private", "public", "no-store"])
_arguments = st.one_of(
    st.none(),
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.integers(min_value=0, max_value=10**12).map(lambda n: f'"{n}"'),
    st.text(max_size=30),
)


@st.composite
def _cache_control_texts(draw: st.DrawFn) -> str:
    members = draw(
        st.lists(
            st.one_of(
                st.tuples(_directive_names, _arguments).map(
                    lambda t: t[0] if t[1] is None else f"{t[0]}={t[1]}"
                ),
                st.text(max_size=40),
            ),
            max_size=12,
        )
    )
    return draw(st.sampled_from([",", ", ", ",,", ";"])).join(members)


def _check_numeric(cc: CacheControl) -> None:
    for name in NUMERIC:
        value = cc.seconds(name)
        assert value is None or 0 <= value <= DELTA_SECONDS_MAX
    stale = cc.max_stale
    assert stale is None or stale == float("inf") or 0 <= stale <= DELTA_SECONDS_MAX


@given(st.one_of(_cache_control_texts(), st.text(max_size=300)))
@settings(max_examples=200)
def test_cache_control_parse_never_raises_and_numbers_stay_in_range(value: str) -> None:
    cc = CacheControl.parse(value)
    _check_numeric(cc)
    for name in cc.directives:
        cc.field_names(name)


@given(
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
    st.integers(min_value=100, max_value=5000),
)
@settings(max_examples=25)
def test_cache_control_parse_survives_huge_repeated_and_control_characters(chunk: str, repeat: int) -> None:
    for value in (chunk * repeat, '"' + chunk * repeat, "max-age=" + chunk * repeat, "\x00\x7f\r\n" + chunk):
        _check_numeric(CacheControl.parse(value))


# ---------------------------------------------------------------------------------------------------------
# HTTP dates (RFC 9110 §5.6.7)

SUNDAY_1994 = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT, the RFC's own example


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("Sun, 06 Nov 1994 08:49:37 GMT", SUNDAY_1994, id="rfc9110-5.6.7-imf-fixdate"),
        pytest.param("Sunday, 06-Nov-94 08:49:37 GMT", SUNDAY_1994, id="rfc9110-5.6.7-rfc850"),
        pytest.param("Sun Nov  6 08:49:37 1994", SUNDAY_1994, id="rfc9110-5.6.7-asctime"),
        pytest.param("  Sun, 06 Nov 1994 08:49:37 GMT  ", SUNDAY_1994, id="surrounding-space"),
        pytest.param("sun, 06 nov 1994 08:49:37 GMT", SUNDAY_1994, id="rfc9110-5.6.7-month-case"),
        pytest.param(
            "Thursday, 01-Jan-04 00:00:00 GMT",
            datetime(2004, 1, 1, tzinfo=UTC).timestamp(),
            id="rfc9110-5.6.7-rfc850-2000s",
        ),
        pytest.param("Thursday, 01-Jan-70 00:00:00 GMT", 0.0, id="rfc9110-5.6.7-rfc850-pivot-70-is-1970"),
        pytest.param("0", None, id="rfc9111-5.3-zero"),
        pytest.param("", None, id="empty"),
        pytest.param(None, None, id="absent"),
        pytest.param("Sun, 06 Nov 1994 08:49:37 UTC", None, id="not-gmt"),
        pytest.param("Sun, 32 Nov 1994 08:49:37 GMT", None, id="day-32"),
        pytest.param("Sun, 06 Foo 1994 08:49:37 GMT", None, id="bad-month"),
        pytest.param("Sun, 06 Nov 1994 24:00:00 GMT", None, id="hour-24"),
        pytest.param("Sun, 06 Nov 0000 08:49:37 GMT", None, id="year-zero"),
        pytest.param("Sun, 06 Nov 1994 08:49:37 GMT" + " " * 64, None, id="over-length"),
        pytest.param("1994-11-06T08:49:37Z", None, id="iso-8601"),
    ],
)
def test_parse_http_date(value: str | None, expected: float | None) -> None:
    assert parse_http_date(value) == expected


def test_format_http_date_is_imf_fixdate() -> None:
    assert format_http_date(SUNDAY_1994) == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert format_http_date(SUNDAY_1994 + 0.9) == "Sun, 06 Nov 1994 08:49:37 GMT"


_moments = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2069, 12, 31, 23, 59, 59), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=0))


@given(_moments)
@settings(max_examples=100)
def test_http_date_formats_round_trip(moment: datetime) -> None:
    epoch = moment.timestamp()
    imf = format_http_date(epoch)
    assert parse_http_date(imf) == epoch
    assert format_http_date(parse_http_date(imf) or 0) == imf
    rfc850 = moment.strftime("%A, %d-%b-%y %H:%M:%S GMT")
    assert parse_http_date(rfc850) == epoch
    asctime = f"{moment:%a %b} {moment.day:>2} {moment:%H:%M:%S %Y}"
    assert parse_http_date(asctime) == epoch


@given(st.text(max_size=80))
@settings(max_examples=200)
def test_parse_http_date_never_raises(value: str) -> None:
    result = parse_http_date(value)
    assert result is None or isinstance(result, float)


@given(
    st.from_regex(r"\A[A-Za-z]{3}, \d{2} [A-Za-z]{3} \d{4} \d{2}:\d{2}:\d{2} GMT\Z"),
)
@settings(max_examples=100)
def test_parse_http_date_never_raises_on_well_shaped_nonsense(value: str) -> None:
    parse_http_date(value)


# ---------------------------------------------------------------------------------------------------------
# Entity tags and If-None-Match (RFC 9110 §8.8.3, §13.1.2)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param('"abc"', EntityTag('"abc"', weak=False), id="rfc9110-8.8.3-strong"),
        pytest.param('W/"abc"', EntityTag('"abc"', weak=True), id="rfc9110-8.8.3-weak"),
        pytest.param('""', EntityTag('""', weak=False), id="rfc9110-8.8.3-empty-opaque"),
        pytest.param(' "abc" ', EntityTag('"abc"', weak=False), id="surrounding-space"),
        pytest.param("abc", None, id="unquoted"),
        pytest.param('w/"abc"', None, id="rfc9110-8.8.3-weak-prefix-is-case-sensitive"),
        pytest.param('"a"b"', None, id="inner-quote"),
        pytest.param('"a b"', None, id="inner-space"),
        pytest.param(None, None, id="absent"),
    ],
)
def test_parse_etag(value: str | None, expected: EntityTag | None) -> None:
    assert parse_etag(value) == expected


@pytest.mark.parametrize(
    ("header", "etag", "matches"),
    [
        pytest.param('"a"', '"a"', True, id="rfc9110-13.1.2-same"),
        pytest.param('W/"a"', '"a"', True, id="rfc9110-13.1.2-weak-comparison-weak-request"),
        pytest.param('"a"', 'W/"a"', True, id="rfc9110-13.1.2-weak-comparison-weak-stored"),
        pytest.param('"b", W/"a"', '"a"', True, id="rfc9110-13.1.2-list"),
        pytest.param('"b","c"', '"a"', False, id="rfc9110-13.1.2-list-no-match"),
        pytest.param("*", '"a"', True, id="rfc9110-13.1.2-star"),
        pytest.param("*", None, True, id="rfc9110-13.1.2-star-without-etag"),
        pytest.param('"a"', None, False, id="rfc9110-13.1.2-no-stored-etag"),
        pytest.param('"a,b"', '"a,b"', True, id="rfc9110-8.8.3-comma-in-opaque"),
        pytest.param("a", "a", False, id="unquoted-never-matches"),
    ],
)
def test_if_none_match_matches(header: str, etag: str | None, matches: bool) -> None:
    assert if_none_match_matches(header, etag) is matches


# ---------------------------------------------------------------------------------------------------------
# Vary and its request values (RFC 9111 §4.1)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param([], (), id="absent"),
        pytest.param(["Accept-Encoding"], ("accept-encoding",), id="rfc9110-12.5.5-one"),
        pytest.param(["Origin, accept", "ACCEPT"], ("accept", "origin"), id="sorted-deduplicated"),
        pytest.param(["Accept, *"], None, id="rfc9110-12.5.5-star"),
        pytest.param(["Accept", "*"], None, id="rfc9110-12.5.5-star-second-line"),
    ],
)
def test_parse_vary(values: list[str], expected: tuple[str, ...] | None) -> None:
    assert parse_vary(values) == expected


@pytest.mark.parametrize(
    ("name", "values", "expected"),
    [
        pytest.param("accept-language", [], None, id="rfc9111-4.1-absent"),
        pytest.param("accept-language", [""], "", id="rfc9111-4.1-empty-is-not-absent"),
        pytest.param("accept-language", ["en ,  fr"], "en,fr", id="rfc9111-4.1-whitespace"),
        pytest.param("accept-language", ["en", "fr"], "en,fr", id="rfc9111-4.1-combined-lines"),
        pytest.param("x-a", ["a   b"], "a b", id="inner-whitespace"),
        pytest.param("accept-encoding", ["br, gzip"], "br,gzip", id="accept-encoding-normalised"),
    ],
)
def test_normalize_vary_value(name: str, values: list[str], expected: str | None) -> None:
    assert normalize_vary_value(name, values) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("gzip, deflate, br", "br,deflate,gzip", id="sorted"),
        pytest.param("GZIP;q=0.5", "gzip", id="case-and-q"),
        pytest.param("x-gzip", "gzip", id="rfc9110-8.4.1.3-x-gzip-alias"),
        pytest.param("gzip;q=0, br", "br", id="rfc9110-12.5.3-q-zero-refused"),
        pytest.param("gzip;q=0.000", "", id="rfc9110-12.4.2-q-zero-decimals"),
        pytest.param("gzip;q=abc", "", id="malformed-q-refused"),
        pytest.param("sdch, foo", "", id="unknown-dropped"),
        pytest.param("*", "br,compress,deflate,gzip,identity,zstd", id="rfc9110-12.5.3-star"),
        pytest.param("*;q=0", "", id="rfc9110-12.5.3-star-refused"),
        pytest.param(
            "gzip;q=0, *", "br,compress,deflate,identity,zstd", id="rfc9110-12.5.3-star-excludes-refused"
        ),
        pytest.param(
            "*, x-gzip;q=0", "br,compress,deflate,identity,zstd", id="rfc9110-12.5.3-star-excludes-alias"
        ),
        pytest.param("", "", id="empty"),
    ],
)
def test_normalize_accept_encoding(value: str, expected: str) -> None:
    assert normalize_accept_encoding(value) == expected


_codings = st.sampled_from(["gzip", "br", "deflate", "zstd", "identity", "x-gzip", "compress", "*", "sdch"])
_qs = st.sampled_from(["", ";q=0", ";q=1", ";q=0.5", ";Q=0", " ; q=0.0", ";level=1"])
_members = st.lists(st.tuples(_codings, _qs).map("".join), max_size=8)


@given(_members, st.randoms(use_true_random=False))
@settings(max_examples=100)
def test_normalize_accept_encoding_is_order_insensitive_and_idempotent(
    members: list[str], rnd: random.Random
) -> None:
    once = normalize_accept_encoding(", ".join(members))
    shuffled = list(members)
    rnd.shuffle(shuffled)
    assert normalize_accept_encoding(",".join(shuffled)) == once
    assert normalize_accept_encoding(once) == once


# ---------------------------------------------------------------------------------------------------------
# Tags and cookies


def test_surrogate_keys_are_space_separated_and_bounded() -> None:
    assert parse_surrogate_keys(["a b\tc", " d "]) == ["a", "b", "c", "d"]
    assert parse_surrogate_keys([]) == []
    assert parse_surrogate_keys(["x" * (MAX_TAG_CHARS + 1) + " ok"]) == ["ok"]
    assert len(parse_surrogate_keys([" ".join(f"t{i}" for i in range(1000))])) == MAX_TAGS


def test_cache_tags_are_comma_separated_and_bounded() -> None:
    assert parse_cache_tags(["a, b,,c", "d"]) == ["a", "b", "c", "d"]
    assert parse_cache_tags(["x" * (MAX_TAG_CHARS + 1) + ",ok"]) == ["ok"]
    assert len(parse_cache_tags([",".join(f"t{i}" for i in range(1000))])) == MAX_TAGS


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param(["a=1; b=2"], {"a": "1", "b": "2"}, id="rfc6265-5.4-pairs"),
        pytest.param(["a=1", "a=2; b="], {"a": "1", "b": ""}, id="rfc6265-5.4-first-wins"),
        pytest.param(["novalue; =x; c = 3 "], {"c": "3"}, id="malformed-skipped"),
        pytest.param(["t=a=b"], {"t": "a=b"}, id="value-with-equals"),
    ],
)
def test_parse_cookie_header(values: list[str], expected: dict[str, str]) -> None:
    assert parse_cookie_header(values) == expected
