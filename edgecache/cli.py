"""The ``edgecache`` command line.

``edgecache --version``, ``purge`` and ``proxy``; ``bench`` is to come. Each subcommand is one
``add_<name>(subparsers)`` function listed in ``SUBCOMMANDS``: it builds its parser and sets ``run``, a
function ``(args) -> exit status``. Options come from flags, then ``EDGECACHE_*`` environment variables.
Exit status: 0 done, 1 failed (e.g. Redis unreachable), 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final, TypeAlias, cast
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

if TYPE_CHECKING:
    from edgecache.config import Kind, Source

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


def add_proxy(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "proxy",
        help="run a caching reverse proxy (sidecar) in front of one upstream",
        description=(
            "Forward every request to --upstream (only ever that one, whatever the request says), caching "
            "responses by RFC 9111 on the same engine as the middleware. Health, readiness, metrics and "
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
            f"${ENV_ADMIN_TOKEN} is read from the environment only. "
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
    _add_cache_flags(parser)
    parser.set_defaults(run=run_proxy, parser=parser)


def _add_cache_flags(parser: argparse.ArgumentParser) -> None:
    """A flag for every cache option (``Settings``) that has no hand-written flag above."""
    from edgecache.config import OPTION_HELP, OPTION_NAMES, SETTING_KINDS, describe_default  # noqa: PLC0415

    group = parser.add_argument_group("cache options (as for the middleware; see the README)")
    for name in OPTION_NAMES:
        flag = "--" + name.replace("_", "-")
        if flag in parser._option_string_actions:
            continue
        default = "at most --l1-max-bytes" if name == "max_object_bytes" else ""
        default = ", ".join(filter(None, [describe_default(name), default]))
        text = f"{OPTION_HELP.get(name, name)} (default {default}; ${_ENV_PREFIX}{name.upper()})"
        if SETTING_KINDS[name] == "bool":
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, help=text)
        else:
            metavar = {"number": "SECONDS", "size": "N", "list": "A,B"}.get(SETTING_KINDS[name], "VALUE")
            metavar = "SIZE" if name.endswith("_bytes") else metavar
            group.add_argument(flag, dest=name, metavar=metavar, help=text)


ENV_ADMIN_TOKEN: Final = "EDGECACHE_ADMIN_TOKEN"
DEFAULT_ADMIN_LISTEN: Final = "127.0.0.1:9901"


_ENV_PREFIX: Final = "EDGECACHE_"
_NOT_OPTIONS: Final = frozenset({"help", "run", "parser", "config"})


def _proxy_sources(args: argparse.Namespace) -> list[Source]:
    """Where ``edgecache proxy`` options come from, strongest first: flags, the environment, the file.

    Raises ``ConfigError`` when the ``--config`` file cannot be used.
    """
    from edgecache.config import SETTING_KINDS, Source, environment_source, read_config_file  # noqa: PLC0415

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
    path = args.config or _env(_ENV_PREFIX + "CONFIG")
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
    from edgecache.config import (  # noqa: PLC0415
        ConfigError,
        Settings,
        Source,
        first_value,
        parse_bool,
        parse_seconds,
        parse_size,
    )
    from edgecache.proxy import server  # noqa: PLC0415 - uvicorn and httpx only when proxying
    from edgecache.proxy.app import Limits, parse_trusted  # noqa: PLC0415

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
    listen = get("listen", _listen)
    if listen is None:
        parser.error("proxy needs --listen HOST:PORT (or EDGECACHE_LISTEN, or listen in the --config file)")
    admin_listen = get("admin_listen", _listen, _listen(DEFAULT_ADMIN_LISTEN))
    max_body = get("max_request_body", _positive_size, Limits().max_request_body)
    connect_timeout = get("connect_timeout", _positive_seconds, 5.0)
    read_timeout = get("read_timeout", _positive_seconds, 60.0)
    shutdown_timeout = get("shutdown_timeout", parse_seconds, 10.0)
    preserve_host = bool(get("preserve_host", parse_bool, False))
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
    from edgecache.config import parse_size  # noqa: PLC0415

    size = parse_size(value)
    if size <= 0:
        raise ValueError(f"expected a positive size, got {value!r}")
    return size


def _positive_seconds(value: object) -> float:
    from edgecache.config import parse_seconds  # noqa: PLC0415

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


# One entry per subcommand, in --help order.
SUBCOMMANDS: Final[tuple[Callable[[Subparsers], None], ...]] = (add_purge, add_proxy)

if __name__ == "__main__":
    sys.exit(main())
