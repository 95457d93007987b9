"""The invalidation bus's messages, as pure data: parsing, validation, encoding, de-duplication and the
rules that turn domain events into cache tags. No I/O, no clock (``now`` is passed in).

Wire format of an invalidation (one JSON object, UTF-8, at most ``MAX_MESSAGE_BYTES``), published on
``<namespace>:invalidate``::

    {"id":"7f1c…","tags":["product:42"],"paths":["/products/42"],"prefixes":["/catalog/"],"soft":false}

``id`` (1..128 characters) is required and makes handling idempotent. ``tags``, ``paths`` and ``prefixes``
are optional lists of non-empty strings (``null`` reads as absent); paths and prefixes start with ``/``.
``soft`` (bool, default false) marks entries stale instead of dropping them. ``all`` (bool, default false)
is an extension: purge everything. At most ``MAX_ITEMS`` items in total; a message must drop something.
Unknown fields are ignored, so producers can add fields without breaking older nodes.

A domain event, published on ``<namespace>:events``::

    {"id":"9a0b…","type":"payment.completed","data":{"user_id":7,"contract_id":"c-12"}}

``data`` is optional (an object); values that are not JSON scalars are dropped (forward compatibility).
``EventRules`` maps an event type to tag templates such as ``"user:{user_id}"``.

Every rejected message raises ``BadInvalidation`` with a short reason token (``REASONS``), for a counter
labelled by reason; strings with lone surrogates (which cannot be UTF-8) are rejected as well.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

MAX_MESSAGE_BYTES: Final = 64 * 1024
MAX_ID_LENGTH: Final = 128
MAX_ITEMS: Final = 1000

REASONS: Final = (
    "too-large",
    "not-json",
    "not-object",
    "bad-id",
    "bad-field",
    "too-many",
    "empty",
    "bad-path",
)

JSONScalar = str | int | float | bool | None
Payload = bytes | bytearray | memoryview | str

_LIST_FIELDS: Final = ("tags", "paths", "prefixes")
_PATH_FIELDS: Final = ("paths", "prefixes")


def invalidation_channel(namespace: str) -> str:
    """The pub/sub channel of invalidation messages: ``<namespace>:invalidate``."""
    return f"{namespace}:invalidate"


def event_channel(namespace: str) -> str:
    """The pub/sub channel of domain events: ``<namespace>:events``."""
    return f"{namespace}:events"


class BadInvalidation(ValueError):
    """A message (or the arguments of one) that cannot be used.

    ``reason`` is one of ``REASONS``; ``field`` names the offending JSON field when there is one
    (``"id"``, ``"tags"``, ``"paths"``, ``"prefixes"``, ``"soft"``, ``"all"``, ``"type"``, ``"data"``).
    """

    def __init__(self, reason: str, detail: str = "", field: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.field = field


@dataclass(frozen=True, slots=True)
class Invalidation:
    id: str
    tags: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    soft: bool = False
    everything: bool = False  # JSON field "all"


@dataclass(frozen=True, slots=True)
class DomainEvent:
    id: str
    type: str
    data: Mapping[str, JSONScalar] = field(default_factory=dict)


# -- shared validation -------------------------------------------------------------------------------------


def _utf8_ok(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, e.g. from "\ud800" in JSON
        return False
    return True


def _load_object(data: Payload) -> dict[str, Any]:
    if isinstance(data, str):
        if len(data) > MAX_MESSAGE_BYTES:  # a character is at least one byte
            raise BadInvalidation("too-large", f"over {MAX_MESSAGE_BYTES} bytes")
        try:
            data = data.encode("utf-8")
        except UnicodeEncodeError:
            raise BadInvalidation("not-json", "not UTF-8") from None
    elif not isinstance(data, bytes | bytearray | memoryview):
        raise BadInvalidation("not-json", f"expected bytes, got {type(data).__name__}")
    if len(data) > MAX_MESSAGE_BYTES:
        raise BadInvalidation("too-large", f"over {MAX_MESSAGE_BYTES} bytes")
    try:
        text = bytes(data).decode("utf-8")
        value = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise BadInvalidation("not-json", type(error).__name__) from None
    if not isinstance(value, dict):
        raise BadInvalidation("not-object", f"top level is {type(value).__name__}")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _check_id(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise BadInvalidation("bad-id", "id must be a non-empty string", "id")
    if len(value) > MAX_ID_LENGTH:
        raise BadInvalidation("bad-id", f"id longer than {MAX_ID_LENGTH} characters", "id")
    if not _utf8_ok(value):
        raise BadInvalidation("bad-id", "id is not valid Unicode", "id")
    return value


def _check_strings(name: str, value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        raise BadInvalidation("bad-field", f"{name} must be a list of strings, not a string", name)
    if not isinstance(value, list | tuple):
        raise BadInvalidation("bad-field", f"{name} must be a list of strings", name)
    if len(value) > MAX_ITEMS:
        raise BadInvalidation("too-many", f"more than {MAX_ITEMS} items", name)
    for item in value:
        if not isinstance(item, str) or not item:
            raise BadInvalidation("bad-field", f"{name} must hold non-empty strings, got {item!r:.60}", name)
        if not _utf8_ok(item):
            raise BadInvalidation("bad-field", f"{name} holds a string that is not valid Unicode", name)
    return tuple(value)


def _check_bool(name: str, value: object) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadInvalidation("bad-field", f"{name} must be true or false", name)
    return value


def _build(
    id_: object, tags: object, paths: object, prefixes: object, soft: object, everything: object
) -> Invalidation:
    checked_id = _check_id(id_)
    lists = {
        name: _check_strings(name, value)
        for name, value in zip(_LIST_FIELDS, (tags, paths, prefixes), strict=True)
    }
    checked_soft = _check_bool("soft", soft)
    checked_all = _check_bool("all", everything)
    if sum(map(len, lists.values())) > MAX_ITEMS:
        raise BadInvalidation("too-many", f"more than {MAX_ITEMS} items in total")
    for name in _PATH_FIELDS:
        for path in lists[name]:
            if not path.startswith("/"):
                raise BadInvalidation("bad-path", f"{name} must start with '/': {path!r:.60}", name)
    if not checked_all and not any(lists.values()):
        raise BadInvalidation("empty", "no tags, paths or prefixes, and not all")
    return Invalidation(
        id=checked_id,
        tags=lists["tags"],
        paths=lists["paths"],
        prefixes=lists["prefixes"],
        soft=checked_soft,
        everything=checked_all,
    )


def _dump(value: dict[str, Any]) -> bytes:
    data = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    if len(data) > MAX_MESSAGE_BYTES:
        raise BadInvalidation("too-large", f"encodes to {len(data)} bytes, over {MAX_MESSAGE_BYTES}")
    return data


# -- invalidations ----------------------------------------------------------------------------------------


def parse_invalidation(data: Payload) -> Invalidation:
    """The invalidation in ``data``, or ``BadInvalidation`` (never another exception)."""
    obj = _load_object(data)
    return _build(
        obj.get("id"),
        obj.get("tags"),
        obj.get("paths"),
        obj.get("prefixes"),
        obj.get("soft"),
        obj.get("all"),
    )


def encode_invalidation(inv: Invalidation) -> bytes:
    """Compact JSON: ``id`` and ``soft`` always, lists only when not empty, ``all`` only when true.

    Validates first (an ``Invalidation`` built by hand may break the rules), so whatever this returns is
    accepted by ``parse_invalidation`` and parses back to an equal ``Invalidation``.
    """
    checked = _build(inv.id, inv.tags, inv.paths, inv.prefixes, inv.soft, inv.everything)
    value: dict[str, Any] = {"id": checked.id}
    for name in _LIST_FIELDS:
        items = getattr(checked, name)
        if items:
            value[name] = list(items)
    value["soft"] = checked.soft
    if checked.everything:
        value["all"] = True
    return _dump(value)


def _as_tuple(name: str, items: Iterable[str] | str) -> object:
    if isinstance(items, str):
        return (items,)  # one tag, not its characters
    try:
        return tuple(items)
    except TypeError:
        raise BadInvalidation("bad-field", f"{name} must be an iterable of strings", name) from None


def new_invalidation(
    *,
    tags: Iterable[str] = (),
    paths: Iterable[str] = (),
    prefixes: Iterable[str] = (),
    soft: bool = False,
    everything: bool = False,
    id: str | None = None,
) -> Invalidation:
    """A validated invalidation with a fresh random id (uuid4 hex) unless ``id`` is given.

    A bare string for ``tags``/``paths``/``prefixes`` is one item. Raises ``BadInvalidation``.
    """
    return _build(
        uuid.uuid4().hex if id is None else id,
        _as_tuple("tags", tags),
        _as_tuple("paths", paths),
        _as_tuple("prefixes", prefixes),
        soft,
        everything,
    )


# -- domain events ----------------------------------------------------------------------------------------


def _is_scalar(value: object) -> bool:
    if isinstance(value, str):
        return _utf8_ok(value)
    return value is None or isinstance(value, bool | int | float)


def _check_event(id_: object, type_: object, data: object) -> DomainEvent:
    checked_id = _check_id(id_)
    if not isinstance(type_, str) or not type_ or len(type_) > MAX_ID_LENGTH or not _utf8_ok(type_):
        raise BadInvalidation("bad-field", f"type must be a string of 1..{MAX_ID_LENGTH} characters", "type")
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise BadInvalidation("bad-field", "data must be an object", "data")
    if len(data) > MAX_ITEMS:
        raise BadInvalidation("too-many", f"more than {MAX_ITEMS} data fields", "data")
    scalars: dict[str, JSONScalar] = {}
    for key, value in data.items():
        if not isinstance(key, str) or not _utf8_ok(key):
            raise BadInvalidation("bad-field", "data keys must be strings", "data")
        if _is_scalar(value):
            scalars[key] = value
    return DomainEvent(id=checked_id, type=type_, data=scalars)


def parse_event(data: Payload) -> DomainEvent:
    """The domain event in ``data``, or ``BadInvalidation`` (never another exception)."""
    obj = _load_object(data)
    return _check_event(obj.get("id"), obj.get("type"), obj.get("data"))


def encode_event(event: DomainEvent) -> bytes:
    """Compact JSON ``{"id":…,"type":…,"data":{…}}`` (validated first, like ``encode_invalidation``)."""
    checked = _check_event(event.id, event.type, event.data)
    if len(checked.data) != len(event.data):
        raise BadInvalidation("bad-field", "data values must be JSON scalars", "data")
    try:
        return _dump({"id": checked.id, "type": checked.type, "data": dict(checked.data)})
    except ValueError as error:  # NaN or an infinity
        if isinstance(error, BadInvalidation):
            raise
        raise BadInvalidation("bad-field", "data values must be finite numbers", "data") from None


def new_event(
    type: str, data: Mapping[str, JSONScalar] | None = None, *, id: str | None = None
) -> DomainEvent:
    """A validated event with a fresh random id (uuid4 hex) unless ``id`` is given."""
    event = DomainEvent(id=uuid.uuid4().hex if id is None else id, type=type, data=dict(data or {}))
    encode_event(event)  # validates, size included
    return event


_PLACEHOLDER: Final = re.compile(r"\{([^{}]*)\}")
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class _Template:
    text: str
    literals: tuple[str, ...]  # len(names) + 1 pieces around the placeholders
    names: tuple[str, ...]


def _compile_template(event_type: str, template: object) -> _Template:
    where = f"event rule {event_type!r}: template {template!r}"
    if not isinstance(template, str) or not template:
        raise ValueError(f"{where}: a template must be a non-empty string")
    pieces = _PLACEHOLDER.split(template)
    literals, names = tuple(pieces[0::2]), tuple(pieces[1::2])
    for literal in literals:
        if "{" in literal or "}" in literal:
            raise ValueError(f"{where}: unbalanced or nested brace (only {{name}} placeholders are allowed)")
    for name in names:
        if not _NAME.fullmatch(name):
            raise ValueError(f"{where}: placeholder {{{name}}} is not a field name")
    return _Template(template, literals, names)


class EventTags(NamedTuple):
    """What ``EventRules.tags_for`` found: the tags to drop, and why some templates gave none."""

    tags: tuple[str, ...]
    problems: list[str]


class EventRules:
    """Which tags a domain event invalidates: ``{"payment.completed": ["user:{user_id}", …]}``.

    Templates are validated at construction (``ValueError`` naming the bad template). ``tags_for``
    substitutes the event's ``data`` values; only strings and integers (not booleans) are substituted.
    A template whose field is missing, empty or of another type is skipped and reported in the returned
    ``problems``, never raised: one malformed event must not stop the others.
    """

    def __init__(self, rules: Mapping[str, Iterable[str]]) -> None:
        if not isinstance(rules, Mapping):
            raise ValueError("event rules must be a mapping of event type to a list of tag templates")
        compiled: dict[str, tuple[_Template, ...]] = {}
        for event_type, templates in rules.items():
            if not isinstance(event_type, str) or not event_type:
                raise ValueError(f"event rule {event_type!r}: the event type must be a non-empty string")
            if isinstance(templates, str) or not isinstance(templates, Iterable):
                raise ValueError(
                    f"event rule {event_type!r}: expected a list of templates, not {templates!r}"
                )
            compiled[event_type] = tuple(_compile_template(event_type, t) for t in templates)
        self._rules = compiled

    @property
    def rules(self) -> dict[str, list[str]]:
        """The templates as given, by event type (a fresh copy, e.g. to merge with more rules)."""
        return {event_type: [t.text for t in templates] for event_type, templates in self._rules.items()}

    @property
    def types(self) -> frozenset[str]:
        return frozenset(self._rules)

    def tags_for(self, event: DomainEvent) -> EventTags:
        """``(tags, problems)``: the tags ``event`` invalidates, de-duplicated in rule order (none for a
        type without rules), and one message per template skipped."""
        tags: dict[str, None] = {}
        problems: list[str] = []
        for template in self._rules.get(event.type, ()):
            values: list[str] = []
            for name in template.names:
                problem = _field_problem(event.data, name)
                if problem is None:
                    values.append(str(event.data[name]))
                    continue
                problems.append(f"template {template.text!r}: {problem}")
                break
            else:
                pieces = [template.literals[0]]
                for value, literal in zip(values, template.literals[1:], strict=True):
                    pieces += (value, literal)
                tags["".join(pieces)] = None
        return EventTags(tuple(tags), problems)


_MAX_INT_DIGITS: Final = 4000  # str(int) refuses more than 4300 digits


def _field_problem(data: Mapping[str, JSONScalar], name: str) -> str | None:
    if name not in data:
        return f"missing field {name!r}"
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, str | int):
        return f"field {name!r} is {type(value).__name__}, not a string or integer"
    if value == "":
        return f"field {name!r} is empty"
    if isinstance(value, int) and value.bit_length() > _MAX_INT_DIGITS * 3:
        return f"field {name!r} is an integer too large to be a tag"
    return None


# -- once-per-id handling ---------------------------------------------------------------------------------


class SeenIds:
    """The ids handled recently, so that the same message acts once: at most ``max_ids`` ids, each
    forgotten ``ttl`` seconds after it was first seen (the oldest go first when full). ``now`` is any
    non-decreasing clock, passed in."""

    def __init__(self, max_ids: int = 10_000, ttl: float = 600.0) -> None:
        if max_ids < 1:
            raise ValueError("max_ids must be at least 1")
        if not ttl > 0:
            raise ValueError("ttl must be positive")
        self.max_ids = max_ids
        self.ttl = ttl
        self._seen: OrderedDict[str, float] = OrderedDict()  # id -> first seen, oldest first

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, id_: object) -> bool:
        return id_ in self._seen

    def first_time(self, id_: str, now: float) -> bool:
        """True the first time ``id_`` is seen (within ``ttl``), and remembers it; False after that."""
        seen = self._seen
        horizon = now - self.ttl
        while seen:
            oldest_id, first_seen = next(iter(seen.items()))
            if first_seen > horizon:
                break
            del seen[oldest_id]
        if id_ in seen:
            return False
        seen[id_] = now
        if len(seen) > self.max_ids:
            seen.popitem(last=False)
        return True

    def forget(self, id_: str) -> None:
        """Let ``id_`` act again (e.g. its handling failed)."""
        self._seen.pop(id_, None)
