"""The query string in the key, and the query_ignore / query_allow filters."""

from __future__ import annotations

from tests.middleware.conftest import HarnessFactory, versioned


async def test_query_string_is_part_of_the_key(harness: HarnessFactory) -> None:
    h = harness({"/p": versioned()})
    assert (await h.get("/p?a=1")).text == "v1"
    assert (await h.get("/p?a=2")).text == "v2"
    assert (await h.get("/p")).text == "v3"
    assert (await h.get("/p?a=1")).text == "v1"
    assert h.origin.calls["/p"] == 3


async def test_query_parameter_order_is_part_of_the_key(harness: HarnessFactory) -> None:
    h = harness({"/p": versioned()})
    await h.get("/p?a=1&b=2")
    await h.get("/p?b=2&a=1")
    assert h.origin.calls["/p"] == 2


async def test_query_ignore_shares_the_key(harness: HarnessFactory) -> None:
    h = harness({"/p": versioned()}, query_ignore=["utm_*"])
    await h.get("/p?a=1&utm_source=mail")
    response = await h.get("/p?utm_medium=x&a=1&utm_campaign=y")
    assert response.text == "v1"
    assert h.origin.calls["/p"] == 1


async def test_query_ignore_hides_ignored_parameters_from_the_app(harness: HarnessFactory) -> None:
    h = harness({"/p": versioned()}, query_ignore=["utm_*"])
    await h.get("/p?utm_source=mail&a=1&utm_medium=x&b=2")
    assert h.origin.last["query_string"] == b"a=1&b=2"


async def test_query_ignore_keeps_other_parameters_in_the_key(harness: HarnessFactory) -> None:
    h = harness({"/p": versioned()}, query_ignore=["utm_*"])
    await h.get("/p?a=1&utm_source=mail")
    assert (await h.get("/p?a=2&utm_source=mail")).text == "v2"


async def test_query_allow_keys_on_allowed_parameters_only(harness: HarnessFactory) -> None:
    h = harness({"/p": versioned()}, query_allow=["page"])
    await h.get("/p?page=2&sort=price")
    assert (await h.get("/p?fbclid=1&page=2")).text == "v1"
    assert (await h.get("/p?page=3")).text == "v2"
    assert h.origin.last["query_string"] == b"page=3"


async def test_query_allow_hides_other_parameters_from_the_app(harness: HarnessFactory) -> None:
    h = harness({"/p": versioned()}, query_allow=["page"])
    await h.get("/p?sort=price&page=2&x=1")
    assert h.origin.last["query_string"] == b"page=2"
