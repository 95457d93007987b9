"""Responses that must never reach another request, keyed cookies, and invalidation by unsafe methods."""

from __future__ import annotations

import pytest
from starlette.requests import Request
from starlette.responses import Response

from tests.middleware.conftest import HarnessFactory, cache_status, versioned


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({"cache-control": "private, max-age=60"}, "private"),
        ({"cache-control": "no-store"}, "no-store"),
        ({"cache-control": "public, max-age=60", "set-cookie": "id=1"}, "set-cookie"),
        ({"cache-control": "max-age=60", "vary": "*"}, "vary-star"),
    ],
    ids=["private", "no-store", "set-cookie", "vary-star"],
)
async def test_unshareable_response_is_never_served_to_another_request(
    harness: HarnessFactory, headers: dict[str, str], detail: str
) -> None:
    h = harness({"/r": versioned(headers)})
    first = await h.get("/r")
    second = await h.get("/r")
    assert (first.text, second.text) == ("v1", "v2")
    assert cache_status(first) == f"edgecache; fwd=uri-miss; detail={detail}"
    assert h.stored_objects() == 0


async def test_set_cookie_from_starlette_is_not_stored(harness: HarnessFactory) -> None:
    count = 0

    async def login(request: Request) -> Response:
        nonlocal count
        count += 1
        response = Response(f"user{count}", headers={"cache-control": "public, max-age=60"})
        response.set_cookie("session", f"s{count}")
        return response

    h = harness({"/login": login})
    await h.get("/login")
    second = await h.get("/login")
    assert second.text == "user2"
    assert second.cookies["session"] == "s2"


async def test_qualified_private_field_is_stored_without_that_field(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned({"cache-control": 'private="x-user", max-age=60', "x-user": "alice"})})
    first = await h.get("/r")
    second = await h.get("/r")
    assert first.headers.get("x-user") is None
    assert second.text == "v1"
    assert "x-user" not in second.headers


async def test_response_to_authorized_request_never_reaches_anonymous_one(harness: HarnessFactory) -> None:
    async def account(request: Request) -> Response:
        who = request.headers.get("authorization", "anonymous")
        return Response(who, headers={"cache-control": "public, max-age=60"})

    h = harness({"/me": account})
    assert (await h.get("/me", headers={"authorization": "Bearer alice"})).text == "Bearer alice"
    assert (await h.get("/me")).text == "anonymous"
    assert (await h.get("/me", headers={"authorization": "Bearer bob"})).text == "Bearer bob"


async def test_stored_response_is_not_served_to_authorized_request(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned()})
    await h.get("/r")
    response = await h.get("/r", headers={"authorization": "Bearer a"})
    assert response.text == "v2"


async def test_response_to_cookie_request_never_reaches_another_request(harness: HarnessFactory) -> None:
    async def page(request: Request) -> Response:
        return Response(request.cookies.get("user", "anonymous"), headers={"cache-control": "max-age=60"})

    h = harness({"/page": page})
    assert (await h.get("/page", headers={"cookie": "user=alice"})).text == "alice"
    assert (await h.get("/page")).text == "anonymous"
    assert (await h.get("/page", headers={"cookie": "user=bob"})).text == "bob"


async def test_key_cookies_caches_per_keyed_cookie_value(harness: HarnessFactory) -> None:
    async def page(request: Request) -> Response:
        return Response(f"session {request.cookies.get('session')}")

    h = harness({"/page": page}, key_cookies=["session"])
    a1 = await h.get("/page", headers={"cookie": "session=a; theme=dark"})
    a2 = await h.get("/page", headers={"cookie": "theme=light; session=a"})
    b = await h.get("/page", headers={"cookie": "session=b"})
    assert (a1.text, a2.text, b.text) == ("session a", "session a", "session b")
    assert h.origin.calls["/page"] == 2
    assert cache_status(a2).startswith("edgecache; hit")


async def test_key_cookies_lets_the_app_see_only_keyed_cookies(harness: HarnessFactory) -> None:
    h = harness({"/page": versioned()}, key_cookies=["session"])
    await h.get("/page", headers={"cookie": "tracking=xyz; session=a; theme=dark"})
    assert h.origin.last_header("cookie") == ["session=a"]


