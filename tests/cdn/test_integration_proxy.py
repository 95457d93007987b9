"""CDN rewriting through `edgecache proxy`, in front of a real uvicorn upstream on loopback.

The in-process ``ProxyServer`` checks the behaviour (rewrite on the miss, same bytes on hits, validators,
gzip, streaming, asset max-age, purge through the admin endpoint reaching the CDN via respx); one test runs
the `edgecache proxy` command with the cdn flags; bad flags exit 2 naming the flag.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import respx

from edgecache import Settings
from edgecache.cdn.purge import FASTLY_API
from edgecache.proxy.server import ProxyServer
from tests.proxy.processes import run_proxy_cli
from tests.servers import ROOT, UvicornServer, free_port

CDN = "https://cdn.example.com"
CDN_OPTIONS = {"cdn_origin": CDN, "cdn_paths": ("/static/", "/media/"), "default_ttl": 0}


@pytest.fixture(scope="module")
def upstream() -> Iterator[UvicornServer]:
    server = UvicornServer("tests.cdn.upstream_app:app", None, "--http", "h11")
    server.wait_ready()
    yield server
    server.stop()


async def start_proxy(upstream: UvicornServer, **options: object) -> ProxyServer:
    settings = Settings.load({**CDN_OPTIONS, **options}, environ={})
    server = ProxyServer(
        upstream.url,
        ("127.0.0.1", 0),
        ("127.0.0.1", 0),
        settings=settings,
        admin_token="s3cret",
        read_timeout=5.0,
    )
    await server.start()
    return server


@pytest.fixture
async def proxy(upstream: UvicornServer) -> AsyncIterator[ProxyServer]:
    server = await start_proxy(upstream)
    yield server
    server.stop()
    await server.wait()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        yield http


def url(server: ProxyServer, path: str) -> str:
    return f"http://127.0.0.1:{server.port}{path}"


async def upstream_calls(client: httpx.AsyncClient, upstream: UvicornServer, path: str) -> int:
    counts = (await client.get(upstream.url + "/count")).json()
    return int(counts.get(path, 0))


async def test_html_is_rewritten_once_and_hits_serve_the_same_bytes(
    proxy: ProxyServer, client: httpx.AsyncClient, upstream: UvicornServer
) -> None:
    before = await upstream_calls(client, upstream, "/")
    miss = await client.get(url(proxy, "/"), headers={"accept-encoding": "identity"})
    assert "fwd=uri-miss; stored" in miss.headers["cache-status"]
    assert f'href="{CDN}/static/site.css"' in miss.text
    assert f'srcset="{CDN}/media/avatars/7.png 1x, {CDN}/media/avatars/7@2x.png 2x"' in miss.text
    assert '<a href="/about">' in miss.text
    assert 'var u = "/static/not-touched.js"' in miss.text  # script contents are left alone
    assert int(miss.headers["content-length"]) == len(miss.content)
    hit = await client.get(url(proxy, "/"), headers={"accept-encoding": "identity"})
    assert "hit" in hit.headers["cache-status"]
    assert hit.content == miss.content
    assert await upstream_calls(client, upstream, "/") == before + 1


async def test_the_derived_etag_gets_304_and_revalidates_upstream_with_the_original(
    upstream: UvicornServer, client: httpx.AsyncClient
) -> None:
    server = await start_proxy(upstream)
    try:
        first = await client.get(url(server, "/"), headers={"accept-encoding": "identity"})
        derived = first.headers["etag"]
        assert derived.startswith('W/"page-v1~cdn')
        conditional = await client.get(
            url(server, "/"), headers={"if-none-match": derived, "accept-encoding": "identity"}
        )
        assert conditional.status_code == 304
        # Force a revalidation: the upstream answers 304 only to its own validator.
        before = await upstream_calls(client, upstream, "/")
        again = await client.get(
            url(server, "/"), headers={"cache-control": "no-cache", "accept-encoding": "identity"}
        )
        assert "fwd-status=304" in again.headers["cache-status"]
        assert again.content == first.content and again.headers["etag"] == derived
        assert await upstream_calls(client, upstream, "/") == before + 1
    finally:
        server.stop()
        await server.wait()


async def test_gzip_from_the_upstream_is_rewritten_and_reencoded(
    proxy: ProxyServer, client: httpx.AsyncClient
) -> None:
    async with client.stream("GET", url(proxy, "/gz"), headers={"accept-encoding": "gzip"}) as response:
        raw = b"".join([chunk async for chunk in response.aiter_raw()])
    assert response.headers["content-encoding"] == "gzip"
    assert int(response.headers["content-length"]) == len(raw)
    assert f'href="{CDN}/static/site.css"' in gzip.decompress(raw).decode()
    async with client.stream("GET", url(proxy, "/gz"), headers={"accept-encoding": "gzip"}) as hit:
        assert b"".join([chunk async for chunk in hit.aiter_raw()]) == raw
    assert "hit" in hit.headers["cache-status"]


async def test_json_links_and_streams(proxy: ProxyServer, client: httpx.AsyncClient) -> None:
    me = await client.get(url(proxy, "/api/me"))
    assert me.json() == {"avatar": f"{CDN}/media/avatars/7.png", "about": "/about"}
    logo = await client.get(url(proxy, "/static/logo.png"))
    assert logo.headers["link"] == f"<{CDN}/static/font.woff2>; rel=preload"
    stream = await client.get(url(proxy, "/stream"))
    assert stream.text == '<html><body><img src="/static/a.png"></body></html>'  # a stream passes untouched
    assert proxy.cache.stats.cdn["streaming"] == 1
    assert proxy.cache.stats.cdn["rewritten"] == 1


async def test_asset_max_age_and_metrics(upstream: UvicornServer, client: httpx.AsyncClient) -> None:
    server = await start_proxy(upstream, cdn_asset_max_age=31536000)
    try:
        logo = await client.get(url(server, "/static/logo.png"))
        assert logo.headers["cache-control"] == "public, max-age=31536000"
        assert "stored" in logo.headers["cache-status"]  # the proxy keeps it too (default_ttl is 0)
        await client.get(url(server, "/api/me"))
        metrics = (await client.get(f"http://127.0.0.1:{server.admin_port}/metrics")).text
        assert 'edgecache_cdn_responses_total{result="rewritten"} 1.0' in metrics
    finally:
        server.stop()
        await server.wait()


async def test_admin_purge_reaches_the_cdn_once(upstream: UvicornServer, client: httpx.AsyncClient) -> None:
    server = await start_proxy(
        upstream, cdn_purge_provider="fastly", cdn_purge_service="svc-9", cdn_purge_token="fastly-key"
    )
    try:
        first = await client.get(url(server, "/tagged"))
        assert f"{CDN}/static/p42.png" in first.text
        with respx.mock(assert_all_mocked=True, assert_all_called=True) as router:
            router.route(host="127.0.0.1").pass_through()  # the test's own calls to the proxy
            cdn = router.post(f"{FASTLY_API}/service/svc-9/purge").mock(
                return_value=httpx.Response(200, json={})
            )
            purged = await client.post(
                f"http://127.0.0.1:{server.admin_port}/purge",
                json={"id": "purge-1", "tags": ["product:42"]},
                headers={"authorization": "Bearer s3cret"},
            )
            assert purged.status_code == 200
            assert server.cache.cdn_purger is not None
            await server.cache.cdn_purger.drain()
            assert cdn.call_count == 1
            assert cdn.calls.last.request.headers["surrogate-key"] == "product:42"
        after = await client.get(url(server, "/tagged"))
        assert "fwd=" in after.headers["cache-status"] and after.text != first.text
    finally:
        server.stop()
        await server.wait()


BASE = ["--upstream", "http://127.0.0.1:9", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--cdn-origin", CDN], {}, "--cdn-path"),
        (["--cdn-path", "/static/"], {}, "--cdn-origin"),
        (["--cdn-origin", "cdn.example.com", "--cdn-path", "/static/"], {}, "--cdn-origin"),
        (["--cdn-origin", CDN, "--cdn-path", "static"], {}, "--cdn-path"),
        (
            ["--cdn-origin", CDN, "--cdn-path", "/s/", "--cdn-max-rewrite-bytes", "lots"],
            {},
            "--cdn-max-rewrite-bytes",
        ),
        (["--cdn-purge-provider", "fastly", "--cdn-purge-service", "s"], {}, "EDGECACHE_CDN_PURGE_TOKEN"),
        ([], {"EDGECACHE_CDN_PATHS": "/static/"}, "cdn_origin"),
    ],
)
def test_bad_cdn_flags_exit_2_naming_the_flag(args: list[str], env: dict[str, str], named: str) -> None:
    done = run_proxy_cli(*BASE, *args, env=env)
    assert done.returncode == 2, done.stderr
    assert named in done.stderr


def test_help_documents_the_cdn_flags() -> None:
    text = " ".join(run_proxy_cli("--help").stdout.split())
    for flag in ("--cdn-origin", "--cdn-path", "--cdn-public-host", "--cdn-version", "--cdn-asset-max-age",
                 "--cdn-purge-provider", "EDGECACHE_CDN_PURGE_TOKEN"):  # fmt: skip
        assert flag in text


def test_the_proxy_command_rewrites_with_its_cdn_flags(upstream: UvicornServer) -> None:
    port, admin = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "edgecache.cli", "proxy", "--upstream", upstream.url,
         "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}",
         "--cdn-origin", CDN, "--cdn-path", "/static/", "--cdn-path", "/media/", "--cdn-version", "42"],
        cwd=ROOT,
        env={**os.environ},
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                httpx.get(f"http://127.0.0.1:{admin}/healthz", timeout=0.5, trust_env=False)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the proxy did not start"
                time.sleep(0.05)
        me = httpx.get(f"http://127.0.0.1:{port}/api/me", trust_env=False)
        avatar = me.json()["avatar"]
        assert avatar.startswith(f"{CDN}/media/avatars/7.png") and "42" in avatar  # the version parameter
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()
