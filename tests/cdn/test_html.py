"""HTML: which attribute values are rewritten, how they are written back, and what is left alone."""

from __future__ import annotations

import pytest

from edgecache.cdn import AssetRewriter, CdnConfig

CDN = "https://cdn.example.com"
R = AssetRewriter(CdnConfig(CDN, ("/static/", "/avatars/"), ("www.example.com",)))
RV = AssetRewriter(CdnConfig(CDN, ("/static/", "/avatars/"), ("www.example.com",), version="7"))


def html(text: str, rewriter: AssetRewriter = R) -> str | None:
    out = rewriter.rewrite_body("text/html; charset=utf-8", text.encode())
    return None if out is None else out.decode()


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param('<img src="/static/a.png">', f'<img src="{CDN}/static/a.png">', id="src"),
        pytest.param("<img src='/static/a.png'>", f"<img src='{CDN}/static/a.png'>", id="single-quoted"),
        pytest.param("<img src=/static/a.png>", f"<img src={CDN}/static/a.png>", id="unquoted"),
        pytest.param("<img src=/static/a.png/>", f"<img src={CDN}/static/a.png/>", id="unquoted-slash-end"),
        pytest.param('<IMG SRC="/static/a.png">', f'<IMG SRC="{CDN}/static/a.png">', id="upper-case"),
        pytest.param(
            '<img\nsrc\n=\n"/static/a.png"\n>', f'<img\nsrc\n=\n"{CDN}/static/a.png"\n>', id="newlines"
        ),
        pytest.param('<img src=" /static/a.png\n">', f'<img src=" {CDN}/static/a.png\n">', id="padded"),
        pytest.param(
            '<link rel="stylesheet" href="/static/app.css">',
            f'<link rel="stylesheet" href="{CDN}/static/app.css">',
            id="stylesheet",
        ),
        pytest.param(
            '<link rel=preload as=image href="/static/hero.jpg"'
            ' imagesrcset="/static/h-1.jpg 1x, /static/h-2.jpg 2x">',
            f'<link rel=preload as=image href="{CDN}/static/hero.jpg"'
            f' imagesrcset="{CDN}/static/h-1.jpg 1x, {CDN}/static/h-2.jpg 2x">',
            id="preload-imagesrcset",
        ),
        pytest.param(
            '<a href="/static/doc.pdf">doc</a> <a href="/about">about</a>',
            f'<a href="{CDN}/static/doc.pdf">doc</a> <a href="/about">about</a>',
            id="links",
        ),
        pytest.param(
            '<video poster="/static/p.jpg" src="/static/v.mp4"><track src="/static/t.vtt"></video>',
            f'<video poster="{CDN}/static/p.jpg" src="{CDN}/static/v.mp4">'
            f'<track src="{CDN}/static/t.vtt"></video>',
            id="media",
        ),
        pytest.param(
            '<img data-src="/static/a.png" data-srcset="/static/a.png 1x,/static/b.png 2x">',
            f'<img data-src="{CDN}/static/a.png" data-srcset="{CDN}/static/a.png 1x,{CDN}/static/b.png 2x">',
            id="lazy-loading",
        ),
        pytest.param(
            '<img srcset="/static/a.png, /static/b,c.png 2x,  /static/d.png 100w,/x.png 3x">',
            f'<img srcset="{CDN}/static/a.png, {CDN}/static/b,c.png 2x,  {CDN}/static/d.png 100w,/x.png 3x">',
            id="srcset-commas",
        ),
        pytest.param(
            '<img srcset="/static/a.png,,, /static/b.png (x, y) 2x, /static/c.png">',
            f'<img srcset="{CDN}/static/a.png,,, {CDN}/static/b.png (x, y) 2x, {CDN}/static/c.png">',
            id="srcset-parenthesised-descriptor",
        ),
        pytest.param(
            '<div style="background:url(/static/a.png); color: red">',
            f'<div style="background:url({CDN}/static/a.png); color: red">',
            id="style-attribute",
        ),
        pytest.param(
            "<div style='background:url(\"/static/a.png\")'>",
            f"<div style='background:url(\"{CDN}/static/a.png\")'>",
            id="style-attribute-inner-quotes",
        ),
        pytest.param(
            '<div style="background:url(&quot;/static/a.png&quot;)">',
            f'<div style="background:url(&quot;{CDN}/static/a.png&quot;)">',
            id="style-attribute-entity-quotes",
        ),
        pytest.param(
            "<style>a{background:url(/static/a.png)}</style><p style=x>",
            f"<style>a{{background:url({CDN}/static/a.png)}}</style><p style=x>",
            id="style-element",
        ),
        pytest.param(
            '<STYLE media="print">@import "/static/print.css";</style >',
            f'<STYLE media="print">@import "{CDN}/static/print.css";</style >',
            id="style-element-import",
        ),
        pytest.param(
            '<svg><image href="/static/a.svg"/><image xlink:href="/static/b.svg"/></svg>',
            f'<svg><image href="{CDN}/static/a.svg"/><image xlink:href="{CDN}/static/b.svg"/></svg>',
            id="svg-image",
        ),
        pytest.param(
            '<img src="https://www.example.com/static/a.png"><img src="//www.example.com/static/b.png">',
            f'<img src="{CDN}/static/a.png"><img src="{CDN}/static/b.png">',
            id="absolute-on-public-host",
        ),
        pytest.param(
            '<img src="/static/a.png?x=1&amp;y=2">',
            f'<img src="{CDN}/static/a.png?x=1&amp;y=2">',
            id="entity-in-query",
        ),
        pytest.param(
            '<img src="&#47;static&#x2F;a.png">',
            f'<img src="{CDN}&#47;static&#x2F;a.png">',
            id="entity-encoded-path",
        ),
        pytest.param(
            '<img src="https&colon;//www.example.com/static/a.png">',
            f'<img src="{CDN}/static/a.png">',
            id="entity-encoded-scheme",
        ),
        pytest.param(
            '<img src="/static/a.png?a=1&copy=2">',
            f'<img src="{CDN}/static/a.png?a=1&copy=2">',
            id="legacy-entity-name-before-equals-stays-literal",
        ),
        pytest.param(
            '<img src="/static/a.png" src="/static/b.png">',
            f'<img src="{CDN}/static/a.png" src="/static/b.png">',
            id="duplicate-attribute-ignored-like-browsers",
        ),
        pytest.param(
            '<img alt="x" src="/static/a.png" title=\'src="/static/b.png"\'>',
            f'<img alt="x" src="{CDN}/static/a.png" title=\'src="/static/b.png"\'>',
            id="attribute-text-in-other-value",
        ),
        pytest.param(
            "<img title='a > b' src=/static/a.png>",
            f"<img title='a > b' src={CDN}/static/a.png>",
            id="gt-inside-quoted-value",
        ),
        pytest.param(
            '<meta property="og:image" content="https://www.example.com/static/og.png">',
            f'<meta property="og:image" content="{CDN}/static/og.png">',
            id="og-image",
        ),
        pytest.param(
            '<meta content="/static/og.png" property="og:image:secure_url">',
            f'<meta content="{CDN}/static/og.png" property="og:image:secure_url">',
            id="og-image-content-first",
        ),
        pytest.param(
            '<meta name="twitter:image" content="/static/t.png">'
            '<meta itemprop="image" content="/static/i.png">',
            f'<meta name="twitter:image" content="{CDN}/static/t.png">'
            f'<meta itemprop="image" content="{CDN}/static/i.png">',
            id="twitter-and-itemprop-image",
        ),
        pytest.param(
            '<noscript><img src="/static/a.png"></noscript>',
            f'<noscript><img src="{CDN}/static/a.png"></noscript>',
            id="noscript-fallback",
        ),
        pytest.param(
            '<template><img src="/static/a.png"></template>',
            f'<template><img src="{CDN}/static/a.png"></template>',
            id="template-element",
        ),
        pytest.param(
            '<!--> <img src="/static/a.png"> -->',
            f'<!--> <img src="{CDN}/static/a.png"> -->',
            id="abrupt-comment-closes-at-once",
        ),
        pytest.param(
            '<!-- x --!> <img src="/static/a.png">',
            f'<!-- x --!> <img src="{CDN}/static/a.png">',
            id="comment-closed-by-bang",
        ),
        pytest.param(
            '<img src="/static/a.png"<img src="/static/b.png">',
            f'<img src="{CDN}/static/a.png"<img src="/static/b.png">',
            id="missing-space-after-value",
        ),
    ],
)
def test_rewritten(source: str, expected: str) -> None:
    assert html(source) == expected


