"""The ``edgecache`` command line.

``edgecache --version``, ``purge``, ``proxy`` and ``bench`` (``hitrate``, ``load``). Each subcommand is one
``add_<name>(subparsers)`` function listed in ``SUBCOMMANDS``: it builds its parser and sets ``run``, a
function ``(args) -> exit status``. Options come from flags, then ``EDGECACHE_*`` environment variables.
Exit status: 0 done, 1 failed (e.g. Redis unreachable), 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING, Final, TypeAlias, cast
from urllib.parse import urlsplit, urlunsplit

from redis.exceptions import RedisError

from edgecache.bus.redis import publish_invalidation, publisher_client
from edgecache.config import (
    ENV_PREFIX,
    NAMESPACE_PATTERN,
    OPTION_HELP,
    OPTION_NAMES,
    SECRET_OPTIONS,
    SETTING_KINDS,
    ConfigError,
    Kind,
    Settings,
    Source,
    describe_default,
    environment_source,
    first_value,
    parse_bool,
    parse_seconds,
    parse_size,
    read_config_file,
)
from edgecache.core.invalidation import (
    MAX_ITEMS,
    MAX_MESSAGE_BYTES,
    BadInvalidation,
    Invalidation,
    encode_invalidation,
    invalidation_channel,
    new_invalidation,
)

if TYPE_CHECKING:
    from edgecache.cdn.purge import CdnPurger
    from edgecache.lab.traces import Trace

ENV_REDIS_URL: Final = "EDGECACHE_REDIS_URL"
ENV_NAMESPACE: Final = "EDGECACHE_NAMESPACE"
DEFAULT_NAMESPACE: Final = "edgecache"
DEFAULT_TIMEOUT: Final = 2.0

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Run = Callable[[argparse.Namespace], int]


def _version() -> str:
    from edgecache import __version__  # noqa: PLC0415 - keeps `edgecache.cli` importable on its own

    return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgecache",
        description="An RFC 9111 HTTP cache for ASGI apps: in-process L1, Redis L2, event-driven purges.",
    )
    parser.add_argument("--version", action="version", version=f"edgecache {_version()}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (the console script exits with it)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        run: Run | None = getattr(args, "run", None)
        if run is None:
            parser.print_help(sys.stderr)
            return 2
        return run(args)
    except SystemExit as done:  # argparse: --help, --version, usage errors
        code = done.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _env(name: str) -> str | None:
    return os.environ.get(name) or None  # set but empty counts as unset


def _redact(url: str) -> str:
    """``url`` without its password, for messages."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = f"{parts.username}:***@" if parts.username else ":***@"
        return urlunsplit(parts._replace(netloc=user + netloc))
    except ValueError:
        return "<unparsable URL>"


# -- purge --------------------------------------------------------------------------------------------


_FLAGS: Final = {"tags": "--tag", "paths": "--path", "prefixes": "--prefix", "id": "--id"}


def add_purge(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "purge",
        help="publish an invalidation to every node",
        description=(
            "Publish one invalidation on the Redis channel <namespace>:invalidate: every node drops (or, "
            "with --soft, marks stale) the matching responses from its memory tier and from Redis."
        ),
        epilog=(
            "With EDGECACHE_CDN_PURGE_PROVIDER (fastly or cloudflare), EDGECACHE_CDN_PURGE_SERVICE or "
            "EDGECACHE_CDN_PURGE_ZONE and EDGECACHE_CDN_PURGE_TOKEN set, the --tag values are purged at the "
            "CDN too, once the invalidation is published. Exit status: 0 published, 1 Redis unreachable or "
            "failing, 2 bad arguments, 3 published but the CDN purge failed."
        ),
    )
    add = parser.add_argument
    add("--tag", dest="tags", action="append", default=[], metavar="TAG", help="a Surrogate-Key/Cache-Tag")
    add("--path", dest="paths", action="append", default=[], metavar="PATH", help="a path, e.g. /products/42")
    add("--prefix", dest="prefixes", action="append", default=[], metavar="PREFIX", help="a path prefix")
    add("--soft", action="store_true", help="mark stale (served while revalidating) instead of dropping")
    add("--all", dest="everything", action="store_true", help="purge everything")
    add("--id", dest="message_id", metavar="ID", help="the message id (default: a random one)")
    add("--redis-url", metavar="URL", help=f"Redis to publish on (default: ${ENV_REDIS_URL})")
    add(
        "--namespace",
        metavar="NS",
        help=f"key and channel prefix (default: ${ENV_NAMESPACE}, else edgecache)",
    )
    add(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"connect and command timeout (default {DEFAULT_TIMEOUT:g}); no retries",
    )
    parser.set_defaults(run=run_purge, parser=parser)


def _purge_usage_error(bad: BadInvalidation) -> str:
    if bad.reason == "empty":
        return "purge needs at least one of --tag, --path, --prefix or --all"
    if bad.reason == "too-many":
        return f"at most {MAX_ITEMS} --tag/--path/--prefix values in total"
    if bad.reason == "too-large":
        return f"the invalidation would exceed {MAX_MESSAGE_BYTES} bytes"
    flag = _FLAGS.get(bad.field or "", "argument")
    return f"{flag}: {bad.detail or bad.reason}"


