"""The README's product command: the example app behind CacheInterceptor under real uvicorn."""

from collections.abc import Iterator

import httpx
import pytest

from tests.servers import UvicornServer


@pytest.fixture(scope="module")
def server() -> Iterator[UvicornServer]:
    server = UvicornServer("examples.app:app")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_second_request_is_an_l1_hit(server):
    with httpx.Client(base_url=server.url) as client:
        first = client.get("/products/7")
        second = client.get("/products/7")
    assert first.headers["cache-status"] == "edgecache; fwd=uri-miss; stored"
    assert second.headers["cache-status"].startswith("edgecache; hit; ttl=")
    assert second.json() == first.json()
    assert "age" in second.headers
    assert "surrogate-key" not in second.headers
    assert len(second.headers.get_list("date")) == 1  # uvicorn's own Date, never a second one from storage


def test_head_is_answered_from_the_stored_get(server):
    with httpx.Client(base_url=server.url) as client:
        get = client.get("/products/8")
        head = client.head("/products/8")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"]
    assert "hit" in head.headers["cache-status"]


def test_private_response_is_never_stored(server):
    with httpx.Client(base_url=server.url) as client:
        client.get("/me")
        again = client.get("/me")
    assert again.headers["cache-status"] == "edgecache; fwd=uri-miss; detail=private"


def test_update_invalidates_the_stored_get(server):
    with httpx.Client(base_url=server.url) as client:
        client.get("/products/9")
        assert "hit" in client.get("/products/9").headers["cache-status"]
        client.put("/products/9")
        after = client.get("/products/9")
    assert after.headers["cache-status"] == "edgecache; fwd=uri-miss; stored"


def test_purge_by_tag_through_the_app(server):
    with httpx.Client(base_url=server.url) as client:
        client.get("/products/10")
        purged = client.post("/purge/product:10").json()
        after = client.get("/products/10")
    assert purged == {"purged": 1}
    assert after.headers["cache-status"] == "edgecache; fwd=uri-miss; stored"