@pytest.mark.parametrize(
    "source",
    [
        pytest.param('<script src="x.js">var a = "<img src=\'/static/a.png\'>";</script>', id="script"),
        pytest.param("<SCRIPT>document.write('<img src=/static/a.png>')</Script >", id="script-any-case"),
        pytest.param(
            '<script>if (a</script) b("<img src=/static/a.png>")</script>', id="script-lookalike-end"
        ),
        pytest.param('<!-- <img src="/static/a.png"> -->', id="comment"),
        pytest.param('<![CDATA[ <img src="/static/a.png"> ]]>', id="cdata"),
        pytest.param('<textarea><img src="/static/a.png"></textarea>', id="textarea"),
        pytest.param('<title><img src="/static/a.png"></title>', id="title"),
        pytest.param('<xmp><img src="/static/a.png"></xmp>', id="xmp"),
        pytest.param('<iframe><img src="/static/a.png"></iframe>', id="iframe-content"),
        pytest.param('<noembed><img src="/static/a.png"></noembed>', id="noembed"),
        pytest.param(
            '<plaintext><img src="/static/a.png"></plaintext><img src="/static/b.png">', id="plaintext"
        ),
        pytest.param("<p>see /static/a.png and url(/static/b.png)</p>", id="text"),
        pytest.param('<p data-x="src=/static/a.png">', id="text-in-value"),
        pytest.param(
            '<img srcx="/static/a.png" xsrc="/static/b.png" data-href="/static/c.png">', id="other-names"
        ),
        pytest.param('<base href="/static/">', id="base"),
        pytest.param(
            '<svg><use href="/static/sprite.svg#i"/><use xlink:href="/static/s.svg#j"/></svg>', id="use"
        ),
        pytest.param('<meta property="og:title" content="/static/a.png">', id="meta-not-image"),
        pytest.param('<meta name="description" content="/static/a.png">', id="meta-description"),
        pytest.param('<img src="img/a.png"><img src="https://evil.example/static/a.png">', id="not-assets"),
        pytest.param('<img src="/static/../admin">', id="traversal"),
        pytest.param('<img src="/static/{{ user.avatar }}.png">', id="template-placeholder"),
        pytest.param('<img src="{{ avatar_url }}"><img src="{% static \'a.png\' %}">', id="template-tags"),
        pytest.param('<img src="/static/a.png', id="unterminated-quote-at-eof"),
        pytest.param("<img src=/static/a.png", id="unterminated-tag-at-eof"),
        pytest.param('< img src="/static/a.png">', id="not-a-tag"),
        pytest.param('</img src="/static/a.png">', id="end-tag-attributes"),
        pytest.param('<!DOCTYPE html SYSTEM "/static/a.dtd">', id="doctype"),
        pytest.param('<?xml-stylesheet href="/static/a.xsl"?>', id="processing-instruction"),
        pytest.param("<img src>", id="no-value"),
        pytest.param("", id="empty"),
    ],
)
def test_left_alone(source: str) -> None:
    assert html(source) is None