def run_purge(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.parser
    url = args.redis_url or _env(ENV_REDIS_URL)
    if url is None:
        parser.error(f"purge needs --redis-url or {ENV_REDIS_URL}")
    namespace = args.namespace or _env(ENV_NAMESPACE) or DEFAULT_NAMESPACE
    if not NAMESPACE_PATTERN.match(namespace):
        parser.error(f"--namespace: {namespace!r} is not 1-64 characters of A-Z a-z 0-9 _ . : -")
    if not args.timeout > 0:
        parser.error("--timeout must be positive")
    try:
        inv = new_invalidation(
            tags=args.tags,
            paths=args.paths,
            prefixes=args.prefixes,
            soft=args.soft,
            everything=args.everything,
            id=args.message_id,
        )
        payload = encode_invalidation(inv)
    except BadInvalidation as bad:
        parser.error(_purge_usage_error(bad))
    purger = _cdn_purger(parser)
    try:
        receivers = asyncio.run(_publish(url, namespace, inv, args.timeout))
    except ValueError as error:  # redis-py rejects the URL
        parser.error(f"--redis-url: {error}")
    except (RedisError, OSError) as error:  # OSError covers TimeoutError
        reason = str(error) or type(error).__name__
        print(f"edgecache purge: cannot publish to Redis at {_redact(url)}: {reason}", file=sys.stderr)
        return 1
    print(payload.decode("utf-8"))
    print(f"published on {invalidation_channel(namespace)}: {receivers} receiver(s)")
    if receivers == 0:
        print("edgecache purge: warning: no node is subscribed to that channel", file=sys.stderr)
    if purger is not None and inv.tags:
        # The command originated this purge: it asks the CDN (the nodes that apply it don't).
        if not asyncio.run(_purge_at_cdn(purger, inv.tags, inv.soft)):
            print(f"edgecache purge: the {purger.provider} purge failed (see the log above)", file=sys.stderr)
            return 3
        print(f"purged {len(inv.tags)} tag(s) at {purger.provider}")
    return 0


def _cdn_purger(parser: argparse.ArgumentParser) -> CdnPurger | None:
    """The CDN purge configured by the EDGECACHE_CDN_PURGE_* variables, or None."""
    from edgecache.engine import cdn_purger  # noqa: PLC0415
    from edgecache.observe.stats import CacheStats  # noqa: PLC0415

    environ = {k: v for k, v in os.environ.items() if k.startswith("EDGECACHE_CDN_PURGE_")}
    if not environ:
        return None
    try:
        settings = Settings.load({}, environ=environ)
    except ConfigError as error:
        parser.error(f"EDGECACHE_CDN_PURGE_*: {error}")
    return cdn_purger(settings, CacheStats())


async def _purge_at_cdn(purger: CdnPurger, tags: Sequence[str], soft: bool) -> bool:
    logging.basicConfig(format="edgecache purge: %(message)s")  # the purger logs why a call failed
    try:
        return await purger.purge(tags, soft=soft)
    finally:
        await purger.aclose()


async def _publish(url: str, namespace: str, inv: Invalidation, seconds: float) -> int:
    client = publisher_client(url, timeout=seconds)
    try:
        async with asyncio.timeout(seconds * 2):  # a backstop over the socket timeouts
            return await publish_invalidation(client, namespace, inv)
    finally:
        await client.aclose()


# -- proxy --------------------------------------------------------------------------------------------


def add_proxy(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "proxy",
        help="run a caching reverse proxy (sidecar) in front of one upstream and its read replicas",
        description=(
            "Forward every request to --upstream (only ever that one, whatever the request says), or cache "
            "misses of GET/HEAD to a healthy --replica, caching responses by RFC 9111 on the same engine as "
            "the middleware. Health, readiness, metrics and "
            "purges are on --admin-listen only: GET /healthz, GET /readyz, GET /metrics, POST /purge "
            f"(Authorization: Bearer ${ENV_ADMIN_TOKEN}). SIGTERM stops accepting, lets in-flight requests "
            "finish within --shutdown-timeout, and exits 0."
        ),
        epilog=(
            "Every option comes from its flag, else its EDGECACHE_* environment variable (named in its "
            "help), else the --config TOML file, else its default. The file is flat: each top-level key is "
            "an option name, the variable without EDGECACHE_ in lower case (upstream = "
            '"http://127.0.0.1:8000", default_ttl = 0, key_headers = ["Accept-Language"]); an unknown key '
            "or a value of the wrong type stops start-up naming the key and the file. "
            f"Secrets are read from the environment only: ${ENV_ADMIN_TOKEN}, "
            + ", ".join(f"${ENV_PREFIX}{name.upper()}" for name in sorted(SECRET_OPTIONS))
            + ". "
            "Exit status: 0 stopped by a signal, 1 cannot listen, 2 bad arguments or configuration."
        ),
    )
    add = parser.add_argument
    add(
        "--config",
        metavar="FILE",
        help="a TOML file of options, weaker than flags and environment variables "
        "(default: none; $EDGECACHE_CONFIG)",
    )
    add(
        "--upstream",
        metavar="URL",
        help="http(s)://host[:port] to forward to (required; $EDGECACHE_UPSTREAM)",
    )
    add(
        "--replica",
        dest="replicas",
        action="append",
        metavar="URL",
        help="a read replica of the upstream: GET/HEAD that reach upstream go to the healthy replica with "
        "the fewest requests in flight, everything else to --upstream; repeatable "
        "(default: none; $EDGECACHE_REPLICAS, comma-separated)",
    )
    add(
        "--read-your-writes-window",
        metavar="SECONDS",
        help="after a client's unsafe request (POST, PUT...), its reads go to --upstream for this long, and "
        "so do refills of what the cache just invalidated; 0 turns both off "
        f"(default {DEFAULT_READ_YOUR_WRITES_WINDOW:g}; $EDGECACHE_READ_YOUR_WRITES_WINDOW)",
    )
    add(
        "--health-path",
        metavar="PATH",
        help="what active health checks GET on each upstream; any status below 500 is healthy "
        "(default /; $EDGECACHE_HEALTH_PATH)",
    )
    add(
        "--health-interval",
        metavar="SECONDS",
        help=f"time between health probes; 0 turns active checks off "
        f"(default {_HEALTH.interval:g}; $EDGECACHE_HEALTH_INTERVAL)",
    )
    add(
        "--health-timeout",
        metavar="SECONDS",
        help=f"a probe slower than this fails (default {_HEALTH.timeout:g}; $EDGECACHE_HEALTH_TIMEOUT)",
    )
    add(
        "--health-window",
        metavar="N",
        help=f"how many recent probes count (default {_HEALTH.window}; $EDGECACHE_HEALTH_WINDOW)",
    )
    add(
        "--health-threshold",
        metavar="N",
        help="healthy while at least N of the window's probes succeeded "
        f"(default {_HEALTH.threshold}; $EDGECACHE_HEALTH_THRESHOLD)",
    )
    add(
        "--health-initial",
        metavar="N",
        help="probes counted as good at start-up (default threshold - 1: sick until the first good probe, "
        "which start-up waits for; $EDGECACHE_HEALTH_INITIAL)",
    )
    add(
        "--upstream-breaker-failures",
        metavar="N",
        help="consecutive connect errors, timeouts or broken connections that eject an upstream "
        f"(default {DEFAULT_BREAKER_FAILURES}; $EDGECACHE_UPSTREAM_BREAKER_FAILURES)",
    )
    add(
        "--upstream-breaker-reset",
        metavar="SECONDS",
        help="how long an ejected upstream waits before one trial request "
        f"(default {DEFAULT_BREAKER_RESET:g}; $EDGECACHE_UPSTREAM_BREAKER_RESET)",
    )
    add("--listen", metavar="HOST:PORT", help="where to serve the proxy (required; $EDGECACHE_LISTEN)")
    add(
        "--admin-listen",
        metavar="HOST:PORT",
        help=f"where to serve the admin endpoints (default {DEFAULT_ADMIN_LISTEN}; $EDGECACHE_ADMIN_LISTEN)",
    )
    add("--redis-url", metavar="URL", help=f"Redis for the shared L2 tier (default: none; ${ENV_REDIS_URL})")
    add(
        "--namespace",
        metavar="NS",
        help=f"Redis key and channel prefix (default {DEFAULT_NAMESPACE}; ${ENV_NAMESPACE})",
    )
    add(
        "--default-ttl",
        metavar="SECONDS",
        help="freshness of responses that give none; 0 stores only responses with explicit freshness "
        "(default 0; $EDGECACHE_DEFAULT_TTL)",
    )
    add(
        "--l1-max-bytes",
        metavar="SIZE",
        help="memory tier size, e.g. 64MiB (default 64MiB; $EDGECACHE_L1_MAX_BYTES)",
    )
    add(
        "--max-request-body",
        metavar="SIZE",
        help="larger request bodies get 413 (default 100MiB; $EDGECACHE_MAX_REQUEST_BODY)",
    )
    add(
        "--connect-timeout",
        metavar="SECONDS",
        help="upstream connect timeout; 502 when refused, 504 when it expires "
        "(default 5; $EDGECACHE_CONNECT_TIMEOUT)",
    )
    add(
        "--read-timeout",
        metavar="SECONDS",
        help="longest upstream silence while waiting for or reading a response; 504 before the headers "
        "(default 60; $EDGECACHE_READ_TIMEOUT)",
    )
    add(
        "--trusted-proxy",
        dest="trusted_proxies",
        action="append",
        metavar="IP",
        help="a peer address or network whose X-Forwarded-* fields are kept and appended to; repeatable "
        "(default: none, so X-Forwarded-For is replaced; $EDGECACHE_TRUSTED_PROXIES, comma-separated)",
    )
    add(
        "--preserve-host",
        action="store_true",
        default=None,
        help="send the client's Host upstream instead of the upstream's "
        "(default off; $EDGECACHE_PRESERVE_HOST)",
    )
    add(
        "--shutdown-timeout",
        metavar="SECONDS",
        help="on SIGTERM, how long in-flight requests may take to finish (default 10; "
        "$EDGECACHE_SHUTDOWN_TIMEOUT)",
    )
    add_cdn_flags(parser)
    _add_cache_flags(parser)
    parser.set_defaults(run=run_proxy, parser=parser)


def add_cdn_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "CDN asset URL rewriting",
        "Rewrite the URLs of assets under --cdn-path in HTML, CSS, JSON and Link fields to --cdn-origin, "
        "once per stored response; optionally purge tags at the CDN too.",
    )
    add = group.add_argument
    add("--cdn-origin", metavar="URL", help="base URL of the CDN, e.g. https://cdn.example.com "
        "(default: none, rewriting off; $EDGECACHE_CDN_ORIGIN)")  # fmt: skip
    add("--cdn-path", "--cdn-paths", dest="cdn_paths", action="append", metavar="PREFIX",
        help="a path prefix that is an asset, e.g. /static/; repeatable "
        "(default: none; $EDGECACHE_CDN_PATHS, comma-separated)")  # fmt: skip
    add("--cdn-public-host", "--cdn-public-hosts", dest="cdn_public_hosts", action="append", metavar="HOST",
        help="the app's own public host: absolute asset URLs on it are rewritten too; repeatable "
        "(default: none; $EDGECACHE_CDN_PUBLIC_HOSTS, comma-separated)")  # fmt: skip
    add("--cdn-version", metavar="TOKEN", help="version parameter appended to rewritten asset URLs "
        "(default: none; $EDGECACHE_CDN_VERSION)")  # fmt: skip
    add("--cdn-max-rewrite-bytes", metavar="SIZE", help="decoded bodies above this pass untouched "
        "(default 8MiB; $EDGECACHE_CDN_MAX_REWRITE_BYTES)")  # fmt: skip
    add("--cdn-asset-max-age", metavar="SECONDS",
        help="Cache-Control max-age added to 200 responses under --cdn-path that carry no Cache-Control, "
        "Expires or Set-Cookie (default: none; $EDGECACHE_CDN_ASSET_MAX_AGE)")  # fmt: skip
    add("--cdn-purge-provider", metavar="NAME",
        help="also purge tags at the CDN: fastly or cloudflare (default: none; "
        "$EDGECACHE_CDN_PURGE_PROVIDER; the API token only from $EDGECACHE_CDN_PURGE_TOKEN)")  # fmt: skip
    add("--cdn-purge-service", metavar="ID",
        help="Fastly service id (default: none; $EDGECACHE_CDN_PURGE_SERVICE)")  # fmt: skip
    add("--cdn-purge-zone", metavar="ID",
        help="Cloudflare zone id (default: none; $EDGECACHE_CDN_PURGE_ZONE)")  # fmt: skip
    add("--cdn-purge-timeout", metavar="SECONDS", help="per purge call to the provider "
        "(default 5; $EDGECACHE_CDN_PURGE_TIMEOUT)")  # fmt: skip


