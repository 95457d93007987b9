import httpx
from prometheus_client import CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from edgecache import Cache, CacheInterceptor, Settings
from edgecache.observe.prometheus import CacheCollector


async def page(request):
    return PlainTextResponse("hello", headers={"Surrogate-Key": "greeting"})


async def scrape_after_traffic() -> str:
    cache = Cache(Settings.load({"default_ttl": 60}, environ={}))
    app = CacheInterceptor(
        Starlette(routes=[Route("/p", page), Route("/p", page, methods=["POST"])]), cache=cache
    )
    registry = CollectorRegistry()
    registry.register(CacheCollector(cache))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        await client.get("/p")
        await client.get("/p")
        await client.get("/p")
        await client.get("/p", headers={"authorization": "Bearer x"})
        await cache.invalidate(tags=["greeting"])
    return generate_latest(registry).decode()


async def test_requests_are_counted_by_outcome_reason_and_tier():
    text = await scrape_after_traffic()
    assert 'edgecache_requests_total{outcome="hit",reason="l1",tier="l1"} 2.0' in text
    assert 'edgecache_requests_total{outcome="miss",reason="stored",tier="origin"} 1.0' in text
    assert (
        'edgecache_requests_total{outcome="bypass",reason="request-authorization",tier="origin"} 1.0' in text
    )


async def test_origin_fetches_stored_bytes_and_invalidations():
    text = await scrape_after_traffic()
    assert "edgecache_origin_fetches_total 2.0" in text  # the miss and the bypass
    assert "edgecache_invalidations_total 1.0" in text
    stored = next(line for line in text.splitlines() if line.startswith("edgecache_stored_bytes_total"))
    assert float(stored.split()[1]) > len("hello")
    assert "edgecache_l1_bytes 0.0" in text  # the purge emptied L1


async def test_labels_never_carry_a_path():
    text = await scrape_after_traffic()
    assert "/p" not in text