def test_unquoted_value_that_needs_quotes_gets_them() -> None:
    assert html("<img src=/static/a.png>", RV) == f'<img src="{CDN}/static/a.png?v=7">'


def test_version_ampersand_is_encoded_in_attributes_but_not_in_style_blocks() -> None:
    source = '<img src="/static/a.png?x=1"><style>a{b:url(/static/b.png?y=2)}</style>'
    assert html(source, RV) == (
        f'<img src="{CDN}/static/a.png?x=1&amp;v=7"><style>a{{b:url({CDN}/static/b.png?y=2&v=7)}}</style>'
    )


def test_srcset_with_references_is_written_back_encoded() -> None:
    assert html('<img srcset="/static/a.png?x=1&amp;y=2 1x, /static/&eacute;.png 2x">', RV) == (
        f'<img srcset="{CDN}/static/a.png?x=1&amp;y=2&amp;v=7 1x, {CDN}/static/&#xE9;.png?v=7 2x">'
    )


def test_decoded_quote_is_re_encoded() -> None:
    # the value holds a literal '"' through a reference; writing it back must not end the attribute
    assert html('<div style="background:url(&quot;/static/a b.png&quot;); x: url(/static/c.png)">') == (
        f'<div style="background:url(&quot;/static/a b.png&quot;); x: url({CDN}/static/c.png)">'
    )


def test_bytes_around_rewrites_are_kept() -> None:
    source = "<!doctype html>\r\n<p>caf\u00e9 \u2603</p><img  src = '/static/a.png'  >\n\t<br/>"
    assert html(source) == source.replace("'/static/", f"'{CDN}/static/")


def test_charset_latin1_round_trip() -> None:
    body = '<p>caf\u00e9</p><img src="/static/\u00e9.png">'.encode("latin-1")
    out = R.rewrite_body("text/html", body, "ISO-8859-1")
    assert out == f'<p>caf\u00e9</p><img src="{CDN}/static/\u00e9.png">'.encode("latin-1")