def _add_cache_flags(parser: argparse.ArgumentParser) -> None:
    """A flag for every cache option (``Settings``) that has no hand-written flag above."""

    group = parser.add_argument_group("cache options (as for the middleware; see the README)")
    taken = {action.dest for action in parser._actions}
    for name in OPTION_NAMES:
        flag = "--" + name.replace("_", "-")
        if name in taken or name in SECRET_OPTIONS:  # secrets: from the environment only
            continue
        default = "at most --l1-max-bytes" if name == "max_object_bytes" else ""
        default = ", ".join(filter(None, [describe_default(name), default]))
        text = f"{OPTION_HELP.get(name, name)} (default {default}; ${ENV_PREFIX}{name.upper()})"
        if SETTING_KINDS[name] == "bool":
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, help=text)
        else:
            metavar = {"number": "SECONDS", "size": "N", "list": "A,B"}.get(SETTING_KINDS[name], "VALUE")
            metavar = "SIZE" if name.endswith("_bytes") else metavar
            group.add_argument(flag, dest=name, metavar=metavar, help=text)


ENV_ADMIN_TOKEN: Final = "EDGECACHE_ADMIN_TOKEN"
DEFAULT_ADMIN_LISTEN: Final = "127.0.0.1:9901"
# The proxy's upstream defaults, repeated here so that `edgecache.cli` imports without httpx and uvicorn
# (tests/proxy/test_cli_proxy.py checks they match edgecache.proxy.upstreams).
DEFAULT_READ_YOUR_WRITES_WINDOW: Final = 5.0
DEFAULT_BREAKER_FAILURES: Final = 5
DEFAULT_BREAKER_RESET: Final = 5.0
_HEALTH: Final = SimpleNamespace(path="/", interval=2.0, timeout=1.0, window=5, threshold=3)


