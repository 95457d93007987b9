"""Vary: one stored variant per selecting request-header value, capped per URI."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tests.middleware.conftest import Endpoint, HarnessFactory, cache_status


def echoing(field: str) -> Endpoint:
    """Answers with the request's value of ``field`` and a call counter, varying on that field."""
    count = 0

    async def endpoint(request: Request) -> Response:
        nonlocal count
        count += 1
        value = request.headers.get(field, "-")
        return Response(f"{value} #{count}", headers={"vary": field, "cache-control": "max-age=60"})

    return endpoint


async def test_accept_encoding_variants_are_stored_separately(harness: HarnessFactory) -> None:
    h = harness({"/r": echoing("accept-encoding")})
    gzip = await h.get("/r", headers={"accept-encoding": "gzip"})
    br = await h.get("/r", headers={"accept-encoding": "br"})
    gzip_again = await h.get("/r", headers={"accept-encoding": "gzip"})
    br_again = await h.get("/r", headers={"accept-encoding": "br"})
    assert (gzip.text, br.text) == ("gzip #1", "br #2")
    assert (gzip_again.text, br_again.text) == ("gzip #1", "br #2")
    assert h.origin.calls["/r"] == 2


async def test_accept_language_variants_are_stored_separately(harness: HarnessFactory) -> None:
    h = harness({"/r": echoing("accept-language")})
    await h.get("/r", headers={"accept-language": "en"})
    await h.get("/r", headers={"accept-language": "fr"})
    assert (await h.get("/r", headers={"accept-language": "en"})).text == "en #1"
    assert (await h.get("/r", headers={"accept-language": "fr"})).text == "fr #2"
    assert h.origin.calls["/r"] == 2


async def test_new_variant_reports_vary_miss(harness: HarnessFactory) -> None:
    h = harness({"/r": echoing("accept-language")})
    await h.get("/r", headers={"accept-language": "en"})
    response = await h.get("/r", headers={"accept-language": "fr"})
    assert cache_status(response) == "edgecache; fwd=vary-miss; stored"


async def test_equivalent_accept_encoding_values_share_a_variant(harness: HarnessFactory) -> None:
    h = harness({"/r": echoing("accept-encoding")})
    first = await h.get("/r", headers={"accept-encoding": "gzip, br"})
    second = await h.get("/r", headers={"accept-encoding": "br,gzip"})
    assert second.text == first.text
    assert h.origin.calls["/r"] == 1


async def test_request_without_the_field_matches_only_the_variant_stored_without_it(
    harness: HarnessFactory,
) -> None:
    h = harness({"/r": echoing("accept-language")})
    await h.get("/r", headers={"accept-language": "en"})
    bare = await h.get("/r")
    assert bare.text == "- #2"
    assert (await h.get("/r")).text == "- #2"
    assert (await h.get("/r", headers={"accept-language": "en"})).text == "en #1"
    assert h.origin.calls["/r"] == 2


async def test_empty_field_value_is_not_the_absent_field(harness: HarnessFactory) -> None:
    h = harness({"/r": echoing("accept-language")})
    await h.get("/r")
    await h.get("/r", headers={"accept-language": ""})
    assert h.origin.calls["/r"] == 2


async def test_max_variants_caps_the_variants_of_one_uri(harness: HarnessFactory) -> None:
    h = harness({"/r": echoing("accept-language")}, max_variants=2)
    for lang in ("en", "fr", "de"):
        await h.get("/r", headers={"accept-language": lang})
    assert (await h.get("/r", headers={"accept-language": "de"})).text == "de #3"
    assert (await h.get("/r", headers={"accept-language": "fr"})).text == "fr #2"
    assert h.origin.calls["/r"] == 3
    assert (await h.get("/r", headers={"accept-language": "en"})).text == "en #4"  # the oldest was dropped


async def test_max_variants_bounds_stored_objects(harness: HarnessFactory) -> None:
    h = harness({"/r": echoing("accept-language")}, max_variants=3)
    for i in range(10):
        await h.get("/r", headers={"accept-language": f"l{i}"})
    assert h.stored_objects() == 3 + 1  # the variants and the URI's Vary index
