"""JSON: string values that are asset URLs; keys, text and everything else kept byte for byte."""

from __future__ import annotations

import json

import pytest

from edgecache.cdn import AssetRewriter, CdnConfig

CDN = "https://cdn.example.com"
R = AssetRewriter(CdnConfig(CDN, ("/static/", "/avatars/"), ("www.example.com",)))


def rewrite(text: str, media_type: str = "application/json") -> str | None:
    out = R.rewrite_body(media_type, text.encode())
    return None if out is None else out.decode()


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param('{"avatar": "/avatars/1.jpg"}', f'{{"avatar": "{CDN}/avatars/1.jpg"}}', id="value"),
        pytest.param(
            '["/static/a.png",  "/static/b.png"]',
            f'["{CDN}/static/a.png",  "{CDN}/static/b.png"]',
            id="array",
        ),
        pytest.param('"/static/a.png"', f'"{CDN}/static/a.png"', id="top-level-string"),
        pytest.param(
            '{\n  "a": {"b": [1, true, null, {"c": "https://www.example.com/static/a.png?x=1#f"}]}\n}\n',
            f'{{\n  "a": {{"b": [1, true, null, {{"c": "{CDN}/static/a.png?x=1#f"}}]}}\n}}\n',
            id="nested-absolute",
        ),
        pytest.param(
            '{"a":"\\/static\\/a.png"}',
            '{"a":"https:\\/\\/cdn.example.com\\/static\\/a.png"}',
            id="escaped-slashes",
        ),
        pytest.param(
            '{"a":"/static/\\u00e9.png"}',
            f'{{"a":"{CDN}/static/\\u00e9.png"}}',
            id="unicode-escape-kept-ascii",
        ),
        pytest.param('{"a":"/static/é.png"}', f'{{"a":"{CDN}/static/é.png"}}', id="utf8"),
        pytest.param(
            '{"/static/key.png": "/static/value.png"}',
            f'{{"/static/key.png": "{CDN}/static/value.png"}}',
            id="key-left-value-rewritten",
        ),
        pytest.param(
            '{"a" \n: "/static/a.png", "b": "\\"quoted\\" /static/x"}',
            f'{{"a" \n: "{CDN}/static/a.png", "b": "\\"quoted\\" /static/x"}}',
            id="whitespace-before-colon",
        ),
    ],
)
def test_rewritten(source: str, expected: str) -> None:
    out = rewrite(source)
    assert out == expected
    assert json.loads(out) is not None


@pytest.mark.parametrize(
    "source",
    [
        pytest.param('{"note": "see /static/x.png"}', id="text-containing-path"),
        pytest.param('{"note": "/static/x.png is here"}', id="text-starting-with-path"),
        pytest.param('{"/static/a.png": 1}', id="key-only"),
        pytest.param('{"a": "/profile/1", "b": "https://evil.example/static/a.png"}', id="not-assets"),
        pytest.param('{"a": "/static/../admin"}', id="traversal"),
        pytest.param('{"a": "/static/a.png"', id="invalid-unterminated"),
        pytest.param('{"a": "/static/a.png",}', id="invalid-trailing-comma"),
        pytest.param("{'a': '/static/a.png'}", id="invalid-single-quotes"),
        pytest.param('{"a": "/static/a.png"} x', id="invalid-trailing-text"),
        pytest.param("", id="empty"),
    ],
)
def test_left_alone(source: str) -> None:
    assert rewrite(source) is None


def test_plus_json_media_types() -> None:
    assert rewrite('{"logo": "/static/l.png"}', "application/ld+json") == f'{{"logo": "{CDN}/static/l.png"}}'
    assert (
        rewrite('["/static/l.png"]', "application/problem+json; charset=utf-8") == f'["{CDN}/static/l.png"]'
    )


def test_nesting_deeper_than_the_parser_goes_is_left_alone() -> None:
    depth = 100_000
    assert rewrite("[" * depth + '"/static/a.png"' + "]" * depth) is None


def test_invalid_escape_in_a_candidate_string_leaves_the_document_alone() -> None:
    assert rewrite('{"a": "/static/a.png", "b": "/static/\\x.png"}') is None


def test_new_text_the_charset_cannot_encode_leaves_the_document_alone() -> None:
    body = '{"a": "/static/\u00e9\\u20ac.png"}'.encode("latin-1")
    assert R.rewrite_body("application/json", body, "latin-1") is None


def test_byte_order_mark_is_kept() -> None:
    body = '\ufeff{"a": "/static/a.png"}'.encode()
    assert R.rewrite_body("application/json", body) == f'\ufeff{{"a": "{CDN}/static/a.png"}}'.encode()
