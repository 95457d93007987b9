from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecache.core import codec
from edgecache.core.codec import CorruptEntry, decode, encode
from edgecache.core.entry import Freshness, StoredResponse, VaryIndex
from tests.stores.contract import make_response, make_vary_index

MAX = 1 << 20


def envelope_of(obj: StoredResponse | VaryIndex) -> list[Any]:
    return msgpack.unpackb(encode(obj))  # type: ignore[no-any-return]


def pack(envelope: Any) -> bytes:
    return msgpack.packb(envelope)  # type: ignore[no-any-return]


def reason_for(data: bytes, max_bytes: int = MAX) -> str:
    with pytest.raises(CorruptEntry) as raised:
        decode(data, max_bytes=max_bytes)
    assert raised.value.reason in codec.REASONS
    return raised.value.reason


def test_response_round_trips_with_every_field() -> None:
    response = make_response("a", tags={"items", "item:a"})

    assert decode(encode(response), max_bytes=MAX) == response


def test_response_with_defaults_round_trips() -> None:
    response = StoredResponse(
        status=204,
        headers=[],
        body=b"",
        request_time=0.0,
        response_time=0.0,
        corrected_initial_age=0.0,
        freshness=Freshness(lifetime=0.0, source="default"),
        stored_until=1.0,
        key=b"",
    )

    assert decode(encode(response), max_bytes=MAX) == response


def test_vary_index_round_trips() -> None:
    index = make_vary_index("a")

    assert decode(encode(index), max_bytes=MAX) == index


def test_decoded_fields_have_the_declared_types() -> None:
    decoded = decode(encode(make_response("a", tags={"x"})), max_bytes=MAX)

    assert isinstance(decoded, StoredResponse)
    assert type(decoded.headers) is list
    assert all(type(pair) is tuple for pair in decoded.headers)
    assert type(decoded.vary) is tuple
    assert type(decoded.tags) is frozenset


def test_integer_times_are_stored_as_floats() -> None:
    response = dataclasses.replace(make_response("a"), stored_until=2_000_000_000, request_time=5)

    decoded = decode(encode(response), max_bytes=MAX)

    assert type(decoded.stored_until) is float
    assert decoded == response


def test_envelope_layout() -> None:
    envelope = envelope_of(make_response("a"))

    assert envelope[:3] == [b"EC", codec.VERSION, codec.KIND_RESPONSE]
    assert envelope_of(make_vary_index("a"))[:3] == [b"EC", codec.VERSION, codec.KIND_VARY_INDEX]


def test_encoding_is_never_pickle() -> None:
    data = encode(make_response("a"))

    assert not data.startswith(b"\x80")  # pickle protocol 2+ opcode
    with pytest.raises(pickle.UnpicklingError):
        pickle.loads(data)


def test_a_failed_encode_leaves_nothing_behind_for_the_next() -> None:
    # The Packer is reused per thread; a half-packed envelope must not leak into the next one.
    response = make_response("a")
    with pytest.raises(OverflowError):
        encode(dataclasses.replace(response, size=1 << 70))
    with pytest.raises(UnicodeEncodeError):
        encode(dataclasses.replace(response, etag="\udc80"))

    assert decode(encode(response), max_bytes=MAX) == response


def test_encode_rejects_what_is_not_a_cache_object() -> None:
    with pytest.raises(TypeError):
        encode({"status": 200})  # type: ignore[arg-type]


