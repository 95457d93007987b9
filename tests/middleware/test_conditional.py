"""Client conditionals answered from storage, and revalidation of stale entries with the app."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from edgecache.core.headers import format_http_date
from tests.helpers import FAKE_EPOCH
from tests.middleware.conftest import Endpoint, HarnessFactory, cache_status, status_params, versioned

ETAG = '"abc"'
LAST_MODIFIED = format_http_date(FAKE_EPOCH - 3600)


def revalidating(cache_control: str = "max-age=10") -> Endpoint:
    """The first call answers 200 with validators; later calls answer 304 when the validator matches."""
    count = 0

    async def endpoint(request: Request) -> Response:
        nonlocal count
        count += 1
        headers = {"etag": ETAG, "last-modified": LAST_MODIFIED, "cache-control": cache_control}
        if request.headers.get("if-none-match") == ETAG:
            return Response(status_code=304, headers=headers)
        return Response(f"body {count}", headers=headers)

    return endpoint


async def test_matching_if_none_match_gets_304_from_storage(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned({"etag": ETAG})})
    await h.get("/r")
    response = await h.get("/r", headers={"if-none-match": ETAG})
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == ETAG
    assert cache_status(response).startswith("edgecache; hit; ttl=")
    assert h.origin.calls["/r"] == 1


async def test_weak_if_none_match_matches_strong_stored_etag(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned({"etag": ETAG})})
    await h.get("/r")
    response = await h.get("/r", headers={"if-none-match": f'"other", W/{ETAG}'})
    assert response.status_code == 304


async def test_304_from_storage_carries_only_the_allowed_fields(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned({"etag": ETAG, "x-extra": "1"})})
    await h.get("/r")
    response = await h.get("/r", headers={"if-none-match": ETAG})
    assert "x-extra" not in response.headers
    assert "content-type" not in response.headers
    assert response.headers["age"] == "0"


async def test_other_if_none_match_gets_the_full_stored_response(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned({"etag": ETAG})})
    await h.get("/r")
    response = await h.get("/r", headers={"if-none-match": '"other"'})
    assert (response.status_code, response.text) == (200, "v1")
    assert h.origin.calls["/r"] == 1


async def test_if_modified_since_not_before_last_modified_gets_304(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned({"last-modified": LAST_MODIFIED})})
    await h.get("/r")
    response = await h.get("/r", headers={"if-modified-since": format_http_date(FAKE_EPOCH - 60)})
    assert response.status_code == 304
    assert response.headers["last-modified"] == LAST_MODIFIED
    assert h.origin.calls["/r"] == 1


async def test_if_modified_since_before_last_modified_gets_200(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned({"last-modified": LAST_MODIFIED})})
    await h.get("/r")
    response = await h.get("/r", headers={"if-modified-since": format_http_date(FAKE_EPOCH - 7200)})
    assert (response.status_code, response.text) == (200, "v1")


async def test_client_conditional_on_a_miss_does_not_reach_the_app(harness: HarnessFactory) -> None:
    h = harness({"/r": revalidating()})
    response = await h.get("/r", headers={"if-none-match": ETAG})
    assert h.origin.last_header("if-none-match") == []
    assert response.status_code == 304
    assert (await h.get("/r")).text == "body 1"  # the full response was stored


async def test_stale_entry_is_revalidated_with_its_stored_etag(harness: HarnessFactory) -> None:
    h = harness({"/r": revalidating()})
    await h.get("/r")
    h.clock.advance(11)
    await h.get("/r")
    assert h.origin.last_header("if-none-match") == [ETAG]
    assert h.origin.last_header("if-modified-since") == [LAST_MODIFIED]


async def test_revalidation_replaces_the_client_validators_with_the_stored_ones(
    harness: HarnessFactory,
) -> None:
    h = harness({"/r": revalidating()})
    await h.get("/r")
    h.clock.advance(11)
    await h.get("/r", headers={"if-none-match": '"client"'})
    assert h.origin.last_header("if-none-match") == [ETAG]


async def test_304_from_the_app_serves_the_full_stored_body(harness: HarnessFactory) -> None:
    h = harness({"/r": revalidating()})
    await h.get("/r")
    h.clock.advance(11)
    response = await h.get("/r")
    assert (response.status_code, response.text) == (200, "body 1")
    assert response.headers["etag"] == ETAG


async def test_304_from_the_app_reports_fwd_stale_and_fwd_status(harness: HarnessFactory) -> None:
    h = harness({"/r": revalidating()})
    await h.get("/r")
    h.clock.advance(11)
    params = status_params(await h.get("/r"))
    assert params[:3] == ["edgecache", "fwd=stale", "fwd-status=304"]
    assert "stored" in params


async def test_304_from_the_app_freshens_the_entry(harness: HarnessFactory) -> None:
    h = harness({"/r": revalidating()})
    await h.get("/r")
    h.clock.advance(11)
    await h.get("/r")
    h.clock.advance(5)
    response = await h.get("/r")
    assert cache_status(response) == "edgecache; hit; ttl=5; detail=l1"
    assert response.headers["age"] == "5"
    assert h.origin.calls["/r"] == 2


async def test_304_from_the_app_updates_stored_headers(harness: HarnessFactory) -> None:
    count = 0

    async def endpoint(request: Request) -> Response:
        nonlocal count
        count += 1
        headers = {"etag": ETAG, "cache-control": "max-age=10", "x-version": str(count)}
        if request.headers.get("if-none-match") == ETAG:
            return Response(status_code=304, headers=headers)
        return Response("body", headers=headers)

    h = harness({"/r": endpoint})
    await h.get("/r")
    h.clock.advance(11)
    await h.get("/r")
    response = await h.get("/r")
    assert (response.text, response.headers["x-version"]) == ("body", "2")


async def test_client_conditional_matching_after_revalidation_gets_304(harness: HarnessFactory) -> None:
    h = harness({"/r": revalidating()})
    await h.get("/r")
    h.clock.advance(11)
    response = await h.get("/r", headers={"if-none-match": ETAG})
    assert response.status_code == 304
    assert "fwd=stale" in cache_status(response)


async def test_changed_resource_replaces_the_stale_entry(harness: HarnessFactory) -> None:
    count = 0

    async def endpoint(request: Request) -> Response:
        nonlocal count
        count += 1
        return Response(f"body {count}", headers={"etag": f'"{count}"', "cache-control": "max-age=10"})

    h = harness({"/r": endpoint})
    await h.get("/r")
    h.clock.advance(11)
    response = await h.get("/r")
    assert response.text == "body 2"
    assert status_params(response)[:2] == ["edgecache", "fwd=stale"]
    assert (await h.get("/r")).text == "body 2"


async def test_request_no_cache_revalidates_a_fresh_entry(harness: HarnessFactory) -> None:
    h = harness({"/r": revalidating("max-age=600")})
    await h.get("/r")
    response = await h.get("/r", headers={"cache-control": "no-cache"})
    assert response.text == "body 1"
    assert h.origin.calls["/r"] == 2
    assert h.origin.last_header("if-none-match") == [ETAG]


async def test_response_no_cache_is_revalidated_every_time(harness: HarnessFactory) -> None:
    h = harness({"/r": revalidating("no-cache")})
    await h.get("/r")
    response = await h.get("/r")
    assert response.text == "body 1"
    assert h.origin.last_header("if-none-match") == [ETAG]
    assert h.origin.calls["/r"] == 2


async def test_304_that_makes_the_entry_unstorable_reaches_only_this_client(harness: HarnessFactory) -> None:
    count = 0

    async def endpoint(request: Request) -> Response:
        nonlocal count
        count += 1
        if request.headers.get("if-none-match") == ETAG:
            return Response(status_code=304, headers={"etag": ETAG, "set-cookie": "session=new"})
        return Response(f"body {count}", headers={"etag": ETAG, "cache-control": "max-age=10"})

    h = harness({"/r": endpoint})
    await h.get("/r")
    h.clock.advance(11)
    revalidated = await h.get("/r")
    assert (revalidated.text, revalidated.headers.get("set-cookie")) == ("body 1", "session=new")
    after = await h.get("/r")
    assert (after.text, after.headers.get("set-cookie")) == ("body 3", None)


async def test_304_content_length_does_not_replace_the_stored_one(harness: HarnessFactory) -> None:
    async def endpoint(request: Request) -> Response:
        if request.headers.get("if-none-match") == ETAG:
            return Response(status_code=304, headers={"etag": ETAG, "content-length": "0", "age": "3"})
        return Response("full body", headers={"etag": ETAG, "cache-control": "max-age=10"})

    h = harness({"/r": endpoint})
    await h.get("/r")
    h.clock.advance(11)
    for _ in range(2):  # the revalidated response, then the freshened entry
        response = await h.get("/r")
        assert response.text == "full body"
        assert response.headers.get_list("content-length") == ["9"]
        assert len(response.headers.get_list("age")) == 1


async def test_revalidation_for_a_request_that_may_not_store_sends_only_stored_validators(
    harness: HarnessFactory,
) -> None:
    count = 0

    async def endpoint(request: Request) -> Response:
        nonlocal count
        count += 1
        etag = f'"{count}"'
        headers = {"etag": etag, "cache-control": "max-age=10"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(f"body {count}", headers=headers)

    h = harness({"/r": endpoint})
    await h.get("/r")
    h.clock.advance(11)
    # The client holds the current representation ("2"); the cache holds "1" and may not store this time.
    response = await h.get("/r", headers={"if-none-match": '"2"', "cache-control": "no-store"})
    assert h.origin.last_header("if-none-match") == ['"1"']
    assert response.text != "body 1"


async def test_revalidation_forced_by_the_request_reports_fwd_request(harness: HarnessFactory) -> None:
    h = harness({"/r": revalidating("max-age=600")})
    await h.get("/r")
    response = await h.get("/r", headers={"cache-control": "no-cache"})
    assert status_params(response)[:3] == ["edgecache", "fwd=request", "fwd-status=304"]
