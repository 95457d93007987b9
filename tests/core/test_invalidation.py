"""The bus's message model: the invalidation wire format, domain events, event rules and SeenIds."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecache.core.invalidation import (
    MAX_ID_LENGTH,
    MAX_ITEMS,
    MAX_MESSAGE_BYTES,
    REASONS,
    BadInvalidation,
    DomainEvent,
    EventRules,
    Invalidation,
    SeenIds,
    encode_event,
    encode_invalidation,
    event_channel,
    invalidation_channel,
    new_event,
    new_invalidation,
    parse_event,
    parse_invalidation,
)

T = TypeVar("T")


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


# -- parse_invalidation: valid messages ----------------------------------------------------------------

VALID = [
    pytest.param(
        # the documented example
        {
            "id": "7f1c",
            "tags": ["product:42", "user:7"],
            "paths": ["/products/42"],
            "prefixes": ["/catalog/"],
            "soft": False,
        },
        Invalidation("7f1c", ("product:42", "user:7"), ("/products/42",), ("/catalog/",), False),
        id="documented",
    ),
    pytest.param({"id": "a", "tags": ["t"]}, Invalidation("a", tags=("t",)), id="tags-only"),
    pytest.param({"id": "a", "paths": ["/"]}, Invalidation("a", paths=("/",)), id="paths-only"),
    pytest.param({"id": "a", "prefixes": ["/x"]}, Invalidation("a", prefixes=("/x",)), id="prefixes-only"),
    pytest.param({"id": "a", "all": True}, Invalidation("a", everything=True), id="all"),
    pytest.param(
        {"id": "a", "tags": ["t"], "soft": True}, Invalidation("a", tags=("t",), soft=True), id="soft"
    ),
    pytest.param(
        {"id": "a", "tags": ["t"], "future": {"x": 1}, "version": 2},
        Invalidation("a", tags=("t",)),
        id="unknown-fields-ignored",
    ),
    pytest.param(
        {"id": "a", "tags": ["t"], "paths": None, "soft": None, "all": False},
        Invalidation("a", tags=("t",)),
        id="null-is-absent",
    ),
    pytest.param(
        {"id": "x" * MAX_ID_LENGTH, "tags": ["t"]}, Invalidation("x" * 128, tags=("t",)), id="long-id"
    ),
    pytest.param(
        {"id": "ü", "tags": ["café", "日本"], "paths": ["/ü ber"]},
        Invalidation("ü", tags=("café", "日本"), paths=("/ü ber",)),
        id="unicode",
    ),
    pytest.param(
        {"id": "a", "tags": ["t"] * MAX_ITEMS}, Invalidation("a", tags=("t",) * MAX_ITEMS), id="max-items"
    ),
]


@pytest.mark.parametrize(("message", "expected"), VALID)
def test_parse_valid(message: dict[str, Any], expected: Invalidation) -> None:
    assert parse_invalidation(dumps(message)) == expected
    assert parse_invalidation(json.dumps(message)) == expected  # str works too


# -- parse_invalidation: rejected messages, by reason ---------------------------------------------------

INVALID: list[Any] = [
    pytest.param(b"x" * (MAX_MESSAGE_BYTES + 1), "too-large", id="too-large"),
    pytest.param(
        b'{"id":"a","tags":["' + b"t" * MAX_MESSAGE_BYTES + b'"]}', "too-large", id="too-large-valid"
    ),
    pytest.param(b"", "not-json", id="empty-bytes"),
    pytest.param(b"{", "not-json", id="truncated"),
    pytest.param(b"\xff\xfe{}", "not-json", id="not-utf8"),
    pytest.param(b'{"id":"a","tags":["t"]} trailing', "not-json", id="trailing"),
    pytest.param(b'{"id":"a","n":NaN,"tags":["t"]}', "not-json", id="nan"),
    pytest.param(b"[" * 50_000 + b"]" * 50_000, "too-large", id="deep-too-large"),
    pytest.param(b"[" * 30_000 + b"]" * 30_000, "not-json", id="deep-nesting"),
    pytest.param(b'{"id":"a","x":' + b"1" * 5000 + b"}", "not-json", id="huge-int"),
    pytest.param(dumps([1, 2]), "not-object", id="array"),
    pytest.param(dumps("id"), "not-object", id="string"),
    pytest.param(b"null", "not-object", id="null"),
    pytest.param(dumps({"tags": ["t"]}), "bad-id", id="missing-id"),
    pytest.param(dumps({"id": "", "tags": ["t"]}), "bad-id", id="empty-id"),
    pytest.param(dumps({"id": 7, "tags": ["t"]}), "bad-id", id="int-id"),
    pytest.param(dumps({"id": None, "tags": ["t"]}), "bad-id", id="null-id"),
    pytest.param(dumps({"id": "x" * (MAX_ID_LENGTH + 1), "tags": ["t"]}), "bad-id", id="long-id"),
    pytest.param(b'{"id":"\\ud800","tags":["t"]}', "bad-id", id="surrogate-id"),
    pytest.param(dumps({"id": "a", "tags": "t"}), "bad-field", id="tags-string"),
    pytest.param(dumps({"id": "a", "tags": {"t": 1}}), "bad-field", id="tags-object"),
    pytest.param(dumps({"id": "a", "tags": [""]}), "bad-field", id="empty-tag"),
    pytest.param(dumps({"id": "a", "tags": [1]}), "bad-field", id="int-tag"),
    pytest.param(dumps({"id": "a", "tags": [None]}), "bad-field", id="null-tag"),
    pytest.param(dumps({"id": "a", "tags": [["t"]]}), "bad-field", id="nested-tag"),
    pytest.param(b'{"id":"a","tags":["\\udfff"]}', "bad-field", id="surrogate-tag"),
    pytest.param(dumps({"id": "a", "paths": "/x"}), "bad-field", id="paths-string"),
    pytest.param(dumps({"id": "a", "tags": ["t"], "soft": "true"}), "bad-field", id="soft-string"),
    pytest.param(dumps({"id": "a", "tags": ["t"], "soft": 1}), "bad-field", id="soft-int"),
    pytest.param(dumps({"id": "a", "all": "yes"}), "bad-field", id="all-string"),
    pytest.param(dumps({"id": "a", "tags": ["t"] * (MAX_ITEMS + 1)}), "too-many", id="too-many-tags"),
    pytest.param(
        dumps({"id": "a", "tags": ["t"] * 600, "paths": ["/"] * 300, "prefixes": ["/p"] * 101}),
        "too-many",
        id="too-many-in-total",
    ),
    pytest.param(dumps({"id": "a"}), "empty", id="nothing"),
    pytest.param(dumps({"id": "a", "tags": [], "paths": [], "soft": True}), "empty", id="empty-lists"),
    pytest.param(dumps({"id": "a", "all": False}), "empty", id="all-false"),
    pytest.param(dumps({"id": "a", "paths": ["products/42"]}), "bad-path", id="relative-path"),
    pytest.param(dumps({"id": "a", "prefixes": ["catalog/"]}), "bad-path", id="relative-prefix"),
    pytest.param(dumps({"id": "a", "paths": ["https://x/y"]}), "bad-path", id="absolute-url"),
]


@pytest.mark.parametrize(("data", "reason"), INVALID)
def test_parse_invalid(data: bytes, reason: str) -> None:
    assert reason in REASONS
    with pytest.raises(BadInvalidation) as caught:
        parse_invalidation(data)
    assert caught.value.reason == reason


def test_bad_invalidation_names_the_field() -> None:
    with pytest.raises(BadInvalidation) as caught:
        parse_invalidation(dumps({"id": "a", "prefixes": ["x"]}))
    assert caught.value.field == "prefixes"
    assert "'x'" in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_parse_accepts_bytearray_and_memoryview() -> None:
    data = dumps({"id": "a", "tags": ["t"]})
    assert (
        parse_invalidation(bytearray(data))
        == parse_invalidation(memoryview(data))
        == Invalidation("a", ("t",))
    )


def test_too_large_str_is_measured_in_utf8_bytes() -> None:
    tag = "é" * (MAX_MESSAGE_BYTES // 2)  # fewer characters than the limit, more bytes
    with pytest.raises(BadInvalidation, match="too-large"):
        parse_invalidation(json.dumps({"id": "a", "tags": [tag]}, ensure_ascii=False))


# -- encoding ---------------------------------------------------------------------------------------------


def test_encode_is_compact_and_omits_empty_fields() -> None:
    inv = Invalidation("7f1c", tags=("product:42", "user:7"), paths=("/products/42",))
    assert encode_invalidation(inv) == (
        b'{"id":"7f1c","tags":["product:42","user:7"],"paths":["/products/42"],"soft":false}'
    )
    assert encode_invalidation(Invalidation("a", prefixes=("/c/",), soft=True)) == (
        b'{"id":"a","prefixes":["/c/"],"soft":true}'
    )
    assert encode_invalidation(Invalidation("a", everything=True)) == b'{"id":"a","soft":false,"all":true}'


def test_encode_keeps_unicode_readable() -> None:
    assert (
        encode_invalidation(Invalidation("a", tags=("café",)))
        == '{"id":"a","tags":["café"],"soft":false}'.encode()
    )


def test_encode_refuses_an_invalid_invalidation() -> None:
    with pytest.raises(BadInvalidation, match="empty"):
        encode_invalidation(Invalidation("a"))
    with pytest.raises(BadInvalidation, match="bad-path"):
        encode_invalidation(Invalidation("a", paths=("x",)))
    with pytest.raises(BadInvalidation, match="too-large"):
        encode_invalidation(Invalidation("a", tags=("t" * 100,) * 1000))


def test_new_invalidation() -> None:
    first = new_invalidation(tags=["a", "b"], paths=("/x",), soft=True)
    second = new_invalidation(tags=["a"])
    assert first.tags == ("a", "b")
    assert first.paths == ("/x",)
    assert first.soft
    assert len(first.id) == 32
    int(first.id, 16)
    assert first.id != second.id
    assert new_invalidation(tags="one-tag").tags == ("one-tag",)  # a bare string is one tag
    assert new_invalidation(everything=True, id="fixed") == Invalidation("fixed", everything=True)
    with pytest.raises(BadInvalidation, match="empty"):
        new_invalidation()
    with pytest.raises(BadInvalidation, match="bad-path") as caught:
        new_invalidation(prefixes=["catalog"])
    assert caught.value.field == "prefixes"
    with pytest.raises(BadInvalidation, match="bad-id"):
        new_invalidation(tags=["t"], id="")
    with pytest.raises(BadInvalidation, match="bad-field"):
        new_invalidation(tags=[""])


def test_channels() -> None:
    assert invalidation_channel("edgecache") == "edgecache:invalidate"
    assert event_channel("shop") == "shop:events"


# -- properties -------------------------------------------------------------------------------------------


def attempt(parse: Callable[[bytes], T], data: bytes) -> T | BadInvalidation:
    """What ``parse`` returns, or the ``BadInvalidation`` it raised (any other exception escapes)."""
    try:
        return parse(data)
    except BadInvalidation as bad:
        return bad


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_parse_never_raises_anything_else_on_bytes(data: bytes) -> None:
    for parse in (parse_invalidation, parse_event):
        result = attempt(parse, data)
        if isinstance(result, BadInvalidation):
            assert result.reason in REASONS


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
message_like = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.text(max_size=4), st.integers(), st.none()),
        "tags": st.one_of(st.lists(st.text(max_size=4), max_size=3), json_values),
        "paths": st.one_of(st.lists(st.text(max_size=4), max_size=3), json_values),
        "prefixes": st.lists(st.sampled_from(["/", "/a", "", "a"]), max_size=3),
        "soft": st.one_of(st.booleans(), json_values),
        "all": st.one_of(st.booleans(), json_values),
        "type": st.one_of(st.text(max_size=4), json_values),
        "data": json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(message_like)
def test_parse_never_raises_anything_else_on_near_misses(message: dict[str, Any]) -> None:
    ascii_json = json.dumps(message).encode()
    raw_json = json.dumps(message, ensure_ascii=False).encode("utf-8", "surrogatepass")
    for data in (ascii_json, raw_json):
        inv = attempt(parse_invalidation, data)
        if isinstance(inv, BadInvalidation):
            assert inv.reason in REASONS
        else:
            assert parse_invalidation(encode_invalidation(inv)) == inv
        event = attempt(parse_event, data)
        if isinstance(event, BadInvalidation):
            assert event.reason in REASONS
        else:
            assert parse_event(encode_event(event)) == event


strings = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)
paths = strings.map(lambda s: "/" + s)


@settings(max_examples=200, deadline=None)
@given(
    id_=st.text(st.characters(codec="utf-8"), min_size=1, max_size=MAX_ID_LENGTH),
    tags=st.lists(strings, max_size=5),
    paths=st.lists(paths, max_size=5),
    prefixes=st.lists(paths, max_size=5),
    soft=st.booleans(),
    everything=st.booleans(),
)
def test_encode_parse_round_trip(
    id_: str, tags: list[str], paths: list[str], prefixes: list[str], soft: bool, everything: bool
) -> None:
    inv = Invalidation(id_, tuple(tags), tuple(paths), tuple(prefixes), soft, everything)
    if not (tags or paths or prefixes or everything):
        with pytest.raises(BadInvalidation, match="empty"):
            encode_invalidation(inv)
        return
    data = encode_invalidation(inv)
    assert parse_invalidation(data) == inv
    assert parse_invalidation(data.decode()) == inv
    assert json.loads(data).get("all", False) is everything


# -- domain events ----------------------------------------------------------------------------------------


def test_parse_event() -> None:
    event = parse_event(dumps({"id": "e1", "type": "payment.completed", "data": {"user_id": 7, "x": "y"}}))
    assert event == DomainEvent("e1", "payment.completed", {"user_id": 7, "x": "y"})
    assert parse_event(dumps({"id": "e1", "type": "t"})).data == {}
    # values that are not scalars are dropped, unknown top-level fields ignored
    event = parse_event(dumps({"id": "e", "type": "t", "data": {"a": [1], "b": {"c": 1}, "d": None}, "v": 2}))
    assert event.data == {"d": None}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"x" * (MAX_MESSAGE_BYTES + 1), "too-large"),
        (b"{", "not-json"),
        (b"[]", "not-object"),
        (dumps({"type": "t"}), "bad-id"),
        (dumps({"id": "e"}), "bad-field"),
        (dumps({"id": "e", "type": ""}), "bad-field"),
        (dumps({"id": "e", "type": 3}), "bad-field"),
        (dumps({"id": "e", "type": "t", "data": [1]}), "bad-field"),
        (dumps({"id": "e", "type": "t", "data": {str(i): i for i in range(MAX_ITEMS + 1)}}), "too-many"),
    ],
)
def test_parse_event_invalid(data: bytes, reason: str) -> None:
    with pytest.raises(BadInvalidation) as caught:
        parse_event(data)
    assert caught.value.reason == reason


def test_encode_event_round_trip() -> None:
    event = new_event("payment.completed", {"user_id": 7, "contract_id": "c-1", "ok": True, "amount": 1.5})
    data = encode_event(event)
    assert json.loads(data) == {
        "id": event.id,
        "type": "payment.completed",
        "data": {"user_id": 7, "contract_id": "c-1", "ok": True, "amount": 1.5},
    }
    assert parse_event(data) == event
    with pytest.raises(BadInvalidation, match="bad-field"):
        encode_event(DomainEvent("e", "t", {"a": [1]}))  # type: ignore[dict-item]
    with pytest.raises(BadInvalidation, match="bad-field"):
        encode_event(DomainEvent("e", "t", {"a": float("nan")}))
    with pytest.raises(BadInvalidation, match="bad-field"):
        new_event("")


# -- event rules ------------------------------------------------------------------------------------------


RULES = {
    "payment.completed": ["user:{user_id}", "contract:{contract_id}", "all-payments"],
    "user.renamed": ["user:{user_id}", "user:{user_id}", "name:{first}-{last}"],
}


def test_event_rules_substitute() -> None:
    rules = EventRules(RULES)
    event = DomainEvent("e", "payment.completed", {"user_id": 7, "contract_id": "c-12", "extra": 1})
    assert rules.tags_for(event) == (("user:7", "contract:c-12", "all-payments"), [])
    tags, problems = rules.tags_for(
        DomainEvent("e", "user.renamed", {"user_id": "u", "first": "A", "last": "B"})
    )
    assert tags == ("user:u", "name:A-B")  # de-duplicated, in rule order
    assert problems == []
    assert rules.tags_for(DomainEvent("e", "unknown.type", {"user_id": 1})) == ((), [])
    assert rules.types == frozenset(RULES)
    assert rules.rules == RULES


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"contract_id": "c"}, "missing field 'user_id'"),
        ({"user_id": None, "contract_id": "c"}, "field 'user_id' is NoneType"),
        ({"user_id": True, "contract_id": "c"}, "field 'user_id' is bool"),
        ({"user_id": 1.5, "contract_id": "c"}, "field 'user_id' is float"),
        ({"user_id": "", "contract_id": "c"}, "field 'user_id' is empty"),
        ({"user_id": 10**5000, "contract_id": "c"}, "too large"),
    ],
)
def test_event_rules_skip_and_report_bad_fields(data: dict[str, Any], problem: str) -> None:
    tags, problems = EventRules(RULES).tags_for(DomainEvent("e", "payment.completed", data))
    assert tags == ("contract:c", "all-payments")  # the other templates still apply
    assert len(problems) == 1
    assert "'user:{user_id}'" in problems[0]
    assert problem in problems[0]


@pytest.mark.parametrize(
    "template",
    ["user:{", "user:}", "user:{}", "user:{user id}", "user:{0}", "user:{a.b}", "{{user}}", "{a{b}c}", "", 7],
)
def test_event_rules_reject_bad_templates(template: Any) -> None:
    with pytest.raises(ValueError, match="template") as caught:
        EventRules({"t": ["ok:{x}", template]})
    assert repr(template) in str(caught.value)


def test_event_rules_reject_bad_shapes() -> None:
    with pytest.raises(ValueError, match="list of templates"):
        EventRules({"t": "user:{id}"})
    with pytest.raises(ValueError, match="event type"):
        EventRules({"": ["x"]})
    with pytest.raises(ValueError, match="mapping"):
        EventRules([("t", ["x"])])  # type: ignore[arg-type]


# -- SeenIds ----------------------------------------------------------------------------------------------


def test_seen_ids_once_per_id() -> None:
    seen = SeenIds()
    assert seen.first_time("a", 0.0)
    assert not seen.first_time("a", 1.0)
    assert seen.first_time("b", 1.0)
    assert "a" in seen
    assert len(seen) == 2


def test_seen_ids_forget_after_ttl() -> None:
    seen = SeenIds(ttl=10.0)
    assert seen.first_time("a", 100.0)
    assert not seen.first_time("a", 109.9)  # a repeat does not extend the window
    assert seen.first_time("b", 105.0)
    assert seen.first_time("a", 110.0)  # 10 s after it was first seen
    assert not seen.first_time("b", 110.0)
    assert seen.first_time("c", 200.0)
    assert len(seen) == 1  # everything older expired


def test_seen_ids_bounded() -> None:
    seen = SeenIds(max_ids=3, ttl=1e9)
    for i in range(5):
        assert seen.first_time(str(i), float(i))
    assert len(seen) == 3
    assert seen.first_time("0", 10.0)  # the oldest went first
    assert not seen.first_time("4", 10.0)


def test_seen_ids_default_bound_holds_ten_thousand() -> None:
    seen = SeenIds()
    for i in range(10_500):
        seen.first_time(str(i), 0.0)
    assert len(seen) == 10_000
    assert not seen.first_time("10499", 0.0)


def test_seen_ids_forget_and_validation() -> None:
    seen = SeenIds()
    seen.first_time("a", 0.0)
    seen.forget("a")
    seen.forget("never-seen")
    assert seen.first_time("a", 0.0)
    with pytest.raises(ValueError, match="max_ids"):
        SeenIds(max_ids=0)
    with pytest.raises(ValueError, match="ttl"):
        SeenIds(ttl=0)
