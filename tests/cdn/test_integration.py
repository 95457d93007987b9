"""CDN asset URL rewriting through a real CacheInterceptor around small Starlette apps.

The rewriter itself (what is an asset URL, in which syntax) is tested with the cdn core; these tests check
what the cache does around it: rewrite once on the miss path, serve the same bytes on hits without calling
the app, keep Content-Length and ETag consistent (304s included, and revalidation with the app's own
validator), handle compressed bodies, and pass untouched (and count) what it must not rewrite.
"""

from __future__ import annotations

import gzip
import time
import zlib
from collections.abc import AsyncIterator

import brotli
import httpx
import pytest
import zstandard
from prometheus_client import CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from edgecache import Cache, CacheInterceptor, ConfigError, Settings
from edgecache.observe.prometheus import CacheCollector
from edgecache.stores.tiered import TieredStore
from tests.helpers import FakeClock
from tests.middleware import conftest as middleware_fixtures
from tests.middleware.conftest import Endpoint, HarnessFactory, cache_status

# The middleware suite's harness: a fake-clock Cache in front of the app, an origin spy, a client recorder.
clock = middleware_fixtures.clock
harness = middleware_fixtures.harness

CDN = "https://cdn.example.com"
OPTIONS = {"cdn_origin": CDN, "cdn_paths": ["/static/", "/media/"]}

PAGE = (
    '<!doctype html><html><head><link rel="stylesheet" href="/static/site.css">'
    '<link rel="icon" href="/static/favicon.ico"></head>'
    '<body><img src="/media/avatars/7.png" alt="me"><a href="/about">about</a>'
    '<img src="https://elsewhere.example/static/x.png"></body></html>'
)
CSS = 'body { background: url(/static/bg.png) } .logo { background-image: url("/media/logo.svg") }'
DOC = {"avatar": "/media/avatars/7.png", "note": "see /static/x", "profile": "/users/7"}


def page_endpoint(
    body: str = PAGE, *, headers: dict[str, str] | None = None, media_type: str = "text/html"
) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        return Response(
            body, headers={"cache-control": "max-age=60", **(headers or {})}, media_type=media_type
        )

    return endpoint


def assert_rewritten_page(text: str) -> None:
    assert f'href="{CDN}/static/site.css"' in text
    assert f'src="{CDN}/media/avatars/7.png"' in text
    assert '<a href="/about">' in text  # not an asset
    assert 'src="https://elsewhere.example/static/x.png"' in text  # a foreign host


async def test_html_is_rewritten_on_the_miss_and_hits_serve_the_same_bytes(harness: HarnessFactory) -> None:
    h = harness({"/": page_endpoint()}, **OPTIONS)
    miss = await h.get("/")
    assert cache_status(miss) == "edgecache; fwd=uri-miss; stored"
    assert_rewritten_page(miss.text)
    assert miss.headers["content-length"] == str(len(miss.content))
    hit = await h.get("/")
    assert cache_status(hit).startswith("edgecache; hit")
    assert hit.content == miss.content
    assert hit.headers["content-length"] == str(len(hit.content))
    assert h.origin.calls["/"] == 1
    assert h.cache.stats.cdn["rewritten"] == 1  # once, on the miss: the hit did no work


async def test_css_and_json_are_rewritten(harness: HarnessFactory) -> None:
    async def doc(request: Request) -> Response:
        return JSONResponse(DOC, headers={"cache-control": "max-age=60"})

    h = harness({"/site.css": page_endpoint(CSS, media_type="text/css"), "/api/me": doc}, **OPTIONS)
    css = (await h.get("/site.css")).text
    assert f"url({CDN}/static/bg.png)" in css
    assert f'url("{CDN}/media/logo.svg")' in css
    me = (await h.get("/api/me")).json()
    assert me == {"avatar": f"{CDN}/media/avatars/7.png", "note": "see /static/x", "profile": "/users/7"}


async def test_without_cdn_options_nothing_is_rewritten(harness: HarnessFactory) -> None:
    h = harness({"/": page_endpoint()})
    assert (await h.get("/")).text == PAGE
    assert h.cache.cdn is None


