from pathlib import Path

import pytest

from edgecache import ConfigError, Settings
from edgecache.config import OPTION_HELP, OPTION_NAMES, parse_size


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


# -- the TOML file --------------------------------------------------------------------------------------


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edgecache.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_config_file_values_are_read(tmp_path):
    path = _toml(
        tmp_path,
        'default_ttl = 15\nl1_max_bytes = "8MiB"\nkey_headers = ["Accept-Language"]\ncoalesce = false\n'
        "cacheable_statuses = [200, 404]\n",
    )
    settings = Settings.load({}, environ={}, config_file=path)
    assert settings.default_ttl == 15
    assert settings.l1_max_bytes == 8 * 1024**2
    assert settings.key_headers == ("accept-language",)
    assert settings.coalesce is False
    assert settings.cacheable_statuses == frozenset({200, 404})


def test_keywords_then_environment_then_file_then_defaults(tmp_path):
    path = _toml(tmp_path, "default_ttl = 1\nkeep_ttl = 2\nstale_if_error = 3\n")
    environ = {"EDGECACHE_DEFAULT_TTL": "10", "EDGECACHE_KEEP_TTL": "20"}
    settings = Settings.load({"default_ttl": 100}, environ=environ, config_file=path)
    assert settings.default_ttl == 100  # keyword > environment > file
    assert settings.keep_ttl == 20  # environment > file
    assert settings.stale_if_error == 3  # file > default
    assert settings.stale_while_revalidate == 0  # default


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("default_tll = 5\n", "unknown key 'default_tll' (did you mean default_ttl?)"),
        ("[cache]\ndefault_ttl = 5\n", "unknown key 'cache' (the file has no tables"),
        ("default_ttl = true\n", "key default_ttl: expected a number, got a boolean"),
        ('default_ttl = "5"\n', "key default_ttl: expected a number, got a string"),
        ("coalesce = 1\n", "key coalesce: expected true or false, got an integer"),
        ('coalesce = "yes"\n', "key coalesce: expected true or false, got a string"),
        ("key_headers = 5\n", "key key_headers: expected an array (or a comma-separated string), got an"),
        ("key_headers = [{a = 1}]\n", "key key_headers: expected an array of strings"),
        ("l1_max_bytes = 1.5\n", "key l1_max_bytes: expected a size"),
        ("namespace = 1979-05-27\n", "key namespace: expected a string, got a date"),
        ("default_ttl = -1\n", "key default_ttl: expected a non-negative number"),
        ('l1_max_bytes = "lots"\n', "key l1_max_bytes: expected a size such as"),
        ("default_ttl = \n", "not valid TOML"),
        ('cdn_purge_token = "x"\n', "key cdn_purge_token: a secret is not read from files; set EDGECACHE_"),
    ],
)
def test_bad_file_values_name_the_key_and_the_file(tmp_path, text, message):
    path = _toml(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        Settings.load({}, environ={}, config_file=path)
    assert str(caught.value).startswith(f"config file {path}: ")
    assert message in str(caught.value)


def test_a_check_across_options_says_where_the_value_came_from(tmp_path):
    path = _toml(tmp_path, 'namespace = "has space"\n')
    with pytest.raises(
        ConfigError, match=r"namespace: .* \(set by config file .*edgecache.toml: key namespace\)"
    ):
        Settings.load({}, environ={}, config_file=path)
    with pytest.raises(ConfigError, match=r"\(set by environment variable EDGECACHE_NAMESPACE\)"):
        Settings.load({}, environ={"EDGECACHE_NAMESPACE": "a b"}, config_file=path)


def test_a_missing_or_undecodable_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"config file .*nope.toml: cannot read it: No such file"):
        Settings.load({}, environ={}, config_file=tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="cannot read it: Is a directory"):
        Settings.load({}, environ={}, config_file=tmp_path)
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'namespace = "caf\xe9"\n')
    with pytest.raises(ConfigError, match=r"latin\.toml: not UTF-8 text"):
        Settings.load({}, environ={}, config_file=latin)


def test_every_option_has_help():
    # (Every option has a file kind by construction: SETTING_KINDS is built from the same parser table.)
    assert set(OPTION_HELP) == set(OPTION_NAMES)


def test_a_spec_option_takes_a_string_or_an_inline_table(tmp_path: Path) -> None:
    table = Settings.load(
        {}, environ={}, config_file=_toml(tmp_path, 'shadow = { ttl = 300, query = "sorted" }\n')
    )
    text = Settings.load({}, environ={}, config_file=_toml(tmp_path, 'shadow = "ttl=300,query=sorted"\n'))
    assert table.shadow == text.shadow is not None
    with pytest.raises(
        ConfigError, match='key shadow: expected a string such as "ttl=300,query=sorted" or a table'
    ):
        Settings.load({}, environ={}, config_file=_toml(tmp_path, "shadow = 5\n"))
