"""Options: keyword arguments, then ``EDGECACHE_*`` environment variables, then a TOML file, then defaults.

Every option is declared once in ``_PARSERS`` (its parser) and ``OPTION_HELP`` (one line for ``--help``);
a bad value stops start-up with a ``ConfigError`` that names the option and where the value came from.
The precedence lives in one place, ``first_value`` over a list of ``Source``s: ``Settings.load`` and
``edgecache proxy`` build their lists and never decide precedence per option.

The TOML file is flat: each top-level key is an option name, the same as the environment variable without
``EDGECACHE_`` in lower case (``default_ttl = 0``, ``key_headers = ["Accept-Language"]``).
"""

from __future__ import annotations

import datetime
import difflib
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from edgecache.core.policy import DEFAULT_CACHEABLE_STATUSES, NEVER_STORED
from edgecache.shadow import ShadowSpec, parse_shadow
from edgecache.stores.redis_connect import BadRedisUrl, check_redis_url


class ConfigError(ValueError):
    """An option has a value edgecache cannot use; the message names the option."""


ENV_PREFIX = "EDGECACHE_"
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2}
_SIZE_UNITS |= {"mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3}
NAMESPACE_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")  # also what `edgecache purge` accepts
_FIELD_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def parse_size(value: object) -> int:
    """Bytes from an int or a string such as ``64MiB``, ``500kB`` or ``1048576``."""
    if isinstance(value, bool):
        raise ValueError("expected a size in bytes")
    if isinstance(value, int):
        return value
    m = _SIZE.match(str(value))
    if m is None or (m.group(2) or "").lower() not in _SIZE_UNITS:
        raise ValueError(f"expected a size such as 1048576, 64MiB or 500kB, got {value!r}")
    return int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "").lower()])


def parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def parse_seconds(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError("expected seconds")
    seconds = float(value)  # type: ignore[arg-type]
    if not seconds >= 0 or seconds == float("inf"):  # rejects NaN and negatives
        raise ValueError(f"expected a non-negative number of seconds, got {value!r}")
    return seconds


def parse_optional_seconds(value: object) -> float | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    return parse_seconds(value)


def parse_list(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, list | tuple | set | frozenset):
        items = tuple(str(v).strip() for v in value)
        if any(not item for item in items):
            raise ValueError("empty item in list")
        return items
    raise ValueError(f"expected a list or a comma-separated string, got {value!r}")


def parse_optional_list(value: object) -> tuple[str, ...] | None:
    if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
        return None
    return parse_list(value)


def parse_field_names(value: object) -> tuple[str, ...]:
    names = tuple(n.lower() for n in parse_list(value))
    for name in names:
        if not _FIELD_NAME.match(name):
            raise ValueError(f"{name!r} is not a header field name")
    return names


def parse_statuses(value: object) -> frozenset[int]:
    items = value if isinstance(value, set | frozenset) else parse_list(value)
    statuses = frozenset(int(s) for s in items)
    for status in statuses:
        if status < 200 or status > 599:
            raise ValueError(f"{status} is not a final status code")
        if status in NEVER_STORED or status >= 500:
            raise ValueError(f"{status} is never stored (errors and partial content are not shareable)")
    return frozenset(statuses)


def parse_optional_str(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def parse_positive_int(value: object) -> int:
    number = parse_size(value)
    if number <= 0:
        raise ValueError(f"expected a positive number, got {value!r}")
    return number


@dataclass(frozen=True, slots=True)
class Settings:
    """Validated options of one cache (the middleware's and the proxy's)."""

    redis_url: str | None = None
    namespace: str = "edgecache"
    redis_cluster: bool = False  # redis_url names one node of a Redis Cluster
    redis_timeout: float = 0.25  # per Redis call on the request path
    redis_breaker_failures: int = 5  # failures in a row that open the breaker (L2 skipped)
    redis_breaker_reset: float = 5.0  # seconds before a half-open probe
    l1_max_ttl: float = 30.0  # longest life of an L1 copy when L2 is configured
    subscriber_heartbeat: float = 1.0  # seconds of silence before the invalidation channel is pinged
    generation_check_interval: float = 1.0  # how often the Redis generation token is compared
    default_ttl: float = 60.0
    l1_max_bytes: int = 64 * 1024 * 1024
    max_object_bytes: int = 1024 * 1024
    cacheable_statuses: frozenset[int] = DEFAULT_CACHEABLE_STATUSES
    targeted_fields: tuple[str, ...] = ()
    cache_authorized: bool = False
    key_headers: tuple[str, ...] = ()
    key_cookies: tuple[str, ...] = ()
    query_ignore: tuple[str, ...] = ()
    query_allow: tuple[str, ...] | None = None
    max_variants: int = 32
    respect_request_cache_control: bool = True
    keep_ttl: float = 300.0
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0
    coalesce: bool = True
    coalesce_timeout: float = 10.0
    coalesce_across_nodes: bool = False  # a Redis lease per key: N nodes missing it make one origin call
    lease_ttl: float = 2.0  # seconds a lease lives without renewal (its holder renews it every third)
    lease_wait: float = 5.0  # longest wait for another node's fetch before fetching here
    hit_for_miss_ttl: float = 30.0
    origin_timeout: float | None = None
    strip_tag_headers: bool = True
    # The host every cache key uses instead of the request's Host; the proxy sets it to its upstream, so
    # that invented Host headers cannot multiply entries of one origin.
    key_host: str | None = None
    # CDN asset URL rewriting (edgecache.cdn): off unless cdn_origin and cdn_paths are both set.
    cdn_origin: str | None = None
    cdn_paths: tuple[str, ...] = ()
    # A candidate configuration simulated beside the live cache (edgecache.shadow); None: off.
    shadow: ShadowSpec | None = None
    cdn_public_hosts: tuple[str, ...] = ()  # the app's own public hosts: absolute URLs on them are rewritten
    cdn_version: str | None = None  # appended to rewritten asset URLs as a version parameter
    cdn_max_rewrite_bytes: int = 8 * 1024 * 1024  # decoded body size above which bytes pass untouched
    # Cache-Control max-age added to 200 responses for asset paths that carry no freshness of their own
    # (what the CDN pulls); None adds nothing.
    cdn_asset_max_age: float | None = None
    # Purge at the CDN too when a tag is purged through this node: "fastly", "cloudflare" or None.
    cdn_purge_provider: str | None = None
    cdn_purge_service: str | None = None  # Fastly service id
    cdn_purge_zone: str | None = None  # Cloudflare zone id
    cdn_purge_token: str | None = field(default=None, repr=False)  # Fastly-Key / Cloudflare API token
    cdn_purge_timeout: float = 5.0  # per provider call, off the request path

    @classmethod
    def load(
        cls,
        options: Mapping[str, Any],
        environ: Mapping[str, str] | None = None,
        *,
        config_file: str | os.PathLike[str] | None = None,
    ) -> Settings:
        """Options from keyword arguments, then the environment, then ``config_file`` (TOML), then
        defaults; validated."""
        environ = os.environ if environ is None else environ
        unknown = set(options) - set(_PARSERS)
        if unknown:
            raise ConfigError(f"unknown option(s): {', '.join(sorted(unknown))}")
        sources = [Source(options, lambda name: f"option {name}"), environment_source(environ)]
        if config_file is not None:
            sources.append(read_config_file(config_file, SETTING_KINDS))
        return cls.from_sources(sources)

    @classmethod
    def from_sources(cls, sources: Iterable[Source]) -> Settings:
        """Each option from the first source that has it (else its default); validated. Other names in
        the sources are ignored (a proxy option in the same file, for one)."""
        sources = list(sources)
        values: dict[str, Any] = {}
        origins: dict[str, str] = {}
        for name, parser in _PARSERS.items():
            found = first_value(name, sources)
            if found is None:
                continue
            raw, origins[name] = found
            try:
                values[name] = parser(raw)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{origins[name]}: {exc}") from None
        settings = cls(**values)
        try:
            settings._check()
        except ConfigError as error:
            # A check that names an option says where that option's value came from.
            name = str(error).partition(":")[0]
            if name in origins:
                raise ConfigError(f"{error} (set by {origins[name]})") from None
            raise
        return settings

    def _check(self) -> None:
        if not NAMESPACE_PATTERN.match(self.namespace):
            raise ConfigError("namespace: use 1 to 64 characters of letters, digits and _ . : -")
        if self.max_object_bytes > self.l1_max_bytes:
            raise ConfigError("max_object_bytes: must not exceed l1_max_bytes")
        if self.redis_url is not None:
            try:
                check_redis_url(self.redis_url, cluster=self.redis_cluster)
            except BadRedisUrl as bad:
                raise ConfigError(f"redis_url: {bad}") from None
        for name in ("redis_timeout", "subscriber_heartbeat", "generation_check_interval", "l1_max_ttl"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}: must be greater than 0")
        self._check_cdn()
        self._check_lease()
        if self.query_allow is not None and self.query_ignore:
            raise ConfigError("query_allow: give either query_allow or query_ignore, not both")

    def _check_lease(self) -> None:
        for name in ("lease_ttl", "lease_wait"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}: must be greater than 0")
        if not self.coalesce_across_nodes:
            return
        if self.redis_url is None:
            raise ConfigError("coalesce_across_nodes: needs redis_url (the lease lives in Redis)")
        if not self.coalesce:
            raise ConfigError("coalesce_across_nodes: needs coalesce (each node's leader takes the lease)")
        if self.lease_ttl < 3 * self.redis_timeout:
            raise ConfigError(
                f"lease_ttl: must be at least 3 × redis_timeout ({3 * self.redis_timeout:g} s), so that a "
                "renewal every lease_ttl/3 lands before the lease expires"
            )
        if self.lease_wait > self.coalesce_timeout:
            raise ConfigError(
                "lease_wait: must not exceed coalesce_timeout: a node's other requests wait that long for "
                "the one that waits for the lease"
            )

    def _check_cdn(self) -> None:
        if self.cdn_origin is None and self.cdn_paths:
            raise ConfigError("cdn_origin: cdn_paths is set but cdn_origin is not; give both or neither")
        if self.cdn_origin is not None and not self.cdn_paths:
            raise ConfigError("cdn_paths: cdn_origin is set but cdn_paths is not; give the asset prefixes")
        for prefix in self.cdn_paths:
            if not prefix.startswith("/") or prefix.startswith("//"):
                raise ConfigError(
                    f"cdn_paths: {prefix!r} is not a root-relative path prefix such as /static/"
                )
        if self.cdn_origin is not None:
            from edgecache.cdn import CdnConfig  # noqa: PLC0415 - config is imported by everything

            try:
                CdnConfig(
                    origin=self.cdn_origin,
                    paths=self.cdn_paths,
                    public_hosts=self.cdn_public_hosts,
                    version=self.cdn_version,
                )
            except ValueError as exc:
                raise ConfigError(f"{_cdn_option(str(exc))}: {exc}") from None
        else:
            for name in ("cdn_public_hosts", "cdn_version", "cdn_asset_max_age"):
                if getattr(self, name) not in ((), None):
                    raise ConfigError(f"{name}: needs cdn_origin and cdn_paths")
        if self.cdn_purge_timeout <= 0:
            raise ConfigError("cdn_purge_timeout: must be greater than 0")
        provider = self.cdn_purge_provider
        if provider is None:
            for name in ("cdn_purge_service", "cdn_purge_zone", "cdn_purge_token"):
                if getattr(self, name) is not None:
                    raise ConfigError(f"{name}: needs cdn_purge_provider (fastly or cloudflare)")
            return
        if provider not in PURGE_PROVIDERS:
            raise ConfigError(f"cdn_purge_provider: expected fastly or cloudflare, got {provider!r}")
        needed = "cdn_purge_service" if provider == "fastly" else "cdn_purge_zone"
        other = "cdn_purge_zone" if provider == "fastly" else "cdn_purge_service"
        if getattr(self, needed) is None:
            raise ConfigError(f"{needed}: the {provider} purge needs it")
        if getattr(self, other) is not None:
            raise ConfigError(f"{other}: not used by the {provider} purge; leave it unset")
        if self.cdn_purge_token is None:
            raise ConfigError(
                f"cdn_purge_token: the {provider} purge needs an API token "
                f"(set {ENV_PREFIX}CDN_PURGE_TOKEN rather than passing it on a command line)"
            )


PURGE_PROVIDERS = ("fastly", "cloudflare")


def _cdn_option(message: str) -> str:
    """The option a ``CdnConfig`` error is about (its messages start with what they check)."""
    for start, name in (
        ("cdn path", "cdn_paths"),
        ("public host", "cdn_public_hosts"),
        ("cdn version", "cdn_version"),
    ):
        if message.startswith(start):
            return name
    return "cdn_origin"


def parse_optional_lower(value: object) -> str | None:
    text = parse_optional_str(value)
    return None if text is None or text.lower() == "none" else text.lower()


def parse_hosts(value: object) -> tuple[str, ...]:
    hosts = tuple(h.lower() for h in parse_list(value))
    for host in hosts:
        if not _HOST.match(host):
            raise ValueError(f"{host!r} is not a host name (give host or host:port, no scheme or path)")
    return hosts


_HOST = re.compile(r"^(?:[a-z0-9-]+(?:\.[a-z0-9-]+)*|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?$")


_PARSERS: dict[str, Callable[[object], Any]] = {
    "redis_url": parse_optional_str,
    "namespace": lambda v: str(v).strip(),
    "redis_cluster": parse_bool,
    "redis_timeout": parse_seconds,
    "redis_breaker_failures": parse_positive_int,
    "redis_breaker_reset": parse_seconds,
    "l1_max_ttl": parse_seconds,
    "subscriber_heartbeat": parse_seconds,
    "generation_check_interval": parse_seconds,
    "default_ttl": parse_seconds,
    "l1_max_bytes": parse_positive_int,
    "max_object_bytes": parse_positive_int,
    "cacheable_statuses": parse_statuses,
    "targeted_fields": parse_field_names,
    "cache_authorized": parse_bool,
    "key_headers": parse_field_names,
    "key_cookies": parse_list,
    "query_ignore": parse_list,
    "query_allow": parse_optional_list,
    "max_variants": parse_positive_int,
    "respect_request_cache_control": parse_bool,
    "keep_ttl": parse_seconds,
    "stale_while_revalidate": parse_seconds,
    "stale_if_error": parse_seconds,
    "coalesce": parse_bool,
    "coalesce_timeout": parse_seconds,
    "coalesce_across_nodes": parse_bool,
    "lease_ttl": parse_seconds,
    "lease_wait": parse_seconds,
    "hit_for_miss_ttl": parse_seconds,
    "origin_timeout": parse_optional_seconds,
    "strip_tag_headers": parse_bool,
    "key_host": parse_optional_str,
    "cdn_origin": parse_optional_str,
    "cdn_paths": parse_list,
    "shadow": lambda v: parse_shadow(v, parse_size),
    "cdn_public_hosts": parse_hosts,
    "cdn_version": parse_optional_str,
    "cdn_max_rewrite_bytes": parse_positive_int,
    "cdn_asset_max_age": parse_optional_seconds,
    "cdn_purge_provider": parse_optional_lower,
    "cdn_purge_service": parse_optional_str,
    "cdn_purge_zone": parse_optional_str,
    "cdn_purge_token": parse_optional_str,
    "cdn_purge_timeout": parse_seconds,
}
assert set(_PARSERS) == {f.name for f in fields(Settings)}, "every setting needs a parser"

OPTION_NAMES = tuple(_PARSERS)


# -- sources and the TOML file -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Source:
    """One place options come from: values by option name, and how to name a value's origin in errors."""

    values: Mapping[str, object]
    describe: Callable[[str], str]


def first_value(name: str, sources: Iterable[Source]) -> tuple[object, str] | None:
    """The value of ``name`` in the first source that has it, and its origin; None when none has it.

    This is the whole precedence rule: callers list their sources from strongest to weakest.
    """
    for source in sources:
        if name in source.values:
            return source.values[name], source.describe(name)
    return None


def environment_source(environ: Mapping[str, str], *, empty_is_unset: bool = False) -> Source:
    """The ``EDGECACHE_<NAME>`` variables as options named ``<name>``."""
    values = {
        key[len(ENV_PREFIX) :].lower(): value
        for key, value in environ.items()
        if key.startswith(ENV_PREFIX) and not (empty_is_unset and value == "")
    }
    return Source(values, lambda name: f"environment variable {ENV_PREFIX}{name.upper()}")


# What a TOML value may be for an option; the option's parser checks the value itself afterwards.
Kind = Literal["bool", "number", "size", "list", "string", "scalar", "spec"]
_KIND_TYPES: dict[str, tuple[type, ...]] = {
    "bool": (bool,),
    "number": (int, float),
    "size": (int, str),  # 1048576 or "64MiB"
    "list": (list, str),  # ["a", "b"] or "a,b"
    "string": (str,),
    "scalar": (str, int, float),
    "spec": (str, dict),  # "name=value,..." or a TOML table of the same names
}
_KIND_WORDS = {
    "bool": "true or false",
    "number": "a number",
    "size": 'a size (1048576 or a string such as "64MiB")',
    "list": "an array (or a comma-separated string)",
    "string": "a string",
    "scalar": "a string or a number",
    "spec": 'a string such as "ttl=300,query=sorted" or a table',
}
_TOML_TYPE_NAMES = {
    bool: "a boolean",
    int: "an integer",
    float: "a float",
    str: "a string",
    list: "an array",
    dict: "a table",
    datetime.datetime: "a date-time",
    datetime.date: "a date",
    datetime.time: "a time",
}


def read_config_file(
    path: str | os.PathLike[str], kinds: Mapping[str, Kind], refused: Mapping[str, str] | None = None
) -> Source:
    """The options of a TOML file whose top-level keys are option names (``kinds``: name → allowed kind;
    ``refused``: keys that must not be in a file → why).

    Raises ``ConfigError`` naming the file: unreadable, not TOML, an unknown key (with the closest known
    name), or a value of the wrong TOML type for its option.
    """
    shown = os.fspath(path)
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as error:
        raise ConfigError(f"config file {shown}: cannot read it: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {shown}: not UTF-8 text") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {shown}: not valid TOML: {error}") from None
    for key, value in document.items():
        kind = kinds.get(key)
        if refused and key in refused:
            raise ConfigError(f"config file {shown}: key {key}: {refused[key]}")
        if key in SECRET_OPTIONS:
            raise ConfigError(
                f"config file {shown}: key {key}: a secret is not read from files; "
                f"set {ENV_PREFIX}{key.upper()} (e.g. from a Kubernetes Secret)"
            )
        if kind is None:
            close = difflib.get_close_matches(key, list(kinds), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            if isinstance(value, dict):
                hint = hint or " (the file has no tables: every option is a top-level key)"
            raise ConfigError(f"config file {shown}: unknown key {key!r}{hint}")
        allowed = _KIND_TYPES[kind]
        # bool is an int in Python: only "bool" options take TOML booleans.
        wrong = isinstance(value, bool) != (kind == "bool") or not isinstance(value, allowed)
        if wrong:
            got = _TOML_TYPE_NAMES.get(type(value), type(value).__name__)
            raise ConfigError(f"config file {shown}: key {key}: expected {_KIND_WORDS[kind]}, got {got}")
        if isinstance(value, list) and not all(isinstance(item, str | int) for item in value):
            raise ConfigError(f"config file {shown}: key {key}: expected an array of strings")
    return Source(document, lambda name: f"config file {shown}: key {name}")


def _kind_of(parser: Callable[[object], Any]) -> Kind:
    if parser is parse_bool:
        return "bool"
    if parser in (parse_seconds, parse_optional_seconds):
        return "number"
    if parser in (parse_size, parse_positive_int):
        return "size"
    if parser in (parse_list, parse_optional_list, parse_field_names, parse_statuses, parse_hosts):
        return "list"
    return "string"


SETTING_KINDS: dict[str, Kind] = {name: _kind_of(parser) for name, parser in _PARSERS.items()}
SETTING_KINDS["shadow"] = "spec"


# One line per option for `edgecache proxy --help` (the README's options table says more).
OPTION_HELP: dict[str, str] = {
    "redis_url": "shared L2 tier and invalidation bus (redis://, rediss://, unix://)",
    "namespace": "prefix of every Redis key and channel",
    "redis_cluster": "redis_url names one node of a Redis Cluster",
    "redis_timeout": "seconds one Redis call may take before it counts as a failure",
    "redis_breaker_failures": "Redis failures in a row that open the breaker (L2 skipped)",
    "redis_breaker_reset": "seconds the Redis breaker stays open before one probe",
    "l1_max_ttl": "with Redis: longest life in seconds of an L1 copy",
    "subscriber_heartbeat": "seconds of silence before the invalidation channel is pinged",
    "generation_check_interval": "seconds between checks of the Redis generation token",
    "default_ttl": "seconds of freshness for cacheable responses that give none",
    "l1_max_bytes": "memory tier size, e.g. 64MiB",
    "max_object_bytes": "largest response stored; larger ones stream through uncached",
    "cacheable_statuses": "statuses that may be stored (comma-separated)",
    "targeted_fields": "targeted cache-control fields that win over Cache-Control, e.g. CDN-Cache-Control",
    "cache_authorized": "cache responses to requests with Authorization when the response allows it",
    "key_headers": "request headers that are part of the key (comma-separated)",
    "key_cookies": "cookies that are part of the key (comma-separated)",
    "query_ignore": "query parameters left out of the key; glob patterns (comma-separated)",
    "query_allow": "the only query parameters kept in the key (comma-separated)",
    "max_variants": "Vary variants kept per URL",
    "respect_request_cache_control": "honour the client's Cache-Control request directives",
    "keep_ttl": "seconds a stale response with a validator is kept for revalidation",
    "stale_while_revalidate": "seconds of stale-while-revalidate when the response gives none",
    "stale_if_error": "seconds of stale-if-error when the response gives none",
    "coalesce": "concurrent misses for one key make one upstream request",
    "coalesce_timeout": "seconds a coalesced request waits before fetching itself",
    "hit_for_miss_ttl": "seconds an uncacheable URL is remembered as such",
    "origin_timeout": "seconds to wait for upstream response headers before stale-if-error or 504",
    "strip_tag_headers": "remove Surrogate-Key / Cache-Tag from responses to clients",
    "key_host": "the host every key uses (the proxy: its upstream's)",
    "cdn_origin": "CDN base URL that asset URLs are rewritten to (with cdn_paths)",
    "cdn_paths": "root-relative path prefixes of the assets to rewrite, e.g. /static/ (comma-separated)",
    "cdn_public_hosts": "the app's own public hosts: absolute URLs on them are rewritten too",
    "cdn_version": "version parameter appended to rewritten asset URLs",
    "cdn_max_rewrite_bytes": "decoded body size above which responses pass unrewritten",
    "cdn_asset_max_age": "max-age added to asset responses that carry no freshness",
    "cdn_purge_provider": "purge at the CDN too when a tag is purged: fastly or cloudflare",
    "cdn_purge_service": "Fastly service id (cdn_purge_provider = fastly)",
    "cdn_purge_zone": "Cloudflare zone id (cdn_purge_provider = cloudflare)",
    "cdn_purge_token": "the CDN's API token; from the environment only",
    "cdn_purge_timeout": "seconds per CDN purge call, off the request path",
    "coalesce_across_nodes": "with redis_url: concurrent misses on several nodes make one upstream call",
    "lease_ttl": "seconds a cross-node coalescing lease lives without renewal",
    "lease_wait": "longest wait in seconds for another node's fetch before fetching here",
    "shadow": "a candidate configuration simulated beside the live cache, e.g. ttl=300,query=sorted",
}

# Secrets: read from their EDGECACHE_* variable only, never from a file or a command-line flag.
SECRET_OPTIONS = frozenset({"cdn_purge_token"})


def describe_default(name: str, value: object | None = None) -> str:
    """An option's default as ``--help`` and the README write it (``64MiB``, ``none``, ``true``)."""
    if value is None:
        value = getattr(Settings(), name)
    if value is None or value == ():
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, frozenset):
        return ",".join(str(v) for v in sorted(value))
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if SETTING_KINDS.get(name) == "size" and isinstance(value, int):
        for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
            if value >= factor and value % factor == 0:
                return f"{value // factor}{unit}"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