def test_undecodable_bytes_are_kept() -> None:
    body = b'<p>\xff\xfe</p><img src="/static/\xe9.png">'
    out = R.rewrite_body("text/html", body)
    assert out == b'<p>\xff\xfe</p><img src="' + CDN.encode() + b'/static/\xe9.png">'


def test_unknown_charset_is_left_alone() -> None:
    assert R.rewrite_body("text/html", b'<img src="/static/a.png">', "no-such-charset") is None


def test_unhandled_type_is_left_alone() -> None:
    assert R.rewrite_body("text/plain", b'<img src="/static/a.png">') is None
    assert R.rewrite_body("text/html", b"") is None


def test_charset_from_the_media_type() -> None:
    body = '<p>\u00e9</p><img src="/static/a.png">'.encode("latin-1")
    out = R.rewrite_body('text/html; Charset="ISO-8859-1"', body)
    assert out == f'<p>\u00e9</p><img src="{CDN}/static/a.png">'.encode("latin-1")
    # an explicit charset wins over the parameter
    assert R.rewrite_body("text/html; charset=utf-16", body, "latin-1") == out


def test_self_closed_script_ends_only_in_xhtml() -> None:
    page = '<script src="/static/a.js"/><img src="/static/b.png"></script>'
    xhtml = R.rewrite_body("application/xhtml+xml", page.encode())
    assert xhtml == f'<script src="{CDN}/static/a.js"/><img src="{CDN}/static/b.png"></script>'.encode()
    # in HTML the slash is ignored: the img is script text
    assert html(page) == f'<script src="{CDN}/static/a.js"/><img src="/static/b.png"></script>'


@pytest.mark.parametrize(
    "script",
    [
        "<script><!-- a --></script>",
        "<script><!--></script>",
        "<script><!-- <scripts> </script>",
        "<script><!-- <script>x</script> --></script>",
        "<script><!-- <script>x</script></script>",
    ],
)
def test_script_ends_where_browsers_end_it(script: str) -> None:
    source = script + '<img src="/static/a.png">'
    assert html(source) == script + f'<img src="{CDN}/static/a.png">'


def test_author_text_is_kept_in_srcset_and_style_only_the_version_is_encoded() -> None:
    source = '<p style="b:url(/static/a.png?x=1&y=2)"><img srcset="/static/a.png?q&r 1x">'
    assert html(source, RV) == (
        f'<p style="b:url({CDN}/static/a.png?x=1&y=2&amp;v=7)">'
        f'<img srcset="{CDN}/static/a.png?q&r&amp;v=7 1x">'
    )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param(
            '<img src="/static/&#0;&#x110000;&#xD800;&#x80;.png">',
            f'<img src="{CDN}/static/&#0;&#x110000;&#xD800;&#x80;.png">',
            id="invalid-and-c1-numeric-references",
        ),
        pytest.param(
            '<img src="/static/a.png?x=&ampx;&notin;&notanentity&lt">',
            f'<img src="{CDN}/static/a.png?x=&ampx;&notin;&notanentity&lt">',
            id="named-references",
        ),
        pytest.param(
            "<meta property='og:image' property=x name content='/static/a.png' content='/static/b' />",
            f"<meta property='og:image' property=x name content='{CDN}/static/a.png' content='/static/b' />",
            id="meta-repeated-and-empty-attributes",
        ),
    ],
)
def test_references_and_meta_edge_cases(source: str, expected: str) -> None:
    assert html(source) == expected


def test_unterminated_escaped_script_runs_to_the_end() -> None:
    assert html('<script><!-- <img src="/static/a.png">') is None


def test_unquoted_value_with_a_quote_gets_quotes_when_the_new_text_needs_them() -> None:
    assert html("<img src=/static/a'b.png>", RV) == f'<img src="{CDN}/static/a\'b.png?v=7">'
    assert html("<img src=/static/a'b.png>") == f"<img src={CDN}/static/a'b.png>"


def test_several_url_attributes_in_one_tag() -> None:
    source = (
        "<img alt=x src='/static/a.png' data-src=/static/b.png srcset=\"/static/c.png 2x\" poster nope=1>"
    )
    assert html(source) == (
        f"<img alt=x src='{CDN}/static/a.png' data-src={CDN}/static/b.png srcset=\"{CDN}/static/c.png 2x\""
        " poster nope=1>"
    )
