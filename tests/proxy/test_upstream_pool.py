"""UpstreamPool without sockets: selection, pins, probe windows and breakers on an injected clock."""

from __future__ import annotations

import httpx
import pytest

from edgecache.core.breaker import BreakerState
from edgecache.core.keys import path_tag, prefix_tags, uri_components, uri_tag
from edgecache.engine import Cache
from edgecache.proxy.app import parse_trusted
from edgecache.proxy.upstreams import (
    HealthConfig,
    ProbeWindow,
    UpstreamPool,
    client_address,
    client_identities,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


PRIMARY = httpx.URL("http://primary.test/")
R1, R2 = httpx.URL("http://r1.test/"), httpx.URL("http://r2.test/")


def _pool(clock: Clock, replicas: tuple[httpx.URL, ...] = (R1, R2), **options: object) -> UpstreamPool:
    return UpstreamPool(PRIMARY, replicas, clock=clock, **options)  # type: ignore[arg-type]


def _names(pool: UpstreamPool, n: int, read: bool, pinned: bool = False) -> list[str]:
    chosen = [pool.choose(read, pinned) for _ in range(n)]
    return [u.name if u else "-" for u in chosen]


def test_reads_take_turns_among_replicas_and_writes_go_to_the_primary() -> None:
    pool = _pool(Clock())
    assert _names(pool, 4, read=True) == ["replica-1", "replica-2", "replica-1", "replica-2"]
    assert _names(pool, 2, read=False) == ["primary", "primary"]
    assert _names(pool, 2, read=True, pinned=True) == ["primary", "primary"]


def test_the_replica_with_fewest_requests_in_flight_wins() -> None:
    pool = _pool(Clock())
    pool.replicas[0].outstanding = 2
    pool.replicas[1].outstanding = 1
    assert _names(pool, 3, read=True) == ["replica-2"] * 3


def test_without_replicas_reads_go_to_the_primary() -> None:
    pool = _pool(Clock(), ())
    assert _names(pool, 2, read=True) == ["primary", "primary"]
    assert not pool.routes_reads


def test_open_breakers_and_sick_probes_eject_and_fallbacks_follow() -> None:
    clock = Clock()
    pool = _pool(clock, health=HealthConfig(interval=1, window=2, threshold=1, initial=1), breaker_failures=1)
    r1, r2 = pool.replicas
    pool.failed(r1, "connect")
    assert r1.breaker.state is BreakerState.OPEN
    assert _names(pool, 2, read=True) == ["replica-2", "replica-2"]
    r2.probes.record(False)  # type: ignore[union-attr]
    r2.probes.record(False)  # type: ignore[union-attr]
    assert not r2.healthy
    assert _names(pool, 1, read=True) == ["primary"]  # no healthy replica: the primary
    pool.failed(pool.primary, "timeout")
    assert _names(pool, 1, read=True) == ["-"]  # nothing usable
    assert _names(pool, 1, read=False) == ["-"]
    assert not pool.ready()


def test_a_pinned_read_falls_back_to_a_replica_when_the_primary_is_out() -> None:
    pool = _pool(Clock(), breaker_failures=1)
    pool.failed(pool.primary, "connect")
    assert _names(pool, 1, read=True, pinned=True) == ["replica-1"]
    assert _names(pool, 1, read=False) == ["-"]  # a write never goes to a replica


def test_half_open_lets_one_trial_request_through_then_closes_on_success() -> None:
    clock = Clock()
    pool = _pool(clock, (R1,), breaker_failures=1, breaker_reset=5)
    (r1,) = pool.replicas
    pool.failed(r1, "connect")
    clock.now += 5
    trial = pool.choose(read=True)
    assert trial is r1 and r1.breaker.state is BreakerState.HALF_OPEN
    assert pool.choose(read=True) is pool.primary  # the trial is in flight: others skip r1
    pool.succeeded(r1)
    assert pool.choose(read=True) is r1


def test_an_abandoned_trial_does_not_leave_the_upstream_out_for_good() -> None:
    clock = Clock()
    pool = _pool(clock, (R1,), breaker_failures=1, breaker_reset=5)
    (r1,) = pool.replicas
    pool.failed(r1, "connect")
    clock.now += 5
    assert pool.choose(read=True) is r1
    r1.breaker.abandoned()  # e.g. the client left before the upstream answered
    assert pool.choose(read=True) is r1


def test_a_body_error_counts_but_does_not_feed_the_breaker() -> None:
    pool = _pool(Clock(), breaker_failures=1)
    pool.failed(pool.primary, "body")
    assert pool.primary.errors["body"] == 1
    assert pool.primary.breaker.state is BreakerState.CLOSED


@pytest.mark.parametrize(
    ("window", "threshold", "initial", "results", "healthy"),
    [
        (5, 3, 2, [], False),  # Varnish's default initial (threshold - 1): sick until a good probe
        (5, 3, 2, [True], True),
        (5, 3, 3, [], True),
        (5, 3, 5, [False, False], True),
        (5, 3, 5, [False, False, False], False),
        (5, 3, 0, [True, True], False),
        (5, 3, 0, [True, False, True, True], True),
        (1, 1, 1, [False], False),
    ],
)
def test_probe_window(window: int, threshold: int, initial: int, results: list[bool], healthy: bool) -> None:
    probes = ProbeWindow(window, threshold, initial)
    for ok in results:
        probes.record(ok)
    assert probes.healthy is healthy


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"path": "healthz"}, "path"),
        ({"interval": -1}, "interval"),
        ({"timeout": 0}, "timeout"),
        ({"window": 0}, "window"),
        ({"window": 65}, "window"),
        ({"window": 3, "threshold": 4}, "threshold"),
        ({"window": 3, "initial": 4}, "initial"),
    ],
)
def test_health_config_names_a_bad_value(options: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=f"health {named}"):
        HealthConfig(**options)  # type: ignore[arg-type]


