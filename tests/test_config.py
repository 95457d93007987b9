import pytest

from edgecache import ConfigError, Settings
from edgecache.config import OPTION_NAMES, parse_size


def test_defaults_need_no_environment():
    settings = Settings.load({}, environ={})
    assert settings.redis_url is None
    assert settings.default_ttl == 60
    assert settings.l1_max_bytes == 64 * 1024 * 1024


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1048576", 1048576),
        ("64MiB", 64 * 1024**2),
        ("500kB", 500_000),
        ("1.5GiB", int(1.5 * 1024**3)),
        ("12 b", 12),
        (4096, 4096),
    ],
)
def test_sizes_accept_units(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"default_ttl": -1}, "default_ttl"),
        ({"default_ttl": "soon"}, "default_ttl"),
        ({"default_ttl": float("nan")}, "default_ttl"),
        ({"l1_max_bytes": "lots"}, "l1_max_bytes"),
        ({"l1_max_bytes": 0}, "l1_max_bytes"),
        ({"l1_max_bytes": True}, "l1_max_bytes"),
        ({"max_object_bytes": "2MiB", "l1_max_bytes": "1MiB"}, "max_object_bytes"),
        ({"cacheable_statuses": "200,500"}, "cacheable_statuses"),
        ({"cacheable_statuses": "200,206"}, "cacheable_statuses"),
        ({"cacheable_statuses": "ok"}, "cacheable_statuses"),
        ({"coalesce": "maybe"}, "coalesce"),
        ({"key_headers": "x forwarded host"}, "key_headers"),
        ({"namespace": "has space"}, "namespace"),
        ({"namespace": ""}, "namespace"),
        ({"redis_url": "http://localhost"}, "redis_url"),
        ({"query_allow": "id", "query_ignore": "utm_*"}, "query_allow"),
        ({"origin_timeout": -2}, "origin_timeout"),
        ({"max_variants": 0}, "max_variants"),
    ],
)
def test_bad_values_fail_naming_the_option(options, named):
    with pytest.raises(ConfigError, match=named):
        Settings.load(options, environ={})


def test_unknown_option_is_an_error():
    with pytest.raises(ConfigError, match="default_tll"):
        Settings.load({"default_tll": 5}, environ={})


def test_environment_twins_are_read():
    environ = {
        "EDGECACHE_DEFAULT_TTL": "15",
        "EDGECACHE_L1_MAX_BYTES": "8MiB",
        "EDGECACHE_KEY_HEADERS": "Accept-Language, X-Forwarded-Host",
        "EDGECACHE_COALESCE": "off",
        "EDGECACHE_ORIGIN_TIMEOUT": "none",
    }
    settings = Settings.load({}, environ=environ)
    assert settings.default_ttl == 15
    assert settings.l1_max_bytes == 8 * 1024**2
    assert settings.key_headers == ("accept-language", "x-forwarded-host")
    assert settings.coalesce is False
    assert settings.origin_timeout is None


def test_keyword_options_win_over_environment():
    settings = Settings.load({"default_ttl": 5}, environ={"EDGECACHE_DEFAULT_TTL": "15"})
    assert settings.default_ttl == 5


def test_bad_environment_value_names_the_variable():
    with pytest.raises(ConfigError, match="EDGECACHE_DEFAULT_TTL"):
        Settings.load({}, environ={"EDGECACHE_DEFAULT_TTL": "-3"})


def test_every_option_has_an_environment_twin():
    for name in OPTION_NAMES:
        assert f"EDGECACHE_{name.upper()}".isupper()
    # the contract's names (PRODUCT.md) exist
    contract = {"redis_url", "default_ttl", "l1_max_bytes", "namespace", "cdn_origin", "cdn_paths"}
    assert contract <= set(OPTION_NAMES)


def test_lists_accept_sequences_and_strings():
    options = {"query_ignore": ["utm_*", "fbclid"], "key_cookies": "lang,currency"}
    settings = Settings.load(options, environ={})
    assert settings.query_ignore == ("utm_*", "fbclid")
    assert settings.key_cookies == ("lang", "currency")
