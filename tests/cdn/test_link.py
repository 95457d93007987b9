"""RFC 8288 Link header values (preload hints)."""

from __future__ import annotations

import pytest

from edgecache.cdn import AssetRewriter, CdnConfig

CDN = "https://cdn.example.com"
R = AssetRewriter(CdnConfig(CDN, ("/static/",), ("www.example.com",), version="7"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(
            "</static/app.css>; rel=preload; as=style",
            f"<{CDN}/static/app.css?v=7>; rel=preload; as=style",
            id="one",
        ),
        pytest.param(
            '</static/a.js>; rel="modulepreload", </api>; rel=preconnect, <https://www.example.com/static/f.woff2>;'
            " rel=preload; as=font; crossorigin",
            f'<{CDN}/static/a.js?v=7>; rel="modulepreload", </api>; rel=preconnect,'
            f" <{CDN}/static/f.woff2?v=7>;"
            " rel=preload; as=font; crossorigin",
            id="several",
        ),
        pytest.param(
            '</static/a.png>; rel=preload; title="a, </static/b.png>", </static/c.png>; rel=preload',
            f'<{CDN}/static/a.png?v=7>; rel=preload; title="a, </static/b.png>",'
            f" <{CDN}/static/c.png?v=7>; rel=preload",
            id="quoted-parameter-with-comma-and-brackets",
        ),
        pytest.param(
            '< /static/a.png >;rel=preload;anchor="/static/x"',
            f'< {CDN}/static/a.png?v=7 >;rel=preload;anchor="/static/x"',
            id="spaces-in-brackets-anchor-kept",
        ),
    ],
)
def test_rewritten(value: str, expected: str) -> None:
    assert R.rewrite_link_header(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "</api/x>; rel=preload",
        "<https://evil.example/static/a.png>; rel=preload",
        "<//evil.example/static/a.png>; rel=preload",
        "rel=preload",
        "",
        "</static/a.png; rel=preload",
    ],
)
def test_left_alone(value: str) -> None:
    assert R.rewrite_link_header(value) is None