async def test_a_changed_body_gets_a_derived_weak_etag_that_conditional_requests_match(
    harness: HarnessFactory,
) -> None:
    h = harness({"/": page_endpoint(headers={"etag": '"v1"'})}, **OPTIONS)
    miss = await h.get("/")
    derived = miss.headers["etag"]
    assert derived.startswith('W/"v1~cdn') and derived != '"v1"'
    not_modified = await h.get("/", headers={"if-none-match": derived})
    assert not_modified.status_code == 304
    assert not_modified.headers["etag"] == derived
    # The app's own validator names the unrewritten body: it must not match the rewritten one.
    full = await h.get("/", headers={"if-none-match": '"v1"'})
    assert full.status_code == 200 and full.content == miss.content
    assert h.origin.calls["/"] == 1


async def test_an_unchanged_body_keeps_the_apps_etag(harness: HarnessFactory) -> None:
    h = harness({"/": page_endpoint("<p>no assets here</p>", headers={"etag": '"v1"'})}, **OPTIONS)
    response = await h.get("/")
    assert response.headers["etag"] == '"v1"'
    assert h.cache.stats.cdn["unchanged"] == 1


async def test_revalidation_asks_the_app_with_its_own_validator_and_keeps_the_derived_one(
    harness: HarnessFactory, clock: FakeClock
) -> None:
    seen: list[str | None] = []

    async def endpoint(request: Request) -> Response:
        seen.append(request.headers.get("if-none-match"))
        headers = {"etag": '"v1"', "cache-control": "max-age=10"}
        if request.headers.get("if-none-match") == '"v1"':
            return Response(status_code=304, headers=headers)
        return Response(PAGE, headers=headers, media_type="text/html")

    h = harness({"/": endpoint}, **OPTIONS)
    first = await h.get("/")
    clock.advance(11)
    again = await h.get("/")
    assert seen == [None, '"v1"']  # the app saw its own validator, never the derived one
    assert cache_status(again).startswith("edgecache; fwd=stale; fwd-status=304")
    assert again.content == first.content
    assert again.headers["etag"] == first.headers["etag"]
    assert again.headers["content-length"] == str(len(first.content))
    conditional = await h.get("/", headers={"if-none-match": first.headers["etag"]})
    assert conditional.status_code == 304
    assert len(seen) == 2