def _replace_field(obj: StoredResponse | VaryIndex, index: int, value: Any) -> bytes:
    envelope = envelope_of(obj)
    envelope[index] = value
    return pack(envelope)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(b"", "not-msgpack", id="empty"),
        pytest.param(b"\xc1", "not-msgpack", id="reserved-byte"),
        pytest.param(b"\x93\x01", "not-msgpack", id="truncated"),
        pytest.param(pack([b"EC", 1, 2]) + b"\x00", "not-msgpack", id="trailing-bytes"),
        pytest.param(b"\xa3\xff\xfe\xfd", "not-msgpack", id="invalid-utf8-str"),
        pytest.param(b"\xd4\x01\x00", "not-msgpack", id="ext-type"),
        pytest.param(pack({"v": 1}), "bad-envelope", id="map"),
        pytest.param(pack("EC"), "bad-envelope", id="string"),
        pytest.param(pack([b"EC", 1]), "bad-envelope", id="too-short"),
        pytest.param(pack([b"XX", 1, 1]), "bad-envelope", id="wrong-magic"),
        pytest.param(pack(["EC", 1, 1]), "bad-envelope", id="magic-as-str"),
        pytest.param(pack([b"EC", "1", 1]), "bad-envelope", id="version-as-str"),
        pytest.param(pack([b"EC", True, 1]), "bad-envelope", id="version-as-bool"),
        pytest.param(pack([b"EC", 0, 1]), "unknown-version", id="older-version"),
        pytest.param(pack([b"EC", 2, 1]), "unknown-version", id="newer-version"),
        pytest.param(pack([b"EC", 1, 3]), "wrong-type", id="unknown-kind"),
        pytest.param(pack([b"EC", 1, True]), "wrong-type", id="kind-as-bool"),
        pytest.param(pack([b"EC", 1, 1]), "bad-field", id="response-without-fields"),
        pytest.param(pack([b"EC", 1, 2, [], []]), "bad-field", id="vary-index-too-short"),
    ],
)
def test_invalid_bytes_are_corrupt_with_a_reason(data: bytes, reason: str) -> None:
    assert reason_for(data) == reason


# Envelope positions of a response's fields (after magic, version, kind), as codec.py documents them.
RESPONSE_FIELDS = {
    name: 3 + i
    for i, name in enumerate(
        [
            "status",
            "headers",
            "body",
            "request_time",
            "response_time",
            "corrected_initial_age",
            "freshness",
            "stored_until",
            "key",
            "etag",
            "last_modified",
            "vary",
            "vary_values",
            "tags",
            "size",
        ]
    )
}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("status", "200"),
        ("status", 99),
        ("status", 1000),
        ("status", True),
        ("status", 200.0),
        ("headers", [b"content-type"]),  # odd length
        ("headers", [b"content-type", "text/plain"]),  # str value
        ("headers", [[b"content-type", b"text/plain"]]),  # pairs, not flat
        ("body", "text"),
        ("body", None),
        ("request_time", 1),
        ("request_time", float("nan")),
        ("response_time", float("inf")),
        ("corrected_initial_age", None),
        ("freshness", [60.0, "max-age", 0.0, 0.0, False]),
        ("freshness", [60.0, b"max-age", 0.0, 0.0, False, False]),
        ("freshness", [60.0, "max-age", 0.0, 0.0, 0, False]),
        ("freshness", [60, "max-age", 0.0, 0.0, False, False]),
        ("freshness", {"lifetime": 60.0}),
        ("stored_until", "tomorrow"),
        ("key", "GET /"),
        ("etag", b'"v1"'),
        ("last_modified", 1),
        ("vary", "accept-encoding"),
        ("vary", [b"accept-encoding"]),
        ("vary_values", [1]),
        ("tags", [None]),
        ("tags", "red"),
        ("size", -1),
        ("size", 1.5),
        ("size", False),
    ],
)
def test_response_field_of_wrong_type_is_bad_field(field: str, value: Any) -> None:
    data = _replace_field(make_response("a"), RESPONSE_FIELDS[field], value)

    assert reason_for(data) == "bad-field"


@pytest.mark.parametrize(
    ("index", "value"),
    [(3, ["ok", 1]), (4, "variants"), (5, None), (6, "key"), (7, [b"tag"]), (8, -5)],
)
def test_vary_index_field_of_wrong_type_is_bad_field(index: int, value: Any) -> None:
    assert reason_for(_replace_field(make_vary_index("a"), index, value)) == "bad-field"


