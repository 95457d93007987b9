"""The ``edgecache`` command line.

``edgecache --version``, ``purge`` and ``proxy``; ``bench`` is to come. Each subcommand is one
``add_<name>(subparsers)`` function listed in ``SUBCOMMANDS``: it builds its parser and sets ``run``, a
function ``(args) -> exit status``. Options come from flags, then ``EDGECACHE_*`` environment variables.
Exit status: 0 done, 1 failed (e.g. Redis unreachable), 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Final, TypeAlias
from urllib.parse import urlsplit, urlunsplit

from redis.exceptions import RedisError

from edgecache.bus.redis import publish_invalidation, publisher_client
from edgecache.config import NAMESPACE_PATTERN
from edgecache.core.invalidation import (
    MAX_ITEMS,
    MAX_MESSAGE_BYTES,
    BadInvalidation,
    Invalidation,
    encode_invalidation,
    invalidation_channel,
    new_invalidation,
)

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
        epilog="Exit status: 0 published, 1 Redis unreachable or failing, 2 bad arguments.",
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
    return 0


async def _publish(url: str, namespace: str, inv: Invalidation, seconds: float) -> int:
    client = publisher_client(url, timeout=seconds)
    try:
        async with asyncio.timeout(seconds * 2):  # a backstop over the socket timeouts
            return await publish_invalidation(client, namespace, inv)
    finally:
        await client.aclose()


# -- proxy --------------------------------------------------------------------------------------------

# Cache options of `edgecache proxy` that are Settings options: flag dest → Settings name.
_PROXY_SETTINGS: Final = {
    "redis_url": "redis_url",
    "namespace": "namespace",
    "default_ttl": "default_ttl",
    "l1_max_bytes": "l1_max_bytes",
}


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
            "Each option can also come from the EDGECACHE_* environment variable named in its help; a flag "
            "wins over the environment. Other cache options (EDGECACHE_MAX_OBJECT_BYTES, ...) are read "
            "from the environment as for the middleware. Exit status: 0 stopped by a signal, "
            "1 cannot listen, 2 bad arguments."
        ),
    )
    add = parser.add_argument
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
    parser.set_defaults(run=run_proxy, parser=parser)


ENV_ADMIN_TOKEN: Final = "EDGECACHE_ADMIN_TOKEN"
DEFAULT_ADMIN_LISTEN: Final = "127.0.0.1:9901"
# The proxy's upstream defaults, repeated here so that `edgecache.cli` imports without httpx and uvicorn
# (tests/proxy/test_cli_proxy.py checks they match edgecache.proxy.upstreams).
DEFAULT_READ_YOUR_WRITES_WINDOW: Final = 5.0
DEFAULT_BREAKER_FAILURES: Final = 5
DEFAULT_BREAKER_RESET: Final = 5.0
_HEALTH: Final = SimpleNamespace(path="/", interval=2.0, timeout=1.0, window=5, threshold=3)


def _proxy_option(args: argparse.Namespace, dest: str) -> tuple[object, str] | None:
    """The raw value of a proxy option and where it came from (the flag, else its environment variable)."""
    value = getattr(args, dest)
    if value is not None:
        return value, "--" + dest.replace("_", "-")
    env_name = "EDGECACHE_" + dest.upper()
    env_value = _env(env_name)
    if env_value is not None:
        return env_value, env_name
    return None


def run_proxy(args: argparse.Namespace) -> int:
    from edgecache.config import ConfigError, Settings, parse_bool, parse_seconds, parse_size  # noqa: PLC0415
    from edgecache.proxy import server  # noqa: PLC0415 - uvicorn and httpx only when proxying
    from edgecache.proxy.app import Limits, UpstreamURLError, parse_trusted, parse_upstream  # noqa: PLC0415
    from edgecache.proxy.upstreams import HealthConfig  # noqa: PLC0415

    parser: argparse.ArgumentParser = args.parser

    def get(dest: str, parse: Callable[[object], object], default: object = None) -> object:
        found = _proxy_option(args, dest)
        if found is None:
            return default
        raw, source = found
        try:
            return parse(raw)
        except (ValueError, TypeError) as error:
            parser.error(f"{source}: {error}")

    upstream = get("upstream", str)
    if upstream is None:
        parser.error("proxy needs --upstream (or EDGECACHE_UPSTREAM)")
    try:
        parse_upstream(str(upstream))
    except UpstreamURLError as error:
        parser.error(f"--upstream: {error}")
    if args.replicas is not None:
        replicas: list[str] = args.replicas
        replicas_source = "--replica"
    else:
        replicas = [r.strip() for r in (_env("EDGECACHE_REPLICAS") or "").split(",") if r.strip()]
        replicas_source = "EDGECACHE_REPLICAS"
    for replica in replicas:
        try:
            parse_upstream(replica)
        except UpstreamURLError as error:
            parser.error(f"{replicas_source}: {error}")
    listen = get("listen", _listen)
    if listen is None:
        parser.error("proxy needs --listen HOST:PORT (or EDGECACHE_LISTEN)")
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
    if args.trusted_proxies is not None:
        trusted_raw: list[str] = args.trusted_proxies
        trusted_source = "--trusted-proxy"
    else:
        trusted_raw = [p for p in (_env("EDGECACHE_TRUSTED_PROXIES") or "").split(",") if p.strip()]
        trusted_source = "EDGECACHE_TRUSTED_PROXIES"
    try:
        trusted = parse_trusted(trusted_raw)
    except ValueError as error:
        parser.error(f"{trusted_source}: {error}")

    # Cache options: flags, then the environment (Settings.load), so a bad value names its option.
    options: dict[str, object] = {
        name: getattr(args, dest) for dest, name in _PROXY_SETTINGS.items() if getattr(args, dest) is not None
    }
    if "default_ttl" not in options and _env("EDGECACHE_DEFAULT_TTL") is None:
        options["default_ttl"] = 0  # a proxy stores only what the upstream says is fresh
    if "l1_max_bytes" in options and _env("EDGECACHE_MAX_OBJECT_BYTES") is None:
        try:
            l1 = parse_size(options["l1_max_bytes"])
        except ValueError as error:
            parser.error(f"--l1-max-bytes: {error}")
        options["max_object_bytes"] = max(1, min(Settings().max_object_bytes, l1))
    try:
        settings = Settings.load(options)
    except ConfigError as error:
        parser.error(_flag_message(str(error)))
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


def _listen(value: object) -> tuple[str, int]:
    from edgecache.proxy.server import parse_listen  # noqa: PLC0415

    return parse_listen(str(value))


def _positive_size(value: object) -> int:
    from edgecache.config import parse_size  # noqa: PLC0415

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
    from edgecache.config import parse_seconds  # noqa: PLC0415

    seconds = parse_seconds(value)
    if seconds <= 0:
        raise ValueError(f"expected a positive number of seconds, got {value!r}")
    return seconds


def _flag_message(message: str) -> str:
    """A Settings error with the option's flag for the options `edgecache proxy` has flags for."""
    for name in _PROXY_SETTINGS.values():
        flag = "--" + name.replace("_", "-")
        if message.startswith(f"option {name}:"):
            return flag + message[len(f"option {name}") :]
        if message.startswith(f"{name}:"):
            return f"{flag} ({name})" + message[len(name) :]
    return message


# One entry per subcommand, in --help order.
SUBCOMMANDS: Final[tuple[Callable[[Subparsers], None], ...]] = (add_purge, add_proxy)

if __name__ == "__main__":
    sys.exit(main())