async def test_gzip_responses_are_decoded_rewritten_and_reencoded(harness: HarnessFactory) -> None:
    app = Starlette(routes=[Route("/", page_endpoint(PAGE * 5))])
    app.add_middleware(GZipMiddleware, minimum_size=100)
    h = harness(app, **OPTIONS)
    miss = await h.get("/", headers={"accept-encoding": "gzip"})
    assert miss.headers["content-encoding"] == "gzip"
    raw = b"".join(h.recorder.body_chunks())
    assert miss.headers["content-length"] == str(len(raw))
    assert_rewritten_page(gzip.decompress(raw).decode())
    assert_rewritten_page(miss.text)  # httpx decodes it too
    hit = await h.get("/", headers={"accept-encoding": "gzip"})
    assert cache_status(hit).startswith("edgecache; hit")
    assert b"".join(h.recorder.body_chunks()) == raw
    # Vary: Accept-Encoding is respected: the identity variant is stored (and rewritten) on its own.
    plain = await h.get("/", headers={"accept-encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert_rewritten_page(plain.text)
    assert h.origin.calls["/"] == 2


@pytest.mark.parametrize(
    ("coding", "compress", "decompress"),
    [
        ("br", brotli.compress, brotli.decompress),
        ("zstd", zstandard.ZstdCompressor().compress, zstandard.ZstdDecompressor().decompress),
        ("deflate", zlib.compress, zlib.decompress),
    ],
)
async def test_br_zstd_and_deflate_round_trip(harness: HarnessFactory, coding, compress, decompress) -> None:
    async def endpoint(request: Request) -> Response:
        return Response(
            compress(PAGE.encode()),
            headers={"cache-control": "max-age=60", "content-encoding": coding, "vary": "accept-encoding"},
            media_type="text/html",
        )

    h = harness({"/": endpoint}, **OPTIONS)
    await h.get("/", headers={"accept-encoding": coding})
    raw = b"".join(h.recorder.body_chunks())
    assert_rewritten_page(decompress(raw).decode())
    assert h.cache.stats.cdn["rewritten"] == 1


async def test_a_body_above_the_cap_passes_untouched_and_is_counted(harness: HarnessFactory) -> None:
    big = PAGE + "<!--" + "x" * 4000 + "-->"
    h = harness({"/": page_endpoint(big)}, cdn_max_rewrite_bytes=2000, **OPTIONS)
    response = await h.get("/")
    assert response.text == big
    assert cache_status(response) == "edgecache; fwd=uri-miss; stored"
    assert h.cache.stats.cdn["too-large"] == 1
    assert (await h.get("/")).text == big  # and stored that way


async def test_a_compressed_body_that_expands_past_the_cap_passes_untouched(harness: HarnessFactory) -> None:
    bomb = gzip.compress(b"<p>" + b" " * 5_000_000 + b"</p>")  # ~5 KB that decodes to 5 MB

    async def endpoint(request: Request) -> Response:
        headers = {"cache-control": "max-age=60", "content-encoding": "gzip"}
        return Response(bomb, headers=headers, media_type="text/html")

    h = harness({"/": endpoint}, cdn_max_rewrite_bytes=100_000, **OPTIONS)
    await h.get("/", headers={"accept-encoding": "gzip"})
    assert b"".join(h.recorder.body_chunks()) == bomb
    assert h.cache.stats.cdn["too-large"] == 1


async def test_unknown_and_stacked_codings_pass_untouched(harness: HarnessFactory) -> None:
    async def endpoint(request: Request) -> Response:
        coding = request.query_params["c"]
        return Response(
            b"opaque",
            headers={"cache-control": "max-age=60", "content-encoding": coding},
            media_type="text/html",
        )

    h = harness({"/": endpoint}, **OPTIONS)
    for url in ("/?c=compress", "/?c=gzip, br", "/?c=gzip"):  # the last one is not gzip at all
        async with h.client.stream("GET", url):  # not decoded by httpx: the bytes are what is checked
            pass
        assert b"".join(h.recorder.body_chunks()) == b"opaque"
    assert h.cache.stats.cdn["encoding"] == 2
    assert h.cache.stats.cdn["decode-error"] == 1


async def test_uncacheable_complete_responses_are_rewritten_too(harness: HarnessFactory) -> None:
    h = harness({"/": page_endpoint(headers={"cache-control": "no-store", "etag": '"v1"'})}, **OPTIONS)
    response = await h.get("/")
    assert cache_status(response) == "edgecache; fwd=uri-miss; detail=no-store"
    assert_rewritten_page(response.text)
    assert response.headers["content-length"] == str(len(response.content))
    assert response.headers["etag"].startswith('W/"v1~cdn')
    assert h.stored_objects() == 0


async def test_bypassed_requests_are_rewritten_and_their_304s_keep_the_derived_etag(
    harness: HarnessFactory,
) -> None:
    seen: list[str | None] = []

    async def endpoint(request: Request) -> Response:
        seen.append(request.headers.get("if-none-match"))
        if request.headers.get("if-none-match") == '"v1"':
            return Response(status_code=304, headers={"etag": '"v1"'})
        return Response(PAGE, headers={"etag": '"v1"'}, media_type="text/html")

    h = harness({"/": endpoint}, **OPTIONS)
    first = await h.get("/", headers={"cookie": "session=1"})
    assert "fwd=bypass" in cache_status(first)
    assert_rewritten_page(first.text)
    derived = first.headers["etag"]
    again = await h.get("/", headers={"cookie": "session=1", "if-none-match": derived})
    assert again.status_code == 304
    assert again.headers["etag"] == derived
    assert seen == [None, '"v1"']


async def test_streaming_responses_pass_untouched_and_are_counted(harness: HarnessFactory) -> None:
    chunks = [b"<html><body>", b'<img src="/static/a.png">', b"</body></html>"]

    async def endpoint(request: Request) -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

        return StreamingResponse(parts(), media_type="text/html", headers={"cache-control": "no-store"})

    h = harness({"/": endpoint}, **OPTIONS)
    response = await h.get("/")
    assert response.content == b"".join(chunks)
    assert [c for c in h.recorder.body_chunks() if c] == chunks  # streamed as it came, not held
    assert h.cache.stats.cdn["streaming"] == 1


async def test_a_streamed_response_that_is_stored_is_rewritten(harness: HarnessFactory) -> None:
    async def endpoint(request: Request) -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            yield b"<html><body>"
            yield b'<img src="/static/a.png"></body></html>'

        return StreamingResponse(parts(), media_type="text/html", headers={"cache-control": "max-age=60"})

    h = harness({"/": endpoint}, **OPTIONS)
    response = await h.get("/")
    assert f'src="{CDN}/static/a.png"' in response.text
    assert response.headers["content-length"] == str(len(response.content))


async def test_too_large_to_store_but_under_the_cap_is_rewritten_and_not_stored(
    harness: HarnessFactory,
) -> None:
    big = PAGE + "<!--" + "x" * 5000 + "-->"
    h = harness({"/": page_endpoint(big)}, max_object_bytes=3000, **OPTIONS)
    response = await h.get("/")
    assert "detail=too-large" in cache_status(response)
    assert_rewritten_page(response.text)
    assert response.headers["content-length"] == str(len(response.content))
    assert h.stored_objects() == 0


async def test_link_headers_are_rewritten_even_on_bodies_that_are_not(harness: HarnessFactory) -> None:
    async def image(request: Request) -> Response:
        headers = {"cache-control": "max-age=60", "link": "</static/font.woff2>; rel=preload; as=font"}
        return Response(b"\x89PNG...", headers=headers, media_type="image/png")

    h = harness({"/img": image}, **OPTIONS)
    miss = await h.get("/img")
    assert miss.headers["link"] == f"<{CDN}/static/font.woff2>; rel=preload; as=font"
    assert miss.content == b"\x89PNG..."
    hit = await h.get("/img")
    assert hit.headers["link"] == miss.headers["link"]
    assert h.cache.stats.cdn.total() == 0  # images are not counted as rewrite candidates


async def test_vary_variants_are_each_rewritten(harness: HarnessFactory) -> None:
    async def endpoint(request: Request) -> Response:
        lang = request.headers.get("accept-language", "en")
        body = f'<html lang="{lang}"><img src="/static/flag-{lang}.png"></html>'
        headers = {"cache-control": "max-age=60", "vary": "accept-language"}
        return Response(body, headers=headers, media_type="text/html")

    h = harness({"/": endpoint}, **OPTIONS)
    en = await h.get("/", headers={"accept-language": "en"})
    fr = await h.get("/", headers={"accept-language": "fr"})
    assert f"{CDN}/static/flag-en.png" in en.text
    assert f"{CDN}/static/flag-fr.png" in fr.text
    assert (await h.get("/", headers={"accept-language": "fr"})).content == fr.content
    assert h.origin.calls["/"] == 2


async def test_head_miss_stores_the_rewritten_get_body(harness: HarnessFactory) -> None:
    h = harness({"/": page_endpoint()}, **OPTIONS)
    head = await h.client.head("/")
    get = await h.get("/")
    assert cache_status(get).startswith("edgecache; hit")
    assert_rewritten_page(get.text)
    assert head.headers["content-length"] == get.headers["content-length"]


async def test_asset_paths_get_long_lived_cache_control_only_without_their_own(
    harness: HarnessFactory,
) -> None:
    async def asset(request: Request) -> Response:
        headers = {}
        if "cc" in request.query_params:
            headers["cache-control"] = "max-age=5"
        if "cookie" in request.query_params:
            headers["set-cookie"] = "a=1"
        return Response(b"PNG", headers=headers, media_type="image/png")

    h = harness({"/static/a.png": asset, "/page": asset}, cdn_asset_max_age=86400, default_ttl=0, **OPTIONS)
    plain = await h.get("/static/a.png")
    assert plain.headers["cache-control"] == "public, max-age=86400"
    assert cache_status(plain) == "edgecache; fwd=uri-miss; stored"
    assert (await h.get("/static/a.png?cc")).headers["cache-control"] == "max-age=5"
    assert "cache-control" not in (await h.get("/static/a.png?cookie")).headers
    assert "cache-control" not in (await h.get("/page")).headers  # not an asset path
    authorized = await h.get("/static/a.png?auth", headers={"authorization": "Bearer x"})
    assert "cache-control" not in authorized.headers


async def test_counters_are_exported_to_prometheus(harness: HarnessFactory) -> None:
    h = harness({"/": page_endpoint()}, **OPTIONS)
    await h.get("/")
    registry = CollectorRegistry()
    registry.register(CacheCollector(h.cache))
    text = generate_latest(registry).decode()
    assert 'edgecache_cdn_responses_total{result="rewritten"} 1.0' in text
    assert 'edgecache_cdn_responses_total{result="too-large"} 0.0' in text


FASTLY_WITH_ZONE = {"cdn_purge_provider": "fastly", "cdn_purge_service": "s", "cdn_purge_zone": "z"}


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"cdn_origin": CDN}, "cdn_paths"),
        ({"cdn_paths": "/static/"}, "cdn_origin"),
        ({"cdn_origin": "cdn.example.com", "cdn_paths": "/static/"}, "cdn_origin"),
        ({"cdn_origin": "ftp://cdn.example.com", "cdn_paths": "/static/"}, "cdn_origin"),
        ({"cdn_origin": CDN, "cdn_paths": "static/"}, "cdn_paths"),
        ({"cdn_origin": CDN, "cdn_paths": "//evil.example/"}, "cdn_paths"),
        ({"cdn_origin": CDN, "cdn_paths": "/static/../private/"}, "cdn_paths"),
        (
            {"cdn_origin": CDN, "cdn_paths": "/static/", "cdn_public_hosts": "cdn.example.com"},
            "cdn_public_hosts",
        ),
        ({"cdn_version": "3"}, "cdn_version"),
        ({"cdn_asset_max_age": 60}, "cdn_asset_max_age"),
        ({"cdn_public_hosts": "https://www.example.com/"}, "cdn_public_hosts"),
        ({"cdn_max_rewrite_bytes": 0, **OPTIONS}, "cdn_max_rewrite_bytes"),
        ({"cdn_purge_provider": "akamai"}, "cdn_purge_provider"),
        ({"cdn_purge_provider": "fastly", "cdn_purge_token": "t"}, "cdn_purge_service"),
        ({"cdn_purge_provider": "cloudflare", "cdn_purge_token": "t"}, "cdn_purge_zone"),
        ({"cdn_purge_provider": "fastly", "cdn_purge_service": "s"}, "cdn_purge_token"),
        (FASTLY_WITH_ZONE, "cdn_purge_zone"),
        ({"cdn_purge_service": "s"}, "cdn_purge_service"),
        ({"cdn_purge_timeout": 0}, "cdn_purge_timeout"),
    ],
)
def test_bad_cdn_options_fail_naming_the_option(options, named) -> None:
    # Anchored: several messages mention a second option, and the error must be filed under this one.
    with pytest.raises(ConfigError, match=rf"^(option )?{named}:"):
        Settings.load(options, environ={})


