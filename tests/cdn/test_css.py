"""CSS: url() in every quoting form, @import, escapes; comments and strings left alone."""

from __future__ import annotations

import pytest

from edgecache.cdn import AssetRewriter, CdnConfig

CDN = "https://cdn.example.com"
R = AssetRewriter(CdnConfig(CDN, ("/static/",), ("www.example.com",)))
RV = AssetRewriter(CdnConfig(CDN, ("/static/",), ("www.example.com",), version="7"))


def css(text: str, rewriter: AssetRewriter = R) -> str | None:
    out = rewriter.rewrite_body("text/css", text.encode())
    return None if out is None else out.decode()


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param("a{b:url(/static/a.png)}", f"a{{b:url({CDN}/static/a.png)}}", id="unquoted"),
        pytest.param('a{b:url("/static/a.png")}', f'a{{b:url("{CDN}/static/a.png")}}', id="double"),
        pytest.param("a{b:url('/static/a.png')}", f"a{{b:url('{CDN}/static/a.png')}}", id="single"),
        pytest.param("a{b:url(  /static/a.png\n)}", f"a{{b:url(  {CDN}/static/a.png\n)}}", id="spaces"),
        pytest.param(
            "a{b:url( '/static/a.png' )}", f"a{{b:url( '{CDN}/static/a.png' )}}", id="quoted-spaces"
        ),
        pytest.param("a{b:URL(/static/a.png)}", f"a{{b:URL({CDN}/static/a.png)}}", id="upper-case"),
        pytest.param('@import "/static/a.css";', f'@import "{CDN}/static/a.css";', id="import-string"),
        pytest.param(
            "@import '/static/a.css' screen;", f"@import '{CDN}/static/a.css' screen;", id="import-single"
        ),
        pytest.param("@import url(/static/a.css);", f"@import url({CDN}/static/a.css);", id="import-url"),
        pytest.param('@IMPORT/**/"/static/a.css";', f'@IMPORT/**/"{CDN}/static/a.css";', id="import-comment"),
        pytest.param(
            "@font-face{src:url(/static/f.woff2) format('woff2'),url(/static/f.woff) format('woff')}",
            f"@font-face{{src:url({CDN}/static/f.woff2) format('woff2'),"
            f"url({CDN}/static/f.woff) format('woff')}}",
            id="font-face",
        ),
        pytest.param(
            "a{b:image-set(url(/static/a.png) 1x, url(/static/b.png) 2x)}",
            f"a{{b:image-set(url({CDN}/static/a.png) 1x, url({CDN}/static/b.png) 2x)}}",
            id="image-set-url",
        ),
        pytest.param(
            'a{b:image-set("/static/a.png" 1x, url(/static/b.png) 2x, "/static/c.avif" type("image/avif"))}',
            f'a{{b:image-set("{CDN}/static/a.png" 1x, url({CDN}/static/b.png) 2x,'
            f' "{CDN}/static/c.avif" type("image/avif"))}}',
            id="image-set-strings",
        ),
        pytest.param(
            "a{b:-webkit-image-set('/static/a.png' 1x)} c{content:'/static/no.png'}",
            f"a{{b:-webkit-image-set('{CDN}/static/a.png' 1x)}} c{{content:'/static/no.png'}}",
            id="webkit-image-set-then-plain-string",
        ),
        pytest.param(
            "a{b:url(/static/\\28 x\\29.png)}",
            f"a{{b:url({CDN}/static/\\28 x\\29.png)}}",
            id="escapes-kept",
        ),
        pytest.param("a{b:url(\\2fstatic/a.png)}", f"a{{b:url({CDN}\\2fstatic/a.png)}}", id="escaped-slash"),
        pytest.param(
            "a{b:url(https://www.example.com/static/a.png)}", f"a{{b:url({CDN}/static/a.png)}}", id="absolute"
        ),
        pytest.param(
            "a{b:\"x\"}c{d:url(/static/a.png)}e{f:'y'}",
            f"a{{b:\"x\"}}c{{d:url({CDN}/static/a.png)}}e{{f:'y'}}",
            id="between-strings",
        ),
        pytest.param(
            'a{content:"unterminated\nb{c:url(/static/a.png)}',
            f'a{{content:"unterminated\nb{{c:url({CDN}/static/a.png)}}',
            id="bad-string-ends-at-newline",
        ),
    ],
)
def test_rewritten(source: str, expected: str) -> None:
    assert css(source) == expected


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("/* url(/static/a.png) */", id="comment"),
        pytest.param('a{content:"url(/static/a.png)"}', id="string"),
        pytest.param("a{content:'it\\'s url(/static/a.png)'}", id="string-with-escaped-quote"),
        pytest.param("a{b:xurl(/static/a.png) c:my-url(/static/a.png)}", id="other-functions"),
        pytest.param(
            'a{b:my-image-set("/static/a.png") c:image-set(type("/static/a.png"))}', id="not-image-set"
        ),
        pytest.param("a{b:u\\72l(/static/a.png)}", id="escaped-function-name"),
        pytest.param("a{b:url(/static/a b.png)}", id="bad-url"),
        pytest.param("a{b:url(/static/a.png", id="unterminated-url"),
        pytest.param("a{b:url(img/a.png) c:url(data:image/png;base64,AA==) d:url(#f)}", id="not-assets"),
        pytest.param('@import "img/a.css"; @import "//evil.example/static/a.css";', id="import-not-asset"),
        pytest.param('@importx "/static/a.css";', id="other-at-rule"),
        pytest.param("a{b:url(/static/../admin)}", id="traversal"),
        pytest.param("", id="empty"),
    ],
)
def test_left_alone(source: str) -> None:
    assert css(source) is None


def test_version_in_css_is_not_html_encoded() -> None:
    assert css("a{b:url(/static/a.png?x=1)}", RV) == f"a{{b:url({CDN}/static/a.png?x=1&v=7)}}"


def test_escaped_url_with_version_and_fragment_is_written_escaped() -> None:
    assert css("a{b:url(/static/\\28x\\29.svg#i)}", RV) == f"a{{b:url({CDN}/static/\\28 x\\29 .svg?v=7#i)}}"
    assert css("a{b:url('/static/it\\'s.svg#i')}", RV) == f"a{{b:url('{CDN}/static/it\\'s.svg?v=7#i')}}"


def test_escape_edge_cases() -> None:
    # an invalid code point becomes U+FFFD (still an asset URL); a line continuation inside a string vanishes
    assert css("a{b:url(/static/\\0 .png)}") == f"a{{b:url({CDN}/static/\\0 .png)}}"
    assert css('a{b:url("/static/a\\\n.png")}') == f'a{{b:url("{CDN}/static/a\\\n.png")}}'


def test_escaped_non_ascii_written_back_stays_escaped() -> None:
    out = RV.rewrite_body("text/css", b"a{b:url(/static/\\20AC\xe9.png#f)}", "latin-1")
    assert out == f"a{{b:url({CDN}/static/\\20ac \\e9 .png?v=7#f)}}".encode("latin-1")
