"""Options: validation at construction, environment variables, and their precedence."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from edgecache import Cache, CacheInterceptor, ConfigError
from tests.middleware.conftest import make_app, versioned


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("default_ttl", -1),
        ("default_ttl", "soon"),
        ("l1_max_bytes", "lots"),
        ("l1_max_bytes", 0),
        ("max_object_bytes", -5),
        ("max_variants", 0),
        ("coalesce", "maybe"),
        ("key_headers", ["not a header"]),
        ("cacheable_statuses", [500]),
        ("namespace", "has space"),
    ],
)
def test_invalid_option_raises_config_error_naming_it(option: str, value: object) -> None:
    options: dict[str, Any] = {option: value}
    with pytest.raises(ConfigError, match=option):
        CacheInterceptor(make_app({}), **options)


def test_unknown_option_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="default_tll"):
        CacheInterceptor(make_app({}), default_tll=5)


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="default_ttl"):
        CacheInterceptor(make_app({}), default_ttl=-1)


def test_default_ttl_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGECACHE_DEFAULT_TTL", "5")
    assert CacheInterceptor(make_app({})).cache.policy.default_ttl == 5.0


async def test_default_ttl_from_the_environment_is_used_for_responses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EDGECACHE_DEFAULT_TTL", "5")
    interceptor = CacheInterceptor(make_app({"/r": versioned()}))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=interceptor), base_url="http://t"
    ) as client:
        await client.get("/r")
        status = (await client.get("/r")).headers["cache-status"]
    assert status.startswith("edgecache; hit; ttl=")
    assert int(status.split("ttl=")[1].split(";")[0]) in (4, 5)
    await interceptor.cache.aclose()


def test_invalid_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGECACHE_DEFAULT_TTL", "-3")
    with pytest.raises(ConfigError, match="EDGECACHE_DEFAULT_TTL"):
        CacheInterceptor(make_app({}))


def test_explicit_option_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGECACHE_DEFAULT_TTL", "5")
    assert CacheInterceptor(make_app({}), default_ttl=30).cache.policy.default_ttl == 30.0


def test_explicit_option_wins_over_an_invalid_environment_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGECACHE_DEFAULT_TTL", "-3")
    assert CacheInterceptor(make_app({}), default_ttl=30).cache.policy.default_ttl == 30.0


def test_list_option_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGECACHE_KEY_COOKIES", "session, lang")
    assert CacheInterceptor(make_app({})).cache.settings.key_cookies == ("session", "lang")


def test_middleware_default_ttl_is_60(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGECACHE_DEFAULT_TTL", raising=False)
    assert CacheInterceptor(make_app({})).cache.policy.default_ttl == 60.0


def test_cache_and_options_together_are_refused() -> None:
    with pytest.raises(TypeError):
        CacheInterceptor(make_app({}), cache=Cache(), default_ttl=5)
