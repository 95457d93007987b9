"""The cross-node coalescing options: defaults, environment twins, and errors that name the option."""

from __future__ import annotations

import pytest

from edgecache.config import ConfigError, Settings

REDIS = {"redis_url": "redis://127.0.0.1:6379/0"}


def test_off_by_default() -> None:
    settings = Settings.load({}, environ={})
    assert settings.coalesce_across_nodes is False
    assert (settings.lease_ttl, settings.lease_wait) == (2.0, 5.0)


def test_environment_twins() -> None:
    environ = {
        "EDGECACHE_REDIS_URL": REDIS["redis_url"],
        "EDGECACHE_COALESCE_ACROSS_NODES": "yes",
        "EDGECACHE_LEASE_TTL": "3",
        "EDGECACHE_LEASE_WAIT": "1.5",
    }
    settings = Settings.load({}, environ=environ)
    assert (settings.coalesce_across_nodes, settings.lease_ttl, settings.lease_wait) == (True, 3.0, 1.5)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"coalesce_across_nodes": True}, "coalesce_across_nodes: needs redis_url"),
        (
            {**REDIS, "coalesce_across_nodes": True, "coalesce": False},
            "coalesce_across_nodes: needs coalesce",
        ),
        ({"coalesce_across_nodes": "maybe"}, "option coalesce_across_nodes"),
        ({"lease_ttl": 0}, "lease_ttl: must be greater than 0"),
        ({"lease_wait": 0}, "lease_wait: must be greater than 0"),
        ({"lease_wait": "-1"}, "option lease_wait"),
        ({**REDIS, "coalesce_across_nodes": True, "lease_ttl": 0.5}, "lease_ttl: must be at least 3"),
        ({**REDIS, "coalesce_across_nodes": True, "lease_wait": 11}, "lease_wait: must not exceed"),
    ],
)
def test_bad_values_name_the_option(options: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        Settings.load(options, environ={})


def test_environment_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="environment variable EDGECACHE_LEASE_TTL"):
        Settings.load({}, environ={"EDGECACHE_LEASE_TTL": "soon"})
