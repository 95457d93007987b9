"""The admin ``GET /explain?url=…``: the key, the stored variants and their ages, TTLs and tiers."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from edgecache.config import Settings
from edgecache.proxy.server import bind
from tests.proxy.conftest import MakeProxy, QuietServer, RunningProxy

TOKEN = {"Authorization": "Bearer s3cret"}


async def origin(scope: Scope, receive: Receive, send: Send) -> None:
    """``/varied`` varies on Accept-Language with stale-* windows and tags; ``/fresh`` is plain max-age;
    anything else says it reached the origin."""
    assert scope["type"] == "http"
    fields = dict(scope["headers"])
    if scope["path"] == "/varied":
        language = fields.get(b"accept-language", b"en")
        headers = [
            (b"cache-control", b"max-age=60, stale-while-revalidate=30, stale-if-error=300"),
            (b"vary", b"Accept-Language"),
            (b"surrogate-key", b"product:42 catalog"),
            (b"etag", b'"v-' + language + b'"'),
        ]
        body = b"hello in " + language
    elif scope["path"] == "/fresh":
        headers, body = [(b"cache-control", b"max-age=100"), (b"cache-tag", b"a")], b"fresh"
    else:
        headers, body = [], b"origin saw " + scope["raw_path"]
    headers.append((b"content-length", b"%d" % len(body)))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def origin_url() -> AsyncIterator[str]:
    sock = bind("127.0.0.1", 0)
    config = uvicorn.Config(origin, lifespan="off", log_level="warning", timeout_graceful_shutdown=1)
    server = QuietServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        assert not task.done()
        await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    await task
    sock.close()


@pytest.fixture
async def proxy(make_proxy: MakeProxy, origin_url: str) -> RunningProxy:
    return await make_proxy(origin_url, admin_token="s3cret")


async def explain(client: httpx.AsyncClient, proxy: RunningProxy, **params: str) -> httpx.Response:
    return await client.get(proxy.admin_url + "/explain", params=params, headers=TOKEN)


async def test_a_url_never_fetched_has_a_key_and_nothing_stored(
    proxy: RunningProxy, client: httpx.AsyncClient
) -> None:
    response = await explain(client, proxy, url="/fresh?b=2")
    assert response.status_code == 200
    report = response.json()
    assert re.fullmatch(r"[0-9a-f]{64}", report["key"]["digest"])
    assert "/fresh" in report["key"]["canonical"] and "b=2" in report["key"]["canonical"]
    assert report["uri"]["host"] == proxy.server.cache.settings.key_host  # the proxy keys on its upstream
    assert (report["stored"], report["variants"]) == ("nothing", [])


async def test_a_stored_response_with_its_age_ttl_tags_size_and_tier(
    proxy: RunningProxy, client: httpx.AsyncClient
) -> None:
    await client.get(proxy.url + "/fresh")
    hits_before = proxy.server.cache.stats.hits.copy()
    report = (await explain(client, proxy, url="/fresh")).json()
    assert report["stored"] == "response"
    [variant] = report["variants"]
    assert variant["key"]["digest"] == report["key"]["digest"]
    assert (variant["tier"], variant["status"], variant["use"]) == ("l1", 200, "fresh: served")
    assert variant["tags"] == ["a"] and variant["internal_tags"] > 0
    assert variant["freshness_lifetime"] == 100 and variant["freshness_source"] == "max-age"
    assert 0 <= variant["age"] < 100 and variant["ttl"] == pytest.approx(100 - variant["age"], abs=0.01)
    assert variant["stale_while_revalidate"] == 0 and variant["stale_if_error"] == 0
    assert variant["size"] > variant["body_bytes"] == len(b"fresh")
    assert proxy.server.cache.stats.hits == hits_before  # explaining is not serving
    # An absolute URL names the same entry: the proxy keys on its upstream, whatever host is given.
    absolute = (await explain(client, proxy, url="http://any.example/fresh")).json()
    assert absolute["key"]["digest"] == report["key"]["digest"]


async def test_vary_index_and_each_variant(proxy: RunningProxy, client: httpx.AsyncClient) -> None:
    for language in ("fr", "de"):
        await client.get(proxy.url + "/varied", headers={"Accept-Language": language})
    response = await explain(client, proxy, url="/varied", header="Accept-Language: fr")
    report = response.json()
    assert report["stored"] == "vary index"
    assert report["vary"]["fields"] == ["accept-language"] and report["vary"]["variants"] == 2
    variants = {v["vary_values"]["accept-language"]: v for v in report["variants"]}
    assert set(variants) == {"fr", "de"}
    assert report["vary"]["selected_by_given_headers"] == variants["fr"]["key"]["digest"]
    french = variants["fr"]
    assert french["key"]["digest"] != report["key"]["digest"]  # the secondary key
    assert french["tags"] == ["catalog", "product:42"] and french["etag"] == '"v-fr"'
    assert french["stale_while_revalidate"] == 30 and french["stale_if_error"] == 300
    assert french["stale_if_error_usable"] is True and french["tier"] == "l1"


async def test_a_stale_variant_shows_its_remaining_windows(
    make_proxy: MakeProxy, origin_url: str, client: httpx.AsyncClient
) -> None:
    clock = [1_000_000.0]
    proxy = await make_proxy(origin_url, admin_token="s3cret", settings=Settings(default_ttl=0))
    proxy.server.cache.clock = lambda: clock[0]
    proxy.server.cache.store._clock = lambda: clock[0]  # type: ignore[attr-defined]
    await client.get(proxy.url + "/varied", headers={"Accept-Language": "fr"})
    clock[0] += 70  # 10 s past max-age=60
    [variant] = (await explain(client, proxy, url="/varied")).json()["variants"]
    assert variant["ttl"] == pytest.approx(-10, abs=0.5)
    assert variant["use"] == "stale: served while one refresh runs"
    assert variant["stale_while_revalidate_left"] == pytest.approx(20, abs=0.5)
    assert variant["stale_if_error_left"] == pytest.approx(290, abs=0.5)


async def test_explain_needs_the_admin_token_when_one_is_set(
    proxy: RunningProxy, client: httpx.AsyncClient
) -> None:
    url = proxy.admin_url + "/explain"
    assert (await client.get(url, params={"url": "/fresh"})).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert (await client.get(url, params={"url": "/fresh"}, headers=wrong)).status_code == 401
    assert (await client.post(url, params={"url": "/fresh"}, headers=TOKEN)).status_code == 405


async def test_without_a_token_explain_is_open_on_the_admin_listener(
    make_proxy: MakeProxy, origin_url: str, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EDGECACHE_ADMIN_TOKEN", raising=False)
    proxy = await make_proxy(origin_url)
    response = await client.get(proxy.admin_url + "/explain", params={"url": "/fresh"})
    assert response.status_code == 200 and response.json()["stored"] == "nothing"


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ("", "missing url parameter"),
        ("url=/a&url=/b", "give one url parameter"),
        ("url=", "empty url"),
        ("url=ftp://host/x", "expected /path?query or http(s)://host/path?query"),
        ("url=//other/x", "expected /path?query"),
        ("url=nope", "expected /path?query"),
        ("url=/a%0d%0aX:%20y", "whitespace or control characters"),
        ("url=http://user:pw@host/x", "user information"),
        ("url=/" + "a" * 9000, "longer than 8192"),
        ("url=/x&header=no-colon", "bad header parameter"),
        ("url=/x&header=bad%20name:%20v", "bad header parameter"),
        ("url=/x&other=1", "unknown parameter 'other'"),
        ("url=/%ff", "bad query string"),
    ],
)
async def test_bad_parameters_are_400_with_a_clear_message(
    proxy: RunningProxy, client: httpx.AsyncClient, query: str, detail: str
) -> None:
    response = await client.get(f"{proxy.admin_url}/explain?{query}", headers=TOKEN)
    assert response.status_code == 400
    body = response.json()
    assert detail in body["error"] + " " + str(body.get("detail"))


async def test_explain_is_not_reachable_through_the_proxied_port(
    proxy: RunningProxy, client: httpx.AsyncClient
) -> None:
    response = await client.get(proxy.url + "/explain", params={"url": "/fresh"}, headers=TOKEN)
    assert response.text == "origin saw /explain"


async def test_key_headers_are_given_as_header_parameters(
    make_proxy: MakeProxy, origin_url: str, client: httpx.AsyncClient
) -> None:
    settings = Settings(default_ttl=0, key_headers=("x-tenant",))
    proxy = await make_proxy(origin_url, admin_token="s3cret", settings=settings)
    await client.get(proxy.url + "/fresh", headers={"X-Tenant": "acme"})
    without = (await explain(client, proxy, url="/fresh")).json()
    other = (await explain(client, proxy, url="/fresh", header="X-Tenant: globex")).json()
    tenant = (await explain(client, proxy, url="/fresh", header="X-Tenant: acme")).json()
    assert (without["stored"], other["stored"], tenant["stored"]) == ("nothing", "nothing", "response")
    assert len({without["key"]["digest"], other["key"]["digest"], tenant["key"]["digest"]}) == 3
