"""CdnConfig validation and the URL decision (AssetRewriter.rewrite_url)."""

from __future__ import annotations

import pytest

from edgecache.cdn import AssetRewriter, CdnConfig

CDN = "https://cdn.example.com"


def rewriter(**kwargs: object) -> AssetRewriter:
    options: dict[str, object] = {
        "origin": CDN,
        "paths": ("/static/", "/avatars/", "/favicon.ico"),
        "public_hosts": ("www.example.com", "shop.example.com:8443"),
    }
    options.update(kwargs)
    return AssetRewriter(CdnConfig(**options))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("/static/a.png", f"{CDN}/static/a.png"),
        ("/static/a.png?x=1&y=2#frag", f"{CDN}/static/a.png?x=1&y=2#frag"),
        ("/static/", f"{CDN}/static/"),
        ("/avatars/u/1.jpg", f"{CDN}/avatars/u/1.jpg"),
        ("/favicon.ico", f"{CDN}/favicon.ico"),
        ("/favicon.ico?v=2", f"{CDN}/favicon.ico?v=2"),
        ("/static/%E2%82%AC.png", f"{CDN}/static/%E2%82%AC.png"),
        ("/static/é.png", f"{CDN}/static/é.png"),
        ("/static/a.png?next=/static/../x", f"{CDN}/static/a.png?next=/static/../x"),  # dots in the query
        ("https://www.example.com/static/a.png", f"{CDN}/static/a.png"),
        ("HTTP://WWW.Example.COM/static/a.png?q#f", f"{CDN}/static/a.png?q#f"),
        ("https://www.example.com:443/static/a.png", f"{CDN}/static/a.png"),
        ("http://www.example.com:80/static/a.png", f"{CDN}/static/a.png"),
        ("//www.example.com/static/a.png", f"{CDN}/static/a.png"),
        ("https://shop.example.com:8443/static/a.png", f"{CDN}/static/a.png"),
    ],
)
def test_asset_urls_are_rewritten(url: str, expected: str) -> None:
    assert rewriter().rewrite_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("/staticky/a.png", id="prefix-on-segments"),
        pytest.param("/favicon.icon", id="file-prefix-on-segments"),
        pytest.param("/Static/a.png", id="paths-are-case-sensitive"),
        pytest.param("/app/static/a.png", id="not-a-prefix"),
        pytest.param("static/a.png", id="relative"),
        pytest.param("./static/a.png", id="dot-relative"),
        pytest.param("../static/a.png", id="parent-relative"),
        pytest.param("#top", id="fragment-only"),
        pytest.param("?static/a.png", id="query-only"),
        pytest.param("", id="empty"),
        pytest.param("data:image/png;base64,AAAA", id="data"),
        pytest.param("javascript:alert('/static/a.png')", id="javascript"),
        pytest.param("mailto:/static/a.png", id="mailto"),
        pytest.param("https://evil.example/static/a.png", id="foreign-host"),
        pytest.param("//evil.example/static/a.png", id="protocol-relative-foreign"),
        pytest.param("https://www.example.com.evil.example/static/a.png", id="host-suffix-attack"),
        pytest.param("https://evil.example@www.example.com/static/a.png", id="user-info"),
        pytest.param("https://www.example.com:8443/static/a.png", id="other-port"),
        pytest.param("https://shop.example.com/static/a.png", id="configured-port-missing"),
        pytest.param("ftp://www.example.com/static/a.png", id="other-scheme"),
        pytest.param("https:/static/a.png", id="scheme-without-authority"),
        pytest.param("https://www.example.com", id="no-path"),
        pytest.param(f"{CDN}/static/a.png", id="already-on-cdn"),
        pytest.param("/static/../admin", id="traversal"),
        pytest.param("/static/./a.png", id="dot-segment"),
        pytest.param("/static/..", id="traversal-at-end"),
        pytest.param("/static/%2e%2e/admin", id="encoded-traversal"),
        pytest.param("/static/.%2E/admin", id="mixed-encoded-traversal"),
        pytest.param("https://www.example.com/static/../admin", id="absolute-traversal"),
        pytest.param("/static\\..\\admin", id="backslash"),
        pytest.param("/\\evil.example/static/a.png", id="backslash-authority"),
        pytest.param("/static/a\n.png", id="newline"),
        pytest.param("/static/a\t.png", id="tab"),
        pytest.param("/static/a b.png", id="space-is-text"),
        pytest.param(" /static/a.png", id="leading-space"),
        pytest.param("/static/a.png#x y", id="space-in-fragment"),
    ],
)
def test_other_urls_are_left_alone(url: str) -> None:
    assert rewriter().rewrite_url(url) is None


def test_dots_inside_names_are_not_dot_segments() -> None:
    r = rewriter()
    assert r.rewrite_url("/static/.well-known/a..b/...png") == f"{CDN}/static/.well-known/a..b/...png"