def test_extra_field_is_bad_field() -> None:
    assert reason_for(pack([*envelope_of(make_response("a")), 0])) == "bad-field"


def test_too_large_is_checked_before_parsing() -> None:
    data = encode(make_response("a", body=b"x" * 5000))

    assert reason_for(data, max_bytes=len(data) - 1) == "too-large"
    assert decode(data, max_bytes=len(data)).body == b"x" * 5000  # type: ignore[union-attr]


def test_length_bounds_hold_inside_the_byte_limit() -> None:
    # 70 000 one-byte elements fit in well under 1 MiB but exceed the array bound.
    assert reason_for(pack([b"EC", 1, 1, [0] * 70_000])) == "not-msgpack"
    assert reason_for(b"\xdd\xff\xff\xff\xff", max_bytes=100) == "not-msgpack"  # claims 4 G elements
    assert reason_for(b"\xc6\x00\x10\x00\x00" + b"x" * 100, max_bytes=200) == "not-msgpack"  # 1 MiB bin


def test_corrupt_entry_message_carries_the_reason() -> None:
    error = CorruptEntry("bad-field", "status")

    assert error.reason == "bad-field"
    assert str(error) == "bad-field: status"


# ------------------------------------------------------------------------------------------ properties

finite = st.floats(allow_nan=False, allow_infinity=False)
text = st.text(max_size=40)
header_bytes = st.binary(max_size=60)

freshness = st.builds(
    Freshness,
    lifetime=finite,
    source=text,
    stale_while_revalidate=finite,
    stale_if_error=finite,
    must_revalidate=st.booleans(),
    no_cache=st.booleans(),
)

responses = st.builds(
    StoredResponse,
    status=st.integers(100, 999),
    headers=st.lists(st.tuples(header_bytes, header_bytes), max_size=12),
    body=st.binary(max_size=3000),
    request_time=finite,
    response_time=finite,
    corrected_initial_age=finite,
    freshness=freshness,
    stored_until=finite,
    key=st.binary(max_size=200),
    etag=st.none() | text,
    last_modified=st.none() | text,
    vary=st.lists(text, max_size=4).map(tuple),
    vary_values=st.lists(st.none() | text, max_size=4).map(tuple),
    tags=st.frozensets(text, max_size=6),
    size=st.integers(0, 2**63 - 1),
)

vary_indexes = st.builds(
    VaryIndex,
    vary=st.lists(text, max_size=4).map(tuple),
    variants=st.lists(text, max_size=8).map(tuple),
    stored_until=finite,
    key=st.binary(max_size=200),
    tags=st.frozensets(text, max_size=6),
    size=st.integers(0, 2**63 - 1),
)


@given(responses | vary_indexes)
@settings(max_examples=300)
def test_every_cache_object_round_trips(obj: StoredResponse | VaryIndex) -> None:
    data = encode(obj)

    assert decode(data, max_bytes=len(data)) == obj


@given(st.binary(max_size=2000))
@settings(max_examples=500)
def test_decoding_arbitrary_bytes_raises_only_corrupt_entry(data: bytes) -> None:
    try:
        decode(data, max_bytes=1000)
    except CorruptEntry as error:
        reason = error.reason
    else:
        reason = "decoded"  # possible in principle: the bytes happen to be a valid envelope
    assert reason in (*codec.REASONS, "decoded")


@given(responses, st.data())
@settings(max_examples=200)
def test_decoding_a_damaged_envelope_raises_only_corrupt_entry(
    obj: StoredResponse, data: st.DataObject
) -> None:
    encoded = bytearray(encode(obj))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(encoded) - 1))
        encoded[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(encoded)))

    for damaged in (bytes(encoded), bytes(encoded[:cut])):
        try:
            result: object = decode(damaged, max_bytes=MAX)
        except CorruptEntry as error:
            result = error.reason
        assert result in codec.REASONS or isinstance(result, StoredResponse | VaryIndex)