_NOT_OPTIONS: Final = frozenset({"help", "run", "parser", "config"})


def _proxy_sources(args: argparse.Namespace) -> list[Source]:
    """Where ``edgecache proxy`` options come from, strongest first: flags, the environment, the file.

    Raises ``ConfigError`` when the ``--config`` file cannot be used.
    """

    parser: argparse.ArgumentParser = args.parser
    flags: dict[str, str] = {}  # dest -> the flag that sets it, for messages
    kinds: dict[str, Kind] = dict(SETTING_KINDS)
    for action in parser._actions:
        if action.dest in _NOT_OPTIONS or not action.option_strings:
            continue
        flags[action.dest] = max(action.option_strings, key=len)
        if action.dest not in SETTING_KINDS:
            kinds[action.dest] = _action_kind(action)
    given = {dest: getattr(args, dest) for dest in flags if getattr(args, dest, None) is not None}
    sources = [
        Source(given, lambda dest: flags[dest]),
        environment_source(os.environ, empty_is_unset=True),
    ]
    path = args.config or _env(ENV_PREFIX + "CONFIG")
    if path is not None:
        secret = f"not read from files; set ${ENV_ADMIN_TOKEN} (e.g. from a Kubernetes Secret)"
        sources.append(read_config_file(path, kinds, {"admin_token": secret}))
    return sources