async def test_key_cookies_request_without_keyed_cookie_sends_no_cookie(harness: HarnessFactory) -> None:
    h = harness({"/page": versioned()}, key_cookies=["session"])
    await h.get("/page", headers={"cookie": "tracking=xyz"})
    assert h.origin.last_header("cookie") == []


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "FROB"])
async def test_unsafe_method_success_drops_the_stored_get(harness: HarnessFactory, method: str) -> None:
    h = harness({"/r": versioned()})
    await h.get("/r")
    await h.client.request(method, "/r")
    response = await h.get("/r")
    assert response.text == "v3"
    assert "fwd=uri-miss" in cache_status(response)


async def test_unsafe_method_drops_every_variant_of_the_target(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned({"vary": "accept-language"})})
    await h.get("/r", headers={"accept-language": "en"})
    await h.get("/r", headers={"accept-language": "fr"})
    await h.client.post("/r")
    assert (await h.get("/r", headers={"accept-language": "en"})).text == "v4"
    assert (await h.get("/r", headers={"accept-language": "fr"})).text == "v5"


async def test_unsafe_method_drops_only_its_own_query(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned()})
    await h.get("/r?a=1")
    await h.get("/r?a=2")
    await h.client.post("/r?a=1")
    assert (await h.get("/r?a=2")).text == "v2"


@pytest.mark.parametrize("field", ["location", "content-location"])
async def test_unsafe_method_drops_same_origin_location_target(harness: HarnessFactory, field: str) -> None:
    async def create(request: Request) -> Response:
        return Response("created", 201, headers={field: "/items/1"})

    h = harness({"/items": create, "/items/1": versioned()})
    await h.get("/items/1")
    await h.client.post("/items")
    assert (await h.get("/items/1")).text == "v2"


async def test_unsafe_method_drops_absolute_same_origin_location(harness: HarnessFactory) -> None:
    async def create(request: Request) -> Response:
        return Response("created", 201, headers={"location": "http://testserver/items/1"})

    h = harness({"/items": create, "/items/1": versioned()})
    await h.get("/items/1")
    await h.client.post("/items")
    assert (await h.get("/items/1")).text == "v2"


async def test_unsafe_method_keeps_foreign_origin_location_target(harness: HarnessFactory) -> None:
    async def create(request: Request) -> Response:
        return Response(
            "created",
            201,
            headers={
                "location": "http://other.example/items/1",
                "content-location": "//evil.example/items/1",
            },
        )

    h = harness({"/items": create, "/items/1": versioned()})
    await h.get("/items/1")
    await h.client.post("/items")
    response = await h.get("/items/1")
    assert response.text == "v1"
    assert cache_status(response).startswith("edgecache; hit")


@pytest.mark.parametrize("status", [400, 404, 409, 500, 503])
async def test_unsafe_method_error_does_not_invalidate(harness: HarnessFactory, status: int) -> None:
    async def reject(request: Request) -> Response:
        if request.method == "POST":
            return Response("no", status)
        return Response("stored")

    h = harness({"/r": reject})
    await h.get("/r")
    await h.client.post("/r")
    response = await h.get("/r")
    assert cache_status(response).startswith("edgecache; hit")
    assert h.origin.calls["/r"] == 2


async def test_key_cookies_do_not_filter_cookies_of_bypassed_requests(harness: HarnessFactory) -> None:
    h = harness({"/login": versioned()}, key_cookies=["session"])
    await h.client.post("/login", headers={"cookie": "csrftoken=t; session=a"})
    assert h.origin.last_header("cookie") == ["csrftoken=t; session=a"]


async def test_unsafe_method_drops_location_target_under_query_ignore(harness: HarnessFactory) -> None:
    async def create(request: Request) -> Response:
        return Response("created", 201, headers={"location": "/items/1?utm_source=mail"})

    h = harness({"/items": create, "/items/1": versioned()}, query_ignore=["utm_*"])
    await h.get("/items/1?utm_source=web")
    await h.client.post("/items")
    assert (await h.get("/items/1")).text == "v2"