def test_cdn_options_have_environment_twins() -> None:
    settings = Settings.load(
        {},
        environ={
            "EDGECACHE_CDN_ORIGIN": CDN,
            "EDGECACHE_CDN_PATHS": "/static/, /media/",
            "EDGECACHE_CDN_PUBLIC_HOSTS": "www.example.com",
            "EDGECACHE_CDN_MAX_REWRITE_BYTES": "1MiB",
            "EDGECACHE_CDN_PURGE_PROVIDER": "Cloudflare",
            "EDGECACHE_CDN_PURGE_ZONE": "z1",
            "EDGECACHE_CDN_PURGE_TOKEN": "secret-token",
        },
    )
    assert settings.cdn_paths == ("/static/", "/media/")
    assert settings.cdn_public_hosts == ("www.example.com",)
    assert settings.cdn_max_rewrite_bytes == 1024 * 1024
    assert settings.cdn_purge_provider == "cloudflare"
    assert "secret-token" not in repr(settings)


async def test_a_second_node_serves_the_rewritten_bytes_from_redis(redis_url: str) -> None:
    calls = 0

    async def endpoint(request: Request) -> Response:
        nonlocal calls
        calls += 1
        return Response(PAGE, headers={"cache-control": "max-age=60", "etag": '"v1"'}, media_type="text/html")

    app = Starlette(routes=[Route("/", endpoint)])
    options = {**OPTIONS, "redis_url": redis_url, "namespace": f"cdn{time.monotonic_ns()}"}
    caches = [Cache(Settings.load(options, environ={})) for _ in range(2)]
    clients = [
        httpx.AsyncClient(
            transport=httpx.ASGITransport(CacheInterceptor(app, cache=c)), base_url="http://testserver"
        )
        for c in caches
    ]
    try:
        for cache in caches:
            assert await cache.start_and_wait(5)
        first = await clients[0].get("/")
        assert_rewritten_page(first.text)
        store = caches[0].store
        assert isinstance(store, TieredStore)
        await store.flush_writes()  # L2 writes are queued behind the response
        other = await clients[1].get("/")
        assert "detail=l2" in other.headers["cache-status"]
        assert calls == 1
        assert other.content == first.content
        assert other.headers["etag"] == first.headers["etag"]
        assert (
            await clients[1].get("/", headers={"if-none-match": first.headers["etag"]})
        ).status_code == 304
    finally:
        for client in clients:
            await client.aclose()
        for cache in caches:
            await cache.aclose()