def _action_kind(action: argparse.Action) -> Kind:
    """What a TOML value of a proxy option may be, from how its flag takes values."""
    if isinstance(action, argparse._StoreTrueAction | argparse.BooleanOptionalAction):
        return "bool"
    if isinstance(action, argparse._AppendAction):
        return "list"
    return "scalar"


def run_proxy(args: argparse.Namespace) -> int:
    from edgecache.proxy import server  # noqa: PLC0415 - uvicorn and httpx only when proxying
    from edgecache.proxy.app import Limits, parse_trusted  # noqa: PLC0415
    from edgecache.proxy.upstreams import HealthConfig  # noqa: PLC0415

    parser: argparse.ArgumentParser = args.parser
    try:
        sources = _proxy_sources(args)
    except ConfigError as error:
        parser.error(str(error))

    def get(dest: str, parse: Callable[[object], object], default: object = None) -> object:
        """A proxy option from the first source that has it, parsed; a bad value exits 2 naming it."""
        found = first_value(dest, sources)
        if found is None:
            return default
        raw, origin = found
        try:
            return parse(raw)
        except (ValueError, TypeError) as error:
            parser.error(f"{origin}: {error}")

    upstream = get("upstream", _upstream)
    if upstream is None:
        parser.error("proxy needs --upstream (or EDGECACHE_UPSTREAM, or upstream in the --config file)")
    replicas = cast(list[str], get("replicas", lambda raw: [_upstream(r) for r in _as_list(raw)], []))
    listen = get("listen", _listen)
    if listen is None:
        parser.error("proxy needs --listen HOST:PORT (or EDGECACHE_LISTEN, or listen in the --config file)")
    admin_listen = get("admin_listen", _listen, _listen(DEFAULT_ADMIN_LISTEN))
    max_body = get("max_request_body", _positive_size, Limits().max_request_body)
    connect_timeout = get("connect_timeout", _positive_seconds, 5.0)
    read_timeout = get("read_timeout", _positive_seconds, 60.0)
    shutdown_timeout = get("shutdown_timeout", parse_seconds, 10.0)
    preserve_host = bool(get("preserve_host", parse_bool, False))
    ryw_window = get("read_your_writes_window", parse_seconds, DEFAULT_READ_YOUR_WRITES_WINDOW)
    breaker_failures = get("upstream_breaker_failures", _positive_count, DEFAULT_BREAKER_FAILURES)
    breaker_reset = get("upstream_breaker_reset", parse_seconds, DEFAULT_BREAKER_RESET)
    health_options = {
        "path": get("health_path", str, _HEALTH.path),
        "interval": get("health_interval", parse_seconds, _HEALTH.interval),
        "timeout": get("health_timeout", _positive_seconds, _HEALTH.timeout),
        "window": get("health_window", _positive_count, _HEALTH.window),
        "threshold": get("health_threshold", _positive_count, _HEALTH.threshold),
        "initial": get("health_initial", _count, None),
    }
    try:
        health = HealthConfig(**health_options)  # type: ignore[arg-type]
    except ValueError as error:
        # HealthConfig's messages start with the option's name: "health window must be..."
        parser.error(f"--health-{str(error).split()[1]}: {error}")
    trusted = cast(tuple[object, ...], get("trusted_proxies", lambda raw: parse_trusted(_as_list(raw)), ()))

    # Cache options from the same sources; then the proxy's own defaults: a proxy stores only what the
    # upstream says is fresh, and its largest object follows a smaller --l1-max-bytes.
    defaults: dict[str, object] = {"default_ttl": 0}
    l1_max = first_value("l1_max_bytes", sources)
    if l1_max is not None and first_value("max_object_bytes", sources) is None:
        with contextlib.suppress(ValueError, TypeError):  # a bad size is reported by Settings below
            defaults["max_object_bytes"] = max(1, min(Settings().max_object_bytes, parse_size(l1_max[0])))
    try:
        settings = Settings.from_sources([*sources, Source(defaults, lambda name: f"the proxy's {name}")])
    except ConfigError as error:
        parser.error(str(error))
    assert isinstance(listen, tuple) and isinstance(admin_listen, tuple)
    return server.run(
        str(upstream),
        listen,
        admin_listen,
        settings=settings,
        replicas=replicas,
        read_your_writes_window=ryw_window,
        health=health,
        breaker_failures=breaker_failures,
        breaker_reset=breaker_reset,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        limits=Limits(max_request_body=int(max_body)),  # type: ignore[call-overload]
        trusted_proxies=[str(n) for n in trusted],
        preserve_host=preserve_host,
        shutdown_timeout=shutdown_timeout,
        log_level="info",
    )


