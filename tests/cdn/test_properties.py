"""Property tests: a rewrite changes the asset URLs and nothing else, and never fails.

Documents are generated from fragments that each know what they must become: asset URLs in every place the
rewriter handles (quoting forms, srcset, style attributes and blocks, og:image), and around them what must
stay as it is (non-asset URLs, asset-like text in other attributes, scripts, comments, raw text elements,
``<base>``/``<use>``). So the tests know the exact expected output, and check that removing the CDN origin
from the output gives the input back.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgecache.cdn import AssetRewriter, CdnConfig

CDN = "https://cdn.example.com"
R = AssetRewriter(CdnConfig(CDN, ("/static/", "/avatars/"), ()))
# with a public host: absolute URLs on it are rewritten too (then removing CDN does not give the input back)
RH = AssetRewriter(CdnConfig(CDN, ("/static/", "/avatars/"), ("www.example.com",)))

Fragment = tuple[str, str]  # (input, expected output)

_segment = st.text("abcxyz019-_~%", min_size=1, max_size=8).filter(lambda s: s.strip(".") != "")
_ext = st.sampled_from(["", ".png", ".css", ".js", ".woff2", ".svg", ".a.b"])


@st.composite
def asset_paths(draw: st.DrawFn, with_query: bool = True) -> str:
    prefix = draw(st.sampled_from(["/static/", "/avatars/"]))
    path = prefix + "/".join(draw(st.lists(_segment, min_size=1, max_size=3))) + draw(_ext)
    if with_query and draw(st.booleans()):
        path += "?" + "&amp;".join(draw(st.lists(st.sampled_from(["x=1", "v=2", "s=96", "a"]), max_size=3)))
    if with_query and draw(st.booleans()):
        path += "#" + draw(st.sampled_from(["top", "icon-a", ""]))
    return path


not_asset_urls = st.sampled_from(
    [
        "/other/a.png",
        "/staticky/a.png",
        "img/a.png",
        "../static/a.png",
        "https://evil.example/static/a.png",
        "//evil.example/static/a.png",
        "/static/../admin",
        "/static/%2e%2e/admin",
        "data:image/png;base64,AAAA",
        "javascript:void(0)",
        "mailto:a@example.com",
        "#top",
        "",
        "/static/a b.png",
        "{{ asset_url }}",
    ]
)
text = st.text(st.characters(exclude_characters="<\x00", exclude_categories=["Cs"]), max_size=30)


def _quote(value: str, quote: str) -> str:
    return f"{quote}{value}{quote}"


@st.composite
def url_attribute(draw: st.DrawFn) -> Fragment:
    tag = draw(
        st.sampled_from(["img", "IMG", "source", "link", "video", "audio", "image", "input", "a", "embed"])
    )
    attr = draw(st.sampled_from(["src", "SRC", "href", "Href", "poster", "data-src", "xlink:href"]))
    path = draw(asset_paths())
    quote = draw(st.sampled_from(['"', "'", ""]) if "?" not in path and "#" not in path else st.just('"'))
    before = draw(st.sampled_from(["", ' class="a"', " alt='src=/static/x.png'", " width=96"]))
    after = draw(st.sampled_from(["", " loading=lazy", ' title="/static/x.png"', "/"]))
    space = draw(st.sampled_from([" ", "\n", "\t "]))
    source = f"<{tag}{before}{space}{attr}={_quote(path, quote)}{after}>"
    expected = f"<{tag}{before}{space}{attr}={_quote(CDN + path, quote)}{after}>"
    return source, expected


@st.composite
def srcset_attribute(draw: st.DrawFn) -> Fragment:
    paths = draw(st.lists(asset_paths(with_query=False), min_size=1, max_size=3))
    descriptors = draw(
        st.lists(st.sampled_from(["", " 1x", " 2x", " 480w"]), min_size=len(paths), max_size=len(paths))
    )
    # (without whitespace after the comma, "a.png,b.png" is one URL, as in browsers)
    separator = draw(st.sampled_from([", ", ",\t", " ,\n"]))
    attr = draw(st.sampled_from(["srcset", "imagesrcset", "data-srcset", "SrcSet"]))
    source = separator.join(p + d for p, d in zip(paths, descriptors, strict=True))
    expected = separator.join(CDN + p + d for p, d in zip(paths, descriptors, strict=True))
    return f'<img {attr}="{source}">', f'<img {attr}="{expected}">'


@st.composite
def css_url(draw: st.DrawFn) -> Fragment:
    path = draw(asset_paths(with_query=False))
    form = draw(st.sampled_from(["url({})", "url('{}')", 'url("{}")', "url( {} )", "URL({})"]))
    return form.format(path), form.format(CDN + path)


@st.composite
def style_attribute(draw: st.DrawFn) -> Fragment:
    source, expected = draw(css_url())
    source, expected = source.replace('"', "&quot;"), expected.replace('"', "&quot;")
    return f'<div style="background: {source} no-repeat">', f'<div style="background: {expected} no-repeat">'


@st.composite
def style_element(draw: st.DrawFn) -> Fragment:
    urls = draw(st.lists(css_url(), min_size=1, max_size=3))
    kept = '/* url(/static/c.png) */ .q{content:"url(/static/s.png)"}'
    source = "<style>" + kept + "".join(f".a{i}{{b:{s}}}" for i, (s, _) in enumerate(urls)) + "</style>"
    expected = "<style>" + kept + "".join(f".a{i}{{b:{e}}}" for i, (_, e) in enumerate(urls)) + "</style>"
    return source, expected


@st.composite
def og_image(draw: st.DrawFn) -> Fragment:
    path = draw(asset_paths(with_query=False))
    key = draw(st.sampled_from(['property="og:image"', 'name="twitter:image"', 'property="og:image:url"']))
    return f'<meta {key} content="{path}">', f'<meta {key} content="{CDN + path}">'


@st.composite
def kept(draw: st.DrawFn) -> Fragment:
    """Something that must come back unchanged."""
    path = draw(asset_paths())
    other = draw(not_asset_urls)
    fragment = draw(
        st.sampled_from(
            [
                "{text}",
                '<img src="{other}">',
                "<img src='{other}'>",
                "<img srcset='/other/a.png 1x, img/b.png 2x,https://evil.example/static/c.png 3x'>",
                '<p class="{path}" data-x="src={path}">{text}</p>',
                '<script>var u = "{path}"; document.write("<img src=\\"{path}\\">");</script>',
                '<script type="application/json">{{"a": "{path}"}}</script>',
                '<!-- <img src="{path}"> -->',
                '<textarea><img src="{path}"></textarea>',
                '<title>{path} <img src="{path}"></title>',
                '<base href="{path}">',
                '<svg><use href="{path}"/></svg>',
                '<meta name="description" content="{path}">',
                '<a href="{other}">{text}</a>',
                "<br/>",
                "</div>",
                "<!DOCTYPE html>",
                '<form action="/static/form" method="post"><input name="q" value="{path}"></form>',
            ]
        )
    )
    value = fragment.format(path=path, other=other.replace('"', "&quot;"), text=draw(text))
    return value, value


asset_fragment = st.one_of(
    url_attribute(), srcset_attribute(), style_attribute(), style_element(), og_image()
)


@given(st.lists(st.one_of(kept(), asset_fragment), max_size=12))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_only_asset_urls_change(fragments: list[Fragment]) -> None:
    source = "".join(s for s, _ in fragments)
    expected = "".join(e for _, e in fragments)
    out = R.rewrite_body("text/html", source.encode())
    if expected == source:
        assert out is None
    else:
        assert out is not None
        assert out.decode() == expected
        assert out.decode().replace(CDN, "") == source


@given(st.lists(kept(), max_size=12))
@settings(max_examples=200)
def test_document_without_asset_urls_is_unchanged(fragments: list[Fragment]) -> None:
    source = "".join(s for s, _ in fragments)
    assert R.rewrite_body("text/html", source.encode()) is None
    assert RH.rewrite_body("text/html", source.encode()) is None


@given(
    st.lists(css_url(), max_size=6),
    st.lists(st.sampled_from(["a{}", "/*x*/", '"s"', " ", "b{c:d}"]), max_size=6),
)
def test_css_only_asset_urls_change(urls: list[Fragment], filler: list[str]) -> None:
    source = expected = ""
    for i, (s, e) in enumerate(urls):
        pad = filler[i % len(filler)] if filler else ""
        source += f"{pad}.c{i}{{x:{s}}}"
        expected += f"{pad}.c{i}{{x:{e}}}"
    out = R.rewrite_body("text/css", source.encode())
    assert (out is None) if source == expected else (out is not None and out.decode() == expected)


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.text(max_size=10),
        asset_paths(with_query=False).map(lambda p: ("ASSET", p)),
        not_asset_urls,
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=5), asset_paths(with_query=False)), children, max_size=4),
    ),
    max_leaves=12,
)


def _render(value: object, rewritten: bool, indent: int | None, escape_slash: bool) -> str:
    def convert(v: object) -> object:
        if isinstance(v, tuple):
            return CDN + v[1] if rewritten else v[1]
        if isinstance(v, list):
            return [convert(x) for x in v]
        if isinstance(v, dict):
            return {k: convert(x) for k, x in v.items()}
        return v

    out = json.dumps(convert(value), indent=indent, ensure_ascii=False)
    return out.replace("/", "\\/") if escape_slash else out


@given(json_values, st.sampled_from([None, 0, 2]), st.booleans())
def test_json_only_asset_values_change(value: object, indent: int | None, escape_slash: bool) -> None:
    source = _render(value, False, indent, escape_slash)
    expected = _render(value, True, indent, escape_slash)
    out = R.rewrite_body("application/json", source.encode())
    if source == expected:
        assert out is None
    else:
        assert out is not None
        assert out.decode() == expected


MARKUP = st.lists(
    st.sampled_from(
        [
            "<",
            ">",
            "/",
            "=",
            '"',
            "'",
            " ",
            "\n",
            "&",
            "&amp;",
            "&#47;",
            ";",
            "!",
            "--",
            "-->",
            "<!--",
            "?",
            "[CDATA[",
            "]]>",
            "img",
            "IMG",
            "src",
            "srcset",
            "href",
            "style",
            "content",
            "meta",
            "script",
            "</script",
            "style>",
            "</style",
            "title",
            "plaintext",
            "url(",
            ")",
            "@import",
            "\\",
            "/static/",
            "https://www.example.com/static/",
            "//www.example.com",
            "a.png",
            ",",
            " 2x",
            "og:image",
            "property",
            # whole asset references, so that the soup holds some that are rewritten
            '<img src="/static/a.png">',
            "<img src=/static/b.png>",
            " src='/static/c.png'",
            ' srcset="/static/d.png 2x, /static/e.png"',
            ' style="x:url(/static/f.png)"',
            "url(/static/g.png)",
            '"/static/h.png"',
            "</static/i.png>; rel=preload",
            '<meta property="og:image" content="/static/j.png">',
            "<style>",
            "</style>",
            "\x00",
            "\ufffd",
            "é",
            "\\2f",
            "{",
            "}",
            ":",
        ]
    ),
    max_size=60,
).map("".join)


@given(st.one_of(MARKUP, st.text(max_size=200)))
@settings(max_examples=500)
def test_never_raises_and_only_inserts_on_markup_soup(source: str) -> None:
    body = source.encode("utf-8", "surrogatepass")
    for rewriter in (R, RH):
        for media_type in ("text/html", "text/css", "application/json"):
            out = rewriter.rewrite_body(media_type, body)
            assert out is None or (out != body and CDN.encode() in out)
        rewriter.rewrite_link_header(source)


@given(st.binary(max_size=300))
def test_never_raises_on_arbitrary_bytes(body: bytes) -> None:
    for media_type in ("text/html", "text/css", "application/json"):
        for charset in (None, "latin-1", "utf-16"):
            RH.rewrite_body(media_type, body, charset)
    RH.rewrite_link_header(body.decode("latin-1"))


RV = AssetRewriter(CdnConfig(CDN, ("/static/", "/avatars/"), (), version="7"))


@st.composite
def versioned_url(draw: st.DrawFn) -> tuple[str, str, str]:
    """(URL as written in HTML, expected in HTML, expected in CSS) with the version parameter."""
    base = draw(st.sampled_from(["/static/", "/avatars/"])) + draw(_segment) + draw(_ext)
    params = draw(st.none() | st.lists(st.sampled_from(["x=1", "v=2", "s=96", "a", "vv", "v"]), max_size=3))
    fragment = draw(st.none() | st.sampled_from(["top", "", "a?b"]))
    query = "" if params is None else "?" + "&".join(params)
    if params is None:
        tail = "?v=7"
    elif any(p == "v" or p.startswith("v=") for p in params):
        tail = ""
    elif not params:
        tail = "v=7"
    else:
        tail = "&v=7"
    end = "" if fragment is None else "#" + fragment
    source = base + query.replace("&", "&amp;") + end
    return (
        source,
        CDN + source[: len(source) - len(end)] + tail.replace("&", "&amp;") + end,
        CDN + base + query + tail + end,
    )


@given(st.lists(versioned_url(), min_size=1, max_size=5), st.sampled_from(['"', "'"]))
def test_version_parameter_is_added_once_and_encoded_for_where_it_goes(
    urls: list[tuple[str, str, str]], quote: str
) -> None:
    source = "".join(f"<img src={quote}{s}{quote}>" for s, _, _ in urls)
    expected = "".join(f"<img src={quote}{e}{quote}>" for _, e, _ in urls)
    out = RV.rewrite_body("text/html", source.encode())
    assert out is not None
    assert out.decode() == expected
    css_source = "".join(f"a{{b:url('{s.replace('&amp;', '&')}')}}" for s, _, _ in urls)
    css_expected = "".join(f"a{{b:url('{c}')}}" for _, _, c in urls)
    css_out = RV.rewrite_body("text/css", css_source.encode())
    assert css_out is not None
    assert css_out.decode() == css_expected


@given(MARKUP.filter(lambda s: "&" not in s and "\\" not in s))
@settings(max_examples=500)
def test_markup_soup_only_gains_the_origin(source: str) -> None:
    # Without character references or escapes, the rewriter writes back the author's text for every URL: the
    # output is the input with the CDN origin inserted, whatever the soup (malformed markup included).
    body = source.encode()
    for media_type in ("text/html", "application/xhtml+xml", "text/css", "application/json"):
        out = R.rewrite_body(media_type, body)
        assert out is None or out.replace(CDN.encode(), b"") == body
    link = R.rewrite_link_header(source)
    assert link is None or link.replace(CDN, "") == source
