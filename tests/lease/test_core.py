"""The lease decisions (no I/O): what a value means to a node, what a holder leaves, how often to look."""

from __future__ import annotations

import re

from edgecache.core.keys import primary_key, uri_components
from edgecache.core.lease import (
    PASS,
    PASS_MARKER_MIN_MS,
    POLL_CAP,
    STORED,
    STORED_MARKER_MS,
    LeaseState,
    lease_key,
    poll_delay,
    read_state,
    release_value,
)


def test_the_lease_key_names_only_the_digest() -> None:
    key = primary_key(uri_components("http", "example.com", b"/a b?<script>", b"q=\xff"))
    name = lease_key("edgecache", key.digest)
    assert re.fullmatch(r"edgecache:lease:[0-9a-f]{64}", name)


def test_own_token_means_won_and_any_other_token_means_held() -> None:
    assert read_state(b"h:mine", b"h:mine") is LeaseState.WON
    assert read_state(b"h:theirs", b"h:mine") is LeaseState.HELD


def test_markers_mean_stored_and_pass() -> None:
    assert read_state(STORED, b"h:mine") is LeaseState.STORED
    assert read_state(PASS, b"h:mine") is LeaseState.PASS


def test_nothing_readable_is_treated_as_held_so_the_next_look_takes_it() -> None:
    assert read_state(None, b"h:mine") is LeaseState.HELD


def test_a_stored_response_leaves_the_stored_marker_briefly() -> None:
    assert release_value(stored=True, unshareable=False, hit_for_miss_ttl=30) == (STORED, STORED_MARKER_MS)


def test_an_unshareable_response_leaves_pass_for_the_hit_for_miss_time() -> None:
    assert release_value(stored=False, unshareable=True, hit_for_miss_ttl=30) == (PASS, 30_000)


def test_pass_stays_long_enough_for_current_waiters_without_hit_for_miss() -> None:
    assert release_value(stored=False, unshareable=True, hit_for_miss_ttl=0) == (PASS, PASS_MARKER_MIN_MS)


def test_a_failed_fetch_deletes_the_lease_so_that_a_waiter_takes_over() -> None:
    assert release_value(stored=False, unshareable=False, hit_for_miss_ttl=30) is None


def test_looks_back_off_from_milliseconds_to_the_cap() -> None:
    delays = [poll_delay(n) for n in range(12)]
    assert delays[0] < 0.005
    assert delays == sorted(delays)
    assert delays[-1] == POLL_CAP
    assert poll_delay(10_000) == POLL_CAP