def _upstream(value: object) -> str:
    from edgecache.proxy.app import parse_upstream  # noqa: PLC0415

    parse_upstream(str(value))  # raises UpstreamURLError, a ValueError
    return str(value)


def _listen(value: object) -> tuple[str, int]:
    from edgecache.proxy.server import parse_listen  # noqa: PLC0415

    return parse_listen(str(value))


def _positive_size(value: object) -> int:
    size = parse_size(value)
    if size <= 0:
        raise ValueError(f"expected a positive size, got {value!r}")
    return size


def _count(value: object) -> int:
    text = str(value).strip()
    if not text.isdigit():
        raise ValueError(f"expected a whole number, got {value!r}")
    return int(text)


def _positive_count(value: object) -> int:
    count = _count(value)
    if count < 1:
        raise ValueError(f"expected at least 1, got {value!r}")
    return count


def _positive_seconds(value: object) -> float:
    seconds = parse_seconds(value)
    if seconds <= 0:
        raise ValueError(f"expected a positive number of seconds, got {value!r}")
    return seconds


def _as_list(value: object) -> list[str]:
    """A repeatable option's values: a list (flags, TOML) or a comma-separated string (environment)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list | tuple):
        return [str(item) for item in value]
    raise ValueError(f"expected a list, got {value!r}")


# -- bench --------------------------------------------------------------------------------------------

_HITRATE_DEFAULTS: Final = {"keys": 100_000, "requests": 1_000_000}
_LOAD_DEFAULTS: Final = {"keys": 10_000, "requests": 10_000}


def add_bench(subparsers: Subparsers) -> None:
    bench = subparsers.add_parser(
        "bench",
        help="measure hit rates: simulate policies on a trace, or load a running cache",
        description="The hit-rate lab: `bench hitrate` simulates caching policies on synthetic traces or "
        "access logs; `bench load` sends a trace to a running cache and reads its Cache-Status headers.",
    )
    commands = bench.add_subparsers(title="bench commands", metavar="COMMAND")
    hitrate = commands.add_parser(
        "hitrate",
        help="hit ratio of caching policies on a trace, against Belady's OPT",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Replay one trace through each policy at each capacity and report the hit ratio, byte hit ratio, gap to
OPT (percentage points) and simulated operations per second of each policy.

Policies: lru, lfu (in-cache, no aging, ties to the least recent), fifo, ttl (entries expire after --ttl,
nothing else evicts; a full cache stores nothing new), w-tinylfu (the shipped policy with its 1 % window
fixed), s3-fifo, edgecache (the L1 this build ships) and opt (Belady: exact for entry
capacities; for byte capacities a lower bound, with an upper bound in its note).

Traces: zipf (Zipf(--alpha) over --keys keys), scan (zipf with bursts of --scan-length one-hit wonders
making up --scan-fraction of the requests), drift (zipf whose ranking rotates by --drift-shift of the
key space every --drift-every requests), log (--log-file replayed with the cache's key normalisation;
malformed lines are counted and skipped). Object sizes: --sizes. Same --seed, same trace, same figures.""",
        epilog="Example: edgecache bench hitrate --trace zipf --alpha 1.0 --capacity 0.1%,1%,10% "
        "--plot hitrate.png. rich (tables, progress) and matplotlib (--plot) come with the `lab` extra: "
        "pip install 'edgecache[lab]'. Exit status: 0 done, 1 failed (e.g. unreadable log), 2 bad usage.",
    )
    _add_trace_options(hitrate, _HITRATE_DEFAULTS)
    add = hitrate.add_argument
    add(
        "--capacity",
        default="0.1%,1%,10%",
        metavar="LIST",
        help="comma-separated cache sizes: N%% of the key space, a number in --unit, or a byte size such "
        "as 64MiB (default %(default)s)",
    )
    add(
        "--unit",
        choices=("entries", "bytes"),
        default="entries",
        help="what plain numbers and percentages count: entries (every object weighs 1) or bytes "
        "(objects weigh their size; %% of the key space's bytes) (default %(default)s)",
    )
    add(
        "--policies",
        default="all",
        metavar="LIST",
        help="comma-separated: lru, lfu, fifo, ttl, w-tinylfu, s3-fifo, edgecache, opt, or all "
        "(default %(default)s)",
    )
    add("--ttl", type=float, default=60.0, metavar="SECONDS", help="TTL of the ttl policy (default 60)")
    add("--json", action="store_true", help="print the results as JSON instead of a table")
    add("--plot", metavar="PNG", help="also write a plot of hit ratio against cache size (needs matplotlib)")
    add("--plain", action="store_true", help="plain-text table even when rich is installed")
    hitrate.set_defaults(run=run_bench_hitrate, parser=hitrate)

    load = commands.add_parser(
        "load",
        help="send a trace to a running cache and report what its Cache-Status headers say",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
GET the paths of a trace (--path-prefix<key> for synthetic traces, the logged paths for --trace log) from
--url or from an ASGI app (--app module:attribute, served in this process by uvicorn on a free 127.0.0.1
port), with --concurrency workers, until --requests are sent or --duration seconds have passed. Reports the
hit ratio per tier (l1, l2) from the `edgecache` member of each Cache-Status, the shares of stale and
collapsed responses, latency percentiles and requests/s. Only loopback targets unless --allow-remote.""",
        epilog="Example: edgecache bench load --app examples.app:app --requests 5000 --concurrency 8. "
        "Exit status: 0 done, 1 failed (target unreachable), 2 bad usage or refused target.",
    )
    target = load.add_mutually_exclusive_group()
    target.add_argument(
        "--url", metavar="URL", help="base URL of a running target, e.g. http://127.0.0.1:8080"
    )
    target.add_argument("--app", metavar="MODULE:ATTR", help="an ASGI app to serve in-process and load")
    _add_trace_options(load, _LOAD_DEFAULTS)
    add = load.add_argument
    add("--duration", type=float, default=30.0, metavar="SECONDS", help="longest run (default %(default)g)")
    add("--concurrency", type=int, default=16, metavar="N", help="requests in flight (default %(default)s)")
    add("--timeout", type=float, default=10.0, metavar="SECONDS", help="per request (default %(default)g)")
    add(
        "--path-prefix",
        default="/lab/",
        metavar="PATH",
        help="synthetic traces: request PATH<key id> (default %(default)s)",
    )
    add("--allow-remote", action="store_true", help="allow a target that is not a loopback address")
    add("--json", action="store_true", help="print the report as JSON")
    load.set_defaults(run=run_bench_load, parser=load)
    bench.set_defaults(run=lambda args: _bench_usage(bench))


def _bench_usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _add_trace_options(parser: argparse.ArgumentParser, defaults: dict[str, int]) -> None:
    group = parser.add_argument_group("workload")
    add = group.add_argument
    add("--trace", choices=("zipf", "scan", "drift", "log"), default="zipf", help="(default %(default)s)")
    add("--keys", type=int, default=defaults["keys"], metavar="N", help="key space (default %(default)s)")
    add("--requests", type=int, default=defaults["requests"], metavar="N", help="(default %(default)s)")
    add("--alpha", type=float, default=0.8, help="Zipf exponent, > 0 (default %(default)g)")
    add("--seed", type=int, default=1, help="random seed: same seed, same trace (default %(default)s)")
    add(
        "--sizes",
        default="fixed:4096",
        metavar="DIST",
        help="object sizes: fixed:SIZE, uniform:MIN:MAX, lognormal:MEDIAN:SIGMA, pareto:ALPHA:MIN "
        "(default %(default)s)",
    )
    add("--scan-fraction", type=float, default=0.25, metavar="F", help="scan: share of one-hit wonders")
    add("--scan-length", type=int, default=5000, metavar="N", help="scan: requests per burst")
    add("--drift-shift", type=float, default=0.02, metavar="F", help="drift: rotation per step")
    add("--drift-every", type=int, default=50_000, metavar="N", help="drift: requests per step")
    add("--rate", type=float, default=1000.0, metavar="RPS", help="synthetic requests per second (for --ttl)")
    add("--log-file", metavar="PATH", help="log: the access log to replay (- for stdin)")
    add(
        "--log-format",
        choices=("auto", "common", "combined", "json"),
        default="auto",
        help="log: line format (default %(default)s)",
    )
    add("--host", default="localhost", help="log: host of lines that name none (default %(default)s)")
    add("--query-ignore", default="", metavar="LIST", help="log: query parameters left out of keys (utm_*)")
    add("--query-allow", metavar="LIST", help="log: the only query parameters kept in keys")
    add("--no-progress", action="store_true", help="no progress bar")


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _load_trace(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[Trace, str]:
    """The trace the workload options describe, and a line about it for the report."""
    from edgecache.lab.logs import replay_log  # noqa: PLC0415 - the lab only when benching
    from edgecache.lab.traces import SizeDist, TraceSpec, generate  # noqa: PLC0415

    if args.trace == "log":
        if not args.log_file:
            parser.error("--trace log needs --log-file")
        from edgecache.core.keys import QueryFilter  # noqa: PLC0415

        if args.query_allow is not None and args.query_ignore:
            parser.error("give either --query-allow or --query-ignore, not both")
        allow = _split(args.query_allow) if args.query_allow is not None else None
        query_filter = QueryFilter(ignore=_split(args.query_ignore), allow=allow)
        try:
            if args.log_file == "-":
                replay = replay_log(
                    sys.stdin, log_format=args.log_format, host=args.host, query_filter=query_filter
                )
            else:
                with open(args.log_file, encoding="utf-8", errors="replace") as lines:
                    replay = replay_log(
                        lines, log_format=args.log_format, host=args.host, query_filter=query_filter,
                        name=os.path.basename(args.log_file),
                    )  # fmt: skip
        except OSError as error:
            raise _Failed(f"cannot read --log-file {args.log_file}: {error.strerror or error}") from None
        if not replay.trace.keys:
            raise _Failed(f"{args.log_file}: no cacheable request to replay ({replay.summary()})")
        return replay.trace, replay.summary() + "".join(f"\n  line {n}: {why}" for n, why in replay.examples)
    if args.log_file:
        parser.error("--log-file is only read with --trace log")
    try:
        spec = TraceSpec(
            kind=args.trace,
            keys=args.keys,
            requests=args.requests,
            alpha=args.alpha,
            seed=args.seed,
            sizes=SizeDist.parse(args.sizes),
            scan_fraction=args.scan_fraction,
            scan_length=args.scan_length,
            drift_shift=args.drift_shift,
            drift_every=args.drift_every,
            rate=args.rate,
        )
        spec.check()
    except ValueError as error:
        parser.error(str(error))
    return generate(spec), f"{spec.name}: {spec.keys} keys, {spec.requests} requests, seed {spec.seed}"


class _Failed(Exception):
    """A bench run that cannot go on (exit status 1)."""


def run_bench_hitrate(args: argparse.Namespace) -> int:
    from edgecache.lab import report, sim  # noqa: PLC0415

    parser: argparse.ArgumentParser = args.parser
    if not args.ttl > 0:
        parser.error("--ttl must be positive")
    try:
        policies = sim.parse_policies(args.policies)
    except ValueError as error:
        parser.error(f"--policies: {error}")
    if args.plot and not report.has_matplotlib():
        parser.error(str(report.MissingExtra("matplotlib", "--plot")))
    try:
        trace, about = _load_trace(args, parser)
    except _Failed as failed:
        print(f"edgecache bench hitrate: {failed}", file=sys.stderr)
        return 1
    try:
        capacities = sim.parse_capacities(args.capacity, trace, args.unit)
    except ValueError as error:
        parser.error(f"--capacity: {error}")
    total = len(trace) * len(policies) * len(capacities)
    with report.progress(total, "simulating", enabled=not args.no_progress) as advance:
        results = sim.run(trace, policies, capacities, ttl=args.ttl, advance=advance)
    if args.json:
        print(report.to_json(results, trace=trace.name, about=about, seed=args.seed))
    else:
        print(about)
        report.print_table(results, plain=args.plain)
    if args.plot:
        report.plot(results, args.plot, title=trace.name)
        if not args.json:
            print(f"plot written to {args.plot}")
    return 0


def run_bench_load(args: argparse.Namespace) -> int:
    from edgecache.lab import load, report  # noqa: PLC0415

    parser: argparse.ArgumentParser = args.parser
    if not args.url and not args.app:
        parser.error("bench load needs --url URL or --app MODULE:ATTR")
    if args.requests < 1 or args.concurrency < 1:
        parser.error("--requests and --concurrency must be at least 1")
    if not args.duration > 0 or not args.timeout > 0:
        parser.error("--duration and --timeout must be positive")
    if not args.path_prefix.startswith("/"):
        parser.error("--path-prefix must start with /")
    if args.url:
        try:
            url = load.check_target(args.url, allow_remote=args.allow_remote)
        except ValueError as error:  # RemoteTarget included
            parser.error(f"--url: {error}")
    try:
        trace, _ = _load_trace(args, parser)
    except _Failed as failed:
        print(f"edgecache bench load: {failed}", file=sys.stderr)
        return 1
    total = min(args.requests, len(trace))
    options = {
        "requests": total,
        "duration": args.duration,
        "concurrency": args.concurrency,
        "path_prefix": args.path_prefix,
    }
    with report.progress(total, "requests", enabled=not args.no_progress) as advance:
        try:
            if args.url:
                result = asyncio.run(
                    load.drive(url, trace, request_timeout=args.timeout, advance=advance, **options)
                )
            else:
                result = asyncio.run(
                    load.drive_app(args.app, trace, request_timeout=args.timeout, advance=advance, **options)
                )
        except ValueError as error:
            parser.error(str(error))
        except (RuntimeError, OSError) as error:
            print(f"edgecache bench load: {error}", file=sys.stderr)
            return 1
    if result.requests and result.outcomes["error"] == result.requests:
        print(result.text(), file=sys.stderr)
        print(f"edgecache bench load: every request to {result.target} failed", file=sys.stderr)
        return 1
    print(json.dumps(result.as_dict(), indent=2) if args.json else result.text())
    return 0


# One entry per subcommand, in --help order.
SUBCOMMANDS: Final[tuple[Callable[[Subparsers], None], ...]] = (add_purge, add_proxy, add_bench)

if __name__ == "__main__":
    sys.exit(main())
