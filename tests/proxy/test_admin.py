"""The admin listener: health, readiness, metrics and purges, and none of them on the proxied port."""

from __future__ import annotations

import httpx
import pytest

from edgecache.proxy.upstreams import HealthConfig
from tests.proxy.conftest import MakeProxy, RunningProxy, RunningUpstream, wait_for_readyz


async def test_healthz(proxy: RunningProxy, client: httpx.AsyncClient) -> None:
    response = await client.get(proxy.admin_url + "/healthz")
    assert (response.status_code, response.text) == (200, "ok\n")


async def test_healthz_on_the_proxied_port_goes_to_the_upstream(
    proxy: RunningProxy, client: httpx.AsyncClient, upstream: RunningUpstream
) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        response = await client.get(proxy.url + path)
        assert response.json()["raw_path"] == path
    purge = await client.post(proxy.url + "/purge", headers={"Authorization": "Bearer s3cret"}, content=b"{}")
    assert purge.json()["method"] == "POST"
    assert upstream.app.hits["/healthz"] == 1


async def test_readyz_reports_upstream_and_redis(
    make_proxy: MakeProxy, client: httpx.AsyncClient, upstream: RunningUpstream
) -> None:
    fast = HealthConfig(interval=0.05, timeout=0.5, window=2, threshold=1)
    proxy = await make_proxy(health=fast)
    response = await client.get(proxy.admin_url + "/readyz")
    assert response.status_code == 200
    report = response.json()
    primary = report["upstream"]
    assert (primary["name"], primary["url"], primary["healthy"]) == ("primary", upstream.url + "/", True)
    assert (primary["breaker"], primary["outstanding"]) == ("closed", 0)
    assert primary["last_probe"]["ok"] is True and primary["last_probe"]["status"] == 200
    assert report["replicas"] == []
    assert report["redis"] == {"configured": False, "breaker": None}
    await upstream.stop()
    down = await wait_for_readyz(client, proxy, lambda r: not r["ready"])
    assert down["upstream"]["healthy"] is False
    assert down["upstream"]["last_probe"]["ok"] is False
    assert (await client.get(proxy.admin_url + "/readyz")).status_code == 503


async def test_metrics_text(proxy: RunningProxy, client: httpx.AsyncClient) -> None:
    await client.get(proxy.url + "/cacheable")
    await client.get(proxy.url + "/cacheable")
    response = await client.get(proxy.admin_url + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "edgecache_requests_total" in response.text
    assert "edgecache_origin_fetches_total 1.0" in response.text


async def test_purge_with_the_token_drops_the_entry(
    proxy: RunningProxy, client: httpx.AsyncClient, upstream: RunningUpstream
) -> None:
    await client.get(proxy.url + "/cacheable")
    assert "hit" in (await client.get(proxy.url + "/cacheable")).headers["cache-status"]
    response = await client.post(
        proxy.admin_url + "/purge",
        headers={"Authorization": "Bearer s3cret"},
        json={"id": "p-1", "paths": ["/cacheable"]},
    )
    assert response.status_code == 200
    assert response.json() == {"id": "p-1", "removed": 1}
    after = await client.get(proxy.url + "/cacheable")
    assert after.text == "cached 2"
    assert upstream.app.hits["/cacheable"] == 2


async def test_purge_refuses_bad_missing_tokens_and_bad_bodies(
    proxy: RunningProxy, client: httpx.AsyncClient
) -> None:
    url = proxy.admin_url + "/purge"
    body = {"id": "p-2", "tags": ["t"]}
    assert (await client.post(url, json=body)).status_code == 401
    assert (await client.post(url, json=body, headers={"Authorization": "Bearer wrong"})).status_code == 401
    assert (await client.post(url, json=body, headers={"Authorization": "Basic s3cret"})).status_code == 401
    bad = await client.post(url, json={"id": "p-3"}, headers={"Authorization": "Bearer s3cret"})
    assert bad.status_code == 400
    assert bad.json()["error"] == "empty"
    not_json = await client.post(url, content=b"nope", headers={"Authorization": "Bearer s3cret"})
    assert (not_json.status_code, not_json.json()["error"]) == (400, "not-json")
    assert (await client.get(url)).status_code == 405
    assert (await client.get(proxy.admin_url + "/other")).status_code == 404


async def test_purge_without_a_configured_token_is_403(
    make_proxy: MakeProxy, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EDGECACHE_ADMIN_TOKEN", raising=False)
    proxy = await make_proxy()
    response = await client.post(
        proxy.admin_url + "/purge",
        headers={"Authorization": "Bearer anything"},
        json={"id": "x", "all": True},
    )
    assert response.status_code == 403
    assert response.json()["error"] == "admin token not configured"
