"""``CdnResponses``: a whole response through the rewriter (pure), and its derived validators."""

from __future__ import annotations

import gzip

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecache.cdn import AssetRewriter, CdnConfig
from edgecache.cdn.encoding import decode, encode
from edgecache.cdn.response import CdnResponses

CONFIG = CdnConfig(origin="https://cdn.example.com", paths=("/static/",))
HTML = [(b"content-type", b"text/html; charset=utf-8")]


def responses(config: CdnConfig = CONFIG, max_bytes: int = 1 << 20, version: str = "1") -> CdnResponses:
    return CdnResponses(config, max_bytes, version=version)


@pytest.mark.parametrize("etag", [b'"abc"', b'W/"abc"', b'""', b'"a~cdn"'])
def test_a_derived_etag_is_weak_and_leads_back_to_the_original(etag: bytes) -> None:
    r = responses()
    derived = r.derive_etag(etag)
    assert derived.startswith(b'W/"') and derived != etag
    assert r.is_derived(derived)
    assert r.original_etag(derived) == etag
    assert r.derive_etag(derived) == derived  # never derived twice


def test_validators_that_are_not_ours_are_left_alone() -> None:
    r = responses()
    assert r.original_etag(b'W/"abc"') is None
    assert r.derive_etag(b"not-quoted") == b"not-quoted"
    other = responses(CdnConfig(origin="https://other-cdn.example.com", paths=("/static/",)))
    assert r.original_etag(other.derive_etag(b'"abc"')) is None  # another configuration's validator


def test_the_fingerprint_follows_configuration_and_version() -> None:
    base = responses().fingerprint
    assert responses().fingerprint == base
    assert responses(version="2").fingerprint != base
    assert responses(CdnConfig(origin=CONFIG.origin, paths=("/static/", "/media/"))).fingerprint != base
    assert responses(CdnConfig(origin=CONFIG.origin, paths=CONFIG.paths, version="7")).fingerprint != base


def test_if_none_match_lists_have_only_our_validators_replaced() -> None:
    r = responses()
    mine = r.derive_etag(b'"v1"')
    assert r.original_if_none_match(b'"x", ' + mine) == b'"x", "v1"'
    assert r.original_if_none_match(b'"x", W/"y"') is None
    assert r.original_if_none_match(b"*") is None


def test_headers_of_a_rewritten_body() -> None:
    headers = [*HTML, (b"content-length", b"33"), (b"etag", b'"v1"'), (b"content-md5", b"xx"), (b"x-a", b"1")]
    done = responses().rewrite(200, headers, b'<img src="/static/a.png">' + b" " * 8)
    assert done.result == "rewritten"
    out = dict(done.headers)
    assert out[b"content-length"] == b"%d" % len(done.body)
    assert out[b"etag"].startswith(b'W/"v1~cdn')
    assert b"content-md5" not in out and out[b"x-a"] == b"1"


@pytest.mark.parametrize("status", [204, 206, 304, 101])
def test_bodies_that_are_not_whole_documents_are_not_candidates(status: int) -> None:
    assert responses().rewrite(status, HTML, b'<img src="/static/a.png">').result is None


def test_a_content_range_is_never_rewritten() -> None:
    headers = [*HTML, (b"content-range", b"bytes 0-9/100")]
    assert responses().rewrite(200, headers, b'<img src="/static/a.png">').result is None


def test_declared_too_large_reads_content_length_of_identity_bodies_only() -> None:
    r = responses(max_bytes=10)
    assert r.declared_too_large([(b"content-length", b"11")])
    assert not r.declared_too_large([(b"content-length", b"10")])
    assert not r.declared_too_large([(b"content-length", b"11"), (b"content-encoding", b"gzip")])


PATHS = st.from_regex(r"/static/[a-z0-9_\-/]{1,20}\.(png|css|js)", fullmatch=True)
WORDS = st.text(alphabet="abc xyz<>&;'", max_size=20)


@settings(max_examples=40, deadline=None)
@given(
    parts=st.lists(st.tuples(WORDS, PATHS), min_size=1, max_size=8),
    coding=st.sampled_from(["identity", "gzip", "deflate", "br", "zstd"]),
)
def test_a_response_is_what_the_rewriter_makes_of_its_decoded_body(
    parts: list[tuple[str, str]], coding: str
) -> None:
    page = "".join(
        f'<p>{text.replace("<", "").replace(">", "")}</p><img src="{path}">' for text, path in parts
    )
    headers = [*HTML, (b"content-encoding", coding.encode())]
    done = responses().rewrite(200, headers, encode(coding, page.encode()))
    expected = AssetRewriter(CONFIG).rewrite_body("text/html", page.encode(), "utf-8")
    assert expected is not None
    assert done.result == "rewritten"
    assert decode(coding, done.body, 1 << 20) == expected
    assert dict(done.headers)[b"content-length"] == b"%d" % len(done.body)


def test_gzip_reencoding_is_stable() -> None:
    body = gzip.compress(b'<img src="/static/a.png">')
    headers = [*HTML, (b"content-encoding", b"gzip")]
    assert responses().rewrite(200, headers, body).body == responses().rewrite(200, headers, body).body


class Broken(AssetRewriter):
    def rewrite_body(self, media_type: str, body: bytes, charset: str | None = None) -> bytes | None:
        raise RuntimeError("a rewriter bug")


def test_a_failing_rewriter_never_costs_the_response(caplog: pytest.LogCaptureFixture) -> None:
    r = responses()
    r.rewriter = Broken(CONFIG)
    body = gzip.compress(b'<img src="/static/a.png">')
    headers = [*HTML, (b"content-encoding", b"gzip"), (b"etag", b'"v1"')]
    done = r.rewrite(200, headers, body)
    assert (done.result, done.body, done.headers) == ("error", body, headers)
    assert "CDN rewrite failed" in caplog.text