def test_a_replica_given_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="given twice"):
        UpstreamPool(PRIMARY, (R1, R1))
    with pytest.raises(ValueError, match="given twice"):
        UpstreamPool(PRIMARY, (PRIMARY,))


# -- read-your-writes -------------------------------------------------------------------------------------


def test_a_write_pins_the_writers_reads_for_the_window_only() -> None:
    clock = Clock()
    pool = _pool(clock, read_your_writes_window=5)
    pool.note_write(["a:203.0.113.7"])
    assert pool.pinned(["a:203.0.113.7"])
    assert not pool.pinned(["a:203.0.113.8"])
    clock.now += 4.9
    assert pool.pinned(["a:203.0.113.7"])
    clock.now += 0.2
    assert not pool.pinned(["a:203.0.113.7"])


def test_pins_are_off_with_a_zero_window_or_without_replicas() -> None:
    for pool in (_pool(Clock(), read_your_writes_window=0), _pool(Clock(), ())):
        pool.note_write(["a:1.2.3.4"])
        assert not pool.pinned(["a:1.2.3.4"])


def test_the_pin_map_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("edgecache.proxy.upstreams.MAX_PINNED_CLIENTS", 3)
    pool = _pool(Clock())
    for n in range(10):
        pool.note_write([f"a:10.0.0.{n}"])
    assert pool._pins is not None and len(pool._pins) == 3
    assert pool.pinned(["a:10.0.0.9"]) and not pool.pinned(["a:10.0.0.0"])


TRUSTED = parse_trusted(["10.0.0.0/8"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("203.0.113.7", [], "203.0.113.7"),
        ("203.0.113.7", ["198.51.100.1"], "203.0.113.7"),  # an untrusted peer's X-Forwarded-For is ignored
        ("10.0.0.2", ["198.51.100.1"], "198.51.100.1"),
        ("10.0.0.2", ["6.6.6.6, 198.51.100.1, 10.0.0.3"], "198.51.100.1"),  # nearest untrusted hop
        ("10.0.0.2", ["6.6.6.6", "198.51.100.1"], "198.51.100.1"),  # several fields: one list
        ("10.0.0.2", ["10.0.0.9"], "10.0.0.9"),  # all trusted: the farthest
        ("10.0.0.2", [], "10.0.0.2"),
    ],
)
def test_client_address_after_trusted_proxies(peer: str, forwarded: list[str], expected: str) -> None:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    assert client_address(headers, peer, TRUSTED) == expected


def test_identities_are_the_address_and_a_hash_of_the_credentials() -> None:
    plain = client_identities([], "203.0.113.7", ())
    assert plain == ("a:203.0.113.7",)
    auth = client_identities([(b"authorization", b"Bearer t")], "203.0.113.7", ())
    elsewhere = client_identities([(b"Authorization", b"Bearer t")], "198.51.100.1", ())
    other = client_identities([(b"authorization", b"Bearer u")], "203.0.113.7", ())
    cookie = client_identities([(b"cookie", b"Bearer t")], "203.0.113.7", ())
    assert auth[1] == elsewhere[1] != other[1]
    assert cookie[1] != auth[1]  # the field's name is part of the hash
    assert "Bearer" not in auth[1]


# -- the engine's recent-invalidation marker ----------------------------------------------------------------


def _tags(path: bytes) -> frozenset[str]:
    uri = uri_components("http", "origin.test", path, b"")
    return frozenset({uri_tag(uri), path_tag(path), *prefix_tags(path)})


async def test_invalidated_within_matches_uri_path_and_prefix_purges_for_the_window() -> None:
    clock = Clock()
    cache = Cache(clock=clock)
    assert not cache.invalidated_within(5, _tags(b"/a/b"))
    await cache.invalidate(paths=["/a/b"])
    assert cache.invalidated_within(5, _tags(b"/a/b"))
    assert not cache.invalidated_within(5, _tags(b"/a/c"))
    assert not cache.invalidated_within(0, _tags(b"/a/b"))
    clock.now += 5.1
    assert not cache.invalidated_within(5, _tags(b"/a/b"))
    await cache.invalidate(prefixes=["/a"])
    assert cache.invalidated_within(5, _tags(b"/a/c"))
    assert not cache.invalidated_within(5, _tags(b"/b"))
    await cache.invalidate_uris([uri_components("http", "origin.test", b"/b", b"")])
    assert cache.invalidated_within(5, _tags(b"/b"))


async def test_invalidated_within_is_conservative_for_surrogate_keys_and_purge_all() -> None:
    clock = Clock()
    cache = Cache(clock=clock)
    await cache.invalidate(tags=["product:42"])
    assert cache.invalidated_within(5, _tags(b"/anything"))  # which URIs carry the tag is not known here
    assert not cache.invalidated_within(5, _tags(b"/anything"), strict=True)
    clock.now += 10
    await cache.invalidate(everything=True)
    assert cache.invalidated_within(5, _tags(b"/anything"), strict=True)
