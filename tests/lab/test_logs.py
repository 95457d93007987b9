"""Access-log replay: three formats, the cache's key normalisation, malformed lines counted and skipped."""

from __future__ import annotations

import json

import pytest

from edgecache.core.keys import QueryFilter
from edgecache.lab.logs import Malformed, parse_clf, parse_json, replay_log

COMMON = '127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /a.gif?x=1 HTTP/1.0" 200 2326'
COMBINED = COMMON + ' "http://example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)"'


def test_common_and_combined_lines():
    record = parse_clf(COMMON)
    assert (record.method, record.target, record.status, record.size) == ("GET", "/a.gif?x=1", 200, 2326)
    assert record.time == 971211336.0
    assert parse_clf(COMBINED, combined=True) == record
    with pytest.raises(Malformed, match="combined"):
        parse_clf(COMMON, combined=True)
    with pytest.raises(Malformed, match="common"):
        parse_clf(COMBINED, combined=False)
    assert parse_clf(COMMON.replace(" 2326", " -")).size == 0


def test_json_lines():
    line = json.dumps({"path": "/p?q=1", "status": 200, "bytes": 10, "time": "2024-05-01T12:00:00+00:00"})
    record = parse_json(line)
    assert (record.method, record.target, record.status, record.size) == ("GET", "/p?q=1", 200, 10)
    assert record.time == 1714564800.0
    nginx = {"request": "HEAD /x HTTP/1.1", "status": "304", "body_bytes_sent": "0", "time": 5}
    assert parse_json(json.dumps(nginx)).method == "HEAD"
    assert parse_json(json.dumps(nginx)).status == 304
    assert parse_json(json.dumps(nginx | {"time": "1700000000.250"})).time == 1700000000.25
    local = {"uri": "/y", "status": 200, "time_local": "10/Oct/2000:13:55:36 -0700"}
    assert parse_json(json.dumps(local)).time == 971211336.0


MALFORMED = [
    "garbage",
    '127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET" 200 1',  # no target
    '127.0.0.1 - - [31/Foo/2000:13:55:36 -0700] "GET /x HTTP/1.1" 200 1',  # bad time
    '127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET x HTTP/1.1" 200 1',  # target not a path
    '127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "\\x16\\x03\\x01" 400 0',  # TLS on a plain port
]


def test_malformed_lines_are_counted_skipped_and_reported():
    lines = [COMMON, *MALFORMED, COMBINED, ""]
    replay = replay_log(lines)
    assert replay.malformed == 5
    assert replay.kept == 2
    assert replay.lines == 8
    assert [n for n, _ in replay.examples] == [2, 3, 4, 5, 6]
    assert "bad time" in replay.examples[2][1]
    assert "5 malformed" in replay.summary()


def test_malformed_json_lines():
    lines = [
        json.dumps({"path": "/a", "status": 200, "bytes": 1, "time": 1}),
        "{not json",
        "[1, 2]",
        json.dumps({"status": 200, "time": 1}),  # no path
        json.dumps({"path": "/a", "status": "OK", "time": 1}),
        json.dumps({"path": "/a", "status": 200, "bytes": 1}),  # no time
        json.dumps({"path": "/a", "status": 200, "bytes": 1, "time": 2}),
    ]
    replay = replay_log(lines, log_format="json")
    assert (replay.kept, replay.malformed) == (2, 5)
    assert replay.trace.keys == [0, 0]


def test_keys_follow_the_cache_normalisation():
    def line(target: str, host: str | None = None) -> str:
        obj: dict[str, object] = {"path": target, "status": 200, "bytes": 5, "time": 1}
        if host:
            obj["host"] = host
        return json.dumps(obj)

    lines = [
        line("/p?id=1&utm_source=x"),
        line("/p?id=1"),  # same key once utm_* is ignored
        line("/p?utm_campaign=y&id=2"),  # another id: another key
        line("/p?id=1", host="Example.COM:80"),
        line("/p?id=1", host="example.com"),  # host lower-cased and default port dropped: same key
        line("http://example.com/p?id=1"),  # absolute form: same key again
    ]
    replay = replay_log(lines, query_filter=QueryFilter(ignore=["utm_*"]))
    assert replay.trace.keys == [0, 0, 1, 2, 2, 2]
    assert replay.trace.path(0) == "/p?id=1"
    unfiltered = replay_log(lines)
    assert unfiltered.trace.keys == [0, 1, 2, 3, 3, 3]


def test_methods_and_statuses_that_the_cache_would_not_serve_are_skipped():
    lines = [
        COMMON,
        COMMON.replace('"GET', '"POST'),
        COMMON.replace(" 200 ", " 500 "),
        COMMON.replace(" 200 ", " 304 ").replace(" 2326", " 0"),  # a revalidation: kept
    ]
    replay = replay_log(lines)
    assert (replay.kept, replay.skipped_method, replay.skipped_status, replay.malformed) == (2, 1, 1, 0)
    # one key; its size is the largest body logged for it (the 304 has none)
    assert replay.trace.sizes == [2326, 2326]
    assert replay.trace.key_bytes == 2326


def test_times_are_relative_and_never_run_backwards():
    lines = [
        COMMON,
        COMMON.replace("13:55:36", "13:55:40"),
        COMMON.replace("13:55:36", "13:55:38"),  # out of order
    ]
    assert replay_log(lines).trace.times == [0.0, 4.0, 4.0]


def test_unknown_format_is_rejected():
    with pytest.raises(ValueError, match="log format"):
        replay_log([], log_format="w3c")
