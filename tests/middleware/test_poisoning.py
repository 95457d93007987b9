"""Cache-poisoning guards: unkeyed reflected headers, GET bodies, error statuses, file extensions."""

from __future__ import annotations

import pytest
from starlette.requests import Request
from starlette.responses import Response

from edgecache.core.policy import UNKEYED_REFLECTED_HEADERS
from tests.middleware.conftest import HarnessFactory, cache_status, versioned


async def reflect_host(request: Request) -> Response:
    host = request.headers.get("x-forwarded-host", request.url.hostname)
    return Response(f'<script src="//{host}/app.js"></script>', media_type="text/html")


@pytest.mark.parametrize("header", sorted(UNKEYED_REFLECTED_HEADERS))
async def test_request_with_unkeyed_reflected_header_is_never_stored(
    harness: HarnessFactory, header: str
) -> None:
    h = harness({"/r": versioned()})
    poisoned = await h.get("/r", headers={header: "evil.example"})
    assert cache_status(poisoned) == "edgecache; fwd=uri-miss; detail=unkeyed-header"
    assert (await h.get("/r")).text == "v2"
    assert h.origin.calls["/r"] == 2


async def test_reflected_forwarded_host_never_reaches_other_clients(harness: HarnessFactory) -> None:
    h = harness({"/": reflect_host})
    await h.get("/", headers={"x-forwarded-host": "evil.example"})
    assert "evil.example" not in (await h.get("/")).text


async def test_keyed_forwarded_host_is_stored_per_value(harness: HarnessFactory) -> None:
    h = harness({"/": reflect_host}, key_headers=["X-Forwarded-Host"])
    a1 = await h.get("/", headers={"x-forwarded-host": "a.example"})
    b = await h.get("/", headers={"x-forwarded-host": "b.example"})
    a2 = await h.get("/", headers={"x-forwarded-host": "a.example"})
    plain = await h.get("/")
    assert "a.example" in a1.text and a2.text == a1.text
    assert "b.example" in b.text
    assert "example" not in plain.text
    assert h.origin.calls["/"] == 3
    assert cache_status(a2).startswith("edgecache; hit")


async def test_keying_one_reflected_header_still_guards_the_others(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned()}, key_headers=["x-forwarded-host"])
    await h.get("/r", headers={"x-forwarded-host": "a.example", "x-original-url": "/admin"})
    await h.get("/r", headers={"x-forwarded-host": "a.example"})
    assert h.origin.calls["/r"] == 2


async def test_get_with_a_body_is_never_stored(harness: HarnessFactory) -> None:
    h = harness({"/r": versioned()})
    with_body = await h.client.request("GET", "/r", content=b"select=secret")
    assert cache_status(with_body) == "edgecache; fwd=bypass; detail=request-body"
    assert (await h.get("/r")).text == "v2"


@pytest.mark.parametrize("status", [400, 401, 403, 413, 414, 429, 431, 500, 502, 503])
async def test_error_status_is_never_stored(harness: HarnessFactory, status: int) -> None:
    h = harness({"/r": versioned({"cache-control": "public, max-age=600"}, status=status)})
    await h.get("/r")
    response = await h.get("/r")
    assert (response.status_code, response.text) == (status, "v2")


async def test_cacheability_never_comes_from_a_file_extension(harness: HarnessFactory) -> None:
    h = harness({"/x.css": versioned({"cache-control": "no-store"}, media_type="text/css")})
    await h.get("/x.css")
    assert (await h.get("/x.css")).text == "v2"


async def test_path_confusion_suffix_is_its_own_key(harness: HarnessFactory) -> None:
    async def account(request: Request) -> Response:
        return Response(f"account {request.url.path}", headers={"cache-control": "private"})

    h = harness({"/account": account, "/account/x.css": account})
    await h.get("/account/x.css", headers={"cookie": "session=alice"})
    assert h.stored_objects() == 0


async def test_host_header_is_part_of_the_key(harness: HarnessFactory) -> None:
    async def host(request: Request) -> Response:
        return Response(request.headers["host"])

    h = harness({"/": host})
    assert (await h.get("/", headers={"host": "a.example"})).text == "a.example"
    assert (await h.get("/", headers={"host": "b.example"})).text == "b.example"
