"""Single byte ranges (RFC 9110 §14) and If-Range (§13.1.5)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecache.core.ranges import ByteRange, Unsatisfiable, select_range

ETAG = '"v1"'
SIZE = 100
UNSATISFIABLE = "416"


@pytest.mark.parametrize(
    ("range_header", "if_range", "etag", "size", "expected"),
    [
        # int-range (§14.1.1)
        pytest.param("bytes=0-9", None, ETAG, SIZE, ByteRange(0, 9), id="rfc9110-14.1.1-first-last"),
        pytest.param("bytes=0-0", None, ETAG, SIZE, ByteRange(0, 0), id="rfc9110-14.1.1-one-byte"),
        pytest.param("bytes=99-99", None, ETAG, SIZE, ByteRange(99, 99), id="rfc9110-14.1.1-last-byte"),
        pytest.param("bytes=90-", None, ETAG, SIZE, ByteRange(90, 99), id="rfc9110-14.1.1-open-range"),
        pytest.param("bytes=0-", None, ETAG, SIZE, ByteRange(0, 99), id="rfc9110-14.1.1-open-from-zero"),
        pytest.param("bytes=50-500", None, ETAG, SIZE, ByteRange(50, 99), id="rfc9110-14.1.1-last-clamped"),
        pytest.param("Bytes = 1-2 ", None, ETAG, SIZE, ByteRange(1, 2), id="rfc9110-14.1-unit-case"),
        pytest.param("bytes=100-", None, ETAG, SIZE, UNSATISFIABLE, id="rfc9110-14.1.1-first-at-length"),
        pytest.param("bytes=200-300", None, ETAG, SIZE, UNSATISFIABLE, id="rfc9110-14.1.1-beyond-end"),
        pytest.param("bytes=0-", None, ETAG, 0, UNSATISFIABLE, id="rfc9110-14.1.1-empty-representation"),
        pytest.param("bytes=5-4", None, ETAG, SIZE, None, id="rfc9110-14.1.1-last-before-first-invalid"),
        # suffix-range (§14.1.1)
        pytest.param("bytes=-10", None, ETAG, SIZE, ByteRange(90, 99), id="rfc9110-14.1.1-suffix"),
        pytest.param("bytes=-500", None, ETAG, SIZE, ByteRange(0, 99), id="rfc9110-14.1.1-suffix-longer"),
        pytest.param("bytes=-0", None, ETAG, SIZE, UNSATISFIABLE, id="rfc9110-14.1.1-suffix-zero"),
        pytest.param("bytes=-5", None, ETAG, 0, UNSATISFIABLE, id="rfc9110-14.1.1-suffix-empty-repr"),
        # ignored: full response (§14.2 "a server MAY ignore the Range header field")
        pytest.param("bytes=0-1,5-6", None, ETAG, SIZE, None, id="rfc9110-14.2-multi-range"),
        pytest.param("bytes=0-1, 200-300", None, ETAG, SIZE, None, id="rfc9110-14.2-multi-with-bad"),
        pytest.param("items=0-1", None, ETAG, SIZE, None, id="rfc9110-14.1-other-unit"),
        pytest.param("bytes=-", None, ETAG, SIZE, None, id="rfc9110-14.1.1-no-positions"),
        pytest.param("bytes=a-b", None, ETAG, SIZE, None, id="rfc9110-14.1.1-letters"),
        pytest.param("bytes=1", None, ETAG, SIZE, None, id="rfc9110-14.1.1-no-dash"),
        pytest.param("bytes=-1-2", None, ETAG, SIZE, None, id="rfc9110-14.1.1-two-dashes"),
        pytest.param("bytes=+1-2", None, ETAG, SIZE, None, id="rfc9110-14.1.1-sign"),
        pytest.param("bytes=0x1-2", None, ETAG, SIZE, None, id="rfc9110-14.1.1-hex"),
        pytest.param("bytes=0 - 2", None, ETAG, SIZE, None, id="rfc9110-14.1.1-inner-space"),
        pytest.param("bytes=²-", None, ETAG, SIZE, None, id="rfc9110-14.1.1-superscript-digit"),
        pytest.param("bytes=-²", None, ETAG, SIZE, None, id="rfc9110-14.1.1-superscript-suffix"),
        pytest.param("bytes=١-٢", None, ETAG, SIZE, None, id="rfc9110-14.1.1-non-ascii-digits"),
        pytest.param("bytes=" + "1" * 70 + "-", None, ETAG, SIZE, None, id="over-length"),
        pytest.param("", None, ETAG, SIZE, None, id="empty"),
        pytest.param("bytes", None, ETAG, SIZE, None, id="unit-only"),
        # If-Range (§13.1.5): strong comparison with an entity tag; dates and mismatches → full response
        pytest.param("bytes=0-9", ETAG, ETAG, SIZE, ByteRange(0, 9), id="rfc9110-13.1.5-strong-match"),
        pytest.param("bytes=0-9", '"v0"', ETAG, SIZE, None, id="rfc9110-13.1.5-mismatch"),
        pytest.param("bytes=0-9", 'W/"v1"', ETAG, SIZE, None, id="rfc9110-13.1.5-weak-request"),
        pytest.param("bytes=0-9", ETAG, 'W/"v1"', SIZE, None, id="rfc9110-13.1.5-weak-stored"),
        pytest.param("bytes=0-9", ETAG, None, SIZE, None, id="rfc9110-13.1.5-no-stored-etag"),
        pytest.param(
            "bytes=0-9", "Sun, 06 Nov 1994 08:49:37 GMT", ETAG, SIZE, None, id="rfc9110-13.1.5-date-ignored"
        ),
        pytest.param("bytes=500-", '"v0"', ETAG, SIZE, None, id="rfc9110-13.1.5-mismatch-beats-416"),
        pytest.param("bytes=500-", ETAG, ETAG, SIZE, UNSATISFIABLE, id="rfc9110-13.1.5-match-then-416"),
    ],
)
def test_select_range(
    range_header: str, if_range: str | None, etag: str | None, size: int, expected: ByteRange | str | None
) -> None:
    if expected == UNSATISFIABLE:
        with pytest.raises(Unsatisfiable):
            select_range(range_header, if_range, etag, size)
    else:
        assert select_range(range_header, if_range, etag, size) == expected


def test_byte_range_length_is_inclusive() -> None:
    assert ByteRange(0, 0).length == 1
    assert ByteRange(10, 19).length == 10


@given(st.text(max_size=40), st.integers(min_value=0, max_value=10**6))
@settings(max_examples=200)
def test_select_range_never_raises_anything_but_unsatisfiable(header: str, size: int) -> None:
    for value in (header, "bytes=" + header):
        try:
            chosen = select_range(value, None, None, size)
        except Unsatisfiable:
            continue
        assert chosen is None or 0 <= chosen.first <= chosen.last < size


@given(
    st.integers(min_value=0, max_value=10**4),
    st.one_of(st.none(), st.integers(min_value=0, max_value=10**4)),
    st.integers(min_value=1, max_value=10**4),
)
@settings(max_examples=100)
def test_selected_range_lies_inside_the_representation(first: int, last: int | None, size: int) -> None:
    header = f"bytes={first}-{'' if last is None else last}"
    try:
        chosen = select_range(header, None, None, size)
    except Unsatisfiable:
        assert first >= size
        return
    if last is not None and last < first:
        assert chosen is None
    else:
        assert chosen == ByteRange(first, size - 1 if last is None else min(last, size - 1))