def test_origin_with_base_path() -> None:
    r = rewriter(origin="https://cdn.example.com/base/")
    assert r.rewrite_url("/static/a.png") == "https://cdn.example.com/base/static/a.png"
    assert (
        r.rewrite_url("https://www.example.com/static/a.png") == "https://cdn.example.com/base/static/a.png"
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("/static/a.png", f"{CDN}/static/a.png?v=1.2%2B3"),
        ("/static/a.png?", f"{CDN}/static/a.png?v=1.2%2B3"),
        ("/static/a.png?x=1", f"{CDN}/static/a.png?x=1&v=1.2%2B3"),
        ("/static/a.png#f", f"{CDN}/static/a.png?v=1.2%2B3#f"),
        ("/static/a.png?x=1#f?g", f"{CDN}/static/a.png?x=1&v=1.2%2B3#f?g"),
        ("/static/a.png?v=9", f"{CDN}/static/a.png?v=9"),
        ("/static/a.png?x=1&v", f"{CDN}/static/a.png?x=1&v"),
        ("/static/a.png?vv=1", f"{CDN}/static/a.png?vv=1&v=1.2%2B3"),
    ],
)
def test_version_parameter(url: str, expected: str) -> None:
    assert rewriter(version="1.2+3").rewrite_url(url) == expected


def test_longest_prefix_wins_and_overlapping_prefixes_agree() -> None:
    r = rewriter(paths=("/static", "/static/img/"))
    assert r.rewrite_url("/static/img/a.png") == f"{CDN}/static/img/a.png"
    assert r.rewrite_url("/static") == f"{CDN}/static"
    assert r.rewrite_url("/static?x") == f"{CDN}/static?x"
    assert r.rewrite_url("/staticx") is None


def test_config_is_normalised() -> None:
    config = CdnConfig(
        origin="https://cdn.example.com/", paths=("/static/",), public_hosts=("WWW.Example.com",)
    )
    assert config.origin == "https://cdn.example.com"
    assert config.public_hosts == ("www.example.com",)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"origin": "cdn.example.com"}, "absolute http"),
        ({"origin": "/cdn"}, "absolute http"),
        ({"origin": "ftp://cdn.example.com"}, "absolute http"),
        ({"origin": ""}, "absolute http"),
        ({"origin": "https://cdn.example.com/?x=1"}, "query"),
        ({"origin": "https://cdn.example.com/#f"}, "query"),
        ({"origin": "https://user@cdn.example.com"}, "user info"),
        ({"origin": "https://cdn.example.com/a b"}, "not allowed"),
        ({"origin": "https://cdn.example.com/a/../b"}, "not allowed"),
        ({"origin": 'https://cdn.example.com/"x'}, "not allowed"),
        ({"paths": ()}, "at least one"),
        ({"paths": "/static/"}, "not one string"),
        ({"paths": ("static/",)}, "root-relative"),
        ({"paths": ("//static/",)}, "root-relative"),
        ({"paths": ("/static/../",)}, "plain path"),
        ({"paths": ("/static/?x",)}, "plain path"),
        ({"public_hosts": "www.example.com"}, "not one string"),
        ({"public_hosts": ("https://www.example.com",)}, "host or host:port"),
        ({"public_hosts": ("www.example.com/x",)}, "host or host:port"),
        ({"public_hosts": ("cdn.example.com",)}, "CDN origin's own host"),
        ({"version": ""}, "non-empty"),
    ],
)
def test_config_errors_name_the_problem(kwargs: dict[str, object], message: str) -> None:
    options: dict[str, object] = {"origin": CDN, "paths": ("/static/",)}
    options.update(kwargs)
    with pytest.raises(ValueError, match=message):
        CdnConfig(**options)  # type: ignore[arg-type]


def test_handles() -> None:
    r = rewriter()
    for media_type in (
        "text/html",
        "TEXT/HTML; charset=utf-8",
        "application/xhtml+xml",
        "text/css",
        "application/json",
        "application/problem+json",
        "application/ld+json; charset=utf-8",
    ):
        assert r.handles(media_type), media_type
    for media_type in ("text/plain", "application/javascript", "image/svg+xml", "+json", "", "text/htmlx"):
        assert not r.handles(media_type), media_type


def test_configured_default_port_also_matches_the_bare_host() -> None:
    r = rewriter(public_hosts=("www.example.com:443",))
    assert r.rewrite_url("https://www.example.com/static/a.png") == f"{CDN}/static/a.png"
    assert r.rewrite_url("https://www.example.com:443/static/a.png") == f"{CDN}/static/a.png"


def test_rewriter_exposes_its_config() -> None:
    config = CdnConfig(CDN, ("/static/",))
    assert AssetRewriter(config).config is config
